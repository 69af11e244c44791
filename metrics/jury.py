"""Juries: several judges' labels combined into one, and the search over every combination.

`majority`: each member votes its label (`A`, `B` or `TIE`); the most votes win, and a tie for the
most votes is `TIE`. `mean`: the members' mean score margins are averaged and the sign decides.
Members without a label do not vote; an item where no member has one stays `MISSING`.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from metrics.agreement import A, B, MISSING, TIE


def majority(labels: np.ndarray) -> np.ndarray:
    """(members, ...) labels -> (...) plurality label."""
    votes = np.stack([(labels == c).sum(axis=0) for c in (A, B, TIE)])  # (3, ...)
    top = votes.max(axis=0)
    winners = (votes == top).sum(axis=0)
    out = np.where(winners > 1, TIE, votes.argmax(axis=0))
    return np.where(top == 0, MISSING, out).astype(np.int8)


def mean_margin(margins: np.ndarray) -> np.ndarray:
    """(members, n) score margins (NaN: no label) -> (n,) label from their mean's sign."""
    seen = (~np.isnan(margins)).sum(axis=0)
    total = np.nansum(margins, axis=0)
    out = np.where(total > 0, A, np.where(total < 0, B, TIE))
    return np.where(seen == 0, MISSING, out).astype(np.int8)


def combine(labels: np.ndarray, margins: np.ndarray, rule: str) -> np.ndarray:
    """The jury's label per item from its members' labels (majority) or margins (mean)."""
    if rule == "majority":
        return majority(labels)
    if rule == "mean":
        return mean_margin(margins)
    raise ValueError(f"unknown jury rule {rule!r} (expected majority or mean)")


def all_juries(names: list[str], max_size: int | None = None) -> list[tuple[str, ...]]:
    """Every non-empty combination of `names` up to `max_size` members, smallest juries first."""
    top = len(names) if max_size is None else min(max_size, len(names))
    return [combo for size in range(1, top + 1) for combo in combinations(names, size)]
