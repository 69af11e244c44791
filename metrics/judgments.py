"""From the `scores` and `labels` tables to each judge's label per benchmark item.

Per judge, item and presentation order: the label is `A` when model_a's answer scored higher, `B`
when model_b's did, `TIE` when equal (direct picks score 1, 0.5 and 0, so they read the same way;
independent scoring compares the two separate calls). Across the orders, as MT-Bench does: a label
that flips when the answers are swapped becomes `TIE`, and the judge is counted as flipped. A judge
with no parsed score for one of the two answers has no label there (`MISSING`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from metrics.agreement import A, B, MISSING, TIE, encode

ORDERS = 2  # presentation 0 and its swap


@dataclass(frozen=True)
class Judgments:
    items: list[str]  # labels' item ids, in table order
    human: np.ndarray  # (n,) human label codes
    model_a: np.ndarray  # (n,) writer of the first answer
    model_b: np.ndarray
    length_a: np.ndarray  # (n,) characters of each answer
    length_b: np.ndarray
    judges: list[str]
    by_order: np.ndarray  # (judges, ORDERS, n) label from each presentation alone, MISSING if absent
    order_margin: np.ndarray  # (judges, ORDERS, n) (score_a - score_b) / scale in each order, NaN if absent
    margin: np.ndarray  # (judges, n) mean of order_margin over consistent orders; 0 if flipped; NaN if none
    final: np.ndarray  # (judges, n) label after both orders

    @property
    def n(self) -> int:
        return len(self.items)

    def judge(self, name: str) -> int:
        return self.judges.index(name)


def combine_orders(by_order: np.ndarray) -> np.ndarray:
    """(..., ORDERS, n) per-order labels -> (..., n): equal or single labels stand, a flip is `TIE`."""
    first, second = by_order[..., 0, :], by_order[..., 1, :]
    out = np.where(first == MISSING, second, first)
    flipped = (first != MISSING) & (second != MISSING) & (first != second)
    return np.where(flipped, TIE, out).astype(np.int8)


def flips(by_order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flipped, both): items whose label changed with the order, and items judged in both orders."""
    first, second = by_order[..., 0, :], by_order[..., 1, :]
    both = (first != MISSING) & (second != MISSING)
    return both & (first != second), both


def labels_by_order(rows: pl.DataFrame, judges: list[str], index: dict[str, int]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From rows (judge, key, presentation, diff = first answer's score - second's, both orders of a
    pair sharing the key) to (by_order labels, per-order diff, margin, final labels), each with one
    row per judge and one column per key of `index`."""
    n = len(index)
    by_order = np.full((len(judges), ORDERS, n), MISSING, dtype=np.int8)
    diff = np.full((len(judges), ORDERS, n), np.nan)
    if rows.height:
        j = np.array([judges.index(x) for x in rows["judge"]], dtype=np.int64)
        i = np.array([index[x] for x in rows["key"]], dtype=np.int64)
        p = np.clip(rows["presentation"].to_numpy(), 0, ORDERS - 1)
        d = rows["diff"].to_numpy().astype(float)
        diff[j, p, i] = d
        by_order[j, p, i] = np.where(d > 0, A, np.where(d < 0, B, TIE))
    flipped, _ = flips(by_order)
    seen = (~np.isnan(diff)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_diff = np.where(seen > 0, np.nansum(diff, axis=1) / np.maximum(seen, 1), np.nan)
    return by_order, diff, np.where(flipped, 0.0, mean_diff), combine_orders(by_order)


def judgments(labels: pl.DataFrame, candidates: pl.DataFrame, scores: pl.DataFrame, judges: list[str]) -> Judgments:
    """Every judge's labels over the labelled items (rows of `labels`, in order)."""
    item_index = {item: i for i, item in enumerate(labels["item_id"])}
    side = pl.concat([
        labels.select("item_id", pl.col("candidate_a").alias("candidate_id"), pl.lit(0).alias("side")),
        labels.select("item_id", pl.col("candidate_b").alias("candidate_id"), pl.lit(1).alias("side")),
    ])
    ok = (
        scores.filter(pl.col("outcome") == "ok", pl.col("judge").is_in(judges))
        .join(side, on=["item_id", "candidate_id"])
        .with_columns(pl.col("presentation").clip(0, ORDERS - 1))
        .group_by("judge", "item_id", "presentation", "side")
        .agg((pl.col("score") / pl.col("scale")).mean().alias("score"))
        .pivot(on="side", index=["judge", "item_id", "presentation"], values="score")
    )
    if ok.height and {"0", "1"} <= set(ok.columns):
        ok = ok.drop_nulls(["0", "1"]).with_columns((pl.col("0") - pl.col("1")).alias("diff"))
    else:
        ok = pl.DataFrame(schema={"judge": pl.String, "item_id": pl.String, "presentation": pl.Int64, "diff": pl.Float64})
    by_order, diff, margin, final = labels_by_order(ok.rename({"item_id": "key"}), judges, item_index)
    lengths = dict(zip(candidates["candidate_id"], candidates["response"].str.len_chars()))
    return Judgments(
        items=list(labels["item_id"]),
        human=encode(labels["human_winner"].to_list()),
        model_a=labels["model_a"].to_numpy().astype(str),
        model_b=labels["model_b"].to_numpy().astype(str),
        length_a=np.array([lengths[c] for c in labels["candidate_a"]], dtype=np.int64),
        length_b=np.array([lengths[c] for c in labels["candidate_b"]], dtype=np.int64),
        judges=list(judges),
        by_order=by_order,
        order_margin=diff,
        margin=margin,
        final=final,
    )
