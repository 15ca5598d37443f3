"""Binary classification metrics at image and study level, bootstrap intervals, and MURA's published kappas.

Everything here is plain numpy (scipy for ranks) so that 1000 bootstrap resamples of every metric take milliseconds:
the resamples are computed as one matrix, not in a Python loop. Metrics that are undefined on the data (AUROC with
one class, precision with no positive prediction, kappa when both raters agree by construction) are ``None`` and a
sentence saying why is added to ``notes``; nothing crashes and nothing is silently 0.

Conventions: label 1 = abnormal (positive), probability = P(abnormal), prediction = probability >= threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from xray_xai.defaults import DECISION_THRESHOLD, STUDY_AGGREGATIONS

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.sdk.interfaces import Record

__all__ = [
    "METRIC_NAMES",
    "MURA_PUBLISHED_KAPPA",
    "MURA_REFERENCE",
    "STUDY_AGGREGATIONS",
    "aggregate_views",
    "auroc",
    "binary_metrics",
    "bootstrap_ci",
    "bootstrap_indices",
    "bootstrap_metrics",
    "cohen_kappa",
    "confusion",
    "kappa_table",
    "per_region",
    "percentile_interval",
    "study_regions",
    "study_scores",
]

#: metrics returned by :func:`binary_metrics` that get bootstrap intervals
METRIC_NAMES: tuple[str, ...] = (
    "auroc",
    "accuracy",
    "precision",
    "recall",
    "specificity",
    "f1",
    "kappa",
)

# Rajpurkar P, Irvin J, et al. "MURA: Large Dataset for Abnormality Detection in Musculoskeletal Radiographs."
# arXiv:1712.06957 (2018), Table 1: Cohen's kappa of three radiologists and of the DenseNet-169 baseline against the
# gold standard on the MURA test set, per study type and overall (study level).
MURA_REFERENCE: str = "Rajpurkar et al. 2018, MURA (arXiv:1712.06957), Table 1"
MURA_PUBLISHED_KAPPA: dict[str, dict[str, float]] = {
    #          radiologist 1, 2, 3 and the published DenseNet-169 model
    "elbow": {"radiologist_1": 0.850, "radiologist_2": 0.710, "radiologist_3": 0.719, "model": 0.710},
    "finger": {"radiologist_1": 0.304, "radiologist_2": 0.403, "radiologist_3": 0.410, "model": 0.389},
    "forearm": {"radiologist_1": 0.796, "radiologist_2": 0.802, "radiologist_3": 0.798, "model": 0.737},
    "hand": {"radiologist_1": 0.661, "radiologist_2": 0.927, "radiologist_3": 0.789, "model": 0.851},
    "humerus": {"radiologist_1": 0.867, "radiologist_2": 0.733, "radiologist_3": 0.933, "model": 0.600},
    "shoulder": {"radiologist_1": 0.864, "radiologist_2": 0.791, "radiologist_3": 0.864, "model": 0.729},
    "wrist": {"radiologist_1": 0.791, "radiologist_2": 0.931, "radiologist_3": 0.931, "model": 0.931},
    "overall": {"radiologist_1": 0.731, "radiologist_2": 0.763, "radiologist_3": 0.778, "model": 0.705},
}


def _arrays(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    ya = np.asarray(y, dtype=np.int64).ravel()
    pa = np.asarray(p, dtype=np.float64).ravel()
    if ya.shape != pa.shape:
        raise ValueError(f"labels and probabilities differ in length: {ya.size} vs {pa.size}")
    return ya, pa


def confusion(y: Any, y_pred: Any) -> dict[str, int]:
    """Counts of the 2x2 confusion matrix: ``tn``, ``fp``, ``fn``, ``tp`` (label 1 = positive)."""
    ya = np.asarray(y).astype(bool).ravel()
    pa = np.asarray(y_pred).astype(bool).ravel()
    return {
        "tn": int(np.sum(~ya & ~pa)),
        "fp": int(np.sum(~ya & pa)),
        "fn": int(np.sum(ya & ~pa)),
        "tp": int(np.sum(ya & pa)),
    }


def auroc(y: Any, p: Any) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); ``None`` if only one class is present."""
    ya, pa = _arrays(y, p)
    out = _auroc_rows(ya[None, :], pa[None, :])[0]
    return None if np.isnan(out) else float(out)


