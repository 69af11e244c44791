"""Builder: `labels` + `scores` -> `agreement` and `model_agreement` (pure: no LLM calls).

Measures every combination of the panel's judges (sizes 1..k; a debate's referees likewise) against
the benchmark's human winners, as the paper's Tables 2-6 do: Cohen's kappa, accuracy, position-flip
rate, how often the longer answer wins, and per-model agreement and bias score, each with a paired
bootstrap 95% interval. Beside them, for every jury: how many independent votes it is worth (Kish's
n_eff from its members' error correlation, `metrics.neff`) and how much its members agree with each
other (Krippendorff's alpha, `metrics.krippendorff`); for every benchmark model, whether a member
judge shares its family (`metrics.families`). Also writes, beside the tables:

- `metrics.json`: headline figures for `dvc metrics show/diff`;
- `plots/kappa.json` (kappa per judge with its interval) and `plots/juries.json` (jury size vs kappa)
  for `dvc plots show`;
- `<data root>/_gates/<recipe>.json`: each measured configuration's fingerprint and kappa, read by
  the export gates of other recipes (`builders/gate.py`).

Ties are labels here: `judge.tie_policy` and `min_scored` (which shape datasets) do not apply.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from builders import build_log, family_check
from builders.errors import BuildError
from builders.gate import fingerprint, gate_path
from builders.recipe import Recipe
from builders.tables import (
    AGREEMENT, CANDIDATES, LABELS, MODEL_AGREEMENT, SCORES, frame, json_number, read_table, write_json, write_table,
)
from metrics import bootstrap, families
from metrics.agreement import A, B, TIE
from metrics.evaluator import Estimate, longer_wins, measure, per_model
from metrics.judgments import Judgments, judgments
from metrics.jury import all_juries
from metrics.krippendorff import alpha_interval, nominal_alpha
from metrics.neff import ErrorCorrelation, errors

READS = ("labels", "candidates", "scores")
WRITES = ("agreement", "model_agreement")
MAX_FULL_SEARCH = 10  # judges; beyond this the search keeps juries of up to 3 members


def _estimate_columns(name: str, e: Estimate) -> dict:
    return {name: json_number(e.value), f"{name}_low": json_number(e.low), f"{name}_high": json_number(e.high)}


def search(recipe: Recipe, j: Judgments, w: np.ndarray) -> tuple[list[dict], dict[str, np.ndarray]]:
    """One `agreement` row per jury (ranked by kappa), and each jury's labels."""
    rule = recipe.judge.rule
    voters = tuple(x for x in j.judges if x in recipe.judge.voters)
    juries = all_juries(j.judges, None if len(j.judges) <= MAX_FULL_SEARCH else 3)
    if voters not in juries:
        juries.append(voters)
    rows, labels = [], {}
    correlation = ErrorCorrelation(j.judges, errors(j.human, j.final), w)
    for members in juries:
        m = measure(j, members, rule, w)
        name = "+".join(members)
        labels[name] = m["labels"]
        rows.append({
            "evaluator": name,
            "members": list(members),
            "size": len(members),
            "rule": rule,
            "configured": members == voters,
            "rank": 0,
            "n_items": j.n,
            "n_missing": m["n_missing"],
            "n_ties": m["n_ties"],
            **_estimate_columns("kappa", m["kappa"]),
            **_estimate_columns("accuracy", m["accuracy"]),
            **_estimate_columns("flip_rate", m["flip_rate"]),
            **_estimate_columns("position_bias", m["position_bias"]),
            **_estimate_columns("longer_wins", m["longer_wins"]),
            **_independence(j, members, correlation, w),
            "fingerprint": fingerprint(recipe, members),
        })
    rows.sort(key=lambda r: (r["kappa"] is None, -(r["kappa"] or 0), r["size"], r["evaluator"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows, labels


def _independence(j: Judgments, members: tuple[str, ...], correlation: ErrorCorrelation, w: np.ndarray) -> dict:
    """n_eff and mean error correlation (metrics.neff) and Krippendorff's alpha among the members."""
    rho, rho_samples = correlation.mean_rho(members)
    if len(members) > 1:
        member_labels = j.final[[j.judge(m) for m in members]]
        alpha = Estimate(nominal_alpha(member_labels), *alpha_interval(w, member_labels))
        rho_low, rho_high = bootstrap.percentile_interval(rho_samples)
    else:
        alpha, rho_low, rho_high = Estimate(float("nan"), float("nan"), float("nan")), float("nan"), float("nan")
    return {
        **_estimate_columns("n_eff", Estimate(*correlation.n_eff(members))),
        **_estimate_columns("error_correlation", Estimate(rho, rho_low, rho_high)),
        **_estimate_columns("alpha", alpha),
    }


def _per_model_rows(recipe: Recipe, rows: list[dict], labels: dict[str, np.ndarray], j: Judgments,
                    w: np.ndarray) -> list[dict]:
    best_of_size: dict[int, str] = {}
    for r in rows:  # ranked best first
        best_of_size.setdefault(r["size"], r["evaluator"])
    wanted = [r["evaluator"] for r in rows if r["size"] == 1 or r["configured"]] + list(best_of_size.values())
    members = {r["evaluator"]: r["members"] for r in rows}
    judge_ids = family_check.judges(recipe)
    out = []
    for name in dict.fromkeys(wanted):
        for m in per_model(j, labels[name], w):
            out.append({
                "evaluator": name,
                "model": str(m["model"]),
                "n_human_prefers": m["n_human_prefers"],
                **_estimate_columns("agreement", m["agreement"]),
                **_estimate_columns("bias", m["bias"]),
                "family": family_check.closest([
                    families.relation(judge_ids[x], str(m["model"])) for x in members[name] if x in judge_ids
                ]),
            })
    return out


def _summary(recipe: Recipe, rows: list[dict], j: Judgments, w: np.ndarray, candidates: pl.DataFrame) -> dict:
    keep = ("kappa", "kappa_low", "kappa_high", "accuracy", "flip_rate", "position_bias", "position_bias_low",
            "position_bias_high", "longer_wins", "n_missing", "n_eff", "n_eff_low", "n_eff_high", "alpha")
    configured = next(r for r in rows if r["configured"])
    best = rows[0]
    num, den = longer_wins(j, j.human)
    human_longer = float(num.sum() / den.sum()) if den.sum() else None
    panel = recipe.judge.panel
    return {
        "benchmark": recipe.source.benchmark or recipe.source.where(),
        "items": j.n,
        "strategy": "debate" if panel.debate else panel.strategy,
        "scale": panel.scale,
        "orders": panel.orders,
        "score_mode": panel.score_mode,
        "reasoning": panel.reasoning,
        "human": {
            "model_a": int((j.human == A).sum()),
            "model_b": int((j.human == B).sum()),
            "tie": int((j.human == TIE).sum()),
            "longer_wins": json_number(human_longer) if human_longer is not None else None,
        },
        "configured": {"evaluator": configured["evaluator"], **{k: configured[k] for k in keep}},
        "judges": {r["evaluator"]: {k: r[k] for k in keep} for r in rows if r["size"] == 1},
        "best": {"evaluator": best["evaluator"], "size": best["size"], **{k: best[k] for k in keep[:3]}},
        "panel": _panel(rows, j),
        "families": family_check.rows(recipe, family_check.table_writers(recipe, candidates)),
    }


def _panel(rows: list[dict], j: Judgments) -> dict:
    """The whole panel as one jury: its n_eff and the judges' alpha (null with one judge)."""
    whole = next((r for r in rows if r["size"] == len(j.judges)), None)
    fields = ("n_eff", "n_eff_low", "n_eff_high", "error_correlation", "alpha", "alpha_low", "alpha_high")
    return {"judges": len(j.judges), **{k: whole[k] if whole else None for k in fields}}


def _plots(rows: list[dict]) -> dict[str, list[dict]]:
    singles = [r for r in rows if r["size"] == 1 or r["configured"]]
    return {
        "kappa": [
            {"evaluator": r["evaluator"], "kappa": r["kappa"], "kappa_low": r["kappa_low"], "kappa_high": r["kappa_high"]}
            for r in sorted(singles, key=lambda r: r["evaluator"])
        ],
        "juries": [{"size": r["size"], "kappa": r["kappa"], "evaluator": r["evaluator"]} for r in rows],
    }


def evaluate(recipe: Recipe, labels: pl.DataFrame, candidates: pl.DataFrame, scores: pl.DataFrame,
             *, resamples: int = bootstrap.RESAMPLES, seed: int = 0) -> tuple[list[dict], list[dict], dict]:
    """(agreement rows, model_agreement rows, metrics summary) from the three tables."""
    j = judgments(labels, candidates, scores, recipe.judge.judges)
    w = bootstrap.weights(j.n, resamples, seed)
    rows, jury_labels = search(recipe, j, w)
    return rows, _per_model_rows(recipe, rows, jury_labels, j, w), _summary(recipe, rows, j, w, candidates)


def build(recipe: Recipe, data_dir: Path, *, resamples: int = bootstrap.RESAMPLES, seed: int = 0, **_) -> None:
    if not recipe.source.labelled:
        raise BuildError(
            f"{recipe.path}: meta-eval measures judges against human labels; this recipe has none "
            "(name a `source.benchmark`, or a `source.label_column`)"
        )
    labels = read_table(LABELS, data_dir)
    if labels.height == 0:
        raise BuildError(f"{recipe.path}: meta-eval: the labels table is empty; nothing to measure")
    started = time.perf_counter()
    rows, model_rows, summary = evaluate(
        recipe, labels, read_table(CANDIDATES, data_dir), read_table(SCORES, data_dir), resamples=resamples, seed=seed
    )
    elapsed = time.perf_counter() - started
    write_table(AGREEMENT, frame(AGREEMENT, rows), data_dir)
    write_table(MODEL_AGREEMENT, frame(MODEL_AGREEMENT, model_rows), data_dir)
    build_log.record(data_dir, "meta-eval", elapsed, {"agreement": len(rows), "model_agreement": len(model_rows)})
    for name, points in _plots(rows).items():
        write_json(data_dir / "plots" / f"{name}.json", points)
    write_json(data_dir / "metrics.json", summary)
    gate_fields = ("evaluator", "fingerprint", "kappa", "kappa_low", "kappa_high", "n_items")
    write_json(gate_path(data_dir.parent, recipe.name), {
        "benchmark_recipe": recipe.name,
        "evaluators": [{k: r[k] for k in gate_fields} for r in rows],
    })
    c = summary["configured"]
    print(
        f"{recipe.name}: meta-eval: {len(rows)} evaluators over {summary['items']} items in {elapsed:.2f}s; "
        f"{c['evaluator']}: kappa {_show(c['kappa'])} [{_show(c['kappa_low'])}, {_show(c['kappa_high'])}]"
        + (f", worth {_show(c['n_eff'])} independent votes of {len(recipe.judge.voters)}" if len(recipe.judge.voters) > 1 else "")
        + f"; best {summary['best']['evaluator']}: {_show(summary['best']['kappa'])}",
        file=sys.stderr,
    )


def _show(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
