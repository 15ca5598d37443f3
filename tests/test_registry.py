"""The registry: lazy entry points, strict names, broken plugins isolated, XRAY_XAI_PLUGINS filter."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import xray_xai
from xray_xai.cli import main
from xray_xai.errors import PluginError, UnknownPluginError
from xray_xai.sdk import registry
from xray_xai.sdk.interfaces import Explainer, Explanation, Model, Tags

REPO = Path(__file__).resolve().parents[1]


class _Dummy(Explainer):
    name = "dummy-explainer"
    description = "test double"
    tags = Tags(deterministic=True)

    def explain(self, model: Model, images: Any, target: str = "abnormal") -> Explanation:  # pragma: no cover
        raise NotImplementedError


@pytest.fixture(autouse=True)
def _fresh_registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    registry.reset_all()
    yield
    registry.reset_all()


def _fake_distribution(root: Path, dist: str, group: str, entries: dict[str, str], modules: dict[str, str]) -> None:
    """Write an installed-looking distribution (dist-info + modules) under ``root`` for importlib.metadata."""
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")
    for mod, src in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(src))


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_register_twice_raises() -> None:
    registry.explainers.register(_Dummy)
    try:
        with pytest.raises(PluginError, match="already registered"):
            registry.explainers.register(_Dummy)
    finally:
        registry.explainers.unregister("dummy-explainer")


def test_register_refuses_wrong_base() -> None:
    with pytest.raises(PluginError, match="not a subclass of Model"):
        registry.models.register(_Dummy)  # type: ignore[arg-type]


def test_unknown_name_suggests_close_matches() -> None:
    registry.explainers.register(_Dummy)
    try:
        with pytest.raises(UnknownPluginError, match="did you mean 'dummy-explainer'"):
            xray_xai.get_explainer("dummy-explainr")
    finally:
        registry.explainers.unregister("dummy-explainer")


def test_lookup_returns_class_and_pattern_filter() -> None:
    registry.explainers.register(_Dummy)
    try:
        assert xray_xai.get_explainer("dummy-explainer") is _Dummy
        assert "dummy-explainer" in xray_xai.list_explainers("dummy-*")
        assert xray_xai.list_explainers("nothing-matches-*") == []
    finally:
        registry.explainers.unregister("dummy-explainer")


def test_broken_plugin_is_reported_by_name_and_others_keep_working(fake_site: Path) -> None:
    _fake_distribution(
        fake_site,
        "broken-plugin",
        "xray_xai.explainers",
        {"broken-one": "broken_mod:Thing", "fine-one": "fine_mod:Fine"},
        {
            "broken_mod": "raise ImportError('needs a library that is not installed')\n",
            "fine_mod": """
                from xray_xai.sdk.interfaces import Explainer, Tags
                class Fine(Explainer):
                    name = "fine-one"
                    description = "works"
                    tags = Tags()
                    def explain(self, model, images, target="abnormal"):
                        raise NotImplementedError
            """,
        },
    )
    registry.reset_all()
    failures = registry.explainers.failures()
    assert "broken-one" in failures and "needs a library" in failures["broken-one"]
    assert "fine-one" in registry.explainers.names()
    with pytest.raises(PluginError, match=r"broken-one.*broken-plugin.*failed to load"):
        registry.explainers.get("broken-one")
    infos = {i.name: i for i in registry.all_plugins()}
    assert infos["fine-one"].package == "broken-plugin" and infos["fine-one"].version == "1.2.3"
    assert infos["broken-one"].error is not None


def test_same_name_from_two_packages_is_refused(fake_site: Path) -> None:
    src = """
        from xray_xai.sdk.interfaces import Explainer
        class X(Explainer):
            name = "clash"
            def explain(self, model, images, target="abnormal"):
                raise NotImplementedError
    """
    _fake_distribution(fake_site / "a", "pkg-a", "xray_xai.explainers", {"clash": "mod_a:X"}, {"mod_a": src})
    _fake_distribution(fake_site / "b", "pkg-b", "xray_xai.explainers", {"clash": "mod_b:X"}, {"mod_b": src})
    sys.path[:0] = [str(fake_site / "a"), str(fake_site / "b")]
    try:
        registry.reset_all()
        with pytest.raises(PluginError, match="registered twice: by pkg-a and by pkg-b"):
            registry.explainers.get("clash")
    finally:
        sys.path.remove(str(fake_site / "a"))
        sys.path.remove(str(fake_site / "b"))


def test_env_var_restricts_entry_points(fake_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = """
        from xray_xai.sdk.interfaces import Explainer
        class E(Explainer):
            def explain(self, model, images, target="abnormal"):
                raise NotImplementedError
    """
    _fake_distribution(
        fake_site, "envtest", "xray_xai.explainers", {"keep-me": "envmod:E", "drop-me": "envmod:E"}, {"envmod": src}
    )
    monkeypatch.setenv(registry.ENV_VAR, "keep-*")
    registry.reset_all()
    names = registry.explainers.names()
    assert "keep-me" in names and "drop-me" not in names
    monkeypatch.setenv(registry.ENV_VAR, "envtest")  # a distribution name selects all its plugins
    registry.reset_all()
    assert {"keep-me", "drop-me"} <= set(registry.explainers.names())


def test_plugins_are_not_imported_until_used(fake_site: Path) -> None:
    _fake_distribution(
        fake_site,
        "lazy-plugin",
        "xray_xai.explainers",
        {"lazy-one": "lazy_mod:E"},
        {
            "lazy_mod": """
                import sys
                sys.modules["lazy_mod_was_imported"] = sys
                from xray_xai.sdk.interfaces import Explainer
                class E(Explainer):
                    def explain(self, model, images, target="abnormal"):
                        raise NotImplementedError
            """
        },
    )
    registry.reset_all()
    assert "lazy-one" in registry.explainers  # listing reads entry points only
    assert "lazy_mod_was_imported" not in sys.modules
    registry.explainers.get("lazy-one")
    assert "lazy_mod_was_imported" in sys.modules
    del sys.modules["lazy_mod_was_imported"]


def test_plugins_cli_json_lists_failures_without_dying(fake_site: Path) -> None:
    _fake_distribution(fake_site, "broken-cli", "xray_xai.datasets", {"bad-data": "nowhere_mod:X"}, {})
    registry.reset_all()
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    bad = [r for r in rows if r["name"] == "bad-data"]
    assert bad and bad[0]["kind"] == "dataset" and "nowhere_mod" in bad[0]["error"]
    assert {"kind", "name", "package", "version", "description", "tags"} <= set(rows[0])


def test_core_never_imports_plugins() -> None:
    """Floor rule: xray_xai/ finds built-ins through entry points only, exactly like third-party plugins."""
    offenders = []
    for path in (REPO / "xray_xai").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] == "xray_xai_plugins"]
    assert offenders == []


def test_plugins_only_import_floor_one() -> None:
    """Built-in plugins import the SDK and the ground floor only, at module and at function level; never a service."""
    allowed = {
        "sdk",  # the plugin SDK: contracts, registry, torch bases, layer helpers, pretrained-weight loaders
        "errors",
        "data",  # decoding, preprocessing, masks
        "_util",  # atomic writes, progress
        "defaults",  # shared constants
    }
    offenders = []
    for path in (REPO / "plugins").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = []
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            for module in modules:
                parts = module.split(".")
                if parts[0] == "xray_xai" and (len(parts) < 2 or parts[1] not in allowed):
                    offenders.append(f"{path.relative_to(REPO)}: {module}")
    assert offenders == []


def test_sdk_is_one_import_and_never_imports_torch() -> None:
    """``xray_xai.sdk`` names every public SDK symbol; torch-backed ones load on first use only."""
    code = (
        "import sys, xray_xai.sdk as sdk, xray_xai.sdk.registry;"
        "print('torch' in sys.modules, 'numpy' in sys.modules);"
        "sdk.TorchModel;"
        "print('torch' in sys.modules, all(hasattr(sdk, n) for n in sdk.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False", "True", "True"]
    import xray_xai.sdk as sdk

    needed = {"Model", "Explainer", "Clusterer", "DatasetPlugin", "Tags", "Preprocessing", "Record", "Explanation"}
    needed |= {"Problem", "Box", "TorchModel", "BackboneModel", "TorchExplainer", "Attribution", "StageCAM"}
    needed |= {"capture_activation", "find_layer", "resolve_layer", "logits_of", "stage_layers", "layers_at_strides"}
    assert needed <= set(sdk.__all__)
    with pytest.raises(AttributeError):
        sdk.no_such_name  # noqa: B018


def test_example_third_party_plugin_installs_and_is_listed(tmp_path: Path) -> None:
    """pip-install examples/custom_plugin into a folder; the CLI lists and loads its explainer unchanged."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO / "examples" / "custom_plugin"),
        ],
        check=True,
    )
    code = (
        "import json, xray_xai;"
        "from xray_xai.testing.explainers import check_explainer, tiny_convnet;"
        "cls = xray_xai.get_explainer('input-x-gradient');"
        "check_explainer(cls, tiny_convnet());"  # the shipped contract check, on the plugin as installed
        "print(json.dumps([cls.__module__, cls.tags.needs_gradients]))"
    )
    paths = [str(target), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    assert json.loads(out.stdout) == ["xray_xai_example.explainer", True]
    listing = subprocess.run(
        [sys.executable, "-m", "xray_xai", "plugins", "--json"], check=True, capture_output=True, text=True, env=env
    )
    rows = {r["name"]: r for r in json.loads(listing.stdout)}
    assert rows["input-x-gradient"]["package"] == "xray-xai-example-plugin"
    assert rows["input-x-gradient"]["error"] is None
