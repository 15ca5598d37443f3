"""The smoke paths of the GPU benchmark (run on the CPU) and of the MURA-scale dry run: every row is measured and
written; the real runs take minutes (docs/performance.md)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # bench_scale imports the suite's _util
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _positive(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_gpu_benchmark_smoke_on_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gpu = _load("gpu")
    out = tmp_path / "gpu.json"
    assert gpu.main(["--device", "cpu", "--smoke", "--json", str(out)]) == 0
    got = json.loads(out.read_text(encoding="utf-8"))
    env, settings = got["environment"], got["settings"]
    assert env["device"] == "cpu" and env["torch"] and env["device_name"]
    assert settings["model"] == "densenet-full" and settings["amp"] is False  # autocast is off on CPU by default
    assert settings["train_batch"] >= 1 and settings["explain_batch"] >= 1
    rows = {r["name"]: r for r in got["rows"]}
    for name in ("train", "train (deterministic)", "inference", "gradcam", "saliency", "layercam", "loader, 0 workers"):
        assert _positive(rows[name]["rate"]), rows[name]
        assert _positive(rows[name]["seconds"]) and rows[name]["batch"] >= 1
    assert rows["train"]["unit"] == "img/s" and rows["gradcam"]["unit"] == "films/s"
    # the prepared-film loader is measured when its module exists, otherwise the table says why not
    cached = [r for name, r in rows.items() if name.startswith("loader, prepared films")]
    assert cached
    assert all(_positive(r["rate"]) for r in cached) or "not available" in cached[0]["note"]
    printed = capsys.readouterr().out
    assert "| train |" in printed and "img/s" in printed


def test_gpu_benchmark_refuses_a_missing_device(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    gpu = _load("gpu")
    assert gpu.main(["--device", "cuda", "--smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpu.py: error:") and "cuda" in err and "\n" not in err


def test_scale_dry_run_smoke(tmp_path: Path) -> None:
    scale = _load("bench_scale")
    out = tmp_path / "scale.json"
    assert scale.main(["--smoke", "--json", str(out)]) == 0
    got = json.loads(out.read_text(encoding="utf-8"))
    assert got["complete"] is True and got["info"]["inline"] is True
    small, large = got["results"]
    assert 0 < small["films"] < large["films"]
    for res in (small, large):
        assert set(res["stages"]) == {"generate", "train", "explain", "cluster"}
        for stage in res["stages"].values():
            assert _positive(stage["seconds"]) and stage["cpu_seconds"] >= 0 and stage["memory_mb"] >= 1
            assert stage["films"] == res["films"]
        assert res["stages"]["explain"]["explained"] == res["films"]  # one gradcam item per film
        assert res["stages"]["cluster"]["clustered"] == res["films"]  # threshold None: every film clustered
        assert res["stages"]["train"]["train_img_per_s"] > 0
    assert set(got["exponents"]) == {"generate", "train", "explain", "cluster"}
    assert all(math.isfinite(v) for e in got["exponents"].values() for v in e.values())


def test_scale_dry_run_needs_two_sizes() -> None:
    scale = _load("bench_scale")
    with pytest.raises(SystemExit) as exc:
        scale.main(["--sizes", "100"])
    assert exc.value.code == 2


@pytest.mark.gpu
def test_gpu_benchmark_smoke_on_cuda(tmp_path: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    gpu = _load("gpu")
    out = tmp_path / "gpu.json"
    assert gpu.main(["--device", "cuda", "--smoke", "--workers", "0,2", "--json", str(out)]) == 0
    got = json.loads(out.read_text(encoding="utf-8"))
    assert got["settings"]["amp"] is True and got["environment"]["device_name"]
    rows = {r["name"]: r for r in got["rows"]}
    assert _positive(rows["train"]["rate"]) and _positive(rows["train"]["extra"]["peak_mem_mb"])
    assert _positive(rows["loader, 2 workers"]["rate"])
