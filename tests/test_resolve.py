"""``--model`` and ``--checkpoint`` name ONE model, the same way in every command (xray_xai.models.resolve)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from xray_xai.cli import main


def _explain(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, ["explain", "--method", "saliency", "--json", *args])
    return res.exit_code, res.stdout, res.stderr


def test_model_and_checkpoint_the_same_file_is_one_model(
    tiny_checkpoint: Path, noise_film: Path, tmp_path: Path
) -> None:
    """Bug 1 of issue 14: the same checkpoint given twice was explained twice (cnn-small and cnn-small-2)."""
    code, out, err = _explain("--model", str(tiny_checkpoint), "--checkpoint", str(tiny_checkpoint), "--input",
                              str(noise_film), "--out",
                              str(tmp_path / "o"))  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["models"] == ["cnn-small"] and summary["n_explained"] == 1


def test_name_and_checkpoint_is_that_checkpoint(tiny_checkpoint: Path, noise_film: Path, tmp_path: Path) -> None:
    code, out, err = _explain("--model", "cnn-small", "--checkpoint", str(tiny_checkpoint), "--input",
                              str(noise_film), "--out",
                              str(tmp_path / "o"))  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["models"] == ["cnn-small"]


def test_name_of_another_model_is_refused_in_one_line(tiny_checkpoint: Path, noise_film: Path, tmp_path: Path) -> None:
    code, _, err = _explain("--model", "convnet", "--checkpoint", str(tiny_checkpoint), "--input",
                            str(noise_film), "--out",
                            str(tmp_path / "o"))  # fmt: skip
    assert code == 1
    assert err.startswith("error: ") and "holds model 'cnn-small', not 'convnet'" in err and err.count("\n") == 1


def test_two_different_checkpoints_are_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import xray_xai
    from xray_xai.errors import CheckpointError
    from xray_xai.models.resolve import resolve_spec
    from xray_xai.models.store import save_model

    other = save_model(xray_xai.get_model("cnn-small")(image_size=32), tmp_path / "other", metadata={})
    with pytest.raises(CheckpointError, match="is not the checkpoint"):
        resolve_spec(str(other), tiny_checkpoint)


def test_the_rule(tiny_checkpoint: Path) -> None:
    from xray_xai.errors import PluginError
    from xray_xai.models.resolve import resolve_model, resolve_spec, resolve_specs

    assert resolve_spec("cnn-small") == "cnn-small"
    assert resolve_spec(None, tiny_checkpoint) == tiny_checkpoint
    assert resolve_spec("cnn-small", tiny_checkpoint) == tiny_checkpoint
    assert resolve_specs(["cnn-small", "convnet"], tiny_checkpoint) == [
        tiny_checkpoint,
        "convnet",
    ]  # the checkpoint pins the first
    with pytest.raises(PluginError, match="no model given"):
        resolve_specs([])
    model = resolve_model("cnn-small")  # the newest stored one
    assert model.name == "cnn-small" and Path(model.checkpoint_path).parent == tiny_checkpoint
    assert resolve_model(model) is model


@pytest.mark.parametrize("command", ["evaluate", "cluster"])
def test_every_command_checks_the_name(command: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    from xray_xai import api

    root = api.synth(tmp_path / "ph", n_studies=4, seed=0, image_size=64, progress=False)
    res = CliRunner().invoke(
        main, [command, "--model", "convnet", "--checkpoint", str(tiny_checkpoint), "--data", str(root)]
    )
    assert res.exit_code == 1 and "holds model 'cnn-small', not 'convnet'" in res.stderr


def test_the_explain_service_reads_model_and_checkpoint_by_the_same_rule(
    tiny_checkpoint: Path, noise_film: Path
) -> None:
    """The service called directly (not only the CLI and the API) explains one model for the same checkpoint."""
    from xray_xai.explain.service import explain

    result = explain(
        [tiny_checkpoint], "saliency", checkpoint=tiny_checkpoint, inputs=[noise_film], show_progress=False
    )
    assert result.models == ["cnn-small"] and len(result.items) == 1


def test_loading_a_model_leaves_the_global_random_state_alone(tiny_checkpoint: Path) -> None:
    """Building the architecture draws random initial weights; the load must not move the process's generator."""
    import torch

    from xray_xai.models.store import load_model

    torch.manual_seed(1234)
    before = torch.get_rng_state()
    load_model(tiny_checkpoint)
    assert torch.equal(torch.get_rng_state(), before)
