"""Untrusted files and plugins: weights load only through safetensors or ``torch.load(weights_only=True)``, a pickle
that would run code is refused without running it, and a third-party plugin that fails to import is reported by name
while everything else keeps working."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import badinputs as bad
import pytest
from click.testing import CliRunner

from xray_xai.cli import main
from xray_xai.errors import CheckpointError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REPO = Path(__file__).resolve().parents[1]
XRAY_XAI = Path(sys.executable).with_name("xray-xai")


# ------------------------------------------------------------------------------------------------ pickles


@pytest.mark.parametrize("maker", [bad.pickle_checkpoint, bad.torch_pickle_checkpoint], ids=["raw", "torch-zip"])
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin", ".pkl"])
def test_store_refuses_pickles_by_name(maker, suffix: str, tmp_path: Path) -> None:
    from xray_xai.models.store import load_model, load_weights

    marker = tmp_path / "PWNED"
    path = maker(tmp_path, marker, name=f"weights{suffix}")
    for call in (load_model, load_weights):
        with pytest.raises(CheckpointError, match="pickle"):
            call(path)
    with pytest.raises(CheckpointError, match="pickle"):  # a folder holding only a pickle
        load_model(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("maker", [bad.pickle_checkpoint, bad.torch_pickle_checkpoint], ids=["raw", "torch-zip"])
def test_pickle_named_safetensors_is_not_unpickled(maker, tmp_path: Path) -> None:
    """A pickle renamed ``model.safetensors`` beside a valid sidecar: the safetensors reader refuses it."""
    from xray_xai.models.store import load_model, load_weights

    good = bad.tiny_checkpoint(tmp_path / "good")
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil"
    evil.mkdir()
    maker(evil, marker, name="model.safetensors")
    side = json.loads((good / "model.json").read_text())
    side.pop("weights_sha256")  # without the checksum the reader itself must notice
    (evil / "model.json").write_text(json.dumps(side))
    for call in (lambda: load_weights(evil / "model.safetensors"), lambda: load_model(evil)):
        with pytest.raises(CheckpointError, match="safetensors"):
            call()
    assert not marker.exists()


def test_pretrained_loader_refuses_code_in_pth(tmp_path: Path) -> None:
    from xray_xai.sdk.pretrained import _read

    marker = tmp_path / "PWNED"
    for maker in (bad.pickle_checkpoint, bad.torch_pickle_checkpoint):
        path = maker(tmp_path, marker, name="resnet50-0676ba61.pth")
        with pytest.raises(CheckpointError, match=r"resnet50-0676ba61\.pth"):
            _read(path)
        assert not marker.exists()


def _tiny_mura(root: Path) -> Path:
    from xray_xai.testing.datasets import write_tiny_mura

    return write_tiny_mura(root, size=32).parent


def test_train_resume_refuses_code_in_last_pt(tmp_path: Path) -> None:
    """``train --resume`` reads the run's last.pt with weights_only=True: a planted pickle fails in one line."""
    data = _tiny_mura(tmp_path / "m")
    run = tmp_path / "run"
    marker = tmp_path / "PWNED"
    bad.torch_pickle_checkpoint(run, marker, name="last.pt")
    res = CliRunner().invoke(main, ["train", "--model", "cnn-small", "--data", str(data), "--epochs", "1",
                                    "--image-size", "32", "--out", str(run), "--resume"])  # fmt: skip
    assert res.exit_code == 1, (res.stdout, res.stderr, res.exception)
    line = res.stderr.strip()
    assert line.startswith("error:") and "\n" not in line and "last.pt" in line
    assert not marker.exists()


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            dotted = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            if f"{owner}.{dotted}" == name:
                out.append(node)
    return out


def _is_true(call: ast.Call, keyword: str) -> bool:
    value = next((k.value for k in call.keywords if k.arg == keyword), None)
    return isinstance(value, ast.Constant) and value.value is True


def test_no_unsafe_deserialisation_in_the_sources() -> None:
    """Every ``torch.load`` passes ``weights_only=True``, every ``np.load`` keeps ``allow_pickle`` off, and no
    module calls ``pickle.load(s)``: the rule holds for code written later too."""
    problems = []
    for path in sorted([*REPO.joinpath("xray_xai").rglob("*.py"), *REPO.joinpath("plugins").rglob("*.py")]):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(REPO)
        for call in _calls(tree, "torch.load"):
            if not _is_true(call, "weights_only"):
                problems.append(f"{where}:{call.lineno}: torch.load without weights_only=True")
        for call in _calls(tree, "np.load") + _calls(tree, "numpy.load"):
            if _is_true(call, "allow_pickle"):
                problems.append(f"{where}:{call.lineno}: np.load(allow_pickle=True)")
        for name in ("pickle.load", "pickle.loads", "dill.load", "joblib.load"):
            problems += [f"{where}:{c.lineno}: {name}" for c in _calls(tree, name)]
    assert not problems, problems


# ------------------------------------------------------------------------------------------ broken plugin


