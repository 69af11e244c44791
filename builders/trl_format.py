"""TRL's two dataset formats, and how a stored export table becomes the one its recipe publishes.

The `dpo` and `kto` tables store `prompt`, `chosen`, `rejected` and `completion` as text whatever
`export.format` says: `fellowship sql` unions every recipe's table by column name, and a column that
is text in one recipe and a message list in another would break those views. What leaves the project
(the Hub folder `fellowship publish` writes, which users load with `datasets`) has TRL's column names
in the recipe's format:

- `standard`: the columns as stored, strings;
- `conversational` (the default, TRL's recommendation with an explicit prompt): `prompt` a list of
  `{role, content}` messages ending with the user's turn, `chosen`, `rejected` and `completion` a list
  holding the assistant's turn, the shape TRL's `is_conversational` recognises.
"""

from __future__ import annotations

import polars as pl

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
MESSAGES = pl.List(MESSAGE)
ANSWERS = {"dpo": ("chosen", "rejected"), "kto": ("completion",), "dpo_feedback": ("chosen", "rejected"),
           "kto_feedback": ("completion",)}


def _turn(role: str, column: str) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit(role).alias("role"), pl.col(column).alias("content"))).alias(column)


def trl_frame(name: str, df: pl.DataFrame, fmt: str) -> pl.DataFrame:
    """The published form of export table `name` in TRL's format `fmt` (same columns, same order)."""
    if fmt == "standard":
        return df
    return df.with_columns(_turn("user", "prompt"), *(_turn("assistant", c) for c in ANSWERS[name])).cast(
        {c: MESSAGES for c in ("prompt", *ANSWERS[name])})
