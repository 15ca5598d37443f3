"""Bad inputs at the ground floor: every bad file is one ImageError/DataError/CheckpointError naming it, every odd but
valid file is read; data set trees with missing CSVs, mismatched labels, empty studies or missing columns are either
read with a Problem listed or refused in one line; clusterers refuse NaN features and K larger than the sample."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import badinputs as bad
import numpy as np
import pytest
from click.testing import CliRunner

import xray_xai
from xray_xai.cli import main
from xray_xai.data.images import image_size, read_image, read_image_bytes
from xray_xai.errors import CheckpointError, DataError, ImageError, XrayXaiError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _one_line_naming(message: str, name: str) -> None:
    assert "\n" not in message.strip(), message
    assert name in message, f"{name!r} not in {message!r}"


# ---------------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("case", sorted(bad.BAD_IMAGES))
def test_bad_image_is_one_image_error_naming_the_file(case: str, tmp_path: Path) -> None:
    writer, words = bad.BAD_IMAGES[case]
    path = writer(tmp_path)
    with pytest.raises(ImageError) as info:
        read_image(path)
    message = str(info.value)
    _one_line_naming(message, path.name)
    assert all(w in message.lower() for w in words), message
    # the same bytes uploaded (no file on disk) are refused the same way, named by the upload's name
    with pytest.raises(ImageError) as upload:
        read_image_bytes(path.read_bytes(), name=path.name)
    _one_line_naming(str(upload.value), path.name)


@pytest.mark.parametrize("case", ["decompression-bomb", "truncated-png", "text-as-png", "zero-byte"])
def test_header_read_refuses_the_same_files(case: str, tmp_path: Path) -> None:
    """``image_size`` (used by `data --check-images`) must not succeed where decoding will fail for header reasons."""
    path = bad.BAD_IMAGES[case][0](tmp_path)
    if case == "truncated-png":  # header intact: the size is known, only decoding finds the damage
        assert image_size(path) == (64, 64)
        return
    with pytest.raises(ImageError, match=path.name):
        image_size(path)


def test_bomb_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our own pixel limit (below PIL's) must trip from the header: a 12 000 px square is 144 Mpx > 100 Mpx."""
    path = bad.decompression_bomb(tmp_path, side=12_000)
    with pytest.raises(ImageError, match=r"too large.*XRAY_XAI_MAX_PIXELS"):
        read_image(path)
    monkeypatch.setenv("XRAY_XAI_MAX_PIXELS", "1000")
    with pytest.raises(ImageError, match="too large"):
        read_image(bad.png16(tmp_path))  # 64 x 64 = 4096 > 1000


@pytest.mark.parametrize("case", sorted(bad.GOOD_ODD_IMAGES))
def test_odd_but_valid_images_are_read(case: str, tmp_path: Path) -> None:
    path = bad.GOOD_ODD_IMAGES[case](tmp_path)
    arr = read_image(path)
    assert arr.dtype == np.float32 and arr.ndim == 2
    assert np.isfinite(arr).all() and arr.min() >= 0.0 and arr.max() <= 1.0
    assert arr.size == 1 or arr.max() > arr.min()  # a real film, not a blank


def test_one_pixel_image_survives_every_preset(tmp_path: Path) -> None:
    from xray_xai.data.geometry import PRESETS, geometry, to_tensor

    arr = read_image(bad.one_pixel(tmp_path))
    for name, pre in PRESETS.items():
        t = to_tensor(arr, pre)
        assert t.shape[-2:] == (pre.input_size, pre.input_size), name
        assert bool(t.isfinite().all()), name
        assert geometry(arr, pre).shape == (pre.input_size, pre.input_size), name


def test_missing_file_and_folder_are_image_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="file not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path)


# ------------------------------------------------------------------------------------------ data set trees


def _data_json(root: Path) -> tuple[int, dict | None, str]:
    res = CliRunner().invoke(main, ["data", str(root), "--json"])
    return res.exit_code, (json.loads(res.stdout) if res.exit_code == 0 else None), res.stderr


