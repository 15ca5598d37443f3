"""The models that ship with xray-xai (fracatlas-lite0, and fracatlas-lite0-guided trained with box guidance): found
by name offline, never confused with a trained one, installed as package data, and their test-split AUROC on
FracAtlas equal to their model cards'."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest

from xray_xai import api
from xray_xai.errors import CheckpointError
from xray_xai.models import shipped, store

REPO = Path(__file__).resolve().parents[1]
NAME = "fracatlas-lite0"
#: every shipped model and the first 8 hex digits of its weights fingerprint
SHIPPED = {"fracatlas-lite0": "af59cc7c", "fracatlas-lite0-guided": "60872a74"}


def _sidecar(name: str = NAME) -> dict:
    return json.loads((shipped.SHIPPED_DIR / name / "model.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_model_loads_by_name_offline_from_an_empty_store(name: str) -> None:
    # conftest: an empty $XRAY_XAI_HOME and every outbound connection refused
    assert store.list_store() == []
    model = api.load_model(name)
    assert model.checkpoint_path == shipped.SHIPPED_DIR / name / "model.safetensors"
    assert model.fingerprint()[:8] == _sidecar(name)["fingerprint"][:8] == SHIPPED[name]  # the weights themselves
    assert api.resolve_model(name).sidecar["shipped"]["name"] == name
    assert [e["name"] for e in api.list_models() if e["shipped"]] == sorted(SHIPPED)


def test_the_guided_model_was_trained_with_its_recipe() -> None:
    """The sidecar of fracatlas-lite0-guided records the options of ``train --recipe fracatlas-lite0-guided``."""
    config = api.recipe("fracatlas-lite0-guided").config()
    recorded = _sidecar("fracatlas-lite0-guided")["hyperparameters"]
    assert recorded["guide"] == config.guide_spec.to_dict()
    for key in ("epochs", "batch_size", "lr", "optimizer", "schedule", "monitor", "loss", "augment"):
        assert recorded[key] == getattr(config, key), key
    assert _sidecar(NAME)["hyperparameters"].get("guide") is None  # the labels-only model (trained before --guide)


def test_a_shipped_name_is_not_a_plugin_name_and_shadows_nothing(tiny_checkpoint: Path) -> None:
    import xray_xai

    assert not set(SHIPPED) & set(xray_xai.list_models())  # the registered model plugins
    # the plugin name means what you trained, never the shipped weights
    with pytest.raises(CheckpointError, match="no trained 'efficientnet-lite0'"):
        store.resolve("efficientnet-lite0")
    assert store.resolve("cnn-small") == tiny_checkpoint / "model.safetensors"
    # with --checkpoint, the shipped name and the plugin name both name the shipped weights; another name does not
    folder = shipped.SHIPPED_DIR / NAME
    assert api.resolve_specs([NAME], folder) == [folder]
    assert api.resolve_specs(["efficientnet-lite0"], folder) == [folder]
    with pytest.raises(CheckpointError, match="holds model 'efficientnet-lite0', not 'cnn-small'"):
        api.resolve_specs(["cnn-small"], folder)


def test_a_trained_model_of_the_same_architecture_stays_apart() -> None:
    import torch

    import xray_xai

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        mine = xray_xai.get_model("efficientnet-lite0")(pretrained=False)
    store.save_model(mine, metadata={"dataset": "fracatlas", "metrics": {"val_auroc": 0.5}})
    assert api.load_model("efficientnet-lite0").fingerprint() == mine.fingerprint()
    assert api.load_model(NAME).fingerprint()[:8] == "af59cc7c"
    listed = api.list_models()
    assert [(e["name"], e["shipped"]) for e in listed] == [(n, True) for n in sorted(SHIPPED)] + [
        ("efficientnet-lite0", False)
    ]
    assert listed[0]["provenance"].startswith(f"{NAME} [af59cc7c]: trained on fracatlas (real films)")


def test_the_weights_are_package_data_of_the_wheel() -> None:
    """pyproject's package-data globs take every shipped file, so a non-editable wheel carries the model."""
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = setuptools["package-data"]["xray_xai.models"]
    package = REPO / "xray_xai" / "models"
    files = [p.relative_to(package).as_posix() for p in (package / "shipped").rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), files
    for name in SHIPPED:
        assert (shipped.SHIPPED_DIR / name / "model.safetensors").stat().st_size < 16 * 2**20  # the budget of one


@pytest.mark.parametrize("name", SHIPPED)
def test_the_card_and_the_sidecar_state_the_same_test_numbers(name: str) -> None:
    test = _sidecar(name)["shipped"]["test"]
    text = (REPO / _sidecar(name)["shipped"]["card"]).read_text(encoding="utf-8")
    assert f"{test['auroc']:.3f}" in text
    lo, hi = test["ci95"]["auroc"]
    assert f"[{lo:.3f}, {hi:.3f}]" in text
    for region, m in test["per_region"].items():
        assert f"| {region} | {m['n']} |" in text and f"{m['auroc']:.3f}" in text, region
    assert "CC BY 4.0" in text and "not a medical device" in text


@pytest.mark.parametrize("name", SHIPPED)
def test_the_test_split_auroc_matches_the_card(fracatlas_root: Path, name: str) -> None:
    """The whole test split (about 650 films, ~1 min of CPU): the AUROC overall and per region, as the card says."""
    result = api.evaluate(name, fracatlas_root, dataset="fracatlas", split="test", bootstrap=0)
    test = _sidecar(name)["shipped"]["test"]
    assert result["n_images"] == test["n_images"]
    assert result["image"]["overall"]["auroc"] == pytest.approx(test["auroc"], abs=0.002)
    for region, m in test["per_region"].items():
        assert result["image"]["per_region"][region]["auroc"] == pytest.approx(m["auroc"], abs=0.002), region
    assert result["provenance"]["name"] == name and result["provenance"]["dataset"] == "fracatlas"
