"""Checks on the exports before they leave the project: TRL's column contracts and preference sanity.

TRL's explicit-prompt preference format (DPOTrainer) wants `prompt`, `chosen` and `rejected` as
non-empty strings, with the prompt given once, not repeated at the start of the answers; its
unpaired format (KTOTrainer) wants `prompt`, `completion` and a boolean `label`. A pair whose two
answers are the same text teaches nothing. Each problem names the table and row.
"""

from __future__ import annotations

import polars as pl

TRL_COLUMNS = {"dpo": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion")}


def _text_problems(name: str, df: pl.DataFrame) -> list[str]:
    problems = []
    for column in TRL_COLUMNS[name]:
        if df.schema.get(column) != pl.String:
            problems.append(f"{name}: column `{column}` must be text (TRL's column contract)")
            continue
        empty = df.with_row_index("row").filter(pl.col(column).is_null() | (pl.col(column).str.strip_chars() == ""))
        if empty.height:
            problems.append(f"{name}: row {empty['row'][0]} has an empty `{column}` ({empty.height} rows in all)")
    return problems


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


def dpo_problems(df: pl.DataFrame) -> list[str]:
    problems = _text_problems("dpo", df)
    if problems:
        return problems
    same = df.with_row_index("row").filter(pl.col("chosen") == pl.col("rejected"))
    if same.height:
        problems.append(f"dpo: row {same['row'][0]}: `chosen` and `rejected` are the same text ({same.height} rows in all)")
    return problems + _repeated_prompt("dpo", df, ("chosen", "rejected"))


def kto_problems(df: pl.DataFrame) -> list[str]:
    problems = _text_problems("kto", df)
    if df.schema.get("label") != pl.Boolean:
        problems.append("kto: column `label` must be boolean (TRL's column contract)")
    elif df["label"].null_count():
        problems.append(f"kto: {df['label'].null_count()} rows have no `label`")
    return problems or _repeated_prompt("kto", df, ("completion",))


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
