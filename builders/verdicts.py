"""Builder: `scores` -> `verdicts` (pure: no LLM calls, so changing the jury or its rule is free).

1. Per member judge and item: each candidate's mean score over the judge's calls. A candidate set
   shown in both orders whose winner flips with the order is *inconsistent*: those calls count for
   nothing (never silently a tie or a win). The judge's vote is its best candidate; a tie for best
   is settled by `judge.tie_policy` (`drop`: no vote).
2. Per item: `rule: majority` chooses the candidate with most votes, `rule: mean` the best mean
   score across members; ties again by `tie_policy`. The ranking puts the chosen candidate first,
   then the others by mean score; an item needs `judge.min_scored` scored candidates.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from statistics import mean

import polars as pl

from builders.recipe import Recipe
from builders.tables import CANDIDATES, SCORES, VERDICTS, frame, read_table, write_table

READS = ("candidates", "scores")
WRITES = ("verdicts",)


def prefer(tied: list[str], policy: str, iteration: dict[str, int]) -> str | None:
    """One of several tied candidates by the tie policy, or None for `drop`."""
    if len(tied) == 1:
        return tied[0]
    if policy == "drop":
        return None
    pick = max if policy == "later_iteration" else min
    return pick(sorted(tied), key=lambda cid: iteration[cid])


def _best(values: dict[str, float]) -> list[str]:
    top = max(values.values())
    return sorted(cid for cid, v in values.items() if v == top)


def judge_view(calls: list[list[dict]]) -> tuple[dict[str, float], bool]:
    """(candidate -> mean score, whether some order flip was found) from one judge's calls on one item.

    `calls` holds each call's ok rows. Calls over the same candidates in both orders are compared.
    """
    by_set: dict[frozenset, list[list[dict]]] = defaultdict(list)
    for rows in calls:
        by_set[frozenset(r["candidate_id"] for r in rows)].append(rows)
    kept: dict[str, list[float]] = defaultdict(list)
    flipped = False
    for group in by_set.values():
        winners = {frozenset(_best({r["candidate_id"]: r["score"] for r in rows})) for rows in group}
        if len(winners) > 1:
            flipped = True
            continue
        for rows in group:
            for r in rows:
                kept[r["candidate_id"]].append(r["score"])
    return {cid: mean(v) for cid, v in kept.items()}, flipped


def _verdict(recipe: Recipe, item_id: str, candidates: list[dict], views: dict[str, tuple[dict, bool]]) -> dict:
    j = recipe.judge
    iteration = {c["candidate_id"]: c["iteration"] for c in candidates}
    per_candidate: dict[str, list[float]] = defaultdict(list)
    votes: list[str] = []
    tied_judges = 0  # judges whose best score was shared by several candidates
    for scores, _ in views.values():
        for cid, s in scores.items():
            per_candidate[cid].append(s)
        if scores:
            best = _best(scores)
            tied_judges += len(best) > 1
            vote = prefer(best, j.tie_policy, iteration)
            if vote is not None:
                votes.append(vote)
    means = {cid: mean(v) for cid, v in per_candidate.items()}
    n_inconsistent = sum(flipped and not scores for scores, flipped in views.values())
    chosen, is_tie = None, tied_judges > 0
    if j.rule == "mean" and means:
        best = _best(means)
        is_tie, chosen = len(best) > 1, prefer(best, j.tie_policy, iteration)
    elif votes:
        counts = Counter(votes)
        top = max(counts.values())
        best = sorted(cid for cid, n in counts.items() if n == top)
        is_tie, chosen = is_tie or len(best) > 1, prefer(best, j.tie_policy, iteration)
    if chosen is not None and len(means) >= j.min_scored:
        status = "ok"
    elif n_inconsistent and not votes:
        status = "inconsistent"
    elif len(means) < j.min_scored:
        status = "too_few_scored"
    elif is_tie:
        status = "tie_dropped"
    else:
        status = "no_votes"
    if status != "ok":
        chosen = None
    others = sorted((c for c in means if c != chosen), key=lambda c: (-means[c], c))
    ranking = ([chosen] if chosen else []) + others
    return {
        "item_id": item_id,
        "n_candidates": len(candidates),
        "n_scored": len(means),
        "ranking": ranking,
        "ranking_scores": [means[c] for c in ranking],
        "chosen_id": chosen,
        "chosen_score": means[chosen] if chosen else None,
        "is_tie": is_tie,
        "n_votes": len(votes),
        "agreement": votes.count(chosen) / len(votes) if chosen and votes else None,
        "n_inconsistent": n_inconsistent,
        "status": status,
    }


def aggregate(recipe: Recipe, candidates: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
    voters = recipe.judge.voters
    ok = scores.filter(pl.col("outcome") == "ok", pl.col("judge").is_in(voters))
    calls: dict[tuple[str, str], list[list[dict]]] = defaultdict(list)
    for (_, item_id, judge), rows in ok.group_by("call_id", "item_id", "judge", maintain_order=True):
        calls[(item_id, judge)].append(rows.select("candidate_id", "score").to_dicts())
    rows = []
    for (item_id,), group in candidates.group_by("item_id", maintain_order=True):
        views = {judge: judge_view(calls[(item_id, judge)]) for judge in voters}
        rows.append(_verdict(recipe, item_id, group.to_dicts(), views))
    return frame(VERDICTS, rows)


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    df = aggregate(recipe, read_table(CANDIDATES, data_dir), read_table(SCORES, data_dir))
    write_table(VERDICTS, df, data_dir)
