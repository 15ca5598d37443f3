"""The CLI is a face: every module of xray_xai/cli imports only the API, the errors and the version (plus its
sibling cli modules and third-party libraries), at module level and inside functions alike."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parents[1] / "xray_xai" / "cli"
ALLOWED = {"xray_xai.api", "xray_xai.errors"}


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in ``path``; relative imports resolved inside xray_xai.cli."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                module = ".".join(["xray_xai", "cli"][: 3 - node.level] + ([module] if module else []))
            found.append((node.lineno, module, [alias.name for alias in node.names]))
    return found


def _offending(path: Path) -> list[str]:
    bad = []
    for line, module, names in _imports(path):
        if not module.startswith("xray_xai") or module in ALLOWED or module.startswith("xray_xai.cli"):
            continue
        if module == "xray_xai" and set(names) <= {"__version__", "api"}:
            continue
        bad.append(f"{path.name}:{line}: {module} {names}")
    return bad


@pytest.mark.parametrize("path", sorted(CLI.glob("*.py")), ids=lambda p: p.name)
def test_cli_imports_only_the_api(path: Path) -> None:
    assert _offending(path) == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from xray_xai import api, __version__\nfrom xray_xai.errors import one_line\nimport click\n"
        "def f():\n    from xray_xai.explain.service import explain\n    import xray_xai._util.fsutil\n"
    )
    assert [b.split(":")[1] for b in _offending(sample)] == ["5", "6"]
