"""Builder: verdicts -> `dpo` pairs (pure). Best vs each rejected, or best vs worst (`export.pairing`)."""

from __future__ import annotations

from pathlib import Path

from builders.gate import check_gate
from builders.preferences import Preference, lineage, preferences, side
from builders.recipe import Recipe
from builders.tables import DPO, TableWriter, content_id

READS = ("items", "candidates", "verdicts")
WRITES = ("dpo",)


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    check_gate(recipe, data_dir, DPO.path(data_dir))
    about = lineage(recipe)
    with TableWriter(DPO, data_dir) as out:
        for p in preferences(recipe, data_dir):
            out.write(_pairs(recipe, p, about))


def _pairs(recipe: Recipe, p: Preference, about: dict) -> list[dict]:
    rows = []
    rejected = p.rejected[-1:] if recipe.export.pairing == "best_vs_worst" else p.rejected
    for r in rejected:
        c = p.chosen
        rows.append({
            "pair_id": content_id(c["candidate_id"], r["candidate_id"]),
            "item_id": p.item_id,
            "prompt": p.prompt,
            "messages": p.messages,
            "chosen": c["response"],
            "rejected": r["response"],
            "chosen_id": c["candidate_id"],
            "rejected_id": r["candidate_id"],
            "chosen_score": c["score"],
            "rejected_score": r["score"],
            "margin": c["score"] - r["score"],
            **side(c, "chosen_"),
            **side(r, "rejected_"),
            **about,
        })
    return rows
