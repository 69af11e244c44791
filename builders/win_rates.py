"""Builder: `matches` -> `win_rates` (pure): how often this recipe's picked answers beat each baseline.

Per pair (prompt x baseline), each voting judge's verdict must hold in both orders (a flip is a
tie); the judges' verdicts combine by `judge.rule`. Wins, losses and ties give the win rate, ties
counted as `compare.ties` says, with a bootstrap 95% interval over prompts, and the
length-controlled win rate (`metrics.win_rate.length_controlled`). Also writes `metrics.json` and
`plots/win_rates.json` for DVC.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl

from builders.preferences import judge_description
from builders.recipe import Recipe
from builders.tables import BASELINES, CANDIDATES, MATCHES, VERDICTS, WIN_RATES, frame, read_table, write_table
from metrics import bootstrap
from metrics.agreement import A, B, MISSING, TIE
from metrics.judgments import flips, labels_by_order
from metrics.jury import combine
from metrics.win_rate import length_controlled, win_rate, win_rate_interval

READS = ("candidates", "verdicts", "baselines", "matches")
WRITES = ("win_rates",)


def _value(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def pair_labels(recipe: Recipe, matches: pl.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(pair ids, the voters' combined label per pair, whether some voter's verdict flipped)."""
    voters = recipe.judge.voters
    pairs = matches["pair_id"].unique(maintain_order=True).to_list()
    rows = (
        matches.filter(pl.col("outcome") == "ok", pl.col("judge").is_in(voters))
        .select("judge", pl.col("pair_id").alias("key"), "presentation",
                ((pl.col("candidate_score") - pl.col("baseline_score")) / recipe.judge.panel.scale).alias("diff"))
    )
    by_order, _, margin, final = labels_by_order(rows, voters, {p: i for i, p in enumerate(pairs)})
    flipped, _ = flips(by_order)
    return pairs, combine(final, margin, recipe.judge.rule), flipped.any(axis=0)


def _row(recipe: Recipe, baseline: str, labels: np.ndarray, flipped: np.ndarray, mine: np.ndarray,
         theirs: np.ndarray, n_unpicked: int) -> dict:
    ties = recipe.compare.ties
    w = bootstrap.weights(labels.size, recipe.compare.resamples, seed=0)
    low, high = win_rate_interval(labels, ties, w)
    lc, lc_low, lc_high = length_controlled(labels, (mine - theirs).astype(float), ties, w)
    return {
        "baseline": baseline,
        "ties_rule": ties,
        "n_prompts": int(labels.size),
        "n_unpicked": n_unpicked,
        "wins": int((labels == A).sum()),
        "losses": int((labels == B).sum()),
        "ties": int(((labels == TIE) | (labels == MISSING)).sum()),
        "inconsistent": int(flipped.sum()),
        "unjudged": int((labels == MISSING).sum()),
        "win_rate": _value(win_rate(labels, ties)),
        "win_rate_low": _value(low),
        "win_rate_high": _value(high),
        "lc_win_rate": _value(lc),
        "lc_win_rate_low": _value(lc_low),
        "lc_win_rate_high": _value(lc_high),
        "candidate_chars": float(mine.mean()) if mine.size else 0.0,
        "baseline_chars": float(theirs.mean()) if theirs.size else 0.0,
    }


def rates(recipe: Recipe, candidates: pl.DataFrame, verdicts: pl.DataFrame, baselines: pl.DataFrame,
          matches: pl.DataFrame) -> list[dict]:
    lengths = dict(zip(candidates["candidate_id"], candidates["response"].str.len_chars()))
    base_len = {(i, b): n for i, b, n in baselines.select("item_id", "baseline", pl.col("response").str.len_chars()).iter_rows()}
    n_items = verdicts.height
    out = []
    for name in recipe.compare.names():
        mine = matches.filter(pl.col("baseline") == name)
        pairs, labels, flipped = pair_labels(recipe, mine) if mine.height else ([], np.array([], np.int8), np.array([], bool))
        first = mine.unique("pair_id", keep="first").select("pair_id", "item_id", "candidate_id")
        meta = {p: (i, c) for p, i, c in first.iter_rows()}
        own = np.array([lengths[meta[p][1]] for p in pairs], dtype=np.int64)
        other = np.array([base_len[(meta[p][0], name)] for p in pairs], dtype=np.int64)
        out.append(_row(recipe, name, labels, flipped, own, other, n_items - len(pairs)))
    return out


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    rows = []
    if recipe.compare:
        rows = rates(recipe, read_table(CANDIDATES, data_dir), read_table(VERDICTS, data_dir),
                     read_table(BASELINES, data_dir), read_table(MATCHES, data_dir))
    write_table(WIN_RATES, frame(WIN_RATES, rows), data_dir)
    if recipe.compare:
        keep = ("win_rate", "win_rate_low", "win_rate_high", "lc_win_rate", "lc_win_rate_low", "lc_win_rate_high",
                "wins", "losses", "ties", "inconsistent", "n_prompts")
        _write_json(data_dir / "metrics.json", {
            "judge": judge_description(recipe),
            "ties": recipe.compare.ties,
            "baselines": {r["baseline"]: {k: r[k] for k in keep} for r in rows},
        })
        _write_json(data_dir / "plots" / "win_rates.json", [
            {"baseline": r["baseline"], "win_rate": r["win_rate"], "win_rate_low": r["win_rate_low"],
             "win_rate_high": r["win_rate_high"], "lc_win_rate": r["lc_win_rate"]} for r in rows
        ])
