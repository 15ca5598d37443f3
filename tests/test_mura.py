"""The MURA-v1.1 reader on small trees written in the real layout (PNG files, CSVs with the MURA-v1.1/ prefix)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from xray_xai_plugins.datasets._splits import holdout, stable_unit
from xray_xai_plugins.datasets.mura import MuraDataset, write_mura_csvs

from xray_xai.data.datasets import check_images, open_dataset
from xray_xai.errors import DataError
from xray_xai.testing.datasets import TINY_MURA, check_dataset, write_tiny_mura


@pytest.fixture
def mura(tmp_path: Path) -> Path:
    """``tmp_path/MURA-v1.1`` holding the TINY_MURA studies: 8 train studies (6 patients), 3 valid studies."""
    return write_tiny_mura(tmp_path)


def _problems(ds: MuraDataset, text: str) -> list[str]:
    return [str(p) for p in ds.problems if text in p.problem]


def test_reads_the_real_layout_from_the_folder_or_its_parent(mura: Path) -> None:
    for root in (mura, mura.parent):
        ds = MuraDataset(root)
        assert ds.problems == []
        records = ds.records()
        assert len(records) == sum(n for *_, n in TINY_MURA) == 19
        assert {r.region for r in records} == {"wrist", "elbow", "hand", "shoulder"}
        first = records[0]
        assert first.study is not None and first.study.startswith("train/XR_")
        assert first.path.is_file() and first.view is None
        assert first.metadata["study_type"].startswith("XR_")
    wrist = [r for r in ds.records() if r.study == "train/XR_WRIST/patient00001/study1_positive"]
    assert [r.path.name for r in wrist] == ["image1.png", "image2.png"]
    assert all(r.label == 1 and r.patient == "patient00001" and r.region == "wrist" for r in wrist)
    # MURA valid is our test split; "valid" is an alias of it
    test = ds.records("test")
    assert len(test) == 5 and all(r.study and r.study.startswith("valid/") for r in test)
    assert ds.records("valid") == test
    assert {r.split for r in ds.records()} <= {"train", "val", "test"}


def test_study_level_view_groups_images(mura: Path) -> None:
    studies = MuraDataset(mura).studies()
    assert len(studies) == len(TINY_MURA)
    for study, recs in studies.items():
        assert len({r.label for r in recs}) == 1
        assert all(r.study == study for r in recs)
    assert MuraDataset(mura).studies("test").keys() == {
        "valid/XR_WRIST/patient11185/study1_positive",
        "valid/XR_ELBOW/patient11186/study1_negative",
        "valid/XR_HAND/patient11187/study1_negative",
    }


def test_region_filter(mura: Path) -> None:
    ds = MuraDataset(mura, regions=("wrist",))
    assert {r.region for r in ds.records()} == {"wrist"}
    assert len(ds.records()) == 2 + 1 + 2 + 2
    assert {r.region for r in MuraDataset(mura, regions="ELBOW").records()} == {"elbow"}
    with pytest.raises(DataError, match="unknown MURA region"):
        MuraDataset(mura, regions=("knee",))


def test_detect_and_not_a_mura_folder(mura: Path, tmp_path: Path) -> None:
    assert MuraDataset.detect(mura) and MuraDataset.detect(mura.parent)
    other = tmp_path / "other"
    other.mkdir()
    assert not MuraDataset.detect(other)
    with pytest.raises(DataError, match="not a MURA layout"):
        MuraDataset(other)
    with pytest.raises(DataError, match="no such folder"):
        MuraDataset(tmp_path / "absent")


def test_label_mismatch_reported_and_csv_wins(mura: Path) -> None:
    csv = mura / "train_labeled_studies.csv"
    csv.write_text(csv.read_text().replace("patient00002/study1_negative/,0", "patient00002/study1_negative/,1"))
    ds = MuraDataset(mura)
    mismatches = _problems(ds, "label mismatch")
    assert len(mismatches) == 1 and "patient00002/study1_negative" in mismatches[0]
    recs = [r for r in ds.records() if r.patient == "patient00002"]
    assert recs and all(r.label == 1 for r in recs)  # the CSV is the reference
    folder_wins = MuraDataset(mura, label_from="folder")
    assert all(r.label == 0 for r in folder_wins.records() if r.patient == "patient00002")


def test_missing_csvs_fall_back_to_folders(mura: Path) -> None:
    reference = MuraDataset(mura).records()
    (mura / "train_image_paths.csv").unlink()
    (mura / "train_labeled_studies.csv").unlink()
    ds = MuraDataset(mura)
    assert [(r.path, r.label, r.split) for r in ds.records()] == [(r.path, r.label, r.split) for r in reference]
    missing = _problems(ds, "missing;")
    assert len(missing) == 2
    assert any("train_image_paths.csv" in m for m in missing)
    assert any("train_labeled_studies.csv" in m for m in missing)
    assert MuraDataset.detect(mura)  # the folders alone identify the layout


def test_images_missing_on_disk_and_unlisted_images(mura: Path) -> None:
    study = mura / "train" / "XR_ELBOW" / "patient00003" / "study1_positive"
    (study / "image2.png").unlink()
    Image.new("L", (16, 16)).save(study / "image9.png")
    ds = MuraDataset(mura)
    names = [r.path.name for r in ds.records() if r.patient == "patient00003"]
    assert names == ["image1.png", "image3.png", "image9.png"]
    (gone,) = _problems(ds, "missing on disk")
    assert "image2.png" in gone
    (extra,) = [p for p in ds.problems if "not in train_image_paths.csv" in p.problem]
    assert extra.path.endswith("image9.png") and extra.severity == "warning"


def test_empty_study_and_missing_study_folder(mura: Path) -> None:
    empty = mura / "train" / "XR_HAND" / "patient00007" / "study1_negative"
    empty.mkdir(parents=True)
    gone = mura / "valid" / "XR_HAND" / "patient11187" / "study1_negative"
    for f in gone.iterdir():
        f.unlink()
    gone.rmdir()
    ds = MuraDataset(mura)
    assert any("patient00007" in p for p in _problems(ds, "empty study"))
    assert any("patient11187" in p for p in _problems(ds, "folder is missing"))
    assert not any(r.patient in ("patient00007", "patient11187") for r in ds.records())


def test_macos_junk_and_hidden_files_ignored(mura: Path) -> None:
    study = mura / "train" / "XR_WRIST" / "patient00002" / "study1_negative"
    (study / "._image1.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (study / ".DS_Store").write_bytes(b"junk")
    macosx = mura / "train" / "__MACOSX"
    macosx.mkdir()
    ds = MuraDataset(mura)
    assert ds.problems == []
    assert not any(r.path.name.startswith(".") for r in ds.records())
    assert len(ds.records()) == 19


def test_unreadable_image_is_listed_then_found_by_check_images(mura: Path) -> None:
    bad = mura / "valid" / "XR_HAND" / "patient11187" / "study1_negative" / "image1.png"
    bad.write_bytes(b"this is not a png")
    ds = MuraDataset(mura)
    assert bad.absolute() in [r.path for r in ds.records()]  # readers list files, they do not decode them
    problems = check_images(ds, progress=False)
    assert [p.path for p in problems] == [str(bad.absolute())]


def _many_patients(root: Path, n: int, start: int = 1) -> Path:
    mura = root / "MURA-v1.1"
    for i in range(start, start + n):
        study = (
            mura
            / "train"
            / ("XR_WRIST" if i % 2 else "XR_HAND")
            / f"patient{i:05d}"
            / f"study1_{'positive' if i % 3 == 0 else 'negative'}"
        )
        study.mkdir(parents=True, exist_ok=True)
        for k in (1, 2):
            Image.new("L", (8, 8)).save(study / f"image{k}.png")
    write_mura_csvs(mura)
    return mura


def test_patient_level_split_is_disjoint_deterministic_and_stable(tmp_path: Path) -> None:
    mura = _many_patients(tmp_path, 60)
    ds = MuraDataset(mura, val_fraction=0.2, seed=3)
    by_patient: dict[str, set[str]] = {}
    for r in ds.records():
        assert r.patient is not None
        by_patient.setdefault(r.patient, set()).add(r.split)
    assert all(len(s) == 1 for s in by_patient.values())  # no patient in two splits
    val = {p for p, s in by_patient.items() if s == {"val"}}
    assert 3 <= len(val) <= 25
    again = MuraDataset(mura, val_fraction=0.2, seed=3)
    assert [(r.path, r.split) for r in again.records()] == [(r.path, r.split) for r in ds.records()]
    other_seed = {r.patient for r in MuraDataset(mura, val_fraction=0.2, seed=4).records("val")}
    assert other_seed != val
    # adding patients never moves the existing ones
    _many_patients(tmp_path, 30, start=61)
    grown = MuraDataset(mura, val_fraction=0.2, seed=3)
    assert {r.patient for r in grown.records("val") if r.patient in by_patient} == val
    check_dataset(grown)


def test_holdout_threshold_and_tiny_fallback() -> None:
    keys = [f"p{i}" for i in range(200)]
    chosen = holdout(keys, 0.25, seed=1)
    assert chosen == {k for k in keys if stable_unit(k, 1) < 0.25}
    assert 30 < len(chosen) < 70
    assert holdout([*keys, "extra"], 0.25, seed=1) >= chosen
    assert len(holdout(["a", "b"], 0.01)) == 1  # a tiny set still gets a validation patient
    assert holdout(["a"], 0.5) <= {"a"} and holdout(keys, 0.0) == set()


def test_write_mura_csvs_matches_the_shipped_format(mura: Path) -> None:
    before = {
        name: set((mura / name).read_text().splitlines())
        for name in ("train_image_paths.csv", "valid_labeled_studies.csv")
    }
    write_mura_csvs(mura)
    for name, lines in before.items():
        assert set((mura / name).read_text().splitlines()) == lines
    assert "MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/,1" in before["valid_labeled_studies.csv"]


def test_unknown_split_and_contract(mura: Path) -> None:
    ds = open_dataset(mura.parent)
    assert isinstance(ds, MuraDataset)
    with pytest.raises(DataError, match="unknown split"):
        ds.records("training")
    check_dataset(ds)


def test_split_aliases_live_in_resolve_split() -> None:
    """One home for split aliases: DatasetPlugin.resolve_split, used by the readers and by clustering."""
    from xray_xai_plugins.datasets.folder import FolderDataset
    from xray_xai_plugins.datasets.fracatlas import FracAtlasDataset

    assert [MuraDataset.resolve_split(s) for s in (None, "all", "train", "test", "valid", "validation")] == [
        "all", "all", "train", "test", "test", "test"
    ]  # fmt: skip
    assert FracAtlasDataset.resolve_split("valid") == "val" and FracAtlasDataset.resolve_split("val") == "val"
    assert FolderDataset.resolve_split(None) == "all"
    for cls in (MuraDataset, FracAtlasDataset, FolderDataset):
        with pytest.raises(DataError, match=r"unknown split 'bogus' for dataset .*; expected one of .*all"):
            cls.resolve_split("bogus")
