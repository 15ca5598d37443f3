"""Options a user can get wrong give one line and exit 1, never a traceback: devices, explainer parameter values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from xray_xai.cli import main


@pytest.fixture
def ckpt() -> Path:
    import xray_xai
    from xray_xai.models.store import save_model

    return save_model(xray_xai.get_model("cnn-small")(image_size=32), metadata={})


@pytest.fixture
def film(tmp_path: Path) -> Path:
    path = tmp_path / "film.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    "device,message",
    [("bogus", "unknown device 'bogus'"), ("cuda:7", "device 'cuda:7'")],
)
def test_predict_refuses_a_device_in_one_line(ckpt: Path, film: Path, device: str, message: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(ckpt), "--input", str(film), "--device", device])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.stderr.startswith("error: ") and message in res.stderr and res.stderr.count("\n") == 1


def test_resolve_device_auto_and_cpu() -> None:
    import torch

    from xray_xai._util.device import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_an_explainer_parameter_of_the_wrong_type_is_one_line(ckpt: Path, film: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main,
        ["explain", "--checkpoint", str(ckpt), "--method", "layercam", "--param", "layercam.stride=abc", "--input",
         str(film), "--out", str(tmp_path / "o")],
    )  # fmt: skip
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.stderr.startswith("error: explainer 'layercam'") and res.stderr.count("\n") == 1
