"""Win rates of one set of answers against another, judged pairwise, with bootstrap intervals and
length-controlled and style-controlled variants.

Labels are `metrics.agreement` codes seen from the contender: `A` it won, `B` the baseline won,
`TIE` even (a verdict that flipped with the order, or no readable verdict, counts as a tie).
How a tie counts is the caller's choice: `half` a win, `exclude` (left out), or a `loss`.
"""

from __future__ import annotations

import numpy as np

from metrics.agreement import A, B, MISSING, TIE
from metrics.bootstrap import percentile_interval, ratio_interval

TIE_RULES = ("half", "exclude", "loss")


def outcome_parts(labels: np.ndarray, ties: str) -> tuple[np.ndarray, np.ndarray]:
    """(num, den) per pair, so that the win rate is sum(num) / sum(den)."""
    labels = np.where(labels == MISSING, TIE, labels)
    won, lost, even = labels == A, labels == B, labels == TIE
    if ties == "half":
        return won + 0.5 * even, np.ones(labels.size)
    if ties == "exclude":
        return won.astype(float), (won | lost).astype(float)
    if ties == "loss":
        return won.astype(float), np.ones(labels.size)
    raise ValueError(f"unknown tie rule {ties!r} (expected one of {', '.join(TIE_RULES)})")


def win_rate(labels: np.ndarray, ties: str = "half") -> float:
    num, den = outcome_parts(labels, ties)
    return float(num.sum() / den.sum()) if den.sum() else float("nan")


def win_rate_interval(labels: np.ndarray, ties: str, w: np.ndarray) -> tuple[float, float]:
    return ratio_interval(w, *outcome_parts(labels, ties))


def _targets(labels: np.ndarray, ties: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row of each fit example, its 0/1 target, its weight): a half-counted tie is two half examples,
    one won and one lost."""
    labels = np.where(labels == MISSING, TIE, labels)
    index = np.arange(labels.size)
    won, lost, even = index[labels == A], index[labels == B], index[labels == TIE]
    if ties == "loss":
        lost = np.concatenate([lost, even])
    parts = [(won, 1, 1.0), (lost, 0, 1.0)]
    if ties == "half":
        parts += [(even, 1, 0.5), (even, 0, 0.5)]
    rows = np.concatenate([r for r, _, _ in parts]).astype(np.int64)
    y = np.concatenate([np.full(r.size, t) for r, t, _ in parts])
    weight = np.concatenate([np.full(r.size, w) for r, _, w in parts])
    return rows, y, weight


def _fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> float:
    """P(win) at x = 0 from a weighted logistic regression of y on x (one covariate, or a column each)."""
    keep = weight > 0
    if not keep.any():
        return float("nan")
    if len(set(y[keep].tolist())) == 1:  # one outcome only: nothing for length to explain
        return float(y[keep][0])
    from sklearn.linear_model import LogisticRegression  # here: scikit-learn takes a second to import

    x = x[:, None] if x.ndim == 1 else x
    model = LogisticRegression().fit(x[keep], y[keep], sample_weight=weight[keep])
    return float(1 / (1 + np.exp(-model.intercept_[0])))


def length_feature(length_diff: np.ndarray) -> np.ndarray:
    """AlpacaEval's length term: tanh of the length difference over its standard deviation."""
    scale = length_diff.std()
    return np.tanh(length_diff / scale) if scale > 0 else np.zeros(length_diff.size)


def length_controlled(labels: np.ndarray, length_diff: np.ndarray, ties: str, w: np.ndarray | None = None
                      ) -> tuple[float, float, float]:
    """(win rate, 95% low, high) with the length difference regressed out, as AlpacaEval's
    length-controlled win rate does: logit P(win) = b0 + b1 * tanh(diff / sd(diff)), reported at
    equal lengths (sigmoid(b0)). `length_diff` is contender minus baseline, per pair. The interval
    refits the model on every bootstrap resample in `w`."""
    return controlled(labels, length_feature(length_diff.astype(float)), ties, w)


def style_controlled(labels: np.ndarray, length_diff: np.ndarray, markdown_diff: np.ndarray, ties: str,
                     w: np.ndarray | None = None) -> tuple[float, float, float]:
    """(win rate, 95% low, high) at equal length and equal markdown density, as Arena-Hard's style
    control reads it: logit P(win) = b0 + b1 * tanh(length diff / sd) + b2 * tanh(markdown diff / sd)
    (`metrics.style.markdown_density`, contender minus baseline), reported as sigmoid(b0)."""
    features = np.column_stack([length_feature(length_diff.astype(float)), length_feature(markdown_diff.astype(float))])
    return controlled(labels, features, ties, w)


def controlled(labels: np.ndarray, features: np.ndarray, ties: str, w: np.ndarray | None = None
               ) -> tuple[float, float, float]:
    """(win rate, 95% low, high) a logistic model of the outcome on `features` (one row per pair)
    predicts where every feature is 0; the interval refits it on every bootstrap resample in `w`."""
    rows, y, weight = _targets(labels, ties)
    x = features[rows]
    value = _fit(x, y, weight)
    if w is None or w.shape[0] == 0:
        return value, float("nan"), float("nan")
    samples = np.array([_fit(x, y, weight * counts[rows]) for counts in w])
    return (value, *percentile_interval(samples))
