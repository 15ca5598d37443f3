"""Every registered explainer passes the shipped contract checks, on a tiny CNN and on a real backbone."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

import xray_xai
from xray_xai.errors import PluginError
from xray_xai.testing.explainers import check_explainer, tiny_convnet

#: our own explainers; the library families (captum:*, grad-cam:*) are checked in tests/test_library_explainers.py
#: with budgets sized for a test
OWN = [n for n in xray_xai.list_explainers() if ":" not in n]


@pytest.mark.parametrize("name", OWN)
def test_explainer_contract_on_tiny_cnn(name: str) -> None:
    check_explainer(xray_xai.get_explainer(name), tiny_convnet(seed=0))


#: explainers not run on the real backbone, each with the reason (listed, not silently dropped)
NOT_ON_EFFICIENTNET = {"occlusion": "one forward per patch position: slow on a real backbone; the tiny CNN covers it"}


def _on_efficientnet(name: str) -> Any:
    if name in NOT_ON_EFFICIENTNET:
        return pytest.param(name, marks=pytest.mark.skip(reason=NOT_ON_EFFICIENTNET[name]))
    return name


@pytest.mark.parametrize("name", [_on_efficientnet(n) for n in OWN])
def test_explainer_contract_on_efficientnet(name: str) -> None:
    """A real backbone (pretrained weights ship with the package)."""
    model = xray_xai.get_model("efficientnet-lite0")(image_size=64)
    check_explainer(xray_xai.get_explainer(name), model)


def test_example_third_party_plugin_passes_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/custom_plugin, imported from its folder, passes the shipped check on a tiny CNN and a real
    backbone (tests/test_registry.py also pip-installs it and checks it through the registry)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples" / "custom_plugin"))
    cls = importlib.import_module("xray_xai_example.explainer").InputXGradient
    check_explainer(cls, tiny_convnet(seed=0))
    check_explainer(cls, xray_xai.get_model("efficientnet-lite0")(image_size=64))


def test_gradient_explainers_refuse_non_differentiable_models() -> None:
    lbp = xray_xai.get_model("lbp-logreg")()
    for name in xray_xai.list_explainers():
        explainer = xray_xai.get_explainer(name)()
        if explainer.tags.needs_gradients:
            with pytest.raises(PluginError, match="needs input gradients"):
                explainer.check_model(lbp)


def test_published_explainer_names_are_registered() -> None:
    expected = {"saliency", "cam", "gradcam", "gradcam++", "integrated-gradients", "smoothgrad", "occlusion"}
    assert expected <= set(xray_xai.list_explainers())
