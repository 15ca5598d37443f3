"""The defaults that several commands share, each written once (CLI, Python API, web page, report).

Ground floor: constants only, importable by anything.
"""

from __future__ import annotations

__all__ = ["CLUSTER_EXPLAINER", "DECISION_THRESHOLD", "DEFAULT_METHOD"]

#: The explainer used when none is named (CLI, API, web app): LayerCAM at stride 4 with flip TTA and scales 1 and 2,
#: the configuration that localised fractures best in the study of docs/localisation.md, every control near chance.
DEFAULT_METHOD = "layercam"

#: p(abnormal) at or above which a film is called abnormal, unless a command is told otherwise (MURA's rule).
DECISION_THRESHOLD = 0.5

#: The explainer whose maps ``cluster --on explanations`` groups: one backward pass per film, cheap for a data set.
CLUSTER_EXPLAINER = "gradcam"
