"""Builder: verdicts + candidates -> `dpo_feedback` pairs (pure): the reviewer's best review against
each review that led to a lower-scored revision (see builders/feedback_preferences.py)."""

from __future__ import annotations

from pathlib import Path

from builders.feedback_preferences import Review, feedback_preferences
from builders.gate import check_gate
from builders.preferences import lineage
from builders.recipe import Recipe
from builders.tables import DPO_FEEDBACK, TableWriter, content_id

READS = ("items", "candidates", "verdicts")
WRITES = ("dpo_feedback",)


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    check_gate(recipe, data_dir, DPO_FEEDBACK.path(data_dir))
    about = lineage(recipe)
    with TableWriter(DPO_FEEDBACK, data_dir) as out:
        for p in feedback_preferences(recipe, data_dir):
            out.write([_pair(p.item_id, p.chosen, r, about) for r in p.rejected])


def _pair(item_id: str, c: Review, r: Review, about: dict) -> dict:
    return {
        "pair_id": content_id("feedback", c.reviewed_id, r.reviewed_id),
        "item_id": item_id,
        "system": c.system,
        "prompt": c.prompt,
        "chosen": c.review,
        "rejected": r.review,
        "rejected_prompt": r.prompt,
        "chosen_reviewed_id": c.reviewed_id,
        "rejected_reviewed_id": r.reviewed_id,
        "chosen_revision_id": c.revision_id,
        "rejected_revision_id": r.revision_id,
        "chosen_iteration": c.iteration,
        "rejected_iteration": r.iteration,
        "chosen_score": c.score,
        "rejected_score": r.score,
        "margin": c.score - r.score,
        "reviewer": c.reviewer,
        **about,
    }
