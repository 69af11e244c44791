"""Builder: `scores` -> `verdicts` (pure: no LLM calls). Ranks each item's candidates by mean score.

Missing scores are left out of the ranking. An item needs `judge.min_scored` scored candidates.
When several candidates share the best score, `judge.tie_policy` drops the item or prefers the
later (or earlier) iteration.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from builders.recipe import Recipe
from builders.tables import CANDIDATES, SCORES, VERDICTS, frame, read_table, write_table

READS = ("candidates", "scores")
WRITES = ("verdicts",)


def _verdict(recipe: Recipe, item_id: str, n_candidates: int, scored: list[dict]) -> dict:
    j = recipe.judge
    later_first = j.tie_policy == "later_iteration"
    scored.sort(key=lambda c: (-c["score"], -c["iteration"] if later_first else c["iteration"], c["candidate_id"]))
    best = scored[0]["score"] if scored else None
    is_tie = sum(c["score"] == best for c in scored) > 1
    if len(scored) < j.min_scored:
        status = "too_few_scored"
    elif is_tie and j.tie_policy == "drop":
        status = "tie_dropped"
    else:
        status = "ok"
    chosen = scored[0] if status == "ok" else None
    return {
        "item_id": item_id,
        "n_candidates": n_candidates,
        "n_scored": len(scored),
        "ranking": [c["candidate_id"] for c in scored],
        "ranking_scores": [c["score"] for c in scored],
        "chosen_id": chosen["candidate_id"] if chosen else None,
        "chosen_score": chosen["score"] if chosen else None,
        "is_tie": is_tie,
        "status": status,
    }


def aggregate(recipe: Recipe, candidates: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
    means = scores.group_by("candidate_id").agg(pl.col("score").mean())
    table = candidates.select("candidate_id", "item_id", "iteration").join(means, on="candidate_id", how="left")
    rows = []
    for (item_id,), group in table.group_by("item_id"):
        scored = group.filter(pl.col("score").is_not_null()).to_dicts()
        rows.append(_verdict(recipe, item_id, group.height, scored))
    return frame(VERDICTS, rows)


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    df = aggregate(recipe, read_table(CANDIDATES, data_dir), read_table(SCORES, data_dir))
    write_table(VERDICTS, df, data_dir)
