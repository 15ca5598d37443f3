"""Ground truth for localisation: a record's boxes, polygons and mask file, rasterised at the original film size.

The audit compares heatmaps with this mask after mapping it through the model's geometry
(:func:`xray_xai.data.geometry.geometry_mask`), so it is built once, at the film's own resolution.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

from xray_xai.data.images import read_image
from xray_xai.sdk.interfaces import Box, Record

__all__ = ["boxes_mask", "ground_truth_mask", "polygons_mask"]


def _shape(shape: Sequence[int]) -> tuple[int, int]:
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"mask shape must be positive, got {tuple(shape)}")
    return h, w


def boxes_mask(boxes: Iterable[Box], shape: Sequence[int]) -> np.ndarray:
    """Union of boxes (x0, y0 inclusive; x1, y1 exclusive; fractional edges cover any touched pixel), clipped."""
    h, w = _shape(shape)
    mask = np.zeros((h, w), dtype=bool)
    for b in boxes:
        x0, x1 = sorted((b.x0, b.x1))
        y0, y1 = sorted((b.y0, b.y1))
        c0, c1 = max(0, int(np.floor(x0))), min(w, int(np.ceil(x1)))
        r0, r1 = max(0, int(np.floor(y0))), min(h, int(np.ceil(y1)))
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = True
    return mask


def polygons_mask(polygons: Iterable[Sequence[Sequence[float]]], shape: Sequence[int]) -> np.ndarray:
    """Union of filled polygons given as sequences of ``(x, y)`` points (scikit-image), clipped to the film."""
    from skimage.draw import polygon

    h, w = _shape(shape)
    mask = np.zeros((h, w), dtype=bool)
    for poly in polygons:
        pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        if len(pts) < 3:
            continue
        rr, cc = polygon(pts[:, 1], pts[:, 0], shape=(h, w))
        mask[rr, cc] = True
    return mask


def _mask_file(path: str, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    m = read_image(path) > 0  # same decoder and guards as films; any nonzero pixel is ground truth
    if m.shape != shape:
        img = Image.fromarray(m.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.Resampling.NEAREST)
        m = np.asarray(img) > 0
    return m


def ground_truth_mask(
    record: Record, shape: Sequence[int], source: Literal["auto", "mask", "polygons", "boxes", "union"] = "auto"
) -> np.ndarray:
    """bool ``(H, W)`` ground truth of ``record`` at the original film size. All False without ground truth.

    ``source="auto"``: the pixel mask (``record.mask_path``; nonzero = True, resized with nearest neighbour if its
    size differs) when there is one, since a box drawn around the same finding would swallow it (synthetic phantoms
    carry both); otherwise the union of boxes and polygons (FracAtlas: the fracture boxes, as in the published
    pointing-game numbers). ``"mask"``, ``"polygons"`` and ``"boxes"`` take only that source; ``"union"`` all three.

    An unreadable mask file raises :class:`~xray_xai.errors.ImageError` naming it.
    """
    h, w = _shape(shape)
    if source == "auto":
        source = "mask" if record.mask_path is not None else "union"
    mask = np.zeros((h, w), dtype=bool)
    if source in ("boxes", "union") and record.boxes:
        mask |= boxes_mask(record.boxes, (h, w))
    if source in ("polygons", "union") and record.polygons:
        mask |= polygons_mask(record.polygons, (h, w))
    if source in ("mask", "union") and record.mask_path is not None:
        mask |= _mask_file(str(record.mask_path), (h, w))
    return mask
