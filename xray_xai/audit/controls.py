"""Control maps that know nothing of the model: what a saliency method must beat to mean anything.

A method whose localisation or faithfulness scores match a map of film brightness, of edges or of noise tells us
about the image, not about the classifier. The fourth control - the same method on the fully randomised model - needs
the model and is computed by the audit service (:mod:`xray_xai.audit.service`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["CONTROL_NAMES", "control_maps"]

#: the model-free controls, in report order
CONTROL_NAMES: tuple[str, ...] = ("brightness", "edges", "random")


def _minmax(x: np.ndarray) -> np.ndarray:
    lo = x.reshape(len(x), -1).min(axis=1)[:, None, None]
    hi = x.reshape(len(x), -1).max(axis=1)[:, None, None]
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.asarray((x - lo) / span, dtype=np.float32)


def _as_films(films: Any) -> np.ndarray:
    """``(B, H, W)`` float films from a numpy array or tensor, ``(B, H, W)`` or ``(B, C, H, W)`` (channels averaged)."""
    arr = films.detach().cpu().numpy() if hasattr(films, "detach") else np.asarray(films)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 4:
        arr = arr.mean(axis=1)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"films must be (B, H, W) or (B, C, H, W), got shape {arr.shape}")
    return arr


def control_maps(films: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Model-free maps ``(B, H, W)`` in [0, 1] for each film.

    * ``brightness``: the film itself (bone and burned-in labels are bright on radiographs);
    * ``edges``: Sobel gradient magnitude (cortices, fracture lines, collimation edges);
    * ``random``: uniform noise, seeded by ``seed`` (the chance level of every score).

    ``films`` are the images as the model sees them (``preprocessing.geometry`` output, or the preprocessed tensor;
    per-image min-max scaling makes normalisation irrelevant).
    """
    from skimage.filters import sobel

    arr = _minmax(_as_films(films))
    edges = np.stack([sobel(f) for f in arr]) if len(arr) else arr.copy()
    rng = np.random.default_rng(seed)
    return {
        "brightness": arr,
        "edges": _minmax(edges),
        "random": rng.random(arr.shape, dtype=np.float32),
    }