def cohen_kappa(y: Any, y_pred: Any) -> float | None:
    """Cohen's kappa of two binary raters; ``None`` when chance agreement is 1 (both constant and equal)."""
    c = confusion(y, y_pred)
    out = _from_counts(*(np.array([c[k]], dtype=np.float64) for k in ("tn", "fp", "fn", "tp")))["kappa"][0]
    return None if np.isnan(out) else float(out)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _from_counts(tn: np.ndarray, fp: np.ndarray, fn: np.ndarray, tp: np.ndarray) -> dict[str, np.ndarray]:
    """Every threshold metric from confusion counts; arrays so that bootstrap rows compute at once."""
    n = tn + fp + fn + tp
    precision = _div(tp, tp + fp)
    recall = _div(tp, tp + fn)
    po = _div(tp + tn, n)
    pe = _div((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp), n * n)
    return {
        "accuracy": po,
        "precision": precision,
        "recall": recall,
        "specificity": _div(tn, tn + fp),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "kappa": _div(po - pe, 1.0 - pe),
    }


def _auroc_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """AUROC of each row of ``(R, N)`` label and probability matrices; NaN for rows with a single class."""
    from scipy.stats import rankdata

    ranks = rankdata(p, axis=1)
    pos = (y == 1).sum(axis=1).astype(np.float64)
    neg = y.shape[1] - pos
    u = (ranks * (y == 1)).sum(axis=1) - pos * (pos + 1) / 2.0
    return _div(u, pos * neg)


def binary_metrics(y: Any, p: Any, threshold: float = DECISION_THRESHOLD) -> dict[str, Any]:
    """AUROC, accuracy, precision, recall (= sensitivity), specificity, F1, Cohen's kappa and the confusion counts.

    Undefined values are ``None`` with the reason in ``notes`` (a list of sentences), so a region with only normal
    studies still reports its accuracy and specificity.
    """
    ya, pa = _arrays(y, p)
    pred = pa >= threshold
    c = confusion(ya, pred)
    counts = [np.array([c[k]], dtype=np.float64) for k in ("tn", "fp", "fn", "tp")]
    values = {k: float(v[0]) for k, v in _from_counts(*counts).items()}
    values["auroc"] = float(_auroc_rows(ya[None, :], pa[None, :])[0]) if ya.size else float("nan")
    n_pos = int(ya.sum())
    n_neg = int(ya.size - n_pos)
    notes: list[str] = []
    reasons = {
        "auroc": f"AUROC undefined: needs both classes (positives {n_pos}, negatives {n_neg})",
        "precision": "precision undefined: no positive prediction",
        "recall": "recall undefined: no positive label",
        "specificity": "specificity undefined: no negative label",
        "f1": "F1 undefined: no positive label and no positive prediction",
        "kappa": "kappa undefined: chance agreement is 1 (labels and predictions are one and the same class)",
        "accuracy": "accuracy undefined: no samples",
    }
    out: dict[str, Any] = {"n": int(ya.size), "n_positive": n_pos, "n_negative": n_neg, "threshold": threshold}
    for name in METRIC_NAMES:
        v = values[name]
        if np.isnan(v):
            out[name] = None
            notes.append(reasons[name])
        else:
            out[name] = v
    out["sensitivity"] = out["recall"]
    out.update(c)
    out["notes"] = notes
    return out


