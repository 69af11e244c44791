"""Builder: source dataset -> `items`: one row per distinct prompt, or per row of a labelled benchmark
(where the same question comes back with other pairs of answers), keyed by the row's own id.

A chat prompt column keeps the whole conversation (`messages`: system message, earlier turns, the
user's last turn); `prompt` is that last turn as text. `source.reference_column` gives each item its
reference answer: a text column, or the prompt column itself when its conversations end with the
reference assistant turn. With `source.turns: all`, a later turn of a multi-turn benchmark is judged
after each model's own earlier answers, so its item has no shared conversation (`messages` null; the
imported candidates carry theirs)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from builders.conversation import conversation
from builders.errors import RecipeError
from builders.key_set import KeySet
from builders.recipe import Recipe
from builders.sources import column, open_source
from builders.tables import ITEMS, TableWriter, content_id

READS: tuple[str, ...] = ()
WRITES = ("items",)


def _bad_row(recipe: Recipe, field: str, row: int, problem: str) -> RecipeError:
    return RecipeError(f"{recipe.path}: source.{field}: source row {row} of {recipe.source.where()}: {problem}")


def _prompt(recipe: Recipe, row: dict) -> tuple[str, list[dict] | None, str | None]:
    """(last user turn, the conversation before the answers or None, reference taken from it) of one row."""
    s = recipe.source
    if s.turns == "all" and (row["turn"] or 1) > 1:
        turns = row["turns"] or []
        if len(turns) < row["turn"] or not isinstance(turns[row["turn"] - 1], str):
            raise _bad_row(recipe, "turns", row["source_row"], f"column 'turns' holds {len(turns)} user turns, row judges turn {row['turn']}")
        return turns[row["turn"] - 1], None, None
    try:
        messages, reference = conversation(row[s.prompt_column], reference_last=s.reference_column == s.prompt_column)
    except ValueError as e:
        raise _bad_row(recipe, "prompt_column", row["source_row"], f"column '{s.prompt_column}' {e}") from None
    return messages[-1]["content"], messages, reference


def _reference(recipe: Recipe, value: object, row: int) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None  # this row has no reference: its judges grade without one
    if not isinstance(value, str):
        raise _bad_row(recipe, "reference_column", row, f"column '{recipe.source.reference_column}' holds "
                       f"{type(value).__name__}, not a reference answer's text")
    return value


def _sampled_rows(recipe: Recipe, height: int) -> set[int] | None:
    """The source rows `source.sample` keeps (polars' sample of the row numbers under the seed), or None for all."""
    s = recipe.source
    if s.sample is None or s.sample >= height:
        return None
    return set(pl.int_range(height, eager=True, dtype=pl.Int64).sample(n=s.sample, seed=s.seed, shuffle=False).to_list())


def _item_rows(recipe: Recipe, batch: pl.DataFrame, seen: KeySet) -> list[dict]:
    s = recipe.source
    own_reference = s.reference_column is not None and s.reference_column != s.prompt_column
    references = column(batch, s.reference_column).to_list() if own_reference else None
    rows = []
    for k, row in enumerate(batch.iter_rows(named=True)):
        prompt, messages, reference = _prompt(recipe, row)
        if own_reference:
            reference = _reference(recipe, references[k], row["source_row"])
        source_id = row[s.id_column] if s.id_column else None
        if s.labelled and source_id is None:
            raise RecipeError(f"{recipe.path}: source row {row['source_row']} of {s.where()}: no id in column '{s.id_column}'")
        single = messages is not None and len(messages) == 1
        item_id = str(source_id) if s.labelled else content_id(prompt) if single else content_id(messages)
        if not seen.add(item_id):
            if s.labelled:
                raise RecipeError(
                    f"{recipe.path}: source row {row['source_row']} of {s.where()}: "
                    f"id '{item_id}' in column '{s.id_column}' is used by an earlier row"
                )
            continue
        rows.append({
            "item_id": item_id,
            "prompt": prompt,
            "messages": messages,
            "reference": reference,
            "source_row": row["source_row"],
            "source_id": None if source_id is None else str(source_id),
        })
    return rows


def build(recipe: Recipe, data_dir: Path, **_) -> None:
    """The items, a batch of source rows at a time (`open_source`), in the source's order."""
    height, batches = open_source(recipe)
    sampled, seen = _sampled_rows(recipe, height), KeySet()
    with TableWriter(ITEMS, data_dir) as out:
        for batch in batches:
            if sampled is not None:
                batch = batch.filter(pl.col("source_row").is_in(sampled))
            out.write(_item_rows(recipe, batch, seen))
