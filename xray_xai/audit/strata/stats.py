"""The statistics of stratified performance: tests of a subgroup against the rest, and corrections for many tests.

* :func:`delong` - variance of an AUROC by DeLong's structural components (DeLong, DeLong & Clarke-Pearson,
  Biometrics 1988), computed from midranks as in Sun & Xu (IEEE SPL 2014); :func:`auroc_difference_test` compares
  the AUROCs of two *disjoint* groups (a subgroup and the rest), whose estimates are independent, so the variance of
  the difference is the sum of the two variances. Written here because neither scipy nor scikit-learn offers it.
* :func:`fisher_test` - Fisher's exact test of two proportions (sensitivity or specificity of the subgroup against
  the rest), by :func:`scipy.stats.fisher_exact`.
* :func:`adjust` - Holm's step-down (family-wise error) or Benjamini-Hochberg's step-up (false discovery rate)
  adjustment. BH is scipy's :func:`scipy.stats.false_discovery_control`; scipy has no Holm and statsmodels is not
  a dependency, so Holm's six lines are here.
* :func:`mean_difference` - a difference of two group means with a seeded percentile bootstrap interval and the
  Mann-Whitney U test (scipy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["CORRECTIONS", "adjust", "auroc_difference_test", "delong", "fisher_test", "mean_difference"]

#: multiple-comparison corrections :func:`adjust` knows
CORRECTIONS: tuple[str, ...] = ("holm", "bh", "none")


def delong(y: Any, p: Any) -> tuple[float, float] | None:
    """``(AUROC, variance)`` by DeLong's method; None unless there are at least two positives and two negatives."""
    from scipy.stats import rankdata

    ya = np.asarray(y, dtype=np.int64).ravel()
    pa = np.asarray(p, dtype=np.float64).ravel()
    pos, neg = pa[ya == 1], pa[ya == 0]
    m, n = pos.size, neg.size
    if m < 2 or n < 2:
        return None
    ranks = rankdata(np.concatenate([pos, neg]))
    v10 = (ranks[:m] - rankdata(pos)) / n  # per positive: share of negatives it outranks (ties count a half)
    v01 = 1.0 - (ranks[m:] - rankdata(neg)) / m  # per negative: share of positives that outrank it
    auc = float(v10.mean())
    var = float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    return auc, var


def auroc_difference_test(y_a: Any, p_a: Any, y_b: Any, p_b: Any) -> dict[str, Any] | None:
    """Two-sided DeLong z-test of AUROC(a) = AUROC(b) for two disjoint groups: ``{"difference", "z", "p"}``
    (difference = a - b); None when either group lacks two films of each class."""
    from scipy.stats import norm

    a, b = delong(y_a, p_a), delong(y_b, p_b)
    if a is None or b is None:
        return None
    diff = a[0] - b[0]
    se = math.sqrt(a[1] + b[1])
    if se == 0.0:  # both groups separated perfectly (or constant): no evidence of a difference unless they differ
        return {"difference": diff, "z": None, "p": 1.0 if diff == 0 else 0.0}
    z = diff / se
    return {"difference": diff, "z": z, "p": float(2.0 * norm.sf(abs(z)))}


def fisher_test(hits_a: int, n_a: int, hits_b: int, n_b: int) -> dict[str, Any] | None:
    """Fisher's exact two-sided test of hits_a/n_a = hits_b/n_b: ``{"difference", "odds_ratio", "p"}``; None when a
    group is empty."""
    from scipy.stats import fisher_exact

    if n_a <= 0 or n_b <= 0:
        return None
    table = [[hits_a, n_a - hits_a], [hits_b, n_b - hits_b]]
    res = fisher_exact(table, alternative="two-sided")
    odds = float(res.statistic)
    return {
        "difference": hits_a / n_a - hits_b / n_b,
        "odds_ratio": odds if math.isfinite(odds) else None,
        "p": float(res.pvalue),
    }


def adjust(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """Adjusted p-values, in the order given: ``holm`` (controls the family-wise error rate), ``bh``
    (Benjamini-Hochberg, controls the false discovery rate) or ``none``."""
    ps = np.asarray(pvalues, dtype=np.float64)
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; expected one of {', '.join(CORRECTIONS)}")
    if ps.size == 0 or method == "none":
        return ps.tolist()
    if method == "bh":
        from scipy.stats import false_discovery_control

        return np.asarray(false_discovery_control(ps, method="bh")).tolist()
    m = ps.size
    order = np.argsort(ps, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * ps[order])  # Holm: (m - i) p_(i), kept monotone
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out.tolist()


def mean_difference(a: Any, b: Any, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Mean of ``a`` minus mean of ``b`` with a percentile bootstrap interval (each group resampled on its own,
    seeded) and the two-sided Mann-Whitney U p-value; values None when a group is empty."""
    from scipy.stats import mannwhitneyu

    aa = np.asarray(a, dtype=np.float64).ravel()
    bb = np.asarray(b, dtype=np.float64).ravel()
    out: dict[str, Any] = {
        "n_with": int(aa.size),
        "n_without": int(bb.size),
        "mean_with": float(aa.mean()) if aa.size else None,
        "mean_without": float(bb.mean()) if bb.size else None,
        "difference": None,
        "ci95": None,
        "p": None,
    }
    if aa.size == 0 or bb.size == 0:
        return out
    out["difference"] = float(aa.mean() - bb.mean())
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        ma = aa[rng.integers(0, aa.size, (n_boot, aa.size))].mean(axis=1)
        mb = bb[rng.integers(0, bb.size, (n_boot, bb.size))].mean(axis=1)
        lo, hi = np.percentile(ma - mb, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        out["ci95"] = [float(lo), float(hi)]
    out["p"] = float(mannwhitneyu(aa, bb, alternative="two-sided").pvalue)
    return out