@pytest.mark.parametrize(
    ("make", "severity", "where", "words"),
    [
        (bad.mura_missing_csv, "warning", "train_labeled_studies.csv", "missing"),
        (bad.mura_label_mismatch, "error", "patient00001/study1_positive", "label mismatch"),
        (bad.mura_empty_study, "error", "patient00002/study1_negative", "empty study"),
    ],
    ids=["missing-csv", "label-mismatch", "empty-study"],
)
def test_mura_tree_problems_are_listed_not_fatal(make, severity: str, where: str, words: str, tmp_path: Path) -> None:
    root = make(tmp_path / "mura")
    code, summary, err = _data_json(root)
    assert code == 0, err
    assert summary is not None and summary["images"]["total"] > 0
    hits = [p for p in summary["problems"] if where in p["path"] and words in p["problem"]]
    assert hits and hits[0]["severity"] == severity, summary["problems"]


def test_mura_label_mismatch_uses_the_csv(tmp_path: Path) -> None:
    from xray_xai.data.datasets import open_dataset

    ds = open_dataset(bad.mura_label_mismatch(tmp_path / "mura"))
    labels = {r.label for r in ds.records() if r.study and r.study.endswith("patient00001/study1_positive")}
    assert labels == {0}


def test_mura_empty_study_has_no_records(tmp_path: Path) -> None:
    from xray_xai.data.datasets import open_dataset

    ds = open_dataset(bad.mura_empty_study(tmp_path / "mura"))
    assert not [r for r in ds.records() if r.study and "patient00002/study1_negative" in r.study]


def test_fracatlas_missing_columns_is_one_line(tmp_path: Path) -> None:
    root = bad.fracatlas_missing_columns(tmp_path / "fa")
    code, _, err = _data_json(root)
    assert code == 1
    line = err.strip()
    assert line.startswith("error:") and "\n" not in line
    assert "dataset.csv" in line and "fractured" in line and "hand" in line
    assert "Traceback" not in err


def test_fracatlas_empty_csv_is_one_line(tmp_path: Path) -> None:
    from xray_xai.testing.datasets import write_tiny_fracatlas

    root = write_tiny_fracatlas(tmp_path / "fa")
    (root / "dataset.csv").write_bytes(b"")
    code, _, err = _data_json(root)
    assert code == 1 and err.startswith("error:") and "dataset.csv" in err and err.count("\n") == 1


def test_data_check_images_lists_every_bad_file(tmp_path: Path) -> None:
    """`data --check-images` decodes every film: it lists every file a command would refuse, and the films cut
    short that a command would keep as warnings (errors with --strict)."""
    from xray_xai.testing.datasets import write_tiny_mura

    mura = write_tiny_mura(tmp_path / "m", size=32)
    header_bad = ["zero-byte", "text-as-png", "decompression-bomb", "dicom-no-pixels", "dicom-multiframe"]
    poisoned = bad.poison(mura, header_bad)
    res = CliRunner().invoke(main, ["data", str(tmp_path / "m"), "--check-images", "--json"])
    assert res.exit_code == 0, res.stderr
    listed = {Path(p["path"]).name + "|" + Path(p["path"]).parent.name for p in json.loads(res.stdout)["problems"]}
    for case, path in poisoned.items():
        assert f"{path.name}|{path.parent.name}" in listed, case


@pytest.mark.parametrize("strict", [False, True])
def test_data_check_images_reports_a_slightly_cut_film(tmp_path: Path, strict: bool) -> None:
    from xray_xai.testing.datasets import write_tiny_mura

    mura = write_tiny_mura(tmp_path / "m", size=32)
    victim = sorted(mura.rglob("*.png"))[0]
    cut = bad.slightly_cut_film(victim.parent, "cut.png", size=128)
    victim.unlink()
    cut.rename(victim)
    args = ["data", str(tmp_path / "m"), "--check-images", "--json", *(["--strict"] if strict else [])]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.stderr
    found = [p for p in json.loads(res.stdout)["problems"] if Path(p["path"]) == victim]
    assert len(found) == 1 and "ends early" in found[0]["problem"]
    assert found[0]["severity"] == ("error" if strict else "warning")


# ---------------------------------------------------------------------------------------------------- clusterers


