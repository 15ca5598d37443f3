"""The house rules of DESIGN.md, checked on the source: who may import whom, and how large a module or function gets.

Floors, imports only go down: faces (cli, web) -> api (api, demo) -> services (models, explain, audit, cluster,
report, scale) -> ground (sdk, data, _util, errors, defaults, testing). Built-in plugins import only the ground.
Function-level imports count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "xray_xai"

FACES = {"cli", "web"}
ENTRY = {"__main__"}
API = {"api", "demo"}
SERVICES = {"models", "explain", "audit", "cluster", "report", "scale"}
GROUND = {"sdk", "data", "_util", "errors", "defaults", "testing"}
ALLOWED = {
    "entry": {"cli"},
    "face": {"api", "errors"},
    "api": API | SERVICES | GROUND,
    "service": SERVICES | GROUND,
    "ground": GROUND,
    "plugin": {"sdk", "data", "_util", "errors", "defaults"},
}
#: the one sideways import: the command line starts the web face (``xray-xai serve``)
SIDEWAYS = {"xray_xai/cli/serve.py": {"web"}}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _floor(top: str) -> str:
    for floor, names in (("entry", ENTRY), ("face", FACES), ("api", API), ("service", SERVICES), ("ground", GROUND)):
        if top in names:
            return floor
    return "ground" if top == "__init__" else "unknown"


def _sources() -> list[tuple[str, Path]]:
    out = [("xray_xai", p) for p in sorted(PACKAGE.rglob("*.py"))]
    out += [("plugin", p) for p in sorted((REPO / "plugins").rglob("*.py"))]
    return out


def _xray_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, first component under xray_xai)`` for every import of xray_xai in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "xray_xai":
                continue
            if len(parts) > 1:
                found.append((node.lineno, parts[1]))
            else:  # from xray_xai import api / __version__ / get_model
                found += [
                    (
                        node.lineno,
                        a.name if (PACKAGE / a.name).exists() or (PACKAGE / f"{a.name}.py").exists() else "__init__",
                    )
                    for a in node.names
                ]
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "xray_xai" and len(parts) > 1:
                    found.append((node.lineno, parts[1]))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, "<relative>"))
    return found


def _module_floor(kind: str, path: Path) -> tuple[str, str]:
    if kind == "plugin":
        return "plugin", "plugins"
    top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    return _floor(top), top


def test_imports_only_go_down() -> None:
    offenders = []
    for kind, path in _sources():
        floor, top = _module_floor(kind, path)
        allowed = ALLOWED.get(floor, set()) | {top, "__init__"} | SIDEWAYS.get(str(path.relative_to(REPO)), set())
        for line, target in _xray_imports(path):
            if target == "<relative>" and kind == "plugin":
                continue  # a plugin's own private modules
            if target not in allowed:
                offenders.append(f"{path.relative_to(REPO)}:{line} ({floor}) imports xray_xai.{target}")
    assert offenders == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from xray_xai import api, __version__\nfrom xray_xai.errors import one_line\nimport click\n"
        "def f():\n    from xray_xai.explain.service import explain\n    import xray_xai._util.fsutil\n"
    )
    assert _xray_imports(sample) == [(1, "api"), (1, "__init__"), (2, "errors"), (5, "explain"), (6, "_util")]


def test_the_core_never_imports_a_plugin() -> None:
    offenders = [
        f"{p.relative_to(REPO)}"
        for kind, p in _sources()
        if kind == "xray_xai"
        and "xray_xai_plugins" in p.read_text(encoding="utf-8").replace("xray_xai_plugins.", "")
        and any(
            isinstance(n, (ast.Import, ast.ImportFrom))
            and "xray_xai_plugins" in (getattr(n, "module", None) or "".join(a.name for a in n.names))
            for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        )
    ]
    assert offenders == []


@pytest.mark.parametrize("kind,path", _sources(), ids=lambda v: str(v.relative_to(REPO)) if isinstance(v, Path) else v)
def test_module_and_function_sizes(kind: str, path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    n_lines = text.count("\n")
    assert n_lines <= MAX_MODULE_LINES, f"{path.relative_to(REPO)}: {n_lines} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == [], f"{path.relative_to(REPO)}: {', '.join(long)}"


def test_every_package_is_in_pyproject() -> None:
    """A subsystem package missing from pyproject's list installs fine in editable mode and is absent from a wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in PACKAGE.rglob("__init__.py")}
    found |= {
        "xray_xai_plugins." + ".".join(p.parent.relative_to(REPO / "plugins").parts)
        for p in (REPO / "plugins").rglob("__init__.py")
    }
    found = {f.rstrip(".") for f in found}
    assert found == listed
