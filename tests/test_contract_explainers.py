"""Every registered explainer passes the shipped contract checks, on a tiny CNN and on a real backbone."""

from __future__ import annotations

import pytest

import xray_xai
from xray_xai.errors import PluginError
from xray_xai.testing.explainers import check_explainer, tiny_convnet


@pytest.mark.parametrize("name", xray_xai.list_explainers())
def test_explainer_contract_on_tiny_cnn(name: str) -> None:
    check_explainer(xray_xai.get_explainer(name), tiny_convnet(seed=0))


@pytest.mark.parametrize("name", [n for n in xray_xai.list_explainers() if n != "occlusion"])
def test_explainer_contract_on_efficientnet(name: str) -> None:
    """A real backbone (pretrained weights ship with the package); occlusion is covered on the tiny CNN (slow here)."""
    model = xray_xai.get_model("efficientnet-lite0")(image_size=64)
    check_explainer(xray_xai.get_explainer(name), model)


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