def _clusterer(name: str, k: int | None = None):
    cls = xray_xai.get_clusterer(name)
    params = inspect.signature(cls).parameters
    kwargs = {}
    if k is not None:
        for key in ("n_clusters", "k"):  # not n_components: PCA dimensions (hdbscan finds K)
            if key in params:
                kwargs[key] = k
                break
        else:
            return None
    return cls(**kwargs)


@pytest.mark.parametrize("name", xray_xai.list_clusterers())
def test_clusterers_refuse_nan_features(name: str) -> None:
    c = _clusterer(name)
    with pytest.raises(XrayXaiError, match=r"NaN|inf|finite"):
        c.fit(bad.nan_features())


@pytest.mark.parametrize("name", xray_xai.list_clusterers())
def test_clusterers_refuse_k_larger_than_samples(name: str) -> None:
    c = _clusterer(name, k=50)
    if c is None:
        pytest.skip(f"{name} takes no number of clusters")
    x = np.random.default_rng(0).normal(size=(6, 4))
    with pytest.raises(XrayXaiError):
        c.fit(x)


# --------------------------------------------------------------------------------------------------- checkpoints


def test_truncated_safetensors_is_a_checkpoint_error(tmp_path: Path) -> None:
    from xray_xai.models.store import load_model, load_weights

    ckpt = bad.truncated_safetensors(tmp_path / "t")
    for call in (lambda: load_weights(ckpt / "model.safetensors"), lambda: load_model(ckpt)):
        with pytest.raises(CheckpointError) as info:
            call()
        _one_line_naming(str(info.value), "model.safetensors")
        assert "truncated" in str(info.value)
    ckpt2 = bad.truncated_safetensors(tmp_path / "t2", keep_checksum=True)
    with pytest.raises(CheckpointError, match="checksum"):
        load_model(ckpt2)


def test_checkpoint_for_another_architecture(tmp_path: Path) -> None:
    from xray_xai.models.store import load_model

    ckpt = bad.other_arch_checkpoint(tmp_path / "o")
    with pytest.raises(CheckpointError) as info:
        load_model(ckpt)
    _one_line_naming(str(info.value), "model.safetensors")
    assert "another architecture" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"{}", b"not json", b'{"name": 3}'])
def test_broken_sidecar(content: bytes, tmp_path: Path) -> None:
    from xray_xai.models.store import load_model

    ckpt = bad.tiny_checkpoint(tmp_path / "s")
    (ckpt / "model.json").write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_model(ckpt)
    _one_line_naming(str(info.value), "model.json" if content != b'{"name": 3}' else "model.safetensors")


def test_missing_checkpoint_folder_and_name(tmp_path: Path) -> None:
    from xray_xai.models.store import load_model

    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_model(tmp_path / "nothing-here")
    with pytest.raises(CheckpointError, match="no trained 'cnn-small'"):
        load_model("cnn-small")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"no model\.safetensors"):
        load_model(empty)


def test_datasets_refuse_missing_and_non_folders(tmp_path: Path) -> None:
    from xray_xai.data.datasets import open_dataset

    with pytest.raises(DataError, match="no such folder"):
        open_dataset(tmp_path / "nope")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        open_dataset(f)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no known data set layout"):
        open_dataset(empty)
    shutil.rmtree(empty)


@pytest.mark.parametrize(
    ("which", "content"),
    [
        ("MURA-v1.1/train_image_paths.csv", b"\x80\x81 latin-1 or binary \xff\n"),
        ("MURA-v1.1/valid_labeled_studies.csv", b"x" * 200_000 + b'"\n'),  # one cell over csv's field limit
    ],
    ids=["not-utf8", "huge-field"],
)
def test_unreadable_mura_csv_is_one_line(which: str, content: bytes, tmp_path: Path) -> None:
    """Regression (found by test_fuzz): a CSV that is not UTF-8 text raised UnicodeDecodeError out of `data`."""
    from xray_xai.testing.datasets import write_tiny_mura

    write_tiny_mura(tmp_path / "m", size=16)
    (tmp_path / "m" / which).write_bytes(content)
    code, _, err = _data_json(tmp_path / "m")
    assert code == 1, err
    assert err.startswith("error:") and err.count("\n") == 1 and Path(which).name in err
