"""Krippendorff's alpha, nominal: how much a panel's judges agree with each other, beyond chance.

Labels are small integer codes (`metrics.agreement`: A, B, TIE) in a (coders, units) array, with
`MISSING` for a coder that gave no label; unlike the agreement with humans, a missing label is
left out here (alpha is built for missing data), not read as a tie. Following Krippendorff (2011),
"Computing Krippendorff's Alpha-Reliability":

- each unit u with m_u >= 2 labels adds n_uc * n_uk / (m_u - 1) to the coincidence o_ck of every
  ordered pair of values c != k, and n_uc * (n_uc - 1) / (m_u - 1) to o_cc (n_uc: coders of u that
  gave c); units with fewer than two labels are not pairable and add nothing;
- n_c = sum_k o_ck, n = sum_c n_c;
- alpha = 1 - D_o / D_e = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c * n_k.

1 is perfect agreement, 0 agreement at chance, below 0 systematic disagreement. Undefined (NaN)
when every pairable label is the same value (nothing to disagree about) or no unit is pairable.
"""

from __future__ import annotations

import numpy as np

from metrics import bootstrap


def unit_coincidences(labels: np.ndarray, n_values: int = 3) -> np.ndarray:
    """(units, n_values, n_values): each unit's contribution to the coincidence matrix."""
    labels = np.asarray(labels)
    counts = np.stack([(labels == c).sum(axis=0) for c in range(n_values)], axis=1).astype(np.float64)  # (units, C)
    m = counts.sum(axis=1)
    pairs = counts[:, :, None] * counts[:, None, :] - counts[:, :, None] * np.eye(n_values)[None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((m >= 2)[:, None, None], pairs / (m - 1)[:, None, None], 0.0)


def alpha_from_coincidences(o: np.ndarray) -> np.ndarray:
    """Nominal alpha of one or many coincidence matrices (shape (..., C, C))."""
    o = np.asarray(o, dtype=np.float64)
    n_c = o.sum(axis=-1)
    n = n_c.sum(axis=-1)
    off = ~np.eye(o.shape[-1], dtype=bool)
    observed = o[..., off].sum(axis=-1)
    expected = (n_c[..., :, None] * n_c[..., None, :])[..., off].sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected > 0, 1 - (n - 1) * observed / expected, np.nan)


def nominal_alpha(labels: np.ndarray, n_values: int = 3) -> float:
    """Krippendorff's alpha of (coders, units) integer labels in 0..n_values-1 (`MISSING`: no label)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return float("nan")
    return float(alpha_from_coincidences(unit_coincidences(labels, n_values).sum(axis=0)))


def alpha_interval(w: np.ndarray, labels: np.ndarray, n_values: int = 3) -> tuple[float, float]:
    """Bootstrap 95% interval of alpha, resampling units with the weights `w` (resamples, units)."""
    units = unit_coincidences(labels, n_values).reshape(np.asarray(labels).shape[1], -1)
    o = bootstrap.resampled_sums(w, units).reshape(-1, n_values, n_values)
    return bootstrap.percentile_interval(alpha_from_coincidences(o))

