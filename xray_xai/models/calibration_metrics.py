"""How honest a model's probabilities are, and what it achieves at fixed sensitivity or specificity.

* Brier score: mean squared difference between probability and outcome (0 is perfect; a constant ``p`` on data of
  prevalence ``p`` scores ``p (1 - p)``).
* Expected / maximum calibration error (ECE / MCE): the films are put in bins by probability (10 equal-width bins
  by default, or equal-mass bins), and the gap between the mean probability and the share of positives in each bin
  is averaged (weighted by the bin's films) or its maximum taken.
* Calibration slope and intercept: the logistic recalibration ``P(y=1) = sigmoid(intercept + slope * logit(p))``
  fitted by maximum likelihood (Cox 1958; Van Calster et al. 2019). Slope 1 and intercept 0 is perfect calibration;
  a slope below 1 means over-confident probabilities. ``citl`` (calibration-in-the-large) is the intercept with the
  slope fixed at 1: below 0 when the probabilities are too high on average.
* Sensitivity at a fixed specificity (the best sensitivity among thresholds whose specificity reaches it) and
  specificity at a fixed sensitivity, read off the ROC curve of the data evaluated.

Each gets a percentile bootstrap 95% interval through :func:`xray_xai.models.metrics.bootstrap_ci` (the same seeded
resamples as the other metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xray_xai.defaults import DEFAULT_LEVELS
from xray_xai.models.calibration import logistic_fit_rows, logit

__all__ = [
    "DEFAULT_LEVELS",
    "brier",
    "calibration_error",
    "calibration_levels",
    "calibration_metrics",
    "calibration_report",
    "reliability",
    "sensitivity_at_specificity",
    "specificity_at_sensitivity",
]


def _arrays(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    ya = np.asarray(y, dtype=np.float64).ravel()
    pa = np.asarray(p, dtype=np.float64).ravel()
    if ya.shape != pa.shape:
        raise ValueError(f"labels and probabilities differ in length: {ya.size} vs {pa.size}")
    return ya, pa


def brier(y: Any, p: Any) -> float | None:
    """Mean of ``(p - y)^2``; None on no data."""
    ya, pa = _arrays(y, p)
    return float(np.mean((pa - ya) ** 2)) if ya.size else None


def _bin_index(p: np.ndarray, bins: int, adaptive: bool) -> np.ndarray:
    """Each probability's bin: ``bins`` equal-width bins of [0, 1] (1.0 in the last), or ``bins`` groups of equal
    size in order of probability (ties may straddle two groups)."""
    if not adaptive:
        return np.minimum((p * bins).astype(np.int64), bins - 1)
    out = np.empty(p.size, dtype=np.int64)
    for b, chunk in enumerate(np.array_split(np.argsort(p, kind="stable"), bins)):
        out[chunk] = b
    return out


def reliability(y: Any, p: Any, bins: int = 10, adaptive: bool = False) -> list[dict[str, Any]]:
    """Per non-empty bin: ``n``, ``mean_probability``, ``observed`` (share of positives), ``low``/``high`` edges."""
    ya, pa = _arrays(y, p)
    idx = _bin_index(pa, bins, adaptive)
    rows = []
    for b in range(bins):
        mask = idx == b
        if not mask.any():
            continue
        low, high = (float(pa[mask].min()), float(pa[mask].max())) if adaptive else (b / bins, (b + 1) / bins)
        rows.append(
            {
                "bin": b, "low": low, "high": high, "n": int(mask.sum()),
                "mean_probability": float(pa[mask].mean()), "observed": float(ya[mask].mean()),
            }
        )  # fmt: skip
    return rows


def calibration_error(y: Any, p: Any, bins: int = 10, adaptive: bool = False) -> tuple[float, float] | None:
    """``(ECE, MCE)``: the films-weighted mean and the maximum over non-empty bins of ``|mean p - share positive|``."""
    ya, pa = _arrays(y, p)
    if ya.size == 0:
        return None
    idx = _bin_index(pa, bins, adaptive)
    n = np.bincount(idx, minlength=bins).astype(np.float64)
    sp = np.bincount(idx, weights=pa, minlength=bins)
    sy = np.bincount(idx, weights=ya, minlength=bins)
    used = n > 0
    gap = np.abs(sp[used] - sy[used]) / n[used]
    return float(np.sum(gap * n[used]) / ya.size), float(gap.max())


def _roc(ya: np.ndarray, pa: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Sensitivity and specificity at every threshold ``p >= t`` (t over the distinct scores, plus +inf)."""
    pos = ya == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(-pa, kind="stable")
    ps, ys = pa[order], pos[order]
    last = np.r_[np.nonzero(np.diff(ps))[0], ps.size - 1]  # last index of each run of equal scores
    tp = np.r_[0, np.cumsum(ys)[last]]
    fp = np.r_[0, np.cumsum(~ys)[last]]
    return tp / n_pos, 1.0 - fp / n_neg


