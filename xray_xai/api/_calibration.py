"""Calibration and operating points: ``xray-xai calibrate``, and the one threshold and probability of a model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xray_xai._util.device import resolve_device

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.sdk.interfaces import Model


def calibrate(
    model: str | Path | Model,
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
    calibration_bins: int = 10,
    write: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit post-hoc calibration (``method``: temperature, platt, isotonic or none) and choose a threshold per rule
    (youden, sensitivity=X, specificity=X, fixed=X; the first is used by every command) on ``split``, and with
    ``write`` record them in the checkpoint's sidecar, atomically, the weights untouched (``xray-xai calibrate``).
    See :mod:`xray_xai.models.calibrating`."""
    from xray_xai.models.calibrating import calibrate as _calibrate

    return _calibrate(
        model, data_root, checkpoint=checkpoint, dataset=dataset, dataset_options=dataset_options, split=split,
        method=method, rules=rules, batch_size=batch_size, device=resolve_device(device), tta=tta, strict=strict,
        max_images=max_images, bins=calibration_bins, write=write, progress=progress,
    )  # fmt: skip


def resolve_threshold(model: Model, threshold: float | None = None, *, uncalibrated: bool = False) -> float:
    """The decision threshold every command uses for ``model``: ``threshold`` when given, else the first operating
    point recorded in its sidecar (on the calibrated scale, or the raw one with ``uncalibrated``), else 0.5."""
    from xray_xai.models.operating import resolve_threshold as _resolve

    return _resolve(model, threshold, raw=uncalibrated)[0]


def threshold_source(model: Model, threshold: float | None = None, *, uncalibrated: bool = False) -> str:
    """Where :func:`resolve_threshold`'s value comes from, in words (``youden on val (sidecar, as shown)``...)."""
    from xray_xai.models.operating import resolve_threshold as _resolve

    return _resolve(model, threshold, raw=uncalibrated)[1]


def calibrated_probability(model: Model, probabilities: Any, *, uncalibrated: bool = False) -> Any:
    """``model``'s raw probabilities as shown: through the calibration recorded in its sidecar (numpy array)."""
    from xray_xai.models.calibration import calibrated

    return calibrated(model, probabilities, raw=uncalibrated)


def calibration_info(model: Model) -> dict[str, Any] | None:
    """The calibration recorded in ``model``'s sidecar (method, params, split, validation metrics), or None."""
    sidecar = getattr(model, "sidecar", None)
    entry = sidecar.get("calibration") if isinstance(sidecar, dict) else None
    return dict(entry) if entry else None


def parse_rule(rule: str) -> tuple[str, float | None]:
    """An operating-point rule (``youden``, ``sensitivity=0.9``, ``specificity=0.95``, ``fixed=0.3``) as
    ``(name, value)``; a malformed one raises :class:`~xray_xai.api.ParamError`."""
    from xray_xai.models.operating import parse_rule as _parse

    return _parse(rule)
