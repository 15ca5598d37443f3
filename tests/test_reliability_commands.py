"""Every command over bad inputs: one ``error:`` line naming the file (exit 1) when nothing can be done, and for batch
runs the bad files skipped, listed and the rest done; never a traceback, never a temp or half-written file.

One poisoned synthetic data set (64 px, every case of :data:`badinputs.BAD_IMAGES` planted in MURA-train, two in
MURA-valid) and one untrained cnn-small checkpoint at 64 px are shared by the module, so the file stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import badinputs as bad
import pytest
from click.testing import CliRunner, Result

from xray_xai.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TEST_SPLIT_CASES = ("truncated-png", "text-as-png")


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A synthetic MURA tree with every bad-image case planted; returns (root, {case: path})."""
    from xray_xai.data.datasets import synth

    root = synth(tmp_path_factory.mktemp("poisoned") / "ph", n_studies=8, seed=0, image_size=64, progress=False)
    planted = bad.poison(root)
    valid = sorted(p for p in (root / "MURA-v1.1" / "valid").rglob("*.png") if not p.name.startswith("."))
    for case, target in zip(TEST_SPLIT_CASES, valid, strict=False):
        made = bad.BAD_IMAGES[case][0](target.parent.parent)
        shutil.move(made, target)
        planted[f"test:{case}"] = target
    return root, planted


def small_checkpoint(folder: Path) -> Path:
    """An untrained cnn-small whose sidecar says 64 px, so every command runs it at 64 px."""
    from xray_xai import get_model
    from xray_xai.models.store import save_model

    model = get_model("cnn-small")()
    model.preprocessing = dataclasses.replace(model.preprocessing, input_size=64)
    return save_model(model, folder, metadata={"dataset": "badinputs"})


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_checkpoint(tmp_path_factory.mktemp("ckpt") / "cnn-small")


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_exit(res: Result) -> None:
    """No exception other than the SystemExit of handle_errors/click (a traceback would be a bug)."""
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"uncaught {type(res.exception).__name__}: {res.exception}\n{res.stderr}")


def assert_one_error_line(res: Result, name: str) -> str:
    assert_clean_exit(res)
    assert res.exit_code == 1, (res.exit_code, res.stdout, res.stderr)
    line = res.stderr.strip()
    assert "\n" not in line, res.stderr
    assert line.startswith("error:"), line
    assert name in line, f"{name!r} not in {line!r}"
    assert "Traceback" not in res.stderr + res.stdout
    return line


def no_partial_files(out: Path) -> None:
    """Nothing half-written: no atomic-write temp files left, and every PNG/JSON/NPY there reads back whole."""
    if not out.exists():
        return
    temps = [p for p in out.rglob(".*") if p.is_file() and (".tmp" in p.name or p.name.startswith("."))]
    assert not temps, temps
    check_complete(out)


def check_complete(out: Path) -> int:
    """Open every output file fully; return how many were checked."""
    import numpy as np
    from PIL import Image

    n = 0
    for p in out.rglob("*"):
        if not p.is_file():
            continue
        if p.suffix == ".png":
            with Image.open(p) as img:
                img.load()
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".npy":
            np.load(p, allow_pickle=False)
        elif p.suffix == ".csv":
            p.read_text().splitlines()
        else:
            continue
        n += 1
    return n


def names_in(text: str, paths: list[Path]) -> list[Path]:
    """The paths whose last three components (study/image, since names repeat) appear nowhere in ``text``."""
    return [p for p in paths if "/".join(p.parts[-3:]) not in text]


def skipped_csv_paths(path: Path) -> str:
    assert path.is_file(), f"{path} missing"
    return path.read_text()


# ---------------------------------------------------------------------------------------------------- batch runs


def train_cases(planted: dict[str, Path]) -> list[Path]:
    return [p for case, p in planted.items() if not case.startswith("test:")]


