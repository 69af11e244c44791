"""How many independent votes a jury is worth: Kish's effective number from its members' error correlation.

A member's *error* on an item is 1 when its label differs from the human one and 0 when it equals
it (`MISSING` counted as `TIE`, as `accuracy` counts it), so 1 - error is the item's accuracy
indicator. rho(j, l) is the Pearson correlation of two members' errors over the items. Kish's
design effect for k votes of equal variance and mean pairwise correlation rho gives

    n_eff = k / (1 + (k - 1) * mean rho)

so k judges who err independently are worth k votes and k copies of one judge are worth 1.

- A pair's correlation is undefined when one of the two never errs or always errs (no variance);
  the mean runs over the jury's pairs whose correlation is defined, and n_eff is NaN (reported as
  null) when none is.
- Errors correlated below 0 (members err on different items more often than chance) would be worth
  more than k votes: n_eff is reported as at most k (the mean rho beside it shows the rest).
- A single judge is worth one vote.

Intervals come from the same paired bootstrap resamples as the other figures: every pair's
correlation is computed once per resample, and each jury averages its pairs' columns.
"""

from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np

from metrics import bootstrap
from metrics.agreement import decided


def errors(human: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(judges, n) labels -> (judges, n) errors: 1.0 where a judge's label is not the human one."""
    return (decided(labels) != human[None, :]).astype(np.float64)


def kish(k: int, mean_rho: np.ndarray | float) -> np.ndarray:
    """Kish's effective number of votes, in [1, k]; NaN where mean_rho is NaN."""
    mean_rho = np.asarray(mean_rho, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = k / (1 + (k - 1) * mean_rho)
    raw = np.where(1 + (k - 1) * mean_rho <= 0, np.inf, raw)  # errors that cancel exactly: capped below
    return np.where(np.isnan(mean_rho), np.nan, np.clip(raw, 1.0, float(k)))


def _correlation(mean_j: np.ndarray, mean_l: np.ndarray, mean_jl: np.ndarray) -> np.ndarray:
    """Pearson correlation of two 0/1 variables from their means and the mean of their product."""
    var = (mean_j - mean_j**2) * (mean_l - mean_l**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (mean_jl - mean_j * mean_l) / np.sqrt(var)
    return np.where(var > 1e-12, rho, np.nan)


class ErrorCorrelation:
    """Every pair of judges' error correlation, once over the items and once per bootstrap resample."""

    def __init__(self, judges: list[str], err: np.ndarray, w: np.ndarray):
        self.judges = list(judges)
        n = err.shape[1]
        self.pairs = list(combinations(range(len(judges)), 2))
        products = np.stack([err[j] * err[l] for j, l in self.pairs]) if self.pairs else np.zeros((0, n))
        means = err.mean(axis=1) if n else np.full(len(judges), np.nan)
        self.rho = np.array([
            _correlation(means[j], means[l], products[p].mean() if n else np.nan) for p, (j, l) in enumerate(self.pairs)
        ])
        resamples = w.shape[0]
        if n and self.pairs:
            sample_means = bootstrap.resampled_sums(w, err.T) / n  # (resamples, judges)
            sample_products = bootstrap.resampled_sums(w, products.T) / n  # (resamples, pairs)
            self.samples = np.stack([
                _correlation(sample_means[:, j], sample_means[:, l], sample_products[:, p])
                for p, (j, l) in enumerate(self.pairs)
            ], axis=1)
        else:
            self.samples = np.full((resamples, len(self.pairs)), np.nan)

    def _columns(self, members: tuple[str, ...]) -> list[int]:
        index = sorted(self.judges.index(m) for m in members)
        return [p for p, pair in enumerate(self.pairs) if pair[0] in index and pair[1] in index]

    def mean_rho(self, members: tuple[str, ...]) -> tuple[float, np.ndarray]:
        """(mean rho over the jury's defined pairs, the same per resample); NaN for one member."""
        columns = self._columns(members)
        values = self.rho[columns]
        if len(members) < 2 or np.isnan(values).all():
            return float("nan"), np.full(self.samples.shape[0], np.nan)
        with warnings.catch_warnings():  # resamples where no pair varies: NaN, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.nanmean(values)), np.nanmean(self.samples[:, columns], axis=1)

    def n_eff(self, members: tuple[str, ...]) -> tuple[float, float, float]:
        """(n_eff, 95% low, high) of the jury of `members`."""
        k = len(members)
        if k == 1:
            return 1.0, 1.0, 1.0
        value, samples = self.mean_rho(members)
        low, high = bootstrap.percentile_interval(kish(k, samples))
        return float(kish(k, value)), low, high