def bootstrap_indices(size: int, n: int = 1000, seed: int = 0) -> np.ndarray:
    """The ``(n, size)`` row indices of ``n`` percentile-bootstrap resamples (with replacement), drawn from
    ``default_rng(seed)``: every bootstrap of this package (these metrics, calibration) resamples the same rows."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, size, size) for _ in range(n)]) if n > 0 else np.zeros((0, size), dtype=np.int64)


def percentile_interval(values: Any, alpha: float = 0.05) -> list[float] | None:
    """``[low, high]`` percentiles of the finite ``values`` (None, NaN dropped); ``None`` if none is left."""
    v = np.asarray([np.nan if x is None else x for x in np.asarray(values, dtype=object).ravel()], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    lo, hi = np.percentile(v, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return [float(lo), float(hi)]


def bootstrap_ci(
    y: Any,
    p: Any,
    metric_fn: Callable[[np.ndarray, np.ndarray], float | None],
    n: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float] | None:
    """Percentile bootstrap ``(low, high)`` interval of ``metric_fn(y, p)``, resampling rows with replacement.

    Pass study-level arrays (:func:`study_scores`) to resample studies, image-level arrays to resample images.
    Resamples where the metric is undefined are dropped; ``None`` if every resample is undefined.
    """
    ya, pa = _arrays(y, p)
    if ya.size == 0 or n <= 0:
        return None
    interval = percentile_interval([metric_fn(ya[idx], pa[idx]) for idx in bootstrap_indices(ya.size, n, seed)], alpha)
    return None if interval is None else (interval[0], interval[1])


def bootstrap_metrics(
    y: Any, p: Any, threshold: float = DECISION_THRESHOLD, n: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, list[float] | None]:
    """Percentile bootstrap intervals of every metric in :data:`METRIC_NAMES`, all resamples as one matrix.

    Same resampling as :func:`bootstrap_ci` (same seed, same indices), vectorised; ``None`` where every resample
    leaves the metric undefined.
    """
    ya, pa = _arrays(y, p)
    if ya.size == 0 or n <= 0:
        return dict.fromkeys(METRIC_NAMES)
    idx = bootstrap_indices(ya.size, n, seed)
    yb, pb = ya[idx], pa[idx]
    predb = pb >= threshold
    yt = yb == 1
    counts = [
        np.sum(~yt & ~predb, axis=1).astype(np.float64),
        np.sum(~yt & predb, axis=1).astype(np.float64),
        np.sum(yt & ~predb, axis=1).astype(np.float64),
        np.sum(yt & predb, axis=1).astype(np.float64),
    ]
    values = _from_counts(*counts)
    values["auroc"] = _auroc_rows(yb, pb)
    out: dict[str, list[float] | None] = {}
    for name in METRIC_NAMES:
        out[name] = percentile_interval(values[name], alpha)
    return out


def aggregate_views(probs: Any, how: str = "mean") -> float:
    """One study's probability from its views' ``probs`` by ``how`` (:data:`STUDY_AGGREGATIONS`): MURA's published
    mean, the maximum (one abnormal view is enough), or noisy-or ``1 - prod(1 - p)`` (views as independent
    detectors)."""
    pa = np.asarray(probs, dtype=np.float64).ravel()
    if pa.size == 0:
        raise ValueError("a study needs at least one view")
    if how == "mean":
        return float(pa.mean())
    if how == "max":
        return float(pa.max())
    if how == "noisy-or":
        return float(1.0 - np.prod(1.0 - pa))
    raise ValueError(f"unknown study aggregation {how!r}; choose from {', '.join(STUDY_AGGREGATIONS)}")


def study_scores(
    records: Sequence[Record], probs: Any, aggregate: str = "mean"
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Study-level ``(study_ids, labels, probabilities)``: a study's probability is the mean over its views
    (``aggregate``: ``max`` or ``noisy-or`` instead, :func:`aggregate_views`).

    Studies keep the order of their first image; an image without a study is its own study. A study's label is
    that of its images (MURA labels studies); if its images disagree the study counts as abnormal.
    """
    pa = np.asarray(probs, dtype=np.float64).ravel()
    if len(records) != pa.size:
        raise ValueError(f"{len(records)} records but {pa.size} probabilities")
    views: dict[str, list[float]] = {}
    labels: dict[str, int] = {}
    for rec, prob in zip(records, pa, strict=True):
        sid = rec.study or rec.image_id
        views.setdefault(sid, []).append(float(prob))
        lab = -1 if rec.label is None else int(rec.label)
        labels[sid] = max(labels.get(sid, -1), lab)
    ids = list(views)
    return (
        ids,
        np.array([labels[s] for s in ids], dtype=np.int64),
        np.array([aggregate_views(views[s], aggregate) for s in ids], dtype=np.float64),
    )


def study_regions(records: Sequence[Record]) -> dict[str, str | None]:
    """Study id -> region of its first image."""
    out: dict[str, str | None] = {}
    for rec in records:
        out.setdefault(rec.study or rec.image_id, rec.region)
    return out


def per_region(
    y: Any,
    p: Any,
    regions: Sequence[str | None],
    threshold: float = DECISION_THRESHOLD,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """:func:`binary_metrics` per region (sorted; ``None`` regions are "unknown"), with intervals if ``bootstrap``."""
    ya, pa = _arrays(y, p)
    names = np.array([r if r else "unknown" for r in regions], dtype=object)
    if names.size != ya.size:
        raise ValueError(f"{names.size} regions but {ya.size} labels")
    out: dict[str, dict[str, Any]] = {}
    for region in sorted(set(names.tolist())):
        mask = names == region
        m = binary_metrics(ya[mask], pa[mask], threshold)
        if bootstrap:
            m["ci95"] = bootstrap_metrics(ya[mask], pa[mask], threshold, n=bootstrap, seed=seed)
        out[str(region)] = m
    return out


def kappa_table(ours: dict[str, float | None]) -> list[dict[str, Any]]:
    """Our kappa per region beside the published radiologists and DenseNet-169 (:data:`MURA_PUBLISHED_KAPPA`).

    ``ours`` maps lower-case region (and ``"overall"``) to our study-level kappa; regions we lack show ``None``.
    """
    rows = []
    for region, ref in MURA_PUBLISHED_KAPPA.items():
        rows.append({"region": region, "ours": ours.get(region), **ref, "source": MURA_REFERENCE})
    return rows
