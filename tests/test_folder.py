"""The plain-folder reader (inference on any folder of images) and open_dataset's auto-detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from xray_xai_plugins.datasets.folder import FolderDataset, parse_label

from xray_xai.data.datasets import detect_dataset, detection_order, open_dataset
from xray_xai.data.images import write_png
from xray_xai.errors import DataError
from xray_xai.testing.datasets import check_dataset, write_tiny_folder, write_tiny_mura


def _png(path: Path) -> Path:
    return write_png(path, np.zeros((8, 8), dtype=np.float32))


def test_lists_images_recursively_skipping_other_files(tmp_path: Path) -> None:
    _png(tmp_path / "b.png")
    _png(tmp_path / "sub" / "XR_WRIST" / "a.png")
    (tmp_path / "sub" / "scan").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)  # DICOM without a suffix
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._b.png").write_bytes(b"mac junk")
    (tmp_path / ".hidden").mkdir()
    _png(tmp_path / ".hidden" / "c.png")
    ds = FolderDataset(tmp_path)
    rels = [r.metadata["relative_path"] for r in ds.records()]
    assert rels == ["b.png", "sub/XR_WRIST/a.png", "sub/scan"]
    assert [r.region for r in ds.records()] == [None, "wrist", None]
    assert all(r.label is None and r.split == "all" for r in ds.records())
    (skipped,) = ds.problems
    assert "1 non-image file" in skipped.problem and "notes.txt" in skipped.problem and skipped.severity == "warning"
    assert ds.records("all") == ds.records()
    with pytest.raises(DataError, match="unknown split 'test'"):
        ds.records("test")
    assert len(FolderDataset(tmp_path, recursive=False).records()) == 1


def test_labels_csv_by_path_or_file_name(tmp_path: Path) -> None:
    _png(tmp_path / "x" / "one.png")
    _png(tmp_path / "y" / "one.png")
    _png(tmp_path / "y" / "two.png")
    _png(tmp_path / "three.png")
    (tmp_path / "labels.csv").write_text(
        "filename,abnormal\nx/one.png,abnormal\ntwo.png,0\none.png,1\nthree.png,maybe\nghost.png,1\n"
    )
    ds = FolderDataset(tmp_path, labels="labels.csv")  # relative to the folder
    labels = {r.metadata["relative_path"]: r.label for r in ds.records()}
    assert labels == {"three.png": None, "x/one.png": 1, "y/one.png": None, "y/two.png": 0}
    messages = " | ".join(p.problem for p in ds.problems)
    assert "ambiguous" in messages and "not a label" in messages and "1 row(s) name no image" in messages
    assert all(r.path.name != "labels.csv" for r in ds.records())


def test_labels_file_errors(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    with pytest.raises(DataError, match="labels file not found"):
        FolderDataset(tmp_path, labels=tmp_path / "nope.csv")
    (tmp_path / "bad.csv").write_text("file,score\na.png,0.3\n")
    with pytest.raises(DataError, match=r"bad\.csv: needs an image column"):
        FolderDataset(tmp_path, labels=tmp_path / "bad.csv")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 1), ("True", 1), ("fractured", 1), ("0", 0), ("normal", 0), ("Non_fractured", 0), ("", None)],
)
def test_parse_label(text: str, expected: int | None) -> None:
    assert parse_label(text) == expected


def test_contract_and_detection_order(tmp_path: Path) -> None:
    root = write_tiny_folder(tmp_path / "films")
    ds = open_dataset(root, labels="labels.csv")
    assert isinstance(ds, FolderDataset)
    assert [(r.metadata["relative_path"], r.label) for r in ds.records()] == [
        ("misc/film0.png", 0),
        ("misc/film2.png", 0),
        ("wrist/film1.png", 1),
        ("wrist/film3.png", 1),
    ]
    check_dataset(ds)
    order = detection_order()
    assert order[-1] == "folder" and order.index("mura") < order.index("fracatlas")
    if "synthetic" in order:
        assert order.index("synthetic") < order.index("mura")
    assert detect_dataset(write_tiny_mura(tmp_path / "m").parent) == "mura"


def test_open_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        open_dataset(tmp_path / "absent")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        open_dataset(tmp_path / "file.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no known data set layout"):
        open_dataset(empty)
