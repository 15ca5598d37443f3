"""Meta-tests that keep README, CI, docs and the registry in step."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md must start with a bash block holding the two newcomer commands"
    before = [ln for ln in text[: text.index("```bash")].splitlines() if ln.strip()]
    assert before[0] == "# xray-xai" and len(before) <= 2, "the commands must be README's first lines"
    assert len(before) == 1 or before[1].startswith("<!-- docs: not-in-ci "), before  # CI runs them itself
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


def test_command_reference_is_current() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_cli_docs", REPO / "tools" / "gen_cli_docs.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    current = (REPO / "docs" / "commands.md").read_text(encoding="utf-8")
    assert current == gen.render(), "docs/commands.md is stale: run `python tools/gen_cli_docs.py`"


def test_every_command_help_has_an_example() -> None:
    from click.testing import CliRunner

    from xray_xai.cli import COMMANDS, main

    for name in COMMANDS:
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Example" in result.output, f"`xray-xai {name} --help` shows no example"


def test_every_plugin_is_documented() -> None:
    """Each registered plugin name appears in the docs (datasette's test_plugin_hooks_are_documented)."""
    import xray_xai

    docs = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "docs").glob("*.md"))
    names = xray_xai.list_models() + xray_xai.list_explainers() + xray_xai.list_clusterers() + xray_xai.list_datasets()
    missing = [n for n in names if f"`{n}`" not in docs]
    assert missing == [], f"plugins without a docs entry: {missing}"
