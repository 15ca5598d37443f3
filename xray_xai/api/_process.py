"""Process set-up, JSON output and the Ray backend's limits: the plumbing the faces need."""

from __future__ import annotations

import json as _json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from xray_xai.errors import XrayXaiError

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.sdk.interfaces import Model

    ModelSpec = str | Path | Model

#: options the Ray backend lacks, per command, with the value that means "not used"
_LOCAL_ONLY: dict[str, dict[str, Any]] = {
    "explain": {"only": "all", "per_member": False, "resume": False},
    "cluster": {"per_region": False, "select_k_range": None, "on": "features"},
}


def prepare_process() -> None:
    """Process-wide tuning that only a program's entry point may choose (``xray-xai`` calls it once at start, a
    library call never does): freed memory is kept in the process (glibc ``mallopt``), so large activations are
    re-used, not page-faulted in every step (1.4x faster CPU training; see :mod:`xray_xai._util.allocator`)."""
    from xray_xai._util.allocator import keep_freed_memory

    keep_freed_memory()


def to_json(data: Any) -> str:
    """``data`` as indented JSON (numpy scalars and arrays, paths and records become plain values)."""
    from xray_xai._util.fsutil import json_default

    return _json.dumps(data, indent=2, default=json_default)


def ray_unsupported(command: Literal["explain", "cluster"], **options: Any) -> list[str]:
    """The names among ``options`` that ``command`` with ``backend="ray"`` cannot honour (given other than their
    default), e.g. ``ray_unsupported("explain", resume=True)`` -> ``["resume"]``."""
    unused = _LOCAL_ONLY[command]
    return [name for name, value in options.items() if name in unused and value != unused[name]]


def _refuse_on_ray(command: Literal["explain", "cluster"], **options: Any) -> None:
    bad = ray_unsupported(command, **options)
    if bad:
        raise XrayXaiError(f"{', '.join(bad)} only work with backend='local'")


def _specs(models: ModelSpec | Sequence[ModelSpec]) -> list[ModelSpec]:
    from xray_xai.sdk.interfaces import Model

    return [models] if isinstance(models, str | Path | Model) else list(models)
