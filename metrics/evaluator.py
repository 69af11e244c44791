"""One evaluator (a judge, or a jury of judges under a rule) measured against the human labels,
every figure with a paired bootstrap 95% interval."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metrics import bootstrap
from metrics.agreement import A, B, MISSING, TIE, kappa_from_confusion, model_agreement_parts, pair_codes, ratio
from metrics.judgments import Judgments, flips
from metrics.jury import combine


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float


def _ratio(w: np.ndarray, num: np.ndarray, den: np.ndarray) -> Estimate:
    value = float(ratio(num.sum(), den.sum()))
    return Estimate(value, *bootstrap.ratio_interval(w, num, den))


def labels_of(j: Judgments, members: tuple[str, ...], rule: str) -> tuple[np.ndarray, np.ndarray]:
    """(final labels (n,), labels from each order alone (ORDERS, n)) of a jury of `members`."""
    rows = [j.judge(m) for m in members]
    final = combine(j.final[rows], j.margin[rows], rule)
    by_order = np.stack([
        combine(j.by_order[rows, p], j.order_margin[rows, p], rule) for p in range(j.by_order.shape[1])
    ])
    return final, by_order


def longer_wins(j: Judgments, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(num, den): items with a winner and answers of different lengths; the longer answer won."""
    picked = (labels == A) | (labels == B)
    differ = j.length_a != j.length_b
    longer_a = j.length_a > j.length_b
    won_longer = ((labels == A) & longer_a) | ((labels == B) & ~longer_a)
    den = picked & differ
    return (den & won_longer).astype(np.float64), den.astype(np.float64)


def position_advantage(j: Judgments, members: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(num, den) per item: the first-shown answer's score minus the second's, as a share of the
    scale, summed over members and orders (num), and how many (member, order) pairs scored it (den).
    Their ratio is the position bias: 0 for a judge the order does not sway, +1 for one that always
    gives the first answer full marks and the second none."""
    rows = [j.judge(m) for m in members]
    first_minus_second = j.order_margin[rows] * np.array([1.0, -1.0])[None, :, None]  # order 1 shows model_b first
    # only items judged in both orders: one order alone (or answers judged one at a time) says which
    # answer was liked, not which place
    seen = ~np.isnan(first_minus_second).any(axis=1, keepdims=True) & ~np.isnan(first_minus_second)
    return np.where(seen, first_minus_second, 0.0).sum(axis=(0, 1)), seen.sum(axis=(0, 1)).astype(np.float64)


def kappa(j: Judgments, labels: np.ndarray, w: np.ndarray) -> Estimate:
    codes = pair_codes(j.human, labels)
    value = float(kappa_from_confusion(np.bincount(codes, minlength=9).reshape(3, 3)))
    return Estimate(value, *bootstrap.kappa_interval(w, codes))


def measure(j: Judgments, members: tuple[str, ...], rule: str, w: np.ndarray) -> dict:
    """Kappa, accuracy, flip rate, position bias and longer-answer win rate of one evaluator, with intervals."""
    labels, by_order = labels_of(j, members, rule)
    flipped, both = flips(by_order)
    return {
        "labels": labels,
        "kappa": kappa(j, labels, w),
        "accuracy": _ratio(w, (j.human == np.where(labels == MISSING, TIE, labels)).astype(np.float64),
                           np.ones(j.n)),
        "flip_rate": _ratio(w, flipped.astype(np.float64), both.astype(np.float64)),
        "position_bias": _ratio(w, *position_advantage(j, members)),
        "longer_wins": _ratio(w, *longer_wins(j, labels)),
        "n_missing": int((labels == MISSING).sum()),
        "n_ties": int((labels == TIE).sum()),
    }


def per_model(j: Judgments, labels: np.ndarray, w: np.ndarray) -> list[dict]:
    """The paper's per-model agreement and bias score, for every model in the benchmark."""
    rows = []
    for model in sorted(set(j.model_a) | set(j.model_b)):
        parts = model_agreement_parts(j.human, labels, j.model_a, j.model_b, model)
        agree = float(ratio(parts["agree_num"].sum(), parts["agree_den"].sum()))
        other = float(ratio(parts["other_num"].sum(), parts["other_den"].sum()))
        sums = {k: bootstrap.resampled_sums(w, v) for k, v in parts.items()}  # each resampled once
        agree_samples = ratio(sums["agree_num"], sums["agree_den"])
        bias_samples = agree_samples - ratio(sums["other_num"], sums["other_den"])
        rows.append({
            "model": model,
            "n_human_prefers": int(parts["agree_den"].sum()),
            "agreement": Estimate(agree, *bootstrap.percentile_interval(agree_samples)),
            "bias": Estimate(agree - other, *bootstrap.percentile_interval(bias_samples)),
        })
    return rows
