"""Builder: a comparison recipe's baseline answers -> `baselines` (pure; empty without `compare`).

Each `compare.baselines` entry names a source column holding one baseline's answers to the same
prompts (for example the Capybara prompts' `responses.gpt-4o`)."""

from __future__ import annotations

from pathlib import Path

from builders.errors import RecipeError
from builders.recipe import Recipe
from builders.sources import column, read_source
from builders.tables import BASELINES, ITEMS, content_id, frame, read_table, write_table

READS = ("items",)
WRITES = ("baselines",)


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    rows = []
    if recipe.compare:
        source = read_source(recipe)
        items = read_table(ITEMS, data_dir)
        for k, baseline in enumerate(recipe.compare.baselines):
            answers = column(source, baseline.column)
            for item_id, source_row in items.select("item_id", "source_row").iter_rows():
                text = answers[source_row]
                if text is None:
                    raise RecipeError(
                        f"{recipe.path}: source row {source_row} of {recipe.source.where()}: column "
                        f"'{baseline.column}' is empty (compare.baselines[{k}])"
                    )
                rows.append({
                    "baseline_id": content_id(item_id, "baseline", baseline.model),
                    "item_id": item_id,
                    "baseline": baseline.model,
                    "response": str(text),
                })
    write_table(BASELINES, frame(BASELINES, rows), data_dir)
