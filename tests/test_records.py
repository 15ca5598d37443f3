"""Records from input paths: one study rule for predict and explain (xray_xai.data.records)."""

from __future__ import annotations

from pathlib import Path

import badinputs as bad
import numpy as np
import pytest
from PIL import Image

from xray_xai.data.records import mura_study, records_from_paths


def _film(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32), dtype=np.uint8)).save(path)
    return path


def test_study_rule_loose_films_sub_folders_and_mura_layout(tmp_path: Path) -> None:
    root = tmp_path / "films"
    _film(root / "a.png")
    _film(root / "b.png")
    _film(root / "patient1" / "study1" / "view1.png")
    _film(root / "XR_WRIST" / "patient00007" / "study2_positive" / "image1.png")
    lone = _film(tmp_path / "lone.png")
    mura_file = _film(tmp_path / "x" / "patient00003" / "study1_negative" / "image1.png")
    records, problems = records_from_paths([root, lone, mura_file, tmp_path / "missing.png", tmp_path / "x"])
    by_name = {r.path.relative_to(tmp_path).as_posix(): r for r in records}
    assert by_name["films/a.png"].study is None and by_name["films/b.png"].study is None  # a study per loose film
    assert by_name["films/patient1/study1/view1.png"].study == (root / "patient1" / "study1").as_posix()  # 2 folders
    wrist = by_name["films/XR_WRIST/patient00007/study2_positive/image1.png"]
    assert (wrist.study, wrist.label, wrist.patient, wrist.region) == (
        "XR_WRIST/patient00007/study2_positive",
        1,
        "patient00007",
        "wrist",
    )
    assert by_name["lone.png"].study is None and by_name["lone.png"].label is None
    neg = mura_study(mura_file)
    assert neg is not None and (neg.study, neg.label, neg.region) == ("patient00003/study1_negative", 0, None)
    assert [(Path(p.path).name, p.problem) for p in problems] == [("missing.png", "no such file or folder")]
    (tmp_path / "empty").mkdir()
    assert records_from_paths([tmp_path / "empty"])[1][0].problem == "folder holds no images"


def test_predict_on_a_folder_of_loose_films_gives_each_its_own_study(tmp_path: Path) -> None:
    """Before: every film of ``predict --input folder/`` was in one study named after the folder, and every row got
    the folder's mean as its study probability."""
    from xray_xai.models.evaluation import predict

    folder = tmp_path / "loose"
    for i in range(3):
        _film(folder / f"film{i}.png", seed=i)
    ckpt = bad.tiny_checkpoint(tmp_path / "ckpt")
    rows, problems = predict(ckpt, [folder])
    assert not problems and len(rows) == 3
    assert [r["study"] for r in rows] == [None, None, None]
    assert [r["study_probability"] for r in rows] == [None, None, None]
    assert len({r["probability"] for r in rows}) == 3  # different films (so a mean would have shown)


def test_equal_sub_folder_names_in_two_given_folders_stay_two_studies(tmp_path: Path) -> None:
    """Before: ``--input a/ --input b/`` with an ``s1/`` in each put both films in one study ``s1``."""
    _film(tmp_path / "a" / "s1" / "v.png")
    _film(tmp_path / "b" / "s1" / "v.png")
    recs, _ = records_from_paths([tmp_path / "a", tmp_path / "b"])
    assert [r.study for r in recs] == [(tmp_path / "a" / "s1").as_posix(), (tmp_path / "b" / "s1").as_posix()]
    assert [r.study for r in records_from_paths([tmp_path / "a"])[0]] == ["s1"]  # one folder: relative to it


def test_explain_reads_inputs_with_the_same_rule(tmp_path: Path) -> None:
    from xray_xai.explain.service import explain
    from xray_xai.testing.explainers import tiny_convnet

    _film(tmp_path / "f" / "a.png")
    _film(tmp_path / "f" / "patient1" / "study1" / "v.png")
    result = explain(tiny_convnet(), "saliency", inputs=[tmp_path / "f"], show_progress=False)
    assert sorted(str(i.get("study")) for i in result.to_dict()["items"]) == ["None", "patient1/study1"]


@pytest.mark.parametrize("name", ["study1_positive", "study1"])
def test_mura_rule_needs_the_patient_folder(tmp_path: Path, name: str) -> None:
    assert mura_study(_film(tmp_path / "nopatient" / name / "image1.png")) is None
