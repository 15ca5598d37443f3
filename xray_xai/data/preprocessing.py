"""Compatibility re-export: the names that lived here moved to modules named for what they hold.

* :mod:`xray_xai.data.geometry`: presets, crop/resize/letterbox of films, masks, boxes and points, ``to_tensor``,
  ``denormalize``, ``FLIP_DIMS``;
* :mod:`xray_xai.data.augment`: ``Augment``, ``AUGMENTATIONS``;
* :mod:`xray_xai.data.loader`: ``RecordDataset``, ``collate_skip_bad``, ``Batch``, ``Skipped``, ``load_batch``.

Import from those; this module goes once every caller has moved.
"""

from __future__ import annotations

from xray_xai.data.augment import AUGMENTATIONS, Augment
from xray_xai.data.geometry import (
    FLIP_DIMS,
    PRESETS,
    denormalize,
    geometry,
    geometry_boxes,
    geometry_mask,
    geometry_points,
    geometry_to_tensor,
    preset,
    to_tensor,
)
from xray_xai.data.loader import Batch, RecordDataset, Skipped, collate_skip_bad, load_batch

__all__ = [
    "AUGMENTATIONS",
    "FLIP_DIMS",
    "PRESETS",
    "Augment",
    "Batch",
    "RecordDataset",
    "Skipped",
    "collate_skip_bad",
    "denormalize",
    "geometry",
    "geometry_boxes",
    "geometry_mask",
    "geometry_points",
    "geometry_to_tensor",
    "load_batch",
    "preset",
    "to_tensor",
]
