"""The FracAtlas reader: on the real copy in ../shared/data/fracatlas (skipped when absent) and on tiny trees."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from xray_xai_plugins.datasets._splits import stratified_split
from xray_xai_plugins.datasets.fracatlas import FracAtlasDataset

from xray_xai.data.datasets import open_dataset
from xray_xai.errors import DataError
from xray_xai.testing.datasets import check_dataset, write_tiny_fracatlas

QUIRK = "IMG0003298.jpg"


@pytest.fixture(scope="module")
def real() -> FracAtlasDataset:
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "fracatlas"
    if not (root / "dataset.csv").is_file():
        pytest.skip("../shared/data/fracatlas is not beside the repository")
    return FracAtlasDataset(root)


def test_counts_match_the_csv_rows_whose_images_exist(real: FracAtlasDataset) -> None:
    with open(real.data_dir / "dataset.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    on_disk = {p.name for p in (real.data_dir / "images").glob("*/*.jpg")}
    present = [r for r in rows if r["image_id"] in on_disk]
    records = real.records()
    assert len(records) == len(present)
    assert {r.path.name for r in records} == {r["image_id"] for r in present}
    # label = folder; the CSV agrees everywhere but on the documented quirk
    csv_fractured = {r["image_id"]: int(r["fractured"]) for r in present}
    differing = [r.path.name for r in records if r.label != csv_fractured[r.path.name]]
    assert differing == [QUIRK]
    assert sum(r.label == 1 for r in records) == sum(csv_fractured.values()) + 1


def test_quirk_is_reported_and_label_rule_is_selectable(real: FracAtlasDataset) -> None:
    (problem,) = [p for p in real.problems if QUIRK in p.path]
    assert "label mismatch" in problem.problem
    (rec,) = [r for r in real.records() if r.path.name == QUIRK]
    assert rec.label == 1 and rec.has_ground_truth and rec.metadata["csv_fractured"] == 0
    csv_wins = FracAtlasDataset(real.root, label_from="csv", annotations=False)
    (rec_csv,) = [r for r in csv_wins.records() if r.path.name == QUIRK]
    assert rec_csv.label == 0


def test_boxes_inside_the_image_and_polygons_for_fractured(real: FracAtlasDataset) -> None:
    fractured = [r for r in real.records() if r.label == 1]
    assert fractured
    for r in fractured:
        assert r.boxes and all(b.label == "fracture" for b in r.boxes), r.path
        assert r.polygons and all(len(poly) >= 3 for poly in r.polygons), r.path
        with Image.open(r.path) as im:
            width, height = im.size
        for b in r.boxes:
            assert 0 <= b.x0 < b.x1 <= width and 0 <= b.y0 < b.y1 <= height, (r.path, b, width, height)
        for poly in r.polygons:
            assert all(-1 <= x <= width + 1 and -1 <= y <= height + 1 for x, y in poly), r.path
    assert not any(r.has_ground_truth for r in real.records() if r.label == 0)


def test_region_view_and_metadata_columns(real: FracAtlasDataset) -> None:
    by_name = {r.path.name: r for r in real.records()}
    first = by_name["IMG0000001.jpg"]  # leg, multiscan, frontal + lateral
    assert first.region == "leg" and first.view == "multiple"
    assert first.metadata["multiscan"] == 1 and first.metadata["frontal"] == 1 and first.metadata["lateral"] == 1
    assert first.metadata["hardware"] == 0 and first.metadata["fracture_count"] == 0
    assert {r.region for r in real.records()} <= {"hand", "leg", "hip", "shoulder", "mixed"}
    assert {r.view for r in real.records()} <= {"frontal", "lateral", "oblique", "multiple", None}
    assert all(r.patient is None and r.study is None for r in real.records())


def test_stratified_split_and_official_split(real: FracAtlasDataset) -> None:
    records = real.records()
    for label in (0, 1):
        counts = Counter(r.split for r in records if r.label == label)
        total = sum(counts.values())
        assert abs(counts["train"] / total - 0.7) < 0.03
        assert abs(counts["val"] / total - 0.1) < 0.03
        assert abs(counts["test"] / total - 0.2) < 0.03
    assert real.records("valid") == real.records("val")
    official = FracAtlasDataset(real.root, official_split=True, annotations=False)
    split_dir = real.data_dir / "Utilities" / "Fracture Split"
    for name, ours in (("train", "train"), ("valid", "val"), ("test", "test")):
        listed = set((split_dir / f"{name}.csv").read_text().split()[1:])
        got = {r.path.name for r in official.records(ours) if r.metadata.get("official_split")}
        assert got == listed & {r.path.name for r in records}


def test_contract_on_real_data(real: FracAtlasDataset) -> None:
    check_dataset(real, reopen=False)
    assert FracAtlasDataset.detect(real.root)


def test_stratified_split_exact_proportions_and_determinism() -> None:
    strata = {f"k{i}": ("a" if i < 100 else "b") for i in range(150)}
    split = stratified_split(strata, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=5)
    assert Counter(v for k, v in split.items() if strata[k] == "a") == {"train": 70, "val": 10, "test": 20}
    assert Counter(v for k, v in split.items() if strata[k] == "b") == {"train": 35, "val": 5, "test": 10}
    assert stratified_split(dict(reversed(list(strata.items()))), {"train": 0.7, "val": 0.1, "test": 0.2}, 5) == split
    assert stratified_split(strata, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=6) != split


def test_tiny_tree_reads_boxes_polygons_and_contract(tmp_path: Path) -> None:
    root = write_tiny_fracatlas(tmp_path / "fa", n_images=9)
    ds = open_dataset(root)
    assert isinstance(ds, FracAtlasDataset)
    assert ds.problems == []
    fractured = [r for r in ds.records() if r.label == 1]
    assert len(fractured) == 3
    assert all(len(r.boxes) == 1 and len(r.polygons) == 1 for r in fractured)
    assert {r.region for r in ds.records()} == {"hand", "leg", "hip", "shoulder"}
    check_dataset(ds)


def test_missing_columns_raise_naming_file_and_columns(tmp_path: Path) -> None:
    root = write_tiny_fracatlas(tmp_path / "fa", n_images=3)
    table = root / "dataset.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join(",".join(line.split(",")[:-2]) for line in lines) + "\n")
    with pytest.raises(DataError, match=r"dataset\.csv: missing column\(s\) lateral, oblique"):
        FracAtlasDataset(root)


def test_images_missing_on_disk_are_summarised(tmp_path: Path) -> None:
    root = write_tiny_fracatlas(tmp_path / "fa", n_images=6)
    (root / "images" / "Non_fractured" / "IMG0000002.jpg").unlink()
    (root / "images" / "Non_fractured" / "IMG0000003.jpg").unlink()
    (root / "images" / "Non_fractured" / "._IMG0000005.jpg").write_bytes(b"mac junk")
    ds = FracAtlasDataset(root)
    assert len(ds.records()) == 4
    summary = [p for p in ds.problems if "2 image(s) listed here" in p.problem]
    assert len(summary) == 1 and summary[0].path == "dataset.csv"
    details = sorted(p.path for p in ds.problems if "missing on disk" in p.problem)
    assert details == ["images/IMG0000002.jpg", "images/IMG0000003.jpg"]


def test_not_fracatlas(tmp_path: Path) -> None:
    assert not FracAtlasDataset.detect(tmp_path)
    with pytest.raises(DataError, match="not a FracAtlas layout"):
        FracAtlasDataset(tmp_path)


def _cut_films(real: FracAtlasDataset) -> list[Path]:
    """The films of the real copy whose JPEG stream ends before its end marker (no FF D9 anywhere: entropy-coded
    data never holds it, and these files carry no thumbnail). 24 more end in stray bytes after their end marker;
    they decode whole."""
    return [p for p in sorted((real.data_dir / "images").rglob("*.jpg")) if b"\xff\xd9" not in p.read_bytes()]


def test_real_cut_films_are_kept_with_warnings_or_refused_by_measured_damage(real: FracAtlasDataset) -> None:
    """47 films of the copy end early; PIL refuses all. 27 lose at most a tenth of their rows: kept, with a warning;
    20 lose more (12-55 %): refused with the measurement. ``strict`` refuses all 47."""
    import numpy as np

    from xray_xai.data.images import read_film
    from xray_xai.errors import ImageError

    cut = _cut_films(real)
    assert len(cut) == 47
    kept, refused = [], []
    for path in cut:
        try:
            film = read_film(path)
        except ImageError as exc:
            assert "stream ends early" in str(exc) and "refused: under 90% of the rows decoded" in str(exc)
            refused.append(path)
        else:
            assert film.warning is not None and film.warning.path == str(path)
            assert film.pixels.shape[0] in (373, 454) and np.isfinite(film.pixels).all()
            kept.append(path)
        with pytest.raises(ImageError, match=r"refused: (strict|under 90%)"):
            read_film(path, strict=True)
    assert (len(kept), len(refused)) == (27, 20)
    by_name = {p.name: p for p in cut}
    film = read_film(by_name["IMG0004256.jpg"])
    assert str(film.warning).endswith(
        "IMG0004256.jpg: JPEG stream ends early (no end marker), 414 of 454 rows decoded (91.2 %), "
        "the last 40 black: kept"
    )
    with pytest.raises(ImageError, match=r"206 of 454 rows decoded \(45\.4 %\)"):
        read_film(by_name["IMG0004145.jpg"])


def test_real_cut_film_rows_match_pils_own_partial_decode(
    real: FracAtlasDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decoded rows are PIL's pixels (PIL's LOAD_TRUNCATED_IMAGES decode agrees on them)."""
    import numpy as np
    from PIL import ImageFile

    from xray_xai.data.images import _pil_to_gray, read_film

    path = next(p for p in _cut_films(real) if p.name == "IMG0004256.jpg")
    with monkeypatch.context() as patch:
        patch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
        with Image.open(path) as img:
            img.load()
            theirs = _pil_to_gray(img)
    film = read_film(path)
    assert film.warning is not None
    ours = film.pixels
    np.testing.assert_array_equal(ours[:414], theirs[:414])
    assert not ours[414:].any()
