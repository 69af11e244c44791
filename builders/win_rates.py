"""Builder: `matches` -> `win_rates` (pure): how often each workflow's picked answers beat each baseline's.

Per pair (prompt x baseline), each voting judge's verdict must hold in both orders (a flip is a
tie); the judges' verdicts combine by `judge.rule`. Wins, losses and ties give the win rate, ties
counted as `compare.ties` says, with a bootstrap 95% interval over prompts, the
length-controlled win rate (`metrics.win_rate.length_controlled`) and the style-controlled one
(length and markdown density, `metrics.win_rate.style_controlled`). Also writes `metrics.json` and
`plots/win_rates.json` for DVC, and the matrix again as `<data root>/_win_rates/<recipe>.json`, the
shared folder the `report` stages depend on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from builders.preferences import judge_description
from builders.recipe import Recipe
from builders.tables import (
    ITEMS, MATCHES, PICKS, WIN_RATES, frame, json_number, read_table, write_json, write_table,
)
from metrics import bootstrap
from metrics.agreement import A, B, MISSING, TIE
from metrics.judgments import flips, labels_by_order
from metrics.jury import combine
from metrics.style import markdown_density
from metrics.win_rate import length_controlled, style_controlled, win_rate, win_rate_interval

READS = ("items", "picks", "matches")
WRITES = ("win_rates",)
SHARED_DIR = "_win_rates"  # <data root>/_win_rates/<recipe>.json: the matrix, beside metrics.json


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


def _row(recipe: Recipe, workflow: str, baseline: str, labels: np.ndarray, flipped: np.ndarray, mine: np.ndarray,
         theirs: np.ndarray, n_unpicked: int, style: tuple[np.ndarray, np.ndarray]) -> dict:
    ties = recipe.compare.ties
    w = bootstrap.weights(labels.size, recipe.compare.resamples, seed=0)
    low, high = win_rate_interval(labels, ties, w)
    lc, lc_low, lc_high = length_controlled(labels, (mine - theirs).astype(float), ties, w)
    sc, sc_low, sc_high = style_controlled(labels, (mine - theirs).astype(float), style[0] - style[1], ties, w)
    return {
        "workflow": workflow,
        "baseline": baseline,
        "ties_rule": ties,
        "n_prompts": int(labels.size),
        "n_unpicked": n_unpicked,
        "wins": int((labels == A).sum()),
        "losses": int((labels == B).sum()),
        "ties": int(((labels == TIE) | (labels == MISSING)).sum()),
        "inconsistent": int(flipped.sum()),
        "unjudged": int((labels == MISSING).sum()),
        "win_rate": json_number(win_rate(labels, ties)),
        "win_rate_low": json_number(low),
        "win_rate_high": json_number(high),
        "lc_win_rate": json_number(lc),
        "lc_win_rate_low": json_number(lc_low),
        "lc_win_rate_high": json_number(lc_high),
        "sc_win_rate": json_number(sc),
        "sc_win_rate_low": json_number(sc_low),
        "sc_win_rate_high": json_number(sc_high),
        "candidate_chars": float(mine.mean()) if mine.size else 0.0,
        "baseline_chars": float(theirs.mean()) if theirs.size else 0.0,
        "candidate_markdown": float(style[0].mean()) if style[0].size else 0.0,
        "baseline_markdown": float(style[1].mean()) if style[1].size else 0.0,
    }


def rates(recipe: Recipe, items: pl.DataFrame, picks: pl.DataFrame, matches: pl.DataFrame) -> list[dict]:
    length = {(e, i): len(r) for e, i, r in picks.select("entry", "item_id", "response").iter_rows()}
    density = {(e, i): markdown_density(r) for e, i, r in picks.select("entry", "item_id", "response").iter_rows()}
    out = []
    for workflow in recipe.compare.workflows:
        for baseline in recipe.compare.baselines:
            mine = matches.filter(pl.col("workflow") == workflow, pl.col("baseline") == baseline)
            if mine.height:
                pairs, labels, flipped = pair_labels(recipe, mine)
            else:
                pairs, labels, flipped = [], np.array([], np.int8), np.array([], bool)
            item_of = dict(mine.select("pair_id", "item_id").unique().iter_rows())
            own = np.array([length[(workflow, item_of[p])] for p in pairs], dtype=np.int64)
            other = np.array([length[(baseline, item_of[p])] for p in pairs], dtype=np.int64)
            style = tuple(np.array([density[(e, item_of[p])] for p in pairs], dtype=np.float64) for e in (workflow, baseline))
            out.append(_row(recipe, workflow, baseline, labels, flipped, own, other, items.height - len(pairs), style))
    return out


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    rows = []
    if recipe.compare:
        rows = rates(recipe, read_table(ITEMS, data_dir), read_table(PICKS, data_dir), read_table(MATCHES, data_dir))
    write_table(WIN_RATES, frame(WIN_RATES, rows), data_dir)
    if recipe.compare:
        keep = ("win_rate", "win_rate_low", "win_rate_high", "lc_win_rate", "lc_win_rate_low", "lc_win_rate_high",
                "sc_win_rate", "sc_win_rate_low", "sc_win_rate_high", "wins", "losses", "ties", "inconsistent", "n_prompts")
        matrix: dict[str, dict] = {}
        for r in rows:
            matrix.setdefault(r["workflow"], {})[r["baseline"]] = {k: r[k] for k in keep}
        summary = {"judge": judge_description(recipe), "ties": recipe.compare.ties, "win_rates": matrix}
        write_json(data_dir / "metrics.json", summary)
        write_json(data_dir.parent / SHARED_DIR / f"{recipe.name}.json", summary)  # what every report stage waits for
        write_json(data_dir / "plots" / "win_rates.json", [
            {"pair": f"{r['workflow']} vs {r['baseline']}", "workflow": r["workflow"], "baseline": r["baseline"],
             "win_rate": r["win_rate"], "win_rate_low": r["win_rate_low"], "win_rate_high": r["win_rate_high"],
             "lc_win_rate": r["lc_win_rate"], "sc_win_rate": r["sc_win_rate"]} for r in rows
        ])
