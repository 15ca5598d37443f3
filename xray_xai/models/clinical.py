"""The clinical part of ``evaluate``: calibration before and after, and the metrics at each operating point.

Everything is computed on the split evaluated, at thresholds fixed before it was seen (given, recorded on
validation by ``xray-xai calibrate``, or the default 0.5): nothing here tunes a threshold on the data it reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xray_xai.defaults import DECISION_THRESHOLD
from xray_xai.sdk.interfaces import Model, Record

__all__ = ["clinical_section", "operating_rows"]


def operating_rows(
    model: Model, in_use: tuple[float, str], uncalibrated: bool
) -> list[tuple[str, float, str, dict[str, Any] | None]]:
    """``(name, threshold, source, validation metrics)`` of the threshold in use, the default 0.5 and every operating
    point of the sidecar (on the scale shown), without repeats; the one in use first."""
    from xray_xai.models.calibration import calibrator_of
    from xray_xai.models.operating import operating_points_of

    shown_raw = uncalibrated or calibrator_of(model) is None
    cut, source = in_use
    rows: list[tuple[str, float, str, dict[str, Any] | None]] = []
    points = operating_points_of(model)
    for i, point in enumerate(points):
        t = float(point["threshold_raw"] if shown_raw else point["threshold"])
        validation = point.get("validation") if not shown_raw or calibrator_of(model) is None else None
        rows.append((str(point.get("rule", f"point {i + 1}")), t, f"chosen on {point.get('split', 'val')}", validation))
    rows.append(("default", DECISION_THRESHOLD, "default", None))
    if source.startswith("given"):
        rows.insert(0, ("given", cut, source, None))
    out: list[tuple[str, float, str, dict[str, Any] | None]] = []
    seen: set[tuple[str, float]] = set()
    for row in sorted(rows, key=lambda r: r[1] != cut):  # the one in use first, then in order
        if (row[0], row[1]) not in seen and not (row[0] == "default" and any(r[1] == row[1] for r in out)):
            seen.add((row[0], row[1]))
            out.append(row)
    return out


def clinical_section(
    model: Model,
    kept: Sequence[Record],
    y: np.ndarray,
    raw: np.ndarray,
    probs: np.ndarray,
    aggregation: str,
    in_use: tuple[float, str],
    uncalibrated: bool,
    options: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``({"calibration", "calibration_uncalibrated", "operating_points"}, curves for the figures)``.

    ``calibration`` describes the probabilities shown (image and study level, overall and per region);
    ``calibration_uncalibrated`` the raw ones, present when a calibration was applied (before and after);
    ``operating_points`` the metrics at each threshold of :func:`operating_rows`, at both levels.
    """
    from xray_xai.models.calibration_metrics import calibration_report
    from xray_xai.models.metrics import study_regions, study_scores
    from xray_xai.models.operating import metrics_at

    regions = [r.region for r in kept]
    s_ids, s_y, s_p = study_scores(kept, probs, aggregation)
    s_raw = study_scores(kept, raw, aggregation)[2]
    s_region = study_regions(kept)
    s_regions = [s_region[s] for s in s_ids]
    shown = {"image": calibration_report(y, probs, regions, **options),
             "study": calibration_report(s_y, s_p, s_regions, **options)}  # fmt: skip
    section: dict[str, Any] = {"calibration": shown}
    applied = not np.array_equal(raw, probs)
    series: dict[str, list[tuple[str, dict[str, Any]]]] = {"image": [], "study": []}
    if applied:
        before = {"image": calibration_report(y, raw, regions, **options),
                  "study": calibration_report(s_y, s_raw, s_regions, **options)}  # fmt: skip
        section["calibration_uncalibrated"] = before
        for level in series:
            series[level].append(("uncalibrated", before[level]["overall"]))
    for level in series:
        series[level].append(("calibrated" if applied else "as shown", shown[level]["overall"]))
    points = []
    for i, (name, t, source, validation) in enumerate(operating_rows(model, in_use, uncalibrated)):
        points.append({
            "name": name, "threshold": t, "source": source, "in_use": i == 0 and t == in_use[0],
            "image": metrics_at(y, probs, t), "study": metrics_at(s_y, s_p, t), "validation": validation,
        })  # fmt: skip
    section["operating_points"] = points
    marks = [(p["name"], p["threshold"]) for p in points]
    curves = {
        "curves": [("image", y, probs, marks), ("study", s_y, s_p, marks)],
        "reliability": [(f"{level} level", series[level]) for level in ("image", "study")],
    }
    return section, curves
