"""Tables stay readable at 80 columns and when piped (issue 20, finding 8): no header or name split mid-word
("deleti on", "needs_gradien ts", "cnn-sm all")."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from xray_xai import api
from xray_xai.cli import _common, main
from xray_xai.cli import audit as audit_cli

AUDIT_HEADERS = ["model", "method", "deletion ↓", "insertion ↑", "pointing", "IoU otsu", "mass in mask", "border"]
PLUGIN_HEADERS = ["kind", "name", "package", "description", "tags"]
MODEL_HEADERS = ["name", "source", "created", "dataset", "epochs", "AUROC", "path"]
METHODS = ["integrated-gradients", "gradcam++", "layercam"]


def _audit_result() -> dict[str, Any]:
    stat = {"mean": 0.1234, "ci": [0.1012, 0.1555]}
    pair = {
        "status": "ok", "faithfulness": {"deletion_auc": stat, "insertion_auc": stat},
        "localisation": {"pointing": stat, "iou_otsu": stat, "mass_in_mask": stat},
        "shortcuts": {"border_share": stat}, "sanity": {"status": "passed"},
    }  # fmt: skip
    return {"pairs": [{"model": "efficientnet-lite0", "method": m, **pair} for m in METHODS]}


def _audit_output() -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        audit_cli._print_table(_audit_result())
    return buf.getvalue()


def _whole(text: str, phrases: list[str]) -> None:
    """Every word of every phrase appears whole (between spaces) in ``text``."""
    found = {w.rstrip(",") for w in re.sub(r"\x1b\[[0-9;]*m", "", text).split()}
    missing = sorted({w.rstrip(",") for p in phrases for w in p.split()} - found)
    assert not missing, f"split or lost: {missing}\n{text}"


def _tables(tiny_checkpoint: Path) -> dict[str, tuple[str, list[str]]]:
    """What the three real tables print, and the words that must stay whole: headers, names, tags, paths."""
    runner = CliRunner()
    plugins = runner.invoke(main, ["plugins"])
    models = runner.invoke(main, ["models"])
    assert plugins.exit_code == 0 and models.exit_code == 0
    infos = api.list_plugins()
    plugin_words = [*PLUGIN_HEADERS, *(i.name for i in infos), *(t for i in infos for t in i.tags)]
    return {
        "plugins": (plugins.stdout, plugin_words),
        "models": (models.stdout, [*MODEL_HEADERS, "cnn-small", str(tiny_checkpoint)]),
        "audit": (_audit_output(), [*AUDIT_HEADERS, "efficientnet-lite0", *METHODS]),
    }


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal-80", "piped"])
def test_real_tables_keep_headers_and_names_whole_at_80_columns(
    terminal: bool, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    if terminal:  # rich treats stdout as an 80-column terminal
        monkeypatch.setenv("FORCE_COLOR", "1")
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("FORCE_COLOR", raising=False)
    for name, (text, words) in _tables(tiny_checkpoint).items():
        assert text.strip(), name
        _whole(text, words)
        lines = re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()
        if any("─" in line for line in lines):  # the rich table: only where it fits
            assert terminal and all(len(line) <= 80 for line in lines), (name, text)
        else:  # plain rows: the headers whole on one line, one line per row
            header_line = next(line for line in lines if line.startswith(("kind", "name", "model")))
            assert all(h in header_line for h in words[:3]), (name, header_line)


def test_piped_tables_are_plain_rows_one_line_each(tiny_checkpoint: Path) -> None:
    """CliRunner's stdout is not a terminal: one line per row, headers whole on the first line."""
    res = CliRunner().invoke(main, ["plugins", "--kind", "explainer"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == PLUGIN_HEADERS
    names = [p.name for p in api.list_plugins("explainer")]
    assert len(lines) == 2 + len(names) and [line.split()[1] for line in lines[2:]] == names
    gradcam = next(line for line in lines if line.split()[1] == "gradcam")
    assert "needs_gradients," in gradcam.split()

    res = CliRunner().invoke(main, ["models"])
    header = ["name", "source", "created", "dataset", "epochs", "AUROC", "path"]
    assert res.stdout.splitlines()[0].split() == header
    assert any(str(tiny_checkpoint) in line.split() for line in res.stdout.splitlines()[2:])

    lines = _audit_output().splitlines()
    assert lines[0] == "audit (mean [95% CI])"
    assert all(h in lines[1] for h in AUDIT_HEADERS)
    assert lines[3].split()[:3] == ["efficientnet-lite0", "integrated-gradients", "0.123"]


def test_a_table_that_fits_wraps_at_spaces_only() -> None:
    buf = io.StringIO()
    rows = [["cnn-small", "a description long enough to need several lines at this width, in plain words"]]
    console = Console(file=buf, width=40, force_terminal=True, color_system=None)
    _common.print_table(["name", "description"], rows, console=console)
    text = buf.getvalue()
    assert "─" in text and all(len(line) <= 40 for line in text.splitlines())  # the rich table, wrapped
    _whole(text, [*rows[0], "name", "description"])
