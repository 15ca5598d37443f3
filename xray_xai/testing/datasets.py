"""Contract checks for dataset plugins, shipped so third-party authors run the same suite::

    from xray_xai.testing.datasets import check_dataset
    check_dataset(MyDataset("path/to/tiny/copy"))

Also writes tiny example trees in the built-in layouts (:func:`write_tiny_mura`, :func:`write_tiny_fracatlas`,
:func:`write_tiny_folder`) and :func:`example_root` picks the right one for a registered plugin, so the contract test
can run over every dataset plugin without real data. The writers produce the layouts byte for byte as the real data
sets ship them (CSV prefixes, headers), independently of the readers they test.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from xray_xai.data.images import write_png
from xray_xai.errors import XrayXaiError
from xray_xai.sdk.interfaces import DatasetPlugin, Problem, Record

__all__ = [
    "check_dataset",
    "example_root",
    "write_tiny_folder",
    "write_tiny_fracatlas",
    "write_tiny_mura",
]

#: (MURA split, region folder, patient, study folder, number of images) of the tree :func:`write_tiny_mura` writes
TINY_MURA: tuple[tuple[str, str, str, str, int], ...] = (
    ("train", "XR_WRIST", "patient00001", "study1_positive", 2),
    ("train", "XR_WRIST", "patient00001", "study2_negative", 1),
    ("train", "XR_WRIST", "patient00002", "study1_negative", 2),
    ("train", "XR_ELBOW", "patient00003", "study1_positive", 3),
    ("train", "XR_ELBOW", "patient00004", "study1_negative", 1),
    ("train", "XR_HAND", "patient00005", "study1_positive", 1),
    ("train", "XR_SHOULDER", "patient00001", "study1_negative", 2),
    ("train", "XR_SHOULDER", "patient00006", "study1_positive", 2),
    ("valid", "XR_WRIST", "patient11185", "study1_positive", 2),
    ("valid", "XR_ELBOW", "patient11186", "study1_negative", 1),
    ("valid", "XR_HAND", "patient11187", "study1_negative", 2),
)


def _film(seed: int, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((size, size)).astype(np.float32)


def write_tiny_mura(
    root: str | Path, studies: Iterable[tuple[str, str, str, str, int]] = TINY_MURA, *, size: int = 32
) -> Path:
    """Write a MURA-v1.1 tree (32 px PNGs and the four CSVs, ``MURA-v1.1/`` prefixes) under ``root``; returns
    ``root/MURA-v1.1``."""
    mura = Path(root) / "MURA-v1.1"
    lines: dict[str, list[str]] = {"train": [], "valid": []}
    labels: dict[str, list[str]] = {"train": [], "valid": []}
    for i, (split, region, patient, study, n_images) in enumerate(studies):
        rel = f"MURA-v1.1/{split}/{region}/{patient}/{study}/"
        labels[split].append(f"{rel},{1 if study.endswith('_positive') else 0}")
        for k in range(1, n_images + 1):
            write_png(mura / split / region / patient / study / f"image{k}.png", _film(100 * i + k, size))
            lines[split].append(f"{rel}image{k}.png")
    for split in ("train", "valid"):
        (mura / f"{split}_image_paths.csv").write_text("".join(f"{x}\n" for x in lines[split]))
        (mura / f"{split}_labeled_studies.csv").write_text("".join(f"{x}\n" for x in labels[split]))
    return mura


def write_tiny_fracatlas(root: str | Path, n_images: int = 12, *, size: int = 48) -> Path:
    """Write a FracAtlas tree (``images/{Fractured,Non_fractured}``, ``dataset.csv``, one PASCAL VOC file per image,
    COCO polygons for the fractured ones) under ``root``; every third image is fractured. Returns ``root``."""
    root = Path(root)
    header = "image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured,fracture_count,frontal,lateral,oblique"
    rows = [header]
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 0, "name": "fractured"}]}
    parts = ("hand", "leg", "hip", "shoulder")
    for i in range(n_images):
        image_id = f"IMG{i + 1:07d}.jpg"
        fractured = int(i % 3 == 0)
        folder = "Fractured" if fractured else "Non_fractured"
        path = root / "images" / folder / image_id
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((_film(i, size) * 255).astype(np.uint8)).save(path, format="JPEG")
        onehot = [int(parts[i % 4] == p) for p in parts]
        view = [int(i % 3 == v) for v in range(3)]
        # image_id, hand, leg, hip, shoulder, mixed, hardware, multiscan, fractured, fracture_count, views
        rows.append(",".join(map(str, [image_id, *onehot, 0, i % 2, 0, fractured, fractured, *view])))
        objects = ""
        if fractured:
            x0, y0, x1, y1 = 8.0, 10.0, 20.0, 24.0
            objects = (
                "<object><name>fractured</name><bndbox>"
                f"<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            )
            coco["images"].append({"id": i, "width": size, "height": size, "file_name": image_id})
            coco["annotations"].append(
                {"id": i, "image_id": i, "category_id": 0, "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}
            )
        voc = root / "Annotations" / "PASCAL VOC" / (Path(image_id).stem + ".xml")
        voc.parent.mkdir(parents=True, exist_ok=True)
        voc.write_text(
            f"<annotation><filename>{image_id}</filename><size><width>{size}</width><height>{size}</height>"
            f"<depth>3</depth></size>{objects}</annotation>"
        )
    (root / "dataset.csv").write_text("\n".join(rows) + "\n")
    coco_path = root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json"
    coco_path.parent.mkdir(parents=True, exist_ok=True)
    coco_path.write_text(json.dumps(coco))
    return root


def write_tiny_folder(root: str | Path, n_images: int = 4, *, size: int = 32) -> Path:
    """Write ``n_images`` PNGs in two subfolders plus ``labels.csv`` (path,label) under ``root``; returns ``root``."""
    root = Path(root)
    rows = ["path,label"]
    for i in range(n_images):
        rel = f"{'wrist' if i % 2 else 'misc'}/film{i}.png"
        write_png(root / rel, _film(i, size))
        rows.append(f"{rel},{i % 2}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def example_root(name: str, tmp: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """A tiny data set for the registered dataset plugin ``name`` written under ``tmp``, with the options to open
    it; None if no example is known (third-party readers bring their own). Generators generate one."""
    from xray_xai.sdk.registry import datasets

    tmp = Path(tmp)
    cls = datasets.get(name)
    if cls.tags.generator:
        return Path(cls.generate(tmp / name, n_studies=8, seed=0)), {}
    if name == "mura":
        return write_tiny_mura(tmp / name).parent, {}
    if name == "fracatlas":
        return write_tiny_fracatlas(tmp / name), {}
    if name == "folder":
        return write_tiny_folder(tmp / name), {"labels": "labels.csv"}
    return None


def _fail(ds: DatasetPlugin, message: str) -> None:
    raise AssertionError(f"dataset {ds.name!r} ({type(ds).__name__}): {message}")


def _snapshot(records: list[Record]) -> list[tuple[Any, ...]]:
    return [(str(r.path), r.split, r.region, r.patient, r.study, r.label, r.view, r.boxes, r.polygons) for r in records]


def _check_ground_truth(ds: DatasetPlugin, r: Record) -> None:
    for b in r.boxes:
        coords = (b.x0, b.y0, b.x1, b.y1)
        if not all(math.isfinite(c) for c in coords) or min(coords) < 0:
            _fail(ds, f"{r.path}: box {b} has a negative or non-finite coordinate")
        if not (b.x1 > b.x0 and b.y1 > b.y0):
            _fail(ds, f"{r.path}: box {b} is empty (need x1 > x0 and y1 > y0)")
    for poly in r.polygons:
        if len(poly) < 3:
            _fail(ds, f"{r.path}: polygon with {len(poly)} point(s); need at least 3")
        if not all(math.isfinite(c) for pt in poly for c in pt):
            _fail(ds, f"{r.path}: polygon with a non-finite point")
    if r.mask_path is not None and not Path(r.mask_path).is_file():
        _fail(ds, f"{r.path}: mask_path {r.mask_path} does not exist")
    if r.has_ground_truth and r.label == 0:
        _fail(ds, f"{r.path}: labelled normal (0) but carries localisation ground truth")


def check_dataset(ds: DatasetPlugin, *, check_files: bool = True, reopen: bool = True) -> None:
    """Assert the dataset contract on an opened plugin; raises AssertionError naming the plugin and the fault.

    Checked: ``records()`` is a non-empty list of :class:`Record` in a deterministic order (twice, and again after
    re-opening the same root with the same options when ``reopen``); labels are 0, 1 or None; every path exists
    (``check_files``) and image ids are unique; each record's split is one of ``ds.splits`` and the per-split lists
    partition ``records()`` in the same order; no patient and no study spans two splits; a study's records share
    patient and label; ground truth is well formed (boxes non-empty and non-negative, polygons of >= 3 finite
    points, existing mask files, none on a record labelled 0) and present when the plugin's tags promise it;
    ``problems`` holds :class:`Problem` objects; ``detect()`` accepts the plugin's own root; an unknown split raises
    :class:`~xray_xai.errors.XrayXaiError`.
    """
    if not ds.name:
        _fail(ds, "has no plugin name")
    records = ds.records()
    _check_records(ds, records, check_files)
    _check_deterministic(ds, records, reopen)
    _check_splits(ds, records)
    _check_studies(ds, records)
    if not isinstance(ds.problems, list) or not all(isinstance(p, Problem) for p in ds.problems):
        _fail(ds, "problems must be a list of Problem")
    if not type(ds).detect(ds.root):
        _fail(ds, f"detect() does not recognise the plugin's own root {ds.root}")


def _check_records(ds: DatasetPlugin, records: Any, check_files: bool) -> None:
    """A non-empty list of well-formed records with existing files and unique image ids."""
    if not isinstance(records, list) or not records:
        _fail(ds, f"records() must return a non-empty list, got {type(records).__name__} of {len(records)}")
    for r in records:
        if not isinstance(r, Record):
            _fail(ds, f"records() returned a {type(r).__name__}, not a Record")
        if not isinstance(r.path, Path):
            _fail(ds, f"record path {r.path!r} is not a pathlib.Path")
        if r.label not in (0, 1, None) or isinstance(r.label, bool):
            _fail(ds, f"{r.path}: label {r.label!r} is not 0, 1 or None")
        if check_files and not r.path.is_file():
            _fail(ds, f"{r.path}: file does not exist")
        if r.split not in ds.splits:
            _fail(ds, f"{r.path}: split {r.split!r} is not one of {ds.splits}")
        if not isinstance(r.metadata, dict):
            _fail(ds, f"{r.path}: metadata is not a dict")
        _check_ground_truth(ds, r)
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        _fail(ds, f"image id {dup!r} occurs more than once")


def _check_deterministic(ds: DatasetPlugin, records: list[Record], reopen: bool) -> None:
    """The same records in the same order on every call, and after re-opening the same root with the same options."""
    if _snapshot(ds.records()) != _snapshot(records) or _snapshot(ds.records("all")) != _snapshot(records):
        _fail(ds, "records(), records(None) and records('all') differ between calls")
    if reopen:
        again = type(ds)(ds.root, **ds.options)
        if _snapshot(again.records()) != _snapshot(records):
            _fail(ds, "re-opening the same root with the same options gives different records or order")


def _check_splits(ds: DatasetPlugin, records: list[Record]) -> None:
    """The per-split lists partition the records, in order; an unknown split raises XrayXaiError."""
    by_split = {s: ds.records(s) for s in ds.splits}
    if sum(len(v) for v in by_split.values()) != len(records):
        _fail(ds, "the per-split record lists do not add up to records()")
    for s, recs in by_split.items():
        if any(r.split != s for r in recs):
            _fail(ds, f"records({s!r}) returned records of another split")
        snap = _snapshot(recs)
        expected = _snapshot([r for r in records if r.split == s])
        if snap != expected:
            _fail(ds, f"records({s!r}) is not records() filtered to that split, in the same order")
    try:
        ds.records("no-such-split")
    except XrayXaiError:
        pass
    else:
        _fail(ds, "records('no-such-split') did not raise an XrayXaiError")


def _check_studies(ds: DatasetPlugin, records: list[Record]) -> None:
    """No patient or study spans two splits; a study is one patient and one label; the tags' promises hold."""
    seen_patient: dict[str, str] = {}
    for r in records:
        if r.patient is not None and seen_patient.setdefault(r.patient, r.split) != r.split:
            _fail(ds, f"patient {r.patient!r} is in splits {seen_patient[r.patient]!r} and {r.split!r}")
    for study, recs in ds.studies().items():
        if len({r.split for r in recs}) > 1:
            _fail(ds, f"study {study!r} spans splits {sorted({r.split for r in recs})}")
        if len({r.patient for r in recs}) > 1:
            _fail(ds, f"study {study!r} has records of several patients")
        if len({r.label for r in recs}) > 1:
            _fail(ds, f"study {study!r} has records with different labels")
    if ds.tags.has_studies and any(r.study is None for r in records):
        _fail(ds, "tagged has_studies but some records have no study id")
    if ds.tags.has_ground_truth and any(r.label == 1 for r in records) and not any(r.has_ground_truth for r in records):
        _fail(ds, "tagged has_ground_truth but no abnormal record carries boxes, polygons or a mask")
