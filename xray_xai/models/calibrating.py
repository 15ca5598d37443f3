"""``xray-xai calibrate``: fit post-hoc calibration and choose operating points on the validation split, and record
both in the checkpoint's sidecar.

The sidecar is updated in place, atomically (:func:`xray_xai.models.store.update_sidecar`): the weights file is not
touched, so the fingerprint, the checksum and every path that names the checkpoint stay valid, and calibrating
again replaces the entry. Its two keys::

    "calibration": {"method": "temperature", "params": {"temperature": 1.30}, "split": "val", "n": 323, ...,
                    "validation": {"before": {nll, brier, ece, mce, auroc}, "after": {...}}}
    "operating_points": [{"rule": "youden", "threshold": 0.21, "threshold_raw": 0.27, "split": "val",
                          "validation": {sensitivity, specificity, precision, npv, share_positive, ...}}, ...]

The first operating point is the one every command uses (:func:`xray_xai.models.operating.resolve_threshold`);
``threshold`` is on the calibrated scale (the probability shown), ``threshold_raw`` the same rule applied to the
raw probabilities (used with ``--uncalibrated``).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xray_xai.errors import CheckpointError, DataError
from xray_xai.sdk.interfaces import Model, Problem

__all__ = ["calibrate"]


def _summary(y: np.ndarray, p: np.ndarray, bins: int) -> dict[str, Any]:
    from xray_xai.models.calibration import nll
    from xray_xai.models.calibration_metrics import brier, calibration_error
    from xray_xai.models.metrics import auroc

    ece, mce = calibration_error(y, p, bins) or (None, None)
    return {
        "nll": nll(y, p), "brier": brier(y, p), "ece": ece, "mce": mce, "auroc": auroc(y, p),
        "mean_probability": float(p.mean()), "prevalence": float(y.mean()),
    }  # fmt: skip


def _refuse_test(data_root: str | Path, dataset: str | None, options: dict[str, Any] | None, split: str) -> None:
    """Calibration and thresholds are fitted on validation data: a split that names the test set (``test``, or
    MURA's ``valid``, which this package uses as its test set) is refused."""
    from xray_xai.data.datasets import open_dataset

    ds = open_dataset(data_root, dataset, **(options or {}))
    if ds.resolve_split(split) == "test":
        raise DataError(data_root, f"split {split!r} is the test set; calibrate fits on validation data (e.g. val)")


def calibrate(
    model_spec: str | Path | Model,
    data_root: str | Path,
    *,
    checkpoint: str | Path | None = None,
    dataset: str | None = None,
    dataset_options: dict[str, Any] | None = None,
    split: str = "val",
    method: str = "temperature",
    rules: Sequence[str] = ("youden",),
    batch_size: int = 32,
    device: str = "cpu",
    tta: bool = False,
    strict: bool = False,
    max_images: int | None = None,
    bins: int = 10,
    write: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit ``method`` on ``split`` and choose a threshold per rule there (calibrated and raw scales); with ``write``
    record them in the checkpoint's sidecar. Returns what was fitted and chosen, with validation metrics."""
    from xray_xai.models.calibration import CALIBRATION_METHODS, fit_calibrator
    from xray_xai.models.evaluation import _labelled_records, predict_records, resolve_model
    from xray_xai.models.operating import choose_threshold, metrics_at, parse_rule, rule_name

    if method not in CALIBRATION_METHODS:
        raise DataError(None, f"unknown calibration method {method!r}; choose from {', '.join(CALIBRATION_METHODS)}")
    parsed = [parse_rule(r) for r in rules] or [parse_rule("youden")]
    model = resolve_model(model_spec, checkpoint)
    weights = getattr(model, "checkpoint_path", None)
    if write and weights is None:
        raise CheckpointError(
            None, "calibrate records into a stored checkpoint's sidecar: give --checkpoint or --model"
        )
    _refuse_test(data_root, dataset, dataset_options, split)
    ds_name, records = _labelled_records(data_root, dataset, dataset_options, split, max_images)
    warned: list[Problem] = []
    kept, raw, skipped = predict_records(
        model, records, batch_size=batch_size, device=device, progress=progress, tta=tta, strict=strict,
        warnings=warned,
    )  # fmt: skip
    y = np.array([int(r.label or 0) for r in kept])
    if y.size == 0 or y.min() == y.max():
        raise DataError(data_root, f"split {split!r} needs readable films of both classes to calibrate on")
    try:
        cal = fit_calibrator(method, y, raw)
    except ValueError as exc:  # e.g. Platt on separable validation films
        raise DataError(data_root, f"{method} calibration on split {split!r} failed: {exc}") from None
    shown = cal(raw)
    fitted = {"dataset": ds_name, "split": split, "n": int(y.size), "tta": tta}
    points = []
    for rule in parsed:
        t, t_raw = choose_threshold(y, shown, rule), choose_threshold(y, raw, rule)
        points.append({"rule": rule_name(rule), "threshold": t, "threshold_raw": t_raw, **fitted,
                       "validation": metrics_at(y, shown, t)})  # fmt: skip
    created = _dt.datetime.now(_dt.timezone.utc).isoformat()
    entry = {
        **cal.to_dict(), **fitted, "created": created,
        "validation": {"before": _summary(y, raw, bins), "after": _summary(y, shown, bins)},
    }  # fmt: skip
    result: dict[str, Any] = {
        "model": getattr(model, "name", str(model_spec)),
        "checkpoint": str(weights) if weights is not None else None,
        "data_root": str(data_root),
        "calibration": entry,
        "operating_points": points,
        "skipped": [{"path": p.path, "problem": p.problem} for p in skipped],
        "warnings": [{"path": p.path, "problem": p.problem} for p in warned],
        "sidecar": None,
    }
    if write:
        from xray_xai.models.store import update_sidecar

        side = update_sidecar(weights, {"calibration": entry, "operating_points": points})  # type: ignore[arg-type]
        result["sidecar"] = str(side)
    return result
