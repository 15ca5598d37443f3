"""Meta-tests that keep README, CI, docs and the registry in step."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md must start with a bash block holding the two newcomer commands"
    assert text.index("```bash") < 40, "the commands must be README's first lines"
    lines = [ln for ln in block.group(1).splitlines() if ln.strip()]
    assert len(lines) == 2, lines
    return lines


def test_ci_runs_readme_test_command_exactly() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    _, test_cmd = _readme_commands()
    assert test_cmd in ci


def test_ci_installs_as_readme_says() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    install_cmd, _ = _readme_commands()
    venv, activate_install = install_cmd.split(" && ", 1)
    assert venv in ci
    pip_step = " && ".join(activate_install.split(" && ")[:2])  # ". .venv/bin/activate && pip install ..."
    assert pip_step in ci
