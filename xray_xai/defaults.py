"""The defaults that several commands share, each written once (CLI, Python API, web page, report).

Ground floor: constants only, importable by anything.
"""

from __future__ import annotations

__all__ = [
    "CALIBRATION_METHODS",
    "CLUSTER_EXPLAINER",
    "DECISION_THRESHOLD",
    "DEFAULT_LEVELS",
    "DEFAULT_METHOD",
    "STUDY_AGGREGATIONS",
]

#: The explainer used when none is named (CLI, API, web app): LayerCAM at stride 4 with flip TTA and scales 1 and 2,
#: the configuration that localised fractures best in the study of docs/localisation.md, every control near chance.
DEFAULT_METHOD = "layercam"

#: p(abnormal) at or above which a film is called abnormal, unless a command is told otherwise (MURA's rule).
DECISION_THRESHOLD = 0.5

#: The explainer whose maps ``cluster --on explanations`` groups: one backward pass per film, cheap for a data set.
CLUSTER_EXPLAINER = "gradcam"

#: post-hoc calibrations ``xray-xai calibrate --method`` fits on validation (temperature first: the default);
#: ``none`` records operating points only (:mod:`xray_xai.models.calibration`)
CALIBRATION_METHODS: tuple[str, ...] = ("temperature", "platt", "isotonic", "none")

#: how a study's probability is made from its views' (``--study-aggregation``): MURA's published mean first
STUDY_AGGREGATIONS: tuple[str, ...] = ("mean", "max", "noisy-or")

#: specificities at which sensitivity is reported, and sensitivities at which specificity is (``evaluate``)
DEFAULT_LEVELS: tuple[float, ...] = (0.90, 0.95)
