"""The Python API mirrors the CLI: every command has a function in xray_xai.api, importing it is cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from xray_xai import api
from xray_xai.cli import COMMANDS


def test_every_command_with_logic_has_an_api_function() -> None:
    mapping = {
        "data": "data_summary", "models": "list_store", "import": "import_model", "prepare": "prepare_films",
        "plugins": None, "serve": None,
    }  # fmt: skip
    for command in COMMANDS:
        name = mapping.get(command, command)
        if name is None:  # listing plugins and serving the web app are faces, not services
            continue
        assert callable(getattr(api, name, None)), f"xray_xai.api has no function for `xray-xai {command}`"


def test_importing_api_and_cli_does_not_import_torch() -> None:
    code = "import sys, xray_xai.api, xray_xai.cli; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"]


def test_api_synth_and_summary_round_trip(tmp_path: Path) -> None:
    root = api.synth(tmp_path / "ph", n_studies=6, seed=1, image_size=64, progress=False)
    summary = api.data_summary(root)
    assert summary["images"]["total"] > 0 and summary["studies"]["total"] == 6
