"""Paired bootstrap intervals by resampling weights.

One matrix `W` (resamples x items) of multinomial counts stands for every resample at once: the
statistic of resample r over an indicator vector x is `W[r] @ x`. Every evaluator is measured on the
same resamples, so their intervals are paired, and an interval costs one matrix product.
"""

from __future__ import annotations

import numpy as np

from metrics.agreement import kappa_from_confusion, ratio

RESAMPLES = 1000
LEVEL = 0.95


def weights(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) multinomial counts: how often each item is drawn in each resample."""
    rng = np.random.default_rng(seed)
    if n == 0:
        return np.zeros((resamples, 0), dtype=np.float32)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float32)


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central `level` interval of bootstrap samples (NaN samples ignored; NaN if all are)."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def resampled_sums(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """sum(x) in every resample (exact for counts: float32 holds integers up to 2**24)."""
    return (w @ x.astype(np.float32)).astype(np.float64)


def ratio_interval(w: np.ndarray, num: np.ndarray, den: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Interval of sum(num) / sum(den) over resampled items."""
    return percentile_interval(ratio(resampled_sums(w, num), resampled_sums(w, den)), level)


def kappa_interval(w: np.ndarray, pair_codes: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Interval of Cohen's kappa; `pair_codes` as `metrics.agreement.pair_codes` gives them."""
    onehot = np.zeros((pair_codes.size, 9), dtype=np.float32)
    onehot[np.arange(pair_codes.size), pair_codes] = 1
    counts = (w @ onehot).astype(np.float64).reshape(-1, 3, 3)
    return percentile_interval(kappa_from_confusion(counts), level)
