"""Builder: verdicts -> `kto` examples (pure). The chosen answer is desirable, each rejected one not;
the rows are interleaved as TRL's KTOTrainer wants them (`builders.preferences.interleave`)."""

from __future__ import annotations

from pathlib import Path

from builders.gate import check_gate
from builders.preferences import interleave, lineage, preferences, side
from builders.recipe import Recipe
from builders.tables import KTO, content_id, frame, write_table

READS = ("items", "candidates", "verdicts")
WRITES = ("kto",)


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    check_gate(recipe, data_dir, KTO.path(data_dir))
    about = lineage(recipe)
    rows = []
    for p in preferences(recipe, data_dir):
        for c, label in [(p.chosen, True)] + [(r, False) for r in p.rejected]:
            rows.append({
                "example_id": content_id(c["candidate_id"]),
                "item_id": p.item_id,
                "prompt": p.prompt,
                "messages": p.messages,
                "completion": c["response"],
                "label": label,
                "candidate_id": c["candidate_id"],
                "score": c["score"],
                **side(c),
                **about,
            })
    write_table(KTO, frame(KTO, interleave(rows, recipe.export.seed)), data_dir)
