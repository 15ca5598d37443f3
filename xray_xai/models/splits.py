"""The training data of a run: the labelled ``train`` and ``val`` splits, their fingerprint and the loss weights.

Losses: ``bce``; ``weighted-bce`` weighs each image by the other class's share on the training split
(normal: |A|/(|N|+|A|), abnormal: |N|/(|N|+|A|)); ``region-weighted-bce`` does the same per region t
(normal: |A_t|/(|N_t|+|A_t|), abnormal: |N_t|/(|N_t|+|A_t|)), as in the MURA paper.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xray_xai.errors import DataError
from xray_xai.sdk.interfaces import Record

__all__ = ["class_weights", "open_splits", "region_class_weights", "sample_weights", "split_fingerprint", "subset"]


def class_weights(labels: Sequence[int]) -> dict[int, float]:
    """Weight of each class on a split: normal |A|/(|N|+|A|), abnormal |N|/(|N|+|A|) (1.0 if a class is missing)."""
    n_abn = sum(1 for v in labels if v == 1)
    n_norm = sum(1 for v in labels if v == 0)
    total = n_abn + n_norm
    if n_abn == 0 or n_norm == 0:
        return {0: 1.0, 1: 1.0}
    return {0: n_abn / total, 1: n_norm / total}


def region_class_weights(records: Sequence[Record]) -> dict[str, dict[int, float]]:
    """:func:`class_weights` per region of ``records`` (the training split); region ``None`` counts as "unknown"."""
    by_region: dict[str, list[int]] = {}
    for rec in records:
        if rec.label is not None:
            by_region.setdefault(rec.region or "unknown", []).append(int(rec.label))
    return {region: class_weights(labels) for region, labels in sorted(by_region.items())}


def split_fingerprint(train_records: Sequence[Record], val_records: Sequence[Record]) -> str:
    """sha256 of the sorted train and val image ids: two runs on the same split share it."""
    h = hashlib.sha256()
    for name, recs in (("train", train_records), ("val", val_records)):
        h.update(name.encode())
        for image_id in sorted(r.image_id for r in recs):
            h.update(image_id.encode() + b"\n")
    return h.hexdigest()[:16]


def sample_weights(records: Sequence[Record], loss: str) -> list[float]:
    """The loss weight of each record under ``loss`` (``bce``: all 1)."""
    if loss == "bce":
        return [1.0] * len(records)
    if loss == "weighted-bce":
        cw = class_weights([int(r.label) for r in records if r.label is not None])
        return [cw[int(r.label or 0)] for r in records]
    rw = region_class_weights(records)
    return [rw[r.region or "unknown"][int(r.label or 0)] for r in records]


def subset(records: list[Record], max_images: int | None, seed: int) -> list[Record]:
    """A seeded random subset of ``max_images`` records, kept in their original order."""
    if max_images is None or len(records) <= max_images:
        return records
    import numpy as np

    keep = set(np.random.default_rng(seed).permutation(len(records))[:max_images].tolist())
    return [r for i, r in enumerate(records) if i in keep]


def open_splits(
    data_root: str | Path,
    dataset: str | None,
    regions: Sequence[str] | None,
    max_images: int | None,
    seed: int,
    dataset_options: dict[str, Any] | None = None,
) -> tuple[str, list[Record], list[Record]]:
    """The data set's name and its labelled train and val records (restricted to ``regions``, subset to
    ``max_images`` with seeds ``seed`` and ``seed + 1``); an empty split raises DataError."""
    from xray_xai.data.datasets import open_dataset

    ds = open_dataset(data_root, dataset, **(dataset_options or {}))
    name = getattr(ds, "name", "") or (dataset or "")
    train_recs = [r for r in ds.records("train") if r.label is not None]
    val_recs = [r for r in ds.records("val") if r.label is not None]
    if regions:
        wanted = {r.lower() for r in regions}
        train_recs = [r for r in train_recs if (r.region or "").lower() in wanted]
        val_recs = [r for r in val_recs if (r.region or "").lower() in wanted]
    if not train_recs:
        raise DataError(
            data_root, "no labelled images in the 'train' split" + (f" for {list(regions)}" if regions else "")
        )
    if not val_recs:
        raise DataError(data_root, "no labelled images in the 'val' split; training validates on it")
    train_recs = subset(train_recs, max_images, seed)
    val_recs = subset(val_recs, max_images, seed + 1)
    return name, train_recs, val_recs
