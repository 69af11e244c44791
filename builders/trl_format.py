"""TRL's two dataset formats, and how a stored export table becomes the one its recipe publishes.

The `dpo` and `kto` tables store `prompt`, `chosen`, `rejected` and `completion` as text whatever
`export.format` says: `fellowship sql` unions every recipe's table by column name, and a column that
is text in one recipe and a message list in another would break those views. What leaves the project
(the Hub folder `fellowship publish` writes, which users load with `datasets`) has TRL's column names
in the recipe's format:

- `standard`: the columns as stored, strings (a prompt that is a conversation has no text form in
  it: `builders.export_checks.standard_problems` refuses those);
- `conversational` (the default, TRL's recommendation with an explicit prompt): `prompt` a list of
  `{role, content}` messages ending with the user's turn (the whole conversation: the stored
  `messages`), `chosen`, `rejected` and `completion` a list holding the assistant's turn, the shape
  TRL's `is_conversational` recognises.

The stored `messages` column is not published under its own name: TRL reads a `messages` column as a
language-modelling conversation.
"""

from __future__ import annotations

import polars as pl

from builders.conversation import MESSAGES
ANSWERS = {"dpo": ("chosen", "rejected"), "kto": ("completion",), "dpo_feedback": ("chosen", "rejected"),
           "kto_feedback": ("completion",)}


def _turn(role: str, column: str) -> pl.Expr:
    return pl.concat_list(pl.struct(pl.lit(role).alias("role"), pl.col(column).alias("content"))).alias(column)


def _prompt(df: pl.DataFrame) -> pl.Expr:
    """The prompt as messages: the stored conversation (`dpo`, `kto`), or the `system` column's
    message then the user's (the feedback tables: the reviewer's system prompt and message)."""
    if "messages" in df.columns:
        return pl.col("messages").alias("prompt")
    user = pl.struct(pl.lit("user").alias("role"), pl.col("prompt").alias("content"))
    if "system" not in df.columns:
        return pl.concat_list(user).alias("prompt")
    system = pl.struct(pl.lit("system").alias("role"), pl.col("system").alias("content"))
    return pl.concat_list(system, user).alias("prompt")


def trl_frame(name: str, df: pl.DataFrame, fmt: str) -> pl.DataFrame:
    """The published form of export table `name` in TRL's format `fmt` (the same columns in the same
    order, but `messages`, which conversational `prompt` carries).
    A table with a `system` column puts it in the prompt: as its first message (conversational) or
    ahead of the text, separated by a blank line (standard, which has no system role)."""
    if fmt == "standard":
        if "system" in df.columns:
            return df.with_columns(pl.concat_str(pl.col("system"), pl.lit("\n\n"), pl.col("prompt")).alias("prompt"))
        return df.drop("messages", strict=False)
    return df.with_columns(_prompt(df), *(_turn("assistant", c) for c in ANSWERS[name])).cast(
        {c: MESSAGES for c in ("prompt", *ANSWERS[name])}).drop("messages", strict=False)
