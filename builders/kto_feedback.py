"""Builder: verdicts + candidates -> `kto_feedback` examples (pure): the review whose revision the judge
ranked first is desirable, each review that led to a lower-scored revision not (see
builders/feedback_preferences.py); interleaved as TRL's KTOTrainer reads them."""

from __future__ import annotations

from pathlib import Path

from builders.feedback_preferences import feedback_preferences
from builders.gate import check_gate
from builders.preferences import interleave, lineage
from builders.recipe import Recipe
from builders.tables import KTO_FEEDBACK, content_id, frame, write_table

READS = ("items", "candidates", "verdicts")
WRITES = ("kto_feedback",)


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    check_gate(recipe, data_dir, KTO_FEEDBACK.path(data_dir))
    about = lineage(recipe)
    rows = []
    for p in feedback_preferences(recipe, data_dir):
        for r, label in [(p.chosen, True)] + [(r, False) for r in p.rejected]:
            rows.append({
                "example_id": content_id("feedback", r.reviewed_id),
                "item_id": p.item_id,
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
            })
    write_table(KTO_FEEDBACK, frame(KTO_FEEDBACK, interleave(rows, recipe.export.seed)), data_dir)
