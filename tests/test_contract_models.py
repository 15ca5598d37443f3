"""Every registered model plugin passes the shipped contract checks (timm's test_models.py, at tiny sizes)."""

from __future__ import annotations

from typing import Any

import pytest

import xray_xai
from xray_xai.errors import PluginError
from xray_xai.testing.explainers import tiny_convnet
from xray_xai.testing.models import check_model

#: models expected to fail the contract here, each with the reason and the error they fail with
EXPECTED_FAILURES: dict[str, tuple[str, type[Exception]]] = {
    "imported": ("built by `xray-xai import` from a file's architecture, never alone", PluginError),
}


def _param(name: str) -> Any:
    if name in EXPECTED_FAILURES:
        reason, error = EXPECTED_FAILURES[name]
        return pytest.param(name, marks=pytest.mark.xfail(reason=reason, raises=error, strict=True))
    return name


@pytest.mark.parametrize("name", [_param(n) for n in xray_xai.list_models()])
def test_model_contract(name: str) -> None:
    cls = xray_xai.get_model(name)
    preset = getattr(cls, "preset_members", ())
    if preset:  # a preset ensemble (ensemble200) is built from one member of each of its architectures
        check_model(cls(members=[xray_xai.get_model(m)(image_size=64) for m in preset]))
        return
    if cls.tags.ensemble:  # an ensemble is built from members: two tiny CNNs that share one preprocessing
        check_model(cls(members=[tiny_convnet(seed=0), tiny_convnet(seed=1)]))
        return
    check_model(cls, image_size=64)


def test_nasnet_mobile_refuses_pretrained_in_one_line() -> None:
    with pytest.raises(PluginError, match=r"nasnet-mobile.*no pretrained weights") as err:
        xray_xai.get_model("nasnet-mobile")(pretrained=True)
    assert "\n" not in str(err.value)


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
