"""Builder: verdicts -> `kto` examples (pure). The chosen answer is desirable, each rejected one not;
the rows are interleaved as TRL's KTOTrainer wants them, a window of rows at a time
(`builders.preferences.interleaved`)."""

from __future__ import annotations

from pathlib import Path

from builders.gate import check_gate
from builders.preferences import Preference, lineage, preferences, side, write_interleaved
from builders.recipe import Recipe
from builders.tables import KTO, content_id

READS = ("items", "candidates", "verdicts")
WRITES = ("kto",)


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    check_gate(recipe, data_dir, KTO.path(data_dir))
    about = lineage(recipe)
    rows = (
        _example(p, c, label, about)
        for p in preferences(recipe, data_dir)
        for c, label in [(p.chosen, True)] + [(r, False) for r in p.rejected]
    )
    write_interleaved(KTO, data_dir, rows, recipe.export.seed)


def _example(p: Preference, c: dict, label: bool, about: dict) -> dict:
    return {
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
    }
