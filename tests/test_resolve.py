"""``--model`` and ``--checkpoint`` name ONE model, the same way in every command (xray_xai.models.resolve)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from xray_xai.cli import main


@pytest.fixture
def ckpt() -> Path:
    """A tiny cnn-small checkpoint in the (per-test) store."""
    import xray_xai
    from xray_xai.models.store import save_model

    return save_model(xray_xai.get_model("cnn-small")(image_size=32), metadata={})


@pytest.fixture
def film(tmp_path: Path) -> Path:
    path = tmp_path / "film.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(path)
    return path


def _explain(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, ["explain", "--method", "saliency", "--json", *args])
    return res.exit_code, res.stdout, res.stderr


def test_model_and_checkpoint_the_same_file_is_one_model(ckpt: Path, film: Path, tmp_path: Path) -> None:
    """Bug 1 of issue 14: the same checkpoint given twice was explained twice (cnn-small and cnn-small-2)."""
    code, out, err = _explain("--model", str(ckpt), "--checkpoint", str(ckpt), "--input", str(film), "--out",
                              str(tmp_path / "o"))  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["models"] == ["cnn-small"] and summary["n_explained"] == 1


def test_name_and_checkpoint_is_that_checkpoint(ckpt: Path, film: Path, tmp_path: Path) -> None:
    code, out, err = _explain("--model", "cnn-small", "--checkpoint", str(ckpt), "--input", str(film), "--out",
                              str(tmp_path / "o"))  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["models"] == ["cnn-small"]


def test_name_of_another_model_is_refused_in_one_line(ckpt: Path, film: Path, tmp_path: Path) -> None:
    code, _, err = _explain("--model", "convnet", "--checkpoint", str(ckpt), "--input", str(film), "--out",
                            str(tmp_path / "o"))  # fmt: skip
    assert code == 1
    assert err.startswith("error: ") and "holds model 'cnn-small', not 'convnet'" in err and err.count("\n") == 1


def test_two_different_checkpoints_are_refused(ckpt: Path, tmp_path: Path) -> None:
    import xray_xai
    from xray_xai.errors import CheckpointError
    from xray_xai.models.resolve import resolve_spec
    from xray_xai.models.store import save_model

    other = save_model(xray_xai.get_model("cnn-small")(image_size=32), tmp_path / "other", metadata={})
    with pytest.raises(CheckpointError, match="is not the checkpoint"):
        resolve_spec(str(other), ckpt)


def test_the_rule(ckpt: Path) -> None:
    from xray_xai.errors import PluginError
    from xray_xai.models.resolve import resolve_model, resolve_spec, resolve_specs

    assert resolve_spec("cnn-small") == "cnn-small"
    assert resolve_spec(None, ckpt) == ckpt
    assert resolve_spec("cnn-small", ckpt) == ckpt
    assert resolve_specs(["cnn-small", "convnet"], ckpt) == [ckpt, "convnet"]  # the checkpoint pins the first
    with pytest.raises(PluginError, match="no model given"):
        resolve_specs([])
    model = resolve_model("cnn-small")  # the newest stored one
    assert model.name == "cnn-small" and Path(model.checkpoint_path).parent == ckpt
    assert resolve_model(model) is model


@pytest.mark.parametrize("command", ["evaluate", "cluster"])
def test_every_command_checks_the_name(command: str, ckpt: Path, tmp_path: Path) -> None:
    from xray_xai import api

    root = api.synth(tmp_path / "ph", n_studies=4, seed=0, image_size=64, progress=False)
    res = CliRunner().invoke(main, [command, "--model", "convnet", "--checkpoint", str(ckpt), "--data", str(root)])
    assert res.exit_code == 1 and "holds model 'cnn-small', not 'convnet'" in res.stderr


def test_the_explain_service_reads_model_and_checkpoint_by_the_same_rule(ckpt: Path, film: Path) -> None:
    """The service called directly (not only the CLI and the API) explains one model for the same checkpoint."""
    from xray_xai.explain.service import explain

    result = explain([ckpt], "saliency", checkpoint=ckpt, inputs=[film], show_progress=False)
    assert result.models == ["cnn-small"] and len(result.items) == 1


def test_loading_a_model_leaves_the_global_random_state_alone(ckpt: Path) -> None:
    """Building the architecture draws random initial weights; the load must not move the process's generator."""
    import torch

    from xray_xai.models.store import load_model

    torch.manual_seed(1234)
    before = torch.get_rng_state()
    load_model(ckpt)
    assert torch.equal(torch.get_rng_state(), before)