def _broken_site(root: Path) -> Path:
    """A fake installed distribution (dist-info on PYTHONPATH) with one explainer whose import raises and one whose
    ``explain`` raises a plain RuntimeError (a third-party bug)."""
    site = root / "site"
    (site / "broken_xai-0.1.dist-info").mkdir(parents=True)
    (site / "broken_xai-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-xai\nVersion: 0.1\n"
    )
    (site / "broken_xai-0.1.dist-info" / "entry_points.txt").write_text(
        "[xray_xai.explainers]\nbroken-cam = broken_xai_import:BrokenCAM\nraising-cam = broken_xai_runtime:RaisingCAM\n"
    )
    (site / "broken_xai_import.py").write_text("raise RuntimeError('boom: the broken plugin cannot be imported')\n")
    (site / "broken_xai_runtime.py").write_text(
        "from typing import ClassVar\n"
        "from xray_xai.sdk.interfaces import Explainer, Tags\n\n"
        "class RaisingCAM(Explainer):\n"
        "    name: ClassVar[str] = 'raising-cam'\n"
        "    description: ClassVar[str] = 'raises at explain time'\n"
        "    tags: ClassVar[Tags] = Tags()\n\n"
        "    def explain(self, model, images, target='abnormal'):\n"
        "        raise RuntimeError('boom at explain time')\n"
    )
    return site


def _sub(args: list[str], site: Path, home: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        **extra,
        PYTHONPATH=os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        XRAY_XAI_HOME=str(home),
        XRAY_XAI_NO_PROGRESS="1",
        OMP_NUM_THREADS="1",
    )
    return subprocess.run([str(XRAY_XAI), *args], env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def broken_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    from xray_xai import get_model
    from xray_xai.models.store import save_model

    root = tmp_path_factory.mktemp("broken")
    site = _broken_site(root)
    model = get_model("cnn-small")()
    model.preprocessing = dataclasses.replace(model.preprocessing, input_size=64)
    ckpt = save_model(model, root / "ckpt")
    film = root / "film.png"
    film.write_bytes(bad.png_bytes())
    return site, root / "home", ckpt, film


def test_plugins_command_lists_the_broken_one_by_name(broken_env: tuple[Path, Path, Path, Path]) -> None:
    site, home, _, _ = broken_env
    only_explainers = {"XRAY_XAI_PLUGINS": "explainer:*"}  # importing every model plugin would only cost time
    res = _sub(["plugins", "--json"], site, home, **only_explainers)
    assert res.returncode == 0, res.stderr
    infos = {(i["kind"], i["name"]): i for i in json.loads(res.stdout)}
    broken = infos[("explainer", "broken-cam")]
    assert "boom" in broken["error"]
    assert not infos[("explainer", "gradcam")]["error"]
    assert ("explainer", "raising-cam") in infos and not infos[("explainer", "raising-cam")]["error"]
    text = _sub(["plugins", "--kind", "explainer"], site, home, **only_explainers)
    assert text.returncode == 0
    assert "failed to load: broken-cam" in text.stderr and "Traceback" not in text.stderr


def test_explain_works_beside_a_broken_plugin(broken_env: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    site, home, ckpt, film = broken_env
    out = tmp_path / "ok"
    res = _sub(["explain", "--checkpoint", str(ckpt), "--method", "gradcam", "--input", str(film), "--out", str(out),
                "--json"], site, home)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["n_explained"] == 1
    assert "Traceback" not in res.stderr


def test_explain_with_the_broken_plugin_is_one_line(broken_env: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    site, home, ckpt, film = broken_env
    out = tmp_path / "bad"
    res = _sub(["explain", "--checkpoint", str(ckpt), "--method", "broken-cam", "--input", str(film), "--out",
                str(out)], site, home)  # fmt: skip
    assert res.returncode == 1, res.stderr
    line = res.stderr.strip()
    assert line.startswith("error:") and "\n" not in line, res.stderr
    assert "broken-cam" in line and "boom" in line
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_explainer_raising_at_run_time_is_one_line(broken_env: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    site, home, ckpt, film = broken_env
    out = tmp_path / "raising"
    res = _sub(["explain", "--checkpoint", str(ckpt), "--method", "raising-cam", "--input", str(film), "--out",
                str(out)], site, home)  # fmt: skip
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 1
    line = res.stderr.strip()
    assert line.startswith("error:") and "\n" not in line and "raising-cam" in line
    assert "RuntimeError: boom at explain time" in line and film.name in line, line


def test_restricting_plugins_hides_the_broken_one(broken_env: tuple[Path, Path, Path, Path]) -> None:
    site, home, _, _ = broken_env
    env_site = site
    res = subprocess.run(
        [str(XRAY_XAI), "plugins", "--json"],
        env={**os.environ, "PYTHONPATH": str(env_site), "XRAY_XAI_HOME": str(home), "XRAY_XAI_PLUGINS": "xray-xai"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    names = {i["name"] for i in json.loads(res.stdout)}
    assert "broken-cam" not in names and "gradcam" in names
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("kind", ["pickle", "truncated", "other-architecture"])
def test_web_server_with_a_bad_checkpoint_answers_one_line(kind: str, tmp_path: Path) -> None:
    """A bad checkpoint given to the server is the operator's problem: a 5xx whose one-line detail names the file,
    and a pickle is still never unpickled."""
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    from fastapi.testclient import TestClient

    from xray_xai.web.app import create_app

    marker = tmp_path / "PWNED"
    ckpt = {
        "pickle": lambda: bad.torch_pickle_checkpoint(tmp_path / "p", marker),
        "truncated": lambda: bad.truncated_safetensors(tmp_path / "t"),
        "other-architecture": lambda: bad.other_arch_checkpoint(tmp_path / "o"),
    }[kind]()
    with TestClient(create_app([ckpt])) as client:
        r = client.post("/api/predict", files={"files": ("film.png", bad.png_bytes())})
    assert r.status_code >= 400
    detail = r.json()["detail"]
    assert "\n" not in detail and (ckpt.name if ckpt.suffix else "model.safetensors") in detail
    assert not marker.exists()
