"""Every registered model plugin passes the shipped contract checks (timm's test_models.py, at tiny sizes)."""

from __future__ import annotations

from typing import Any

import pytest

import xray_xai
from xray_xai.errors import PluginError
from xray_xai.testing.models import check_model

#: models that cannot be built bare here, each with the reason (listed, not silently skipped)
CANNOT_BUILD_BARE = {
    "nasnet-mobile": "timm has no NASNet-Mobile; the plugin says so on construction",
    "ensemble-mean": "needs trained members; covered by tests/test_ensembles.py",
    "ensemble-calibrated": "needs trained members; covered by tests/test_ensembles.py",
}


@pytest.mark.parametrize("name", xray_xai.list_models())
def test_model_contract(name: str) -> None:
    cls = xray_xai.get_model(name)
    if name in CANNOT_BUILD_BARE:
        pytest.skip(CANNOT_BUILD_BARE[name])
    size = 96 if name == "xception" else 64
    check_model(cls, image_size=size)


def test_nasnet_mobile_refuses_clearly() -> None:
    with pytest.raises(PluginError, match=r"(?i)nasnet"):
        xray_xai.get_model("nasnet-mobile")()


def test_published_model_names_are_registered() -> None:
    expected = {
        "densenet-linear", "densenet-dense32", "densenet-full", "densenet201", "resnet50", "mobilenet-v2",
        "convnet", "cnn-small", "xception", "nasnet-mobile", "efficientnet-lite0", "lbp-logreg",
        "ensemble-mean", "ensemble-calibrated",
    }  # fmt: skip
    assert expected <= set(xray_xai.list_models())


def test_a_plain_model_needs_only_the_two_abstract_methods(tmp_path: Any) -> None:
    """Everything the store, evaluator and explainers read is declared on ``Model`` with a plain model's default:
    a subclass with ``predict_proba`` and ``features`` alone is saved, loaded and explained (occlusion)."""
    import torch

    from xray_xai.models.store import load_model, save_model
    from xray_xai.sdk import Model, Preprocessing, Tags, registry

    class Brightness(Model):
        name = "test-brightness"
        description = "p = sigmoid(scale * mean intensity)"
        tags = Tags(deterministic=True)
        default_preprocessing = Preprocessing(name="b-16", input_size=16, channels=1, normalize="none")

        def __init__(self, *, image_size: int | None = None, scale: float = 4.0) -> None:
            super().__init__(image_size=image_size)
            self.scale = scale

        def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.scale * (images.mean(dim=(1, 2, 3)) - 0.5))

        def features(self, images: torch.Tensor) -> torch.Tensor:
            return images.mean(dim=(2, 3))

        def config(self) -> dict[str, Any]:
            return {"image_size": self.preprocessing.input_size, "scale": self.scale}

    model = check_model(Brightness, image_size=24, scale=2.0)
    assert not Brightness.needs_regions and Brightness.members == () and model.checkpoint_path is None
    assert Brightness.from_sidecar({}, tmp_path, load_member=load_model) is None
    registry.models.register(Brightness)
    try:
        back: Any = load_model(save_model(model, tmp_path / "b"))
    finally:
        registry.models.unregister("test-brightness")
    assert isinstance(back, Brightness) and back.scale == 2.0 and back.preprocessing.input_size == 24
    assert back.fingerprint() == model.fingerprint() and back.checkpoint_path is not None
    x = torch.rand(2, 1, 24, 24)
    exp = xray_xai.get_explainer("occlusion")(window=0.25).explain(back, x)
    assert exp.maps.shape == (2, 24, 24) and exp.model_fingerprint == model.fingerprint()
