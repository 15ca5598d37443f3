"""The model that ships with xray-xai (fracatlas-lite0): found by name offline, never confused with a trained one,
installed as package data, and its test-split AUROC on FracAtlas equal to its model card's."""

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
CARD = REPO / "docs" / "model-card-fracatlas-lite0.md"


def _sidecar() -> dict:
    return json.loads((shipped.SHIPPED_DIR / NAME / "model.json").read_text(encoding="utf-8"))


def test_the_shipped_model_loads_by_name_offline_from_an_empty_store() -> None:
    # conftest: an empty $XRAY_XAI_HOME and every outbound connection refused
    assert store.list_store() == []
    model = api.load_model(NAME)
    assert model.checkpoint_path == shipped.SHIPPED_DIR / NAME / "model.safetensors"
    assert model.fingerprint()[:8] == _sidecar()["fingerprint"][:8] == "af59cc7c"  # the weights, not the sidecar
    assert api.resolve_model(NAME).sidecar["shipped"]["name"] == NAME
    assert [e["name"] for e in api.list_models() if e["shipped"]] == [NAME]


def test_a_shipped_name_is_not_a_plugin_name_and_shadows_nothing(tiny_checkpoint: Path) -> None:
    import xray_xai

    assert NAME not in xray_xai.list_models()  # the registered model plugins
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
    assert [(e["name"], e["shipped"]) for e in listed] == [(NAME, True), ("efficientnet-lite0", False)]
    assert listed[0]["provenance"].startswith(f"{NAME} [af59cc7c]: trained on fracatlas (real films)")


def test_the_weights_are_package_data_of_the_wheel() -> None:
    """pyproject's package-data globs take every shipped file, so a non-editable wheel carries the model."""
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = setuptools["package-data"]["xray_xai.models"]
    package = REPO / "xray_xai" / "models"
    files = [p.relative_to(package).as_posix() for p in (package / "shipped").rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), files
    size = (shipped.SHIPPED_DIR / NAME / "model.safetensors").stat().st_size
    assert size < 16 * 2**20  # the budget for a shipped model


def test_the_card_and_the_sidecar_state_the_same_test_numbers() -> None:
    test = _sidecar()["shipped"]["test"]
    text = CARD.read_text(encoding="utf-8")
    assert f"{test['auroc']:.3f}" in text
    lo, hi = test["ci95"]["auroc"]
    assert f"[{lo:.3f}, {hi:.3f}]" in text
    for region, m in test["per_region"].items():
        assert f"| {region} | {m['n']} |" in text and f"{m['auroc']:.3f}" in text, region
    assert "CC BY 4.0" in text and "not a medical device" in text


def test_the_test_split_auroc_matches_the_card(fracatlas_root: Path) -> None:
    """The whole test split (about 650 films, ~1 min of CPU): the AUROC overall and per region, as the card says."""
    result = api.evaluate(NAME, fracatlas_root, dataset="fracatlas", split="test", bootstrap=0)
    test = _sidecar()["shipped"]["test"]
    assert result["n_images"] == test["n_images"]
    assert result["image"]["overall"]["auroc"] == pytest.approx(test["auroc"], abs=0.002)
    for region, m in test["per_region"].items():
        assert result["image"]["per_region"][region]["auroc"] == pytest.approx(m["auroc"], abs=0.002), region
    assert result["provenance"]["name"] == NAME and result["provenance"]["dataset"] == "fracatlas"
