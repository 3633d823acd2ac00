"""Drift scores between a reference and a current distribution over the same bins.

All take two count vectors (or probability vectors) over identical bins, so they
work on fixed-bin sketches without the raw data:

* PSI (population stability index): sum (q - p) ln(q / p); 0.1 "moderate", 0.25 "significant";
* Kolmogorov-Smirnov statistic: max |CDF_p - CDF_q| at the bin edges (numeric only,
  exact at the edges, a lower bound of the raw-data statistic);
* Jensen-Shannon distance (base 2, in [0, 1]); Evidently's default threshold is 0.1;
* chi-squared test of homogeneity (categorical): statistic, p-value and Cramer's V.

On raw values against a weighted reference (a KLL sketch's items and weights,
exact for references of up to ``k`` rows), tie-aware:

* :func:`ks_test`: two-sample Kolmogorov-Smirnov statistic and asymptotic p-value.
  Both CDFs are evaluated at every jump point of either sample (right-continuous),
  so tied values (atoms) are compared as atoms; with ties the asymptotic p-value
  is conservative (true false-positive rate below the nominal one);
* :func:`wasserstein`: the 1-Wasserstein (earth mover's) distance, the integral of
  |F - G|; divided by the reference standard deviation it is Evidently's "normed
  Wasserstein". A pure shift by ``s`` has distance exactly ``s``, and jitter of
  standard deviation ``sigma`` moves it by at most ``E|N(0, sigma)| = 0.8 sigma``,
  which is what makes it the right effect size for "did the feature move".

Empty bins get a small epsilon so logarithms stay finite. No scipy: the
chi-squared survival function is the regularised upper incomplete gamma.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["psi", "ks_statistic", "js_distance", "chi2_test", "chi2_sf", "ks_test", "ks_pvalue", "wasserstein",
           "reference_cdf", "ks_and_wasserstein"]

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


# ------------------------------------------------ tests on raw values (tie-aware)
def _step_cdf(points: np.ndarray, items: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """F(x) = weight of items <= x, for sorted ``items`` with cumulative normalised weights ``cum``."""
    idx = np.searchsorted(items, points, side="right")
    return np.where(idx > 0, cum[np.maximum(idx - 1, 0)], 0.0)


def _reference_cdf(items: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    items = np.asarray(items, dtype=np.float64)
    w = np.ones(items.size) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(items, kind="stable")
    items, w = items[order], w[order]
    cum = np.cumsum(w)
    return items, cum / cum[-1]


def ks_pvalue(d: float, n_eff: float) -> float:
    """Asymptotic P(D >= d) of the two-sample KS statistic (Kolmogorov's series, Stephens' correction)."""
    if d <= 0 or n_eff <= 0:
        return 1.0
    sq = math.sqrt(n_eff)
    lam = (sq + 0.12 + 0.11 / sq) * d
    if lam < 0.2:
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = 2.0 * (-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam)
        total += term
        if abs(term) < 1e-12 * max(total, 1e-300):
            break
    return min(1.0, max(0.0, total))


def ks_test(ref_items: np.ndarray, ref_weights: np.ndarray | None, n_ref: int,
            current: np.ndarray) -> tuple[float, float]:
    """(D, p-value) of the two-sample KS test of ``current`` (raw values) against a weighted reference.

    ``n_ref`` is the number of reference rows the weights stand for (a KLL sketch
    of a million rows holds a few hundred weighted items).
    """
    cur = np.sort(np.asarray(current, dtype=np.float64))
    if cur.size == 0 or len(ref_items) == 0:
        return 0.0, 1.0
    items, cum = _reference_cdf(ref_items, ref_weights)
    points = np.union1d(items, cur)
    f = _step_cdf(points, items, cum)
    g = np.searchsorted(cur, points, side="right") / cur.size
    d = float(np.max(np.abs(f - g)))
    m = cur.size
    return d, ks_pvalue(d, n_ref * m / (n_ref + m))


def wasserstein(ref_items: np.ndarray, ref_weights: np.ndarray | None, current: np.ndarray) -> float:
    """1-Wasserstein distance between a weighted reference and raw ``current`` values (exact for step CDFs)."""
    cur = np.sort(np.asarray(current, dtype=np.float64))
    if cur.size == 0 or len(ref_items) == 0:
        return 0.0
    items, cum = _reference_cdf(ref_items, ref_weights)
    points = np.union1d(items, cur)
    f = _step_cdf(points[:-1], items, cum)
    g = np.searchsorted(cur, points[:-1], side="right") / cur.size
    return float(np.sum(np.abs(f - g) * np.diff(points)))


def reference_cdf(items: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct reference values and the CDF at each (computed once per profile, reused per window)."""
    sorted_items, cum = _reference_cdf(items, weights)
    last = np.r_[sorted_items[1:] != sorted_items[:-1], True]  # the last copy of a tied value carries its CDF
    return sorted_items[last], cum[last]


def ks_and_wasserstein(ref_values: np.ndarray, ref_cdf: np.ndarray, n_ref: int,
                       current: np.ndarray) -> tuple[float, float, float]:
    """(KS D, KS p-value, W1) of raw ``current`` values against :func:`reference_cdf` output, with one sort.

    Same results as :func:`ks_test` and :func:`wasserstein`; the serving window is
    scored with this, so an evaluation sorts each feature's window once.
    """
    cur = np.sort(np.asarray(current, dtype=np.float64))
    if cur.size == 0 or ref_values.size == 0:
        return 0.0, 1.0, 0.0
    points = np.concatenate((ref_values, cur))
    points.sort(kind="mergesort")  # two sorted runs: a merge
    idx = np.searchsorted(ref_values, points, side="right")
    f = np.where(idx > 0, ref_cdf[np.maximum(idx - 1, 0)], 0.0)
    g = np.searchsorted(cur, points, side="right") / cur.size
    diff = np.abs(f - g)
    d = float(diff.max())
    w = float(np.sum(diff[:-1] * np.diff(points)))
    m = cur.size
    return d, ks_pvalue(d, n_ref * m / (n_ref + m)), w
