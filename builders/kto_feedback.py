"""Builder: verdicts + candidates -> `kto_feedback` examples (pure): the review whose revision the judge
ranked first is desirable, each review that led to a lower-scored revision not (see
builders/feedback_preferences.py); interleaved as TRL's KTOTrainer reads them."""

from __future__ import annotations

from pathlib import Path

from builders.feedback_preferences import Review, feedback_preferences
from builders.gate import check_gate
from builders.preferences import lineage, write_interleaved
from builders.recipe import Recipe
from builders.tables import KTO_FEEDBACK, content_id

READS = ("items", "candidates", "verdicts")
WRITES = ("kto_feedback",)


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    check_gate(recipe, data_dir, KTO_FEEDBACK.path(data_dir))
    about = lineage(recipe)
    rows = (
        _example(p.item_id, r, label, about)
        for p in feedback_preferences(recipe, data_dir)
        for r, label in [(p.chosen, True)] + [(r, False) for r in p.rejected]
    )
    write_interleaved(KTO_FEEDBACK, data_dir, rows, recipe.export.seed)


def _example(item_id: str, r: Review, label: bool, about: dict) -> dict:
    return {
        "example_id": content_id("feedback", r.reviewed_id),
        "item_id": item_id,
        "system": r.system,
        "prompt": r.prompt,
        "completion": r.review,
        "label": label,
        "reviewed_id": r.reviewed_id,
        "revision_id": r.revision_id,
        "iteration": r.iteration,
        "score": r.score,
        "reviewer": r.reviewer,
        **about,
    }
