"""Options a user can get wrong give one line and exit 1, never a traceback: devices, explainer parameter values."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from xray_xai.cli import main


@pytest.mark.parametrize(
    "device,message",
    [("bogus", "unknown device 'bogus'"), ("cuda:7", "device 'cuda:7'")],
)
def test_predict_refuses_a_device_in_one_line(
    tiny_checkpoint: Path, noise_film: Path, device: str, message: str
) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    res = CliRunner().invoke(
        main, ["predict", "--checkpoint", str(tiny_checkpoint), "--input", str(noise_film), "--device", device]
    )
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.stderr.startswith("error: ") and message in res.stderr and res.stderr.count("\n") == 1


def test_resolve_device_auto_and_cpu() -> None:
    import torch

    from xray_xai._util.device import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


def test_an_explainer_parameter_of_the_wrong_type_is_one_line(
    tiny_checkpoint: Path, noise_film: Path, tmp_path: Path
) -> None:
    res = CliRunner().invoke(
        main,
        ["explain", "--checkpoint", str(tiny_checkpoint), "--method", "layercam", "--param", "layercam.stride=abc",
         "--input", str(noise_film), "--out", str(tmp_path / "o")],
    )  # fmt: skip
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.stderr.startswith("error: explainer 'layercam'") and res.stderr.count("\n") == 1