def sensitivity_at_specificity(y: Any, p: Any, specificity: float) -> float | None:
    """The highest sensitivity among thresholds whose specificity is at least ``specificity``."""
    roc = _roc(*_arrays(y, p))
    if roc is None:
        return None
    sens, spec = roc
    return float(sens[spec >= specificity - 1e-12].max())


def specificity_at_sensitivity(y: Any, p: Any, sensitivity: float) -> float | None:
    """The highest specificity among thresholds whose sensitivity is at least ``sensitivity``."""
    roc = _roc(*_arrays(y, p))
    if roc is None:
        return None
    sens, spec = roc
    return float(spec[sens >= sensitivity - 1e-12].max())


def _level_key(prefix: str, level: float) -> str:
    return f"{prefix}_{level:.2f}"


def _rows(
    yb: np.ndarray,
    pb: np.ndarray,
    bins: int,
    adaptive: bool,
    specificities: Sequence[float],
    sensitivities: Sequence[float],
) -> dict[str, np.ndarray]:
    """Every scalar metric for each row of ``(R, N)`` label and probability matrices (row 0 alone: the point
    estimate; R rows: the bootstrap resamples), NaN where undefined. The logistic fits run on all rows at once."""
    nan = np.full(yb.shape[0], np.nan)
    out: dict[str, np.ndarray] = {"brier": np.mean((pb - yb) ** 2, axis=1)}
    errors = np.array([calibration_error(y, p, bins, adaptive) for y, p in zip(yb, pb, strict=True)])
    out["ece"], out["mce"] = errors[:, 0], errors[:, 1]
    z = logit(pb)
    out["intercept"], out["slope"] = logistic_fit_rows(z, yb)
    out["citl"] = logistic_fit_rows(np.zeros_like(z), yb, offset=z, slope=False)[0]
    rocs = [_roc(y, p) for y, p in zip(yb, pb, strict=True)]
    for s in specificities:
        out[_level_key("sensitivity_at_specificity", s)] = np.array(
            [nan[0] if r is None else r[0][r[1] >= s - 1e-12].max() for r in rocs]
        )
    for s in sensitivities:
        out[_level_key("specificity_at_sensitivity", s)] = np.array(
            [nan[0] if r is None else r[1][r[0] >= s - 1e-12].max() for r in rocs]
        )
    return out


def calibration_metrics(
    y: Any,
    p: Any,
    *,
    bins: int = 10,
    adaptive: bool = False,
    specificities: Sequence[float] = DEFAULT_LEVELS,
    sensitivities: Sequence[float] = DEFAULT_LEVELS,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Brier, ECE, MCE, slope, intercept, citl, sensitivity at each specificity and specificity at each sensitivity
    (keys ``sensitivity_at_specificity_0.90``...), ``n``, ``prevalence``, ``mean_probability``, the reliability bins,
    and with ``bootstrap`` resamples a ``ci95`` dict of ``[low, high]`` (None where undefined). The resamples are
    :func:`xray_xai.models.metrics.bootstrap_indices` (the same rows as every other interval of an evaluation)."""
    from xray_xai.models.metrics import bootstrap_indices, percentile_interval

    ya, pa = _arrays(y, p)
    out: dict[str, Any] = {
        "n": int(ya.size),
        "prevalence": float(ya.mean()) if ya.size else None,
        "mean_probability": float(pa.mean()) if pa.size else None,
    }
    if ya.size == 0:
        return {**out, "reliability": [], **({"ci95": {}} if bootstrap else {})}
    point = _rows(ya[None, :], pa[None, :], bins, adaptive, specificities, sensitivities)
    out.update({k: (None if np.isnan(v[0]) else float(v[0])) for k, v in point.items()})
    out["reliability"] = reliability(ya, pa, bins, adaptive)
    if bootstrap:
        idx = bootstrap_indices(ya.size, bootstrap, seed)
        rows = _rows(ya[idx], pa[idx], bins, adaptive, specificities, sensitivities)
        out["ci95"] = {k: percentile_interval(v) for k, v in rows.items()}
    return out


def calibration_report(
    y: Any, p: Any, regions: Sequence[str | None], *, per_region: bool = True, **options: Any
) -> dict[str, Any]:
    """:func:`calibration_metrics` overall and (``per_region``) per region, sorted (``None`` regions: "unknown")."""
    ya, pa = _arrays(y, p)
    out: dict[str, Any] = {"overall": calibration_metrics(ya, pa, **options), "per_region": {}}
    if per_region:
        names = np.array([r if r else "unknown" for r in regions], dtype=object)
        for region in sorted(set(names.tolist())):
            mask = names == region
            out["per_region"][str(region)] = calibration_metrics(ya[mask], pa[mask], **options)
    return out


def calibration_levels(
    specificities: Sequence[float] = DEFAULT_LEVELS, sensitivities: Sequence[float] = DEFAULT_LEVELS
) -> list[str]:
    """The metric keys :func:`calibration_metrics` reports for these levels, in table order."""
    return [
        "brier", "ece", "mce", "slope", "intercept",
        *(_level_key("sensitivity_at_specificity", s) for s in specificities),
        *(_level_key("specificity_at_sensitivity", s) for s in sensitivities),
    ]  # fmt: skip
