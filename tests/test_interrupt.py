"""Interrupted runs: ``xray-xai train`` and ``xray-xai explain`` killed with SIGKILL midway leave only whole files
(temp file + rename), and ``--resume`` finishes the job without redoing what was done.

These start the installed command in a subprocess (a kill must hit a real process), so they take a while.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

XRAY_XAI = Path(sys.executable).with_name("xray-xai")
TIMEOUT = 240.0


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(XRAY_XAI_HOME=str(home), XRAY_XAI_NO_PROGRESS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _kill_when(args: list[str], env: dict[str, str], ready: Callable[[], bool]) -> subprocess.Popen[bytes]:
    """Start ``xray-xai args``; SIGKILL it as soon as ``ready()`` holds (fail if it finishes or times out first)."""
    proc = subprocess.Popen([str(XRAY_XAI), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"finished (rc={proc.returncode}) before it could be interrupted: {err.decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for the first outputs")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return proc


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(XRAY_XAI), *args], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    return res


def _complete(folder: Path) -> dict[str, int]:
    """Open every visible output fully (PNG decodes, JSON parses, npy loads, CSV reads, safetensors loads); atomic
    writes may leave a hidden ``.name.XXXX.tmp`` behind a SIGKILL, never a broken visible file."""
    import numpy as np
    from PIL import Image

    counts: dict[str, int] = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix == ".png":
            with Image.open(p) as img:
                img.load()
        elif p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".npy":
            np.load(p, allow_pickle=False)
        elif p.suffix == ".csv":
            list(csv.reader(p.open()))
        elif p.suffix == ".pt":
            import torch

            torch.load(p, map_location="cpu", weights_only=True)
        elif p.suffix == ".safetensors":
            from safetensors.torch import load_file

            load_file(str(p))
        counts[p.suffix] = counts.get(p.suffix, 0) + 1
    return counts


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xray_xai.data.datasets import synth

    return synth(tmp_path_factory.mktemp("intr") / "ph", n_studies=10, seed=1, image_size=64, progress=False)


@pytest.mark.slow
def test_train_killed_then_resumed(phantoms: Path, tmp_path: Path) -> None:
    env = _env(tmp_path / "home")
    run = tmp_path / "run"
    args = ["train", "--model", "cnn-small", "--data", str(phantoms), "--image-size", "64", "--batch-size", "4",
            "--epochs", "3", "--early-stop", "5", "--out", str(run)]  # fmt: skip
    _kill_when(args, env, lambda: (run / "last.json").is_file())
    _complete(run)
    before = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in before] == ["1"]
    first_epoch_seconds = before[0]["seconds"]

    _run([*args, "--resume"], env)
    _complete(run)
    after = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in after] == ["1", "2", "3"]
    assert after[0]["seconds"] == first_epoch_seconds, "epoch 1 was recomputed instead of resumed"
    result = json.loads((run / "result.json").read_text())
    assert _complete(Path(result["checkpoint"])).get(".safetensors") == 1


@pytest.mark.slow
def test_explain_killed_then_resumed(phantoms: Path, tmp_path: Path) -> None:
    from xray_xai import get_model
    from xray_xai.models.store import save_model

    model = get_model("cnn-small")()
    model.preprocessing = type(model.preprocessing)(**{**model.preprocessing.to_dict(), "input_size": 64})
    ckpt = save_model(model, tmp_path / "ckpt")
    env = _env(tmp_path / "home")
    out = tmp_path / "expl"
    args = ["explain", "--checkpoint", str(ckpt), "--method", "gradcam", "--data", str(phantoms), "--batch-size",
            "1", "--out", str(out)]  # fmt: skip
    maps = out / "cnn-small" / "gradcam"
    _kill_when(args, env, lambda: maps.is_dir() and len(list(maps.glob("*.json"))) >= 2)
    _complete(out)
    done_before = {p.stem for p in maps.glob("*.json")}

    res = _run([*args, "--resume", "--json"], env)
    summary = json.loads(res.stdout)
    _complete(out)
    assert summary["n_resumed"] >= len(done_before) - 1  # the image being written at the kill may be redone
    total = summary["n_explained"] + summary["n_resumed"]
    assert total == len({p.stem for p in maps.glob("*.json")})
    stems = {suffix: {p.stem for p in maps.glob(f"*{suffix}")} for suffix in (".png", ".npy", ".json")}
    assert stems[".png"] == stems[".npy"] == stems[".json"], "an image has some of its outputs but not all"
    assert not summary["skipped"]
