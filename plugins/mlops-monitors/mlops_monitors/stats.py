"""Drift scores between a reference and a current distribution over the same bins.

All take two count vectors (or probability vectors) over identical bins, so they
work on fixed-bin sketches without the raw data:

* PSI (population stability index): sum (q - p) ln(q / p); 0.1 "moderate", 0.25 "significant";
* Kolmogorov-Smirnov statistic: max |CDF_p - CDF_q| at the bin edges (numeric only,
  exact at the edges, a lower bound of the raw-data statistic);
* Jensen-Shannon distance (base 2, in [0, 1]); Evidently's default threshold is 0.1;
* chi-squared test of homogeneity (categorical): statistic, p-value and Cramer's V.

Empty bins get a small epsilon so logarithms stay finite. No scipy: the
chi-squared survival function is the regularised upper incomplete gamma.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["psi", "ks_statistic", "js_distance", "chi2_test", "chi2_sf"]

EPS = 1e-4


def _probs(counts: np.ndarray) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return c / total if total > 0 else np.full(c.shape, 1.0 / max(c.size, 1))


def _smoothed(counts: np.ndarray) -> np.ndarray:
    p = _probs(counts) + EPS
    return p / p.sum()


def psi(ref: np.ndarray, cur: np.ndarray) -> float:
    p, q = _smoothed(ref), _smoothed(cur)
    return float(np.sum((q - p) * np.log(q / p)))


def ks_statistic(ref: np.ndarray, cur: np.ndarray) -> float:
    return float(np.max(np.abs(np.cumsum(_probs(ref)) - np.cumsum(_probs(cur))))) if len(ref) else 0.0


def js_distance(ref: np.ndarray, cur: np.ndarray) -> float:
    p, q = _probs(ref), _probs(cur)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return float(math.sqrt(max(0.5 * kl(p) + 0.5 * kl(q), 0.0)))


def chi2_test(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float, float]:
    """Chi-squared homogeneity test of two count vectors: (statistic, p-value, Cramer's V)."""
    table = np.vstack([np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    n = table.sum()
    if table.shape[1] < 2 or n == 0 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    stat = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    return stat, chi2_sf(stat, dof), math.sqrt(stat / n)  # min(rows, cols) - 1 == 1 for two samples


def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for a chi-squared variable with ``dof`` degrees of freedom."""
    if x <= 0:
        return 1.0
    return _gammaincc(dof / 2.0, x / 2.0)


def _gammaincc(a: float, x: float) -> float:
    # Numerical Recipes: series below a + 1, continued fraction above.
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - math.lgamma(a)))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return min(1.0, math.exp(-x + a * math.log(x) - math.lgamma(a)) * h)
