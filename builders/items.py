"""Builder: source dataset -> `items`: one row per distinct prompt, or per row of a labelled benchmark
(where the same question comes back with other pairs of answers), keyed by the row's own id."""

from __future__ import annotations

from pathlib import Path


from builders.errors import RecipeError
from builders.recipe import Recipe
from builders.sources import prompt_text, read_source
from builders.tables import ITEMS, content_id, frame, write_table

READS: tuple[str, ...] = ()
WRITES = ("items",)


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    s = recipe.source
    df = read_source(recipe).with_row_index("source_row")
    if s.sample is not None and s.sample < df.height:
        df = df.sample(n=s.sample, seed=s.seed, shuffle=False).sort("source_row")
    rows, seen = [], set()
    for row in df.iter_rows(named=True):
        prompt = prompt_text(row[s.prompt_column])
        if prompt is None or not prompt.strip():
            raise RecipeError(
                f"{recipe.path}: source row {row['source_row']} of {s.where()}: "
                f"column '{s.prompt_column}' holds no prompt text "
                "(expected a string or a list of chat messages with a user turn)"
            )
        source_id = row[s.id_column] if s.id_column else None
        if s.labelled and source_id is None:
            raise RecipeError(f"{recipe.path}: source row {row['source_row']} of {s.where()}: no id in column '{s.id_column}'")
        item_id = str(source_id) if s.labelled else content_id(prompt)
        if item_id in seen:
            if s.labelled:
                raise RecipeError(
                    f"{recipe.path}: source row {row['source_row']} of {s.where()}: "
                    f"id '{item_id}' in column '{s.id_column}' is used by an earlier row"
                )
            continue
        seen.add(item_id)
        rows.append({
            "item_id": item_id,
            "prompt": prompt,
            "source_row": row["source_row"],
            "source_id": None if source_id is None else str(source_id),
        })
    write_table(ITEMS, frame(ITEMS, rows), data_dir)
