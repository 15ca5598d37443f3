"""Write docs/commands.md from every command's --help, so the reference never drifts from the code.

python tools/gen_cli_docs.py          # rewrite docs/commands.md
python tools/gen_cli_docs.py --check  # exit 1 if it is out of date (tests/test_docs.py runs this)
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

from xray_xai.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "commands.md"


def render() -> str:
    runner = CliRunner()
    ctx = click.Context(main)
    parts = [
        "# Command reference\n",
        "Generated from `--help` by `python tools/gen_cli_docs.py`; `tests/test_docs.py` fails when it is stale.\n",
    ]
    for name in main.list_commands(ctx):
        result = runner.invoke(main, [name, "--help"], terminal_width=100)
        assert result.exit_code == 0, result.output
        parts.append(f"## xray-xai {name}\n\n```text\n{result.output.rstrip()}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if DOC.exists() and DOC.read_text(encoding="utf-8") == text else 1)
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
