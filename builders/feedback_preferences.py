"""What the `dpo_feedback` and `kto_feedback` builders share: preferences over the reviewers' feedback.

The paper builds two kinds of PO datasets: single-model improvement datasets (the `dpo` and `kto`
tables: preferences over the generator's answers) and multi-model improvement datasets, "to improve
... multi-model capabilities including better communication and improved feedback" (its sections 5
and B, from No Robots prompts). The second kind trains the reviewer: its prompt is the reviewer's own
(the paper's Table 12 system prompt and user message, rendered with the question, or the whole
conversation, and the answer it reviewed, exactly as the reviewer saw them), and its completion is
the review it wrote, whose feedback section the generator received.

A review is judged by what it led to. In a feedback-loop build with `iterations` N, the review of
answer k (k = 1 .. N-1) led to revision k+1, and the judge scored that revision in the item's
verdict. For each prompt, the review whose revision the judge ranked first is chosen; each review
whose revision scored strictly lower, by at least `export.min_margin`, is rejected (one DPO pair per
prompt and rejected iteration; one KTO example per review). A revision that is no answer was never
judged: its review is left out, as is every review of an item whose verdict is not ok. The reviews
of one prompt were written on different answers, so a pair's `prompt` is the chosen review's own;
`rejected_prompt` keeps the one the rejected review answered.

Only a feedback loop with one reviewer gives these tables rows: with several reviewers the generator
revises from all their feedback at once, so no revision can be credited to one review.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from builders.by_item import Input, by_item
from builders.generation import reviewer_prompt
from builders.prompts import render
from builders.recipe import Recipe
from builders.tables import CANDIDATES, VERDICTS


@dataclass(frozen=True)
class Review:
    item_id: str
    iteration: int  # of the answer reviewed; the review led to revision iteration + 1
    reviewer: str
    system: str  # the reviewer's system prompt (Table 12)
    prompt: str  # the reviewer's user message, with the question and the answer reviewed
    review: str  # what the reviewer wrote
    reviewed_id: str  # candidate id of the answer reviewed
    revision_id: str  # candidate id of the revision the review led to
    score: float  # the judge's aggregate score of that revision


@dataclass(frozen=True)
class FeedbackPreference:
    item_id: str
    chosen: Review
    rejected: list[Review]  # best first


def feedback_preferences(recipe: Recipe, data_dir: Path) -> Iterator[FeedbackPreference]:
    """The reviews' preference of every item with an ok verdict, in the items' order, an item at a time."""
    g = recipe.generation
    if g.workflow != "feedback" or len(g.reviewers) != 1:
        return
    system = render(recipe, "generation.reviewer_system_prompt")
    candidate_columns = ["candidate_id", "iteration", "response", "problem", "review"]
    inputs = by_item(data_dir, ["item_id", "messages"], candidates=Input(CANDIDATES, candidate_columns), verdicts=VERDICTS)
    for item, rows in inputs:
        for v in rows["verdicts"]:
            if v["status"] == "ok":
                preference = _item_preference(recipe, system, item, rows["candidates"], v)
                if preference is not None:
                    yield preference


def _item_preference(recipe: Recipe, system: str, item: dict, candidates: list[dict], v: dict) -> FeedbackPreference | None:
    g = recipe.generation
    by_step = {c["iteration"]: c for c in candidates}
    rank = {cid: (i, s) for i, (cid, s) in enumerate(zip(v["ranking"], v["ranking_scores"]))}
    reviews = []
    for k in range(1, g.iterations):
        reviewed, revision = by_step.get(k), by_step.get(k + 1)
        if reviewed is None or revision is None or reviewed["review"] is None or revision["candidate_id"] not in rank:
            continue
        if revision["problem"] is not None:
            continue
        reviews.append((rank[revision["candidate_id"]][0], Review(
            v["item_id"], k, g.reviewers[0], system,
            reviewer_prompt(recipe, item["messages"], reviewed["response"]),
            reviewed["review"], reviewed["candidate_id"], revision["candidate_id"], rank[revision["candidate_id"]][1],
        )))
    if not reviews:
        return None
    reviews = [r for _, r in sorted(reviews, key=lambda x: x[0])]  # the verdict's order (its tie policy)
    chosen = reviews[0]
    rejected = [
        r for r in reviews[1:]
        if r.score < chosen.score and chosen.score - r.score >= recipe.export.min_margin and r.review != chosen.review
    ]
    return FeedbackPreference(v["item_id"], chosen, rejected)
