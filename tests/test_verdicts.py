"""Aggregation of scores into verdicts: ranking, tie policies, missing scores (pure, no LLM)."""

from __future__ import annotations

import polars as pl
import pytest

from builders.recipe import load_recipe
from builders.verdicts import aggregate
from conftest import tiny_recipe


def _recipe(project, tie_policy="later_iteration"):
    path = tiny_recipe(project)
    path.write_text(path.read_text().replace("tie_policy: later_iteration", f"tie_policy: {tie_policy}"))
    return load_recipe(path)


def _tables(scores_by_candidate: dict[str, list[float | None]]):
    candidates = pl.DataFrame(
        {"candidate_id": list(scores_by_candidate), "item_id": ["q"] * len(scores_by_candidate),
         "iteration": list(range(1, len(scores_by_candidate) + 1))}
    )
    rows = [(cid, s) for cid, values in scores_by_candidate.items() for s in values]
    scores = pl.DataFrame({"candidate_id": [r[0] for r in rows], "score": [r[1] for r in rows]},
                          schema={"candidate_id": pl.String, "score": pl.Float64})
    return candidates, scores


@pytest.mark.parametrize(
    "policy, status, chosen",
    [("drop", "tie_dropped", None), ("later_iteration", "ok", "c3"), ("earlier_iteration", "ok", "c1")],
)
def test_tie_policies(project, policy, status, chosen):
    recipe = _recipe(project, tie_policy=policy)
    v = aggregate(recipe, *_tables({"c1": [8.0], "c2": [5.0], "c3": [8.0]})).row(0, named=True)
    assert v["is_tie"] and v["status"] == status and v["chosen_id"] == chosen
    assert v["ranking_scores"] == [8.0, 8.0, 5.0]


def test_mean_over_calls_and_missing_scores_left_out(project):
    recipe = _recipe(project)
    v = aggregate(recipe, *_tables({"c1": [6.0, 9.0], "c2": [None], "c3": [7.0, None]})).row(0, named=True)
    assert v["ranking"] == ["c1", "c3"] and v["ranking_scores"] == [7.5, 7.0]
    assert v["n_candidates"] == 3 and v["n_scored"] == 2 and v["chosen_id"] == "c1" and not v["is_tie"]


def test_too_few_scored_candidates_give_no_choice(project):
    recipe = _recipe(project)
    v = aggregate(recipe, *_tables({"c1": [9.0], "c2": [None], "c3": [None]})).row(0, named=True)
    assert v["status"] == "too_few_scored" and v["chosen_id"] is None and v["n_scored"] == 1
