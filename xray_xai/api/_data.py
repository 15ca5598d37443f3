"""Data sets and films: synthetic phantoms, readers, summaries, decoding uploaded bytes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from xray_xai.sdk.interfaces import DatasetPlugin, Model

    ModelSpec = str | Path | Model


def synth(
    out: str | Path,
    n_studies: int,
    seed: int = 0,
    *,
    abnormal_fraction: float | None = None,
    image_size: int | None = None,
    regions: Sequence[str] | Mapping[str, float] | None = None,
    difficulty: float | None = None,
    overwrite: bool | None = None,
    progress: bool | None = None,
    shortcut: str | None = None,
    shortcut_region: str | None = None,
    shortcut_strength: float | None = None,
) -> Path:
    """Write synthetic phantoms in the MURA-v1.1 layout (``xray-xai synth``) with the registered ``synthetic``
    generator; returns the root to read back. Options left at None are not passed, so the generator's defaults
    apply (built-in: abnormal fraction 0.4, 256 px, all seven regions, difficulty 1, no overwrite, a progress bar).
    ``shortcut="marker"`` plants a token that follows the label in the training films of ``shortcut_region``
    (``shortcut_strength``, default 0.9) and not in the test films: a known shortcut for ``strata`` to find."""
    from xray_xai.data.datasets import synth as _synth

    given = {"abnormal_fraction": abnormal_fraction, "image_size": image_size, "regions": regions,
             "difficulty": difficulty, "overwrite": overwrite, "progress": progress, "shortcut": shortcut,
             "shortcut_region": shortcut_region, "shortcut_strength": shortcut_strength}  # fmt: skip
    return _synth(out, n_studies, seed=seed, **{k: v for k, v in given.items() if v is not None})


def open_dataset(root: str | Path, name: str | None = None, **options: Any) -> DatasetPlugin:
    """The dataset plugin for ``root`` (layout detected when ``name`` is None); ``options`` are the plugin's own
    (e.g. ``val_fraction``, ``labels`` for ``folder``)."""
    from xray_xai.data.datasets import open_dataset as _open

    return _open(root, name, **options)


def data_summary(
    root: str | Path,
    name: str | None = None,
    *,
    images: bool = False,
    progress: bool = False,
    strict: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Counts by split, region and label, and the problems found (``xray-xai data``); ``images`` also decodes every
    image (films whose stream ends early reported as warnings, or as errors with ``strict``). ``options`` go to the
    dataset plugin."""
    from xray_xai.data.datasets import open_dataset as _open
    from xray_xai.data.datasets import summarize

    return summarize(_open(root, name, **options), images=images, progress=progress, strict=strict)


def read_image_bytes(data: bytes, name: str = "upload") -> np.ndarray:
    """Decode an in-memory PNG, JPEG or DICOM file (format sniffed from the content, pixel-count guard) to a float
    ``(H, W)`` film in [0, 1]; ``name`` is used in messages. Bad content raises :class:`xray_xai.errors.ImageError`."""
    from xray_xai.data.images import read_image_bytes as _read

    return _read(data, name)
