"""Builder: `scores` -> `verdicts` (pure: no LLM calls, so changing the jury or its rule is free).

1. Per member judge and item: the calls that showed the same candidates are its presentation orders
   (`judge.panel.orders`). A candidate's score is its mean over the orders, which cancels a judge's
   constant preference for a position. The orders agree when their own best candidates are the
   mean's best; when too few do (`judge.min_order_agreement`, default more than half) the judge is
   *inconsistent* there and those calls count for nothing (never silently a tie or a win). The
   judge's vote is its best candidate; a tie for best is settled by `judge.tie_policy` (`drop`: no vote).
2. Per item: `rule: majority` chooses the candidate with most votes, `rule: mean` the best mean
   score across members; ties again by `tie_policy`. The ranking puts the chosen candidate first,
   then the others by mean score; an item needs `judge.min_scored` scored candidates. Candidates that
   are no answer (`candidates.problem`) were never judged, so they are never chosen.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from builders.by_item import Input, by_item
from builders.recipe import Judge, Recipe
from builders.tables import CANDIDATES, SCORES, TableWriter, VERDICTS

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


@dataclass(frozen=True)
class View:
    """One judge on one item: each candidate's mean score over the orders that agreed enough,
    whether some group of candidates was inconsistent, and each group's per-order best candidates."""

    scores: dict[str, float]
    flipped: bool
    orders: tuple[tuple[frozenset[str], tuple[frozenset[str], ...]], ...] = ()

    def order_counts(self, chosen: str) -> tuple[int, int]:
        """(orders that showed `chosen`, orders whose own best was `chosen` alone)."""
        shown = [best for group, bests in self.orders if chosen in group for best in bests]
        return len(shown), sum(best == {chosen} for best in shown)


def judge_view(calls: list[list[dict]], judge: Judge) -> View:
    """The view of one judge's calls on one item; `calls` holds each call's ok rows."""
    by_set: dict[frozenset, list[list[dict]]] = defaultdict(list)
    for rows in calls:
        by_set[frozenset(r["candidate_id"] for r in rows)].append(rows)
    kept: dict[str, list[float]] = defaultdict(list)
    flipped, orders = False, []
    for group, shown in by_set.items():
        scores: dict[str, list[float]] = defaultdict(list)
        for rows in shown:
            for r in rows:
                scores[r["candidate_id"]].append(r["score"])
        best = frozenset(_best({cid: mean(v) for cid, v in scores.items()}))
        bests = tuple(frozenset(_best({r["candidate_id"]: r["score"] for r in rows})) for rows in shown)
        orders.append((group, bests))
        if not judge.orders_agree(sum(b == best for b in bests), len(bests)):
            flipped = True
            continue
        for cid, v in scores.items():
            kept[cid] += v
    return View({cid: mean(v) for cid, v in kept.items()}, flipped, tuple(orders))


def _verdict(recipe: Recipe, item_id: str, candidates: list[dict], views: dict[str, View]) -> dict:
    j = recipe.judge
    iteration = {c["candidate_id"]: c["iteration"] for c in candidates}
    per_candidate: dict[str, list[float]] = defaultdict(list)
    votes: list[str] = []
    tied_judges = 0  # judges whose best score was shared by several candidates
    for scores in (v.scores for v in views.values()):
        for cid, s in scores.items():
            per_candidate[cid].append(s)
        if scores:
            best = _best(scores)
            tied_judges += len(best) > 1
            vote = prefer(best, j.tie_policy, iteration)
            if vote is not None:
                votes.append(vote)
    means = {cid: mean(v) for cid, v in per_candidate.items()}
    n_inconsistent = sum(v.flipped and not v.scores for v in views.values())
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
    counted = [v.order_counts(chosen) for v in views.values() if chosen and chosen in v.scores]
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
        "n_orders": sum(n for n, _ in counted),
        "n_orders_agreeing": sum(k for _, k in counted),
        "status": status,
    }


def item_verdict(recipe: Recipe, item_id: str, candidates: list[dict], scores: list[dict]) -> dict:
    """The verdict of one item from its candidates and its score rows (each call's rows together)."""
    voters = recipe.judge.voters
    calls: dict[str, dict[str, list[dict]]] = {judge: {} for judge in voters}
    for row in scores:
        if row["outcome"] == "ok" and row["judge"] in calls:
            calls[row["judge"]].setdefault(row["call_id"], []).append({"candidate_id": row["candidate_id"], "score": row["score"]})
    views = {judge: judge_view(list(calls[judge].values()), recipe.judge) for judge in voters}
    return _verdict(recipe, item_id, candidates, views)


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    inputs = by_item(data_dir, ["item_id"], candidates=Input(CANDIDATES, ["candidate_id", "iteration"]),
                     scores=Input(SCORES, ["call_id", "candidate_id", "judge", "score", "outcome"]))
    with TableWriter(VERDICTS, data_dir) as out:
        for item, rows in inputs:
            if rows["candidates"]:
                out.write([item_verdict(recipe, item["item_id"], rows["candidates"], rows["scores"])])