def test_train_skips_and_lists_bad_images(poisoned: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    root, planted = poisoned
    out = tmp_path / "run"
    res = run("train", "--model", "cnn-small", "--data", root, "--epochs", "1", "--image-size", "64",
              "--batch-size", "4", "--no-augment", "--out", out)  # fmt: skip
    assert_clean_exit(res)
    assert res.exit_code == 0, res.stderr
    bad_paths = train_cases(planted)
    assert not names_in(skipped_csv_paths(out / "skipped.csv"), bad_paths)
    assert f"{len(bad_paths)} image(s) skipped" in res.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["checkpoint"] and Path(result["checkpoint"]).is_dir()
    no_partial_files(out)


def test_evaluate_skips_and_lists_bad_images(
    poisoned: tuple[Path, dict[str, Path]], ckpt: Path, tmp_path: Path
) -> None:
    root, planted = poisoned
    out = tmp_path / "eval"
    res = run("evaluate", "--model", "cnn-small", "--checkpoint", ckpt, "--data", root, "--split", "test",
              "--bootstrap", "0", "--out", out, "--json")  # fmt: skip
    assert_clean_exit(res)
    assert res.exit_code == 0, res.stderr
    bad_paths = [p for c, p in planted.items() if c.startswith("test:")]
    summary = json.loads(res.stdout)
    assert not names_in(json.dumps(summary["skipped"]), bad_paths)
    assert not names_in((out / "metrics.json").read_text(), bad_paths)
    no_partial_files(out)


def test_evaluate_writes_skipped_csv(poisoned: tuple[Path, dict[str, Path]], ckpt: Path, tmp_path: Path) -> None:
    root, planted = poisoned
    out = tmp_path / "eval"
    res = run("evaluate", "--model", "cnn-small", "--checkpoint", ckpt, "--data", root, "--split", "test",
              "--bootstrap", "0", "--out", out)  # fmt: skip
    assert res.exit_code == 0, res.stderr
    text = skipped_csv_paths(out / "skipped.csv")
    assert text.startswith("path,problem\n")
    assert not names_in(text, [p for c, p in planted.items() if c.startswith("test:")])
    no_partial_files(out)


def test_predict_skips_and_lists_bad_images(poisoned: tuple[Path, dict[str, Path]], ckpt: Path, tmp_path: Path) -> None:
    root, planted = poisoned
    csv_path = tmp_path / "pred" / "predictions.csv"
    res = run("predict", "--model", "cnn-small", "--checkpoint", ckpt, "--data", root, "--csv", csv_path)
    assert_clean_exit(res)
    assert res.exit_code == 0, res.stderr
    assert not names_in(res.stderr, list(planted.values()))
    rows = csv_path.read_text().splitlines()
    assert len(rows) > 1
    assert not [p for p in planted.values() if "/".join(p.parts[-3:]) in csv_path.read_text()]
    assert not names_in(skipped_csv_paths(csv_path.with_name("predictions.skipped.csv")), list(planted.values()))
    no_partial_files(csv_path.parent)


def test_explain_skips_and_lists_bad_images(poisoned: tuple[Path, dict[str, Path]], ckpt: Path, tmp_path: Path) -> None:
    root, planted = poisoned
    out = tmp_path / "expl"
    res = run("explain", "--checkpoint", ckpt, "--method", "gradcam", "--data", root, "--split", "train",
              "--out", out, "--json")  # fmt: skip
    assert_clean_exit(res)
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    skipped_text = skipped_csv_paths(out / "skipped.csv")
    train_bad = [p for c, p in planted.items() if not c.startswith("test:")]
    # the bad files of the train split (those the reader put in 'train', not 'val') are all listed
    listed = [p for p in train_bad if "/".join(p.parts[-3:]) in skipped_text]
    assert listed, skipped_text
    assert not names_in(json.dumps(summary), listed)
    assert check_complete(out) > 3
    no_partial_files(out)


def test_explain_skipped_csv_problem_column_does_not_repeat_the_path(
    poisoned: tuple[Path, dict[str, Path]], ckpt: Path, tmp_path: Path
) -> None:
    _, planted = poisoned
    bad_file = planted["zero-byte"]
    out = tmp_path / "expl1"
    res = run("explain", "--checkpoint", ckpt, "--method", "gradcam", "--input", bad_file,
              "--input", planted["test:truncated-png"].parent, "--out", out)  # fmt: skip
    assert_clean_exit(res)
    import csv

    rows = list(csv.DictReader((out / "skipped.csv").open()))
    assert rows and all(set(r) >= {"path", "problem"} for r in rows)
    row = next(r for r in rows if r["path"].endswith(bad_file.name))
    assert not row["problem"].startswith(row["path"]), row
    assert "empty" in row["problem"]


def test_cluster_skips_bad_images(poisoned: tuple[Path, dict[str, Path]], ckpt: Path, tmp_path: Path) -> None:
    root, planted = poisoned
    out = tmp_path / "clusters"
    res = run("cluster", "--checkpoint", ckpt, "--data", root, "--k", "2", "--all-images", "--out", out, "--json")
    assert_clean_exit(res)
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    skipped = json.dumps(summary["skipped"])
    assert not names_in(skipped, [p for c, p in planted.items() if not c.startswith("test:")][:3]) or skipped
    assert summary["skipped"], "bad films in train/test must be listed as skipped"
    no_partial_files(out)


def test_cluster_writes_skipped_csv(poisoned: tuple[Path, dict[str, Path]], ckpt: Path, tmp_path: Path) -> None:
    root, _ = poisoned
    out = tmp_path / "clusters"
    res = run("cluster", "--checkpoint", ckpt, "--data", root, "--k", "2", "--all-images", "--out", out)
    assert res.exit_code == 0, res.stderr
    listed = skipped_csv_paths(out / "skipped.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] and all(s["path"] in listed for s in summary["skipped"])


def test_cluster_k_larger_than_samples(poisoned: tuple[Path, dict[str, Path]], ckpt: Path, tmp_path: Path) -> None:
    root, _ = poisoned
    out = tmp_path / "k50"
    res = run("cluster", "--checkpoint", ckpt, "--data", root, "--k", "500", "--all-images", "--out", out)
    line = assert_one_error_line(res, "500")
    assert "clusters" in line
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*")), list(out.rglob("*"))


@pytest.mark.slow
def test_audit_skips_bad_images(poisoned: tuple[Path, dict[str, Path]], ckpt: Path, tmp_path: Path) -> None:
    root, _ = poisoned
    out = tmp_path / "audit"
    res = run("audit", "--models", ckpt, "--methods", "gradcam", "--data", root, "--split", "train", "--n", "12",
              "--sanity-stages", "1", "--out", out)  # fmt: skip
    assert_clean_exit(res)
    assert res.exit_code == 0, res.stderr
    assert "skipped:" in res.stderr
    no_partial_files(out)
    import csv

    skipped_csv_paths(out / "skipped.csv")
    listed = list(csv.DictReader((out / "skipped.csv").open()))
    skipped = json.loads((out / "report.json").read_text())["audit"]["skipped"]
    assert skipped and all(set(s) == {"path", "problem"} for s in skipped)
    assert listed == skipped


# --------------------------------------------------------------------------------------- single bad inputs


@pytest.mark.parametrize("case", sorted(bad.BAD_IMAGES))
def test_predict_one_bad_file(case: str, ckpt: Path, tmp_path: Path) -> None:
    path = bad.BAD_IMAGES[case][0](tmp_path)
    csv_path = tmp_path / "out" / "p.csv"
    res = run("predict", "--model", "cnn-small", "--checkpoint", ckpt, "--input", path, "--csv", csv_path)
    assert_clean_exit(res)
    assert path.name in res.stderr and "Traceback" not in res.stderr
    assert_one_error_line(res, path.name)
    assert not csv_path.exists()
    assert not csv_path.parent.exists() or not any(csv_path.parent.iterdir())


@pytest.mark.parametrize("case", sorted(bad.BAD_IMAGES))
def test_explain_one_bad_file(case: str, ckpt: Path, tmp_path: Path) -> None:
    path = bad.BAD_IMAGES[case][0](tmp_path)
    out = tmp_path / "out"
    res = run("explain", "--checkpoint", ckpt, "--method", "gradcam", "--input", path, "--out", out)
    assert_clean_exit(res)
    assert path.name in res.stderr and "Traceback" not in res.stderr
    no_partial_files(out)
    assert_one_error_line(res, path.name)


@pytest.mark.parametrize("case", sorted(bad.GOOD_ODD_IMAGES))
def test_odd_valid_images_are_explained(case: str, ckpt: Path, tmp_path: Path) -> None:
    path = bad.GOOD_ODD_IMAGES[case](tmp_path)
    out = tmp_path / "out"
    res = run("explain", "--checkpoint", ckpt, "--method", "gradcam", "--input", path, "--out", out, "--json")
    assert_clean_exit(res)
    assert res.exit_code == 0, res.stderr
    assert not json.loads(res.stdout)["skipped"]
    assert any(p.suffix == ".npy" for p in out.rglob("*"))
    no_partial_files(out)


# -------------------------------------------------------------------------------------------- bad checkpoints

CheckpointMaker = Callable[[Path], Path]


def _pickle(folder: Path) -> Path:
    return bad.torch_pickle_checkpoint(folder, folder / "PWNED")


def _truncated(folder: Path) -> Path:
    return bad.truncated_safetensors(folder / "t") / "model.safetensors"


def _other(folder: Path) -> Path:
    return bad.other_arch_checkpoint(folder / "o")


CHECKPOINTS: dict[str, tuple[CheckpointMaker, str]] = {
    "pickle": (_pickle, "pickle"),
    "truncated-safetensors": (_truncated, "truncated"),
    "other-architecture": (_other, "another architecture"),
}


def _commands(ck: Path, root: Path, img: Path, out: Path) -> dict[str, list[object]]:
    return {
        "predict": ["predict", "--checkpoint", ck, "--input", img, "--csv", out / "p.csv"],
        "evaluate": ["evaluate", "--checkpoint", ck, "--data", root, "--out", out, "--json"],
        "explain": ["explain", "--checkpoint", ck, "--method", "gradcam", "--input", img, "--out", out],
        "cluster": ["cluster", "--checkpoint", ck, "--data", root, "--k", "2", "--out", out],
        "audit": ["audit", "--models", ck, "--methods", "gradcam", "--data", root, "--n", "2", "--out", out],
    }


@pytest.mark.parametrize("kind", sorted(CHECKPOINTS))
@pytest.mark.parametrize("command", ["predict", "evaluate", "explain", "cluster", "audit"])
def test_bad_checkpoint_is_one_line_for_every_command(
    command: str, kind: str, poisoned: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, _ = poisoned
    maker, words = CHECKPOINTS[kind]
    ck = maker(tmp_path)
    img = tmp_path / "film.png"
    img.write_bytes(bad.png_bytes())
    out = tmp_path / "out"
    res = run(*_commands(ck, root, img, out)[command])
    weights_name = ck.name if ck.suffix else "model.safetensors"
    line = assert_one_error_line(res, weights_name)
    assert words in line, line
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*")), sorted(out.rglob("*"))
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------------------------------------- data trees


def test_train_on_fracatlas_missing_columns(tmp_path: Path) -> None:
    root = bad.fracatlas_missing_columns(tmp_path / "fa")
    out = tmp_path / "run"
    res = run("train", "--model", "cnn-small", "--data", root, "--epochs", "1", "--image-size", "64", "--out", out)
    assert_one_error_line(res, "dataset.csv")
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_train_on_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = run("train", "--model", "cnn-small", "--data", tmp_path / "empty", "--epochs", "1")
    assert_one_error_line(res, "empty")


# ----------------------------------------------------------------------------------------------------- web API


def test_web_api_refuses_each_bad_upload_with_a_4xx(ckpt: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    from fastapi.testclient import TestClient

    from xray_xai.web.app import create_app

    with TestClient(create_app([ckpt])) as client:
        key = client.get("/api/models").json()["models"][0]["key"]
        for case, (writer, _) in sorted(bad.BAD_IMAGES.items()):
            path = writer(tmp_path)
            for endpoint, form in (("/api/predict", {"models": key}), ("/api/explain", {"model": key})):
                r = client.post(endpoint, files={"files": (path.name, path.read_bytes())}, data=form)
                assert 400 <= r.status_code < 500, (case, endpoint, r.status_code, r.text)
                detail = r.json()["detail"]
                assert path.name in detail and "\n" not in detail, (case, detail)


def test_every_image_unreadable(tmp_path: Path, ckpt: Path) -> None:
    """A data set whose films are all empty files: nothing can be done, so each command says so in one line (exit 1)
    and leaves no model or report behind; ``data --check-images`` lists them all and exits 0 (it only reports)."""
    from xray_xai.data.datasets import synth
    from xray_xai.models.store import list_store

    root = synth(tmp_path / "allbad", n_studies=4, seed=0, image_size=64, progress=False)
    films = [p for p in root.rglob("*.png") if "masks" not in p.relative_to(root).parts]
    for p in films:
        p.write_bytes(b"")
    res = run("data", root, "--check-images", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["error_count"] >= len(films)
    for args in (
        ["evaluate", "--model", "cnn-small", "--checkpoint", ckpt, "--data", root, "--bootstrap", "0"],
        ["predict", "--model", "cnn-small", "--checkpoint", ckpt, "--data", root, "--csv", tmp_path / "p" / "p.csv"],
        ["explain", "--checkpoint", ckpt, "--method", "gradcam", "--data", root, "--out", tmp_path / "ex"],
        ["cluster", "--checkpoint", ckpt, "--data", root, "--k", "2", "--all-images", "--out", tmp_path / "cl"],
    ):
        res = run(*args)
        assert_clean_exit(res)
        assert res.exit_code == 1, (args[0], res.stderr)
        assert res.stderr.startswith("error:") and res.stderr.count("\n") == 1, res.stderr
        if args[0] == "cluster":
            assert f"none of the {len(films)} films could be read" in res.stderr, res.stderr
    assert not (tmp_path / "p").exists()
    res = run("train", "--model", "cnn-small", "--data", root, "--epochs", "1", "--image-size", "64",
              "--out", tmp_path / "run")  # fmt: skip
    assert_clean_exit(res)
    assert res.exit_code == 1 and res.stderr.startswith("error:")
    assert not list_store()


def test_model_forward_failure_is_one_plugin_error(ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model plugin whose forward raises a plain exception becomes a PluginError naming the model and the film."""
    from xray_xai.errors import PluginError
    from xray_xai.models.evaluation import predict
    from xray_xai.models.store import load_model

    model = load_model(ckpt)

    def boom(x: object, **_: object) -> object:
        raise RuntimeError("shape mismatch\nsecond line")

    monkeypatch.setattr(model, "predict_proba", boom)
    film = tmp_path / "film.png"
    film.write_bytes(bad.png_bytes())
    with pytest.raises(PluginError) as info:
        predict(model, [film])
    message = str(info.value)
    assert "cnn-small" in message and film.name in message and "RuntimeError: shape mismatch" in message
    assert "\n" not in message and isinstance(info.value.__cause__, RuntimeError)
