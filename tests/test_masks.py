"""Ground-truth masks: boxes, polygons and mask files rasterised at the original film size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xray_xai.data.masks import boxes_mask, ground_truth_mask, polygons_mask
from xray_xai.errors import ImageError
from xray_xai.sdk.interfaces import Box, Record


def test_no_ground_truth_is_all_false(tmp_path: Path) -> None:
    m = ground_truth_mask(Record(tmp_path / "a.png"), (12, 20))
    assert m.shape == (12, 20) and m.dtype == bool and not m.any()


def test_boxes_rasterised_and_clipped() -> None:
    rec = Record(Path("a.png"), boxes=(Box(2, 3, 5, 7), Box(8, 8, 30, 30)))
    m = ground_truth_mask(rec, (10, 12))
    expected = np.zeros((10, 12), bool)
    expected[3:7, 2:5] = True  # x1, y1 exclusive
    expected[8:10, 8:12] = True  # clipped at the film's edge
    np.testing.assert_array_equal(m, expected)


def test_fractional_and_reversed_boxes() -> None:
    m = boxes_mask([Box(4.5, 1.2, 2.0, 3.0)], (6, 6))  # reversed x, fractional edges: touched pixels count
    assert m[1:3, 2:5].all() and m.sum() == 6
    assert not boxes_mask([Box(-5, -5, -1, -1), Box(3, 3, 3, 5)], (6, 6)).any()  # outside / empty


def test_polygon_rasterised() -> None:
    square = ((2.0, 1.0), (8.0, 1.0), (8.0, 5.0), (2.0, 5.0))  # (x, y) points
    rec = Record(Path("a.png"), polygons=(square,))
    m = ground_truth_mask(rec, (10, 12))
    assert m[3, 5]  # row y=3, column x=5 is inside
    assert not m[8, 5] and not m[3, 10] and not m[0, 0]
    rows, cols = np.nonzero(m)
    assert rows.min() >= 1 and rows.max() <= 5 and cols.min() >= 2 and cols.max() <= 8


def test_polygon_clipped_and_degenerate_ignored() -> None:
    m = polygons_mask([((-5, -5), (4, -5), (4, 4), (-5, 4)), ((1, 1), (2, 2))], (8, 8))
    assert m[0, 0] and m[3, 3] and not m[6, 6]


def _mask_png(path: Path, shape: tuple[int, int], rows: slice, cols: slice) -> Path:
    arr = np.zeros(shape, np.uint8)
    arr[rows, cols] = 1  # any nonzero value is ground truth
    Image.fromarray(arr).save(path)
    return path


def test_mask_file_same_size(tmp_path: Path) -> None:
    path = _mask_png(tmp_path / "m.png", (20, 30), slice(5, 10), slice(12, 20))
    m = ground_truth_mask(Record(tmp_path / "a.png", mask_path=path), (20, 30))
    assert m.sum() == 5 * 8 and m[5:10, 12:20].all()


def test_mask_file_resized_nearest(tmp_path: Path) -> None:
    path = _mask_png(tmp_path / "m.png", (20, 30), slice(5, 10), slice(12, 20))
    m = ground_truth_mask(Record(tmp_path / "a.png", mask_path=path), (40, 60))
    expected = np.zeros((40, 60), bool)
    expected[10:20, 24:40] = True
    np.testing.assert_array_equal(m, expected)


def test_union_of_all_sources(tmp_path: Path) -> None:
    path = _mask_png(tmp_path / "m.png", (10, 10), slice(0, 2), slice(0, 2))
    rec = Record(
        tmp_path / "a.png",
        boxes=(Box(8, 8, 10, 10),),
        polygons=(((4, 4), (6, 4), (6, 6), (4, 6)),),
        mask_path=path,
    )
    assert rec.has_ground_truth
    m = ground_truth_mask(rec, (10, 10), source="union")
    assert m[0, 0] and m[9, 9] and m[5, 5] and not m[0, 9]
    auto = ground_truth_mask(rec, (10, 10))  # a pixel mask is the most precise: it alone counts
    assert auto[0, 0] and not auto[9, 9] and not auto[5, 5]
    only_boxes = ground_truth_mask(rec, (10, 10), source="boxes")
    assert only_boxes[9, 9] and not only_boxes[0, 0] and not only_boxes[5, 5]


def test_auto_without_mask_file_is_union_of_boxes_and_polygons(tmp_path: Path) -> None:
    rec = Record(tmp_path / "a.png", boxes=(Box(8, 8, 10, 10),), polygons=(((4, 4), (6, 4), (6, 6), (4, 6)),))
    m = ground_truth_mask(rec, (10, 10))
    assert m[9, 9] and m[5, 5] and not m[0, 0]


def test_unreadable_mask_file_names_it(tmp_path: Path) -> None:
    rec = Record(tmp_path / "a.png", mask_path=tmp_path / "gone.png")
    with pytest.raises(ImageError, match=r"gone\.png: file not found"):
        ground_truth_mask(rec, (4, 4))
