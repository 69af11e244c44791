"""Checks on the exports before they leave the project: TRL's column contracts and preference sanity.

TRL's explicit-prompt preference format (DPOTrainer) wants `prompt`, `chosen` and `rejected`, with
the prompt given once, not repeated at the start of the answers; its unpaired format (KTOTrainer)
wants `prompt`, `completion` and a boolean `label`. In TRL's standard format they are non-empty
strings. In its conversational format (`builders.trl_format`) each is a list of `{role, content}`
messages, the shape `trl.data_utils.is_conversational` recognises: every role one of `system`,
`user`, `assistant`, every content non-empty; the prompt ends with the user's turn and each answer
is exactly one assistant turn. A pair whose two answers are the same text teaches nothing. Each
problem names the table and row. The checks run on the frame that is published, in either format.
"""

from __future__ import annotations

import polars as pl

from builders.conversation import MESSAGES

TRL_COLUMNS = {"dpo": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion")}
ROLES = ("system", "user", "assistant")


def _message_problem(column: str, messages: list[dict] | None) -> str | None:
    """Why one conversational cell breaks TRL's contract, or None."""
    if not messages:
        return f"has an empty `{column}` (no messages)"
    for i, m in enumerate(messages):
        if m["role"] not in ROLES:
            return f"`{column}` message {i} has role {m['role']!r} (TRL's roles: {', '.join(ROLES)})"
        if m["content"] is None or not m["content"].strip():
            return f"`{column}` message {i} has an empty content"
    if column == "prompt":
        if messages[-1]["role"] != "user":
            return f"`prompt` ends with a {messages[-1]['role']} turn, not the user's"
    elif len(messages) != 1 or messages[0]["role"] != "assistant":
        return f"`{column}` must be one assistant turn (got {[m['role'] for m in messages]})"
    return None


def _conversational_problems(name: str, df: pl.DataFrame, columns: tuple[str, ...]) -> list[str]:
    problems = []
    for column in columns:
        found = [(row, p) for row, cell in enumerate(df[column].to_list()) if (p := _message_problem(column, cell))]
        if found:
            problems.append(f"{name}: row {found[0][0]} {found[0][1]} ({len(found)} rows in all)")
    return problems


def _as_text(df: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    """The conversational columns as text (the last message's content), for the checks on content."""
    return df.with_columns(pl.col(c).list.last().struct.field("content").alias(c) for c in columns)


def _shape_problems(name: str, df: pl.DataFrame, columns: tuple[str, ...]) -> tuple[list[str], pl.DataFrame]:
    """(contract problems, the frame with its TRL columns as text) for either of TRL's formats."""
    kinds = {df.schema.get(c) == MESSAGES for c in columns}
    if kinds == {True}:
        return _conversational_problems(name, df, columns), _as_text(df, columns)
    if any(df.schema.get(c) == MESSAGES for c in columns):
        return [f"{name}: columns {', '.join(f'`{c}`' for c in columns)} mix TRL's conversational and standard formats"], df
    return _text_problems(name, df, columns), df


def _text_problems(name: str, df: pl.DataFrame, columns: tuple[str, ...]) -> list[str]:
    problems = []
    for column in columns:
        if df.schema.get(column) != pl.String:
            problems.append(f"{name}: column `{column}` must be text (TRL's column contract)")
            continue
        empty = df.with_row_index("row").filter(pl.col(column).is_null() | (pl.col(column).str.strip_chars() == ""))
        if empty.height:
            problems.append(f"{name}: row {empty['row'][0]} has an empty `{column}` ({empty.height} rows in all)")
    return problems


def standard_problems(name: str, stored: pl.DataFrame) -> list[str]:
    """A stored export table's prompts that TRL's standard format cannot hold: conversations (a
    system message or earlier turns), which only the conversational format keeps whole."""
    if "messages" not in stored.columns:
        return []
    long = stored.with_row_index("row").filter(pl.col("messages").list.len() > 1)
    if not long.height:
        return []
    return [f"{name}: row {long['row'][0]}: the prompt is a conversation of {long['messages'][0].len()} messages "
            f"(a system message or earlier turns), which TRL's standard format cannot hold; set export.format: "
            f"conversational ({long.height} rows in all)"]


def _repeated_prompt(name: str, df: pl.DataFrame, answers: tuple[str, ...]) -> list[str]:
    problems = []
    rows = df.with_row_index("row")
    for column in answers:
        repeated = rows.filter(
            pl.col("prompt").str.strip_chars().str.len_chars() > 0,
            pl.col(column).str.strip_chars_start().str.starts_with(pl.col("prompt").str.strip_chars()),
        )
        if repeated.height:
            problems.append(
                f"{name}: row {repeated['row'][0]}: `{column}` starts with the prompt; TRL adds the prompt itself "
                f"({repeated.height} rows in all)"
            )
    return problems


def dpo_problems(df: pl.DataFrame, name: str = "dpo") -> list[str]:
    problems, df = _shape_problems(name, df, TRL_COLUMNS["dpo"])
    if problems:
        return problems
    same = df.with_row_index("row").filter(pl.col("chosen") == pl.col("rejected"))
    if same.height:
        problems.append(f"{name}: row {same['row'][0]}: `chosen` and `rejected` are the same text ({same.height} rows in all)")
    return problems + _repeated_prompt(name, df, ("chosen", "rejected"))


def kto_problems(df: pl.DataFrame, name: str = "kto") -> list[str]:
    problems, df = _shape_problems(name, df, TRL_COLUMNS["kto"])
    if df.schema.get("label") != pl.Boolean:
        problems.append(f"{name}: column `label` must be boolean (TRL's column contract)")
    elif df["label"].null_count():
        problems.append(f"{name}: {df['label'].null_count()} rows have no `label`")
    return problems or _repeated_prompt(name, df, ("completion",))


def kto_balance(df: pl.DataFrame) -> dict:
    """Desirable and undesirable counts. TRL's KTOTrainer docs ask for weights that keep
    desirable_weight * n_desirable / (undesirable_weight * n_undesirable) within [1, 4/3]; with
    desirable_weight 1, `undesirable_weight` = n_desirable / n_undesirable puts it at 1."""
    desirable = int(df["label"].sum()) if df.height else 0
    undesirable = df.height - desirable
    out = {"desirable": desirable, "undesirable": undesirable, "ratio": None, "undesirable_weight": None}
    if desirable and undesirable:
        out["ratio"] = out["undesirable_weight"] = round(desirable / undesirable, 4)
    return out
