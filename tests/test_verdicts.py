"""From scores to verdicts (pure, no LLM): ranking, swap consistency, jury rules, tie policies."""

from __future__ import annotations

import pytest

from builders.loader import load_recipe
from builders.verdicts import item_verdict
from conftest import tiny_recipe

PANEL = ["judge", "writer", "reviewer"]


def _recipe(project, *, panel=("judge",), **judge):
    path = tiny_recipe(project)
    settings = "".join(f"  {k}: {v}\n" for k, v in judge.items())
    text = path.read_text().replace("    models: [judge]\n", f"    models: [{', '.join(panel)}]\n")
    path.write_text(text.replace("  tie_policy: later_iteration\n", settings or "  tie_policy: drop\n"))
    return load_recipe(path)


def _verdict(recipe, calls: list[tuple[str, dict[str, float | None]]], n: int = 3) -> dict:
    """The verdict for one item with candidates c1..cn (iteration k for ck) and the given judge calls."""
    candidates = [{"candidate_id": f"c{k}", "iteration": k} for k in range(1, n + 1)]
    rows = [
        {"call_id": f"call{i}", "judge": judge, "candidate_id": cid, "score": score,
         "outcome": "ok" if score is not None else "unparseable"}
        for i, (judge, scores) in enumerate(calls)
        for cid, score in scores.items()
    ]
    return item_verdict(recipe, "q", candidates, rows)


def test_best_mean_score_is_chosen_and_failed_calls_count_for_nothing(project):
    # two orders that agree on the winner, and one call whose answer could not be read
    v = _verdict(_recipe(project), [("judge", {"c1": 6, "c2": 2, "c3": 5}), ("judge", {"c1": 9, "c2": 3, "c3": 7}),
                                    ("judge", {"c1": None, "c2": None, "c3": None})])
    assert v["status"] == "ok" and v["chosen_id"] == "c1" and v["ranking"] == ["c1", "c3", "c2"]
    assert v["ranking_scores"] == [7.5, 6.0, 2.5] and v["n_votes"] == 1


def test_a_verdict_that_flips_with_the_order_is_inconsistent_not_a_tie(project):
    # the same three candidates in both orders: c1 wins one way, c3 the other
    v = _verdict(_recipe(project), [("judge", {"c1": 8, "c2": 2, "c3": 7}), ("judge", {"c1": 6, "c2": 2, "c3": 9})])
    assert v["status"] == "inconsistent" and v["chosen_id"] is None and not v["is_tie"]
    assert v["n_inconsistent"] == 1 and v["n_votes"] == 0


@pytest.mark.parametrize(
    "policy, status, chosen",
    [("drop", "tie_dropped", None), ("later_iteration", "ok", "c3"), ("earlier_iteration", "ok", "c1")],
)
def test_tie_policies(project, policy, status, chosen):
    v = _verdict(_recipe(project, tie_policy=policy), [("judge", {"c1": 8, "c2": 5, "c3": 8})])
    assert v["is_tie"] and v["status"] == status and v["chosen_id"] == chosen


def test_majority_vote_against_the_mean(project):
    calls = [("judge", {"c1": 9, "c2": 1, "c3": 8}), ("writer", {"c1": 2, "c2": 1, "c3": 3}),
             ("reviewer", {"c1": 1, "c2": 2, "c3": 4})]
    majority = _verdict(_recipe(project, panel=PANEL, mode="jury", rule="majority"), calls)
    assert majority["chosen_id"] == "c3" and majority["n_votes"] == 3 and majority["agreement"] == pytest.approx(2 / 3)
    mean = _verdict(_recipe(project, panel=PANEL, mode="jury", rule="mean"), calls)
    assert mean["chosen_id"] == "c3" and mean["ranking"] == ["c3", "c1", "c2"]
    calls[2] = ("reviewer", {"c1": 9, "c2": 2, "c3": 4})
    assert _verdict(_recipe(project, panel=PANEL, mode="jury", rule="majority"), calls)["chosen_id"] == "c1"
    assert _verdict(_recipe(project, panel=PANEL, mode="jury", rule="mean"), calls)["chosen_id"] == "c1"


def test_vote_ties_and_jury_members(project):
    calls = [("judge", {"c1": 9, "c2": 1}), ("writer", {"c1": 1, "c2": 9}), ("reviewer", {"c1": 5, "c2": 9})]
    split = _verdict(_recipe(project, panel=PANEL, mode="jury", members="[judge, writer]", tie_policy="drop"), calls, n=2)
    assert split["status"] == "tie_dropped" and split["n_votes"] == 2
    later = _verdict(_recipe(project, panel=PANEL, mode="jury", members="[judge, writer]", tie_policy="later_iteration"), calls, n=2)
    assert later["chosen_id"] == "c2"
    alone = _verdict(_recipe(project, panel=PANEL, mode="judge", members="[judge]"), calls, n=2)
    assert alone["chosen_id"] == "c1" and alone["n_votes"] == 1


def test_too_few_scored_candidates_give_no_choice(project):
    v = _verdict(_recipe(project), [("judge", {"c1": 9, "c2": None, "c3": None})])
    assert v["status"] == "too_few_scored" and v["chosen_id"] is None
