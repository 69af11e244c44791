"""Builder: a benchmark's human winners -> `labels` (pure; empty unless `source.label_column` is set).

Each labelled row names the winner between its two imported answers: `model_a` (the first answer),
`model_b` (the second) or `tie`. The meta-evaluation compares judges with these labels.
"""

from __future__ import annotations

from pathlib import Path

from builders.errors import RecipeError
from builders.recipe import Recipe
from builders.sources import read_source
from builders.tables import CANDIDATES, HUMAN_WINNERS, ITEMS, LABELS, frame, read_table, write_table

READS = ("items", "candidates")
WRITES = ("labels",)


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    s = recipe.source
    rows = []
    if s.labelled:
        winners = read_source(recipe)[s.label_column]
        pairs = {
            item_id: group.sort("iteration")
            for (item_id,), group in read_table(CANDIDATES, data_dir).group_by("item_id")
        }
        for item_id, source_row in read_table(ITEMS, data_dir).select("item_id", "source_row").iter_rows():
            winner = winners[source_row]
            if winner not in HUMAN_WINNERS:
                raise RecipeError(
                    f"{recipe.path}: source row {source_row} of {s.where()}: column '{s.label_column}' holds "
                    f"{winner!r}, expected one of {', '.join(HUMAN_WINNERS)}"
                )
            a, b = pairs[item_id].to_dicts()
            rows.append({
                "item_id": item_id,
                "candidate_a": a["candidate_id"],
                "candidate_b": b["candidate_id"],
                "model_a": a["generator"],
                "model_b": b["generator"],
                "human_winner": winner,
            })
    write_table(LABELS, frame(LABELS, rows), data_dir)
