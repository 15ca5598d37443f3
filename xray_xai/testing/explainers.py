"""Contract checks for explainer plugins, shipped so third-party authors run the same suite (sklearn's
``check_estimator``)::

    from xray_xai.testing.explainers import check_explainer, tiny_convnet
    check_explainer(MyExplainer, tiny_convnet())

Also provides the tiny torch models the checks and the tests use (32 px, a few hundred weights).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from xray_xai.errors import PluginError
from xray_xai.sdk import Explainer, Explanation, Model, Preprocessing, Tags, TorchModel, count_hooks

__all__ = ["LinearModel", "TinyConvNet", "check_explainer", "example_images", "tiny_convnet"]


class TinyConvNet(TorchModel):
    """Two conv blocks, global average pooling, ``Linear(C, 1)``: CAM applies exactly (target layer ``body``)."""

    name = "tiny-convnet"
    description = "test model: 2 conv blocks + GAP + linear"
    tags = Tags(differentiable=True, has_linear_head=True, has_target_layer=True)
    default_preprocessing = Preprocessing(name="tiny-32", input_size=32, channels=3, normalize="imagenet")
    target_layer = "body"
    feature_layer = "body"

    def __init__(self, *, image_size: int | None = None, channels: int = 8, inplace_relu: bool = False) -> None:
        super().__init__(image_size=image_size, channels=channels, inplace_relu=inplace_relu)
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1, stride=2),
            nn.ReLU(),
        )
        self.act = nn.ReLU(inplace=True) if inplace_relu else nn.Identity()
        self.classifier = nn.Linear(2 * channels, 1)
        if inplace_relu:  # the in-place ReLU acts on the raw conv output, as DenseNet's does on norm5
            self.body = self.body[:-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x)).mean(dim=(2, 3))


class LinearModel(TorchModel):
    """``logit = w . x + b`` on a one-channel film: saliency is exactly ``|w|``."""

    name = "tiny-linear"
    description = "test model: one linear layer on the flattened image"
    tags = Tags(differentiable=True)
    default_preprocessing = Preprocessing(name="tiny-linear-32", input_size=32, channels=1, normalize="none")

    def __init__(self, *, image_size: int | None = None) -> None:
        super().__init__(image_size=image_size)
        s = self.preprocessing.input_size
        self.classifier = nn.Linear(s * s, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def tiny_convnet(seed: int = 0, **options: Any) -> TinyConvNet:
    """A seeded :class:`TinyConvNet` in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyConvNet(**options)
    return model.eval()


def example_images(model: Model, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A seeded batch of smooth random films in ``model``'s input space (normalised as its preprocessing says)."""
    pre = model.preprocessing
    g = torch.Generator().manual_seed(seed)
    s = pre.input_size
    film = torch.rand(batch, 1, s // 4, s // 4, generator=g)
    film = torch.nn.functional.interpolate(film, size=(s, s), mode="bilinear", align_corners=False)
    x = film.expand(batch, pre.channels, s, s).clone()
    if pre.normalize == "imagenet":
        mean = torch.tensor(np.resize(np.asarray(pre.mean, np.float32), pre.channels))[None, :, None, None]
        std = torch.tensor(np.resize(np.asarray(pre.std, np.float32), pre.channels))[None, :, None, None]
        x = (x - mean) / std
    return x


def _check_explanation(exp: Any, images: torch.Tensor, name: str, target: str) -> None:
    b, _, h, w = images.shape
    assert isinstance(exp, Explanation), f"{name}: explain() must return an Explanation, got {type(exp).__name__}"
    maps = exp.maps
    assert isinstance(maps, np.ndarray), f"{name}: maps must be a numpy array"
    assert maps.shape == (b, h, w), f"{name}: maps have shape {maps.shape}, expected {(b, h, w)}"
    assert maps.dtype == np.float32, f"{name}: maps have dtype {maps.dtype}, expected float32"
    assert np.isfinite(maps).all(), f"{name}: maps contain NaN or inf"
    assert maps.min() >= 0.0 and maps.max() <= 1.0, f"{name}: maps leave [0, 1]: [{maps.min()}, {maps.max()}]"
    assert np.asarray(exp.raw).shape[0] == b, f"{name}: raw maps must have the batch as first axis"
    probs = np.asarray(exp.probabilities)
    assert probs.shape == (b,), f"{name}: probabilities have shape {probs.shape}, expected {(b,)}"
    assert ((probs >= 0) & (probs <= 1)).all(), f"{name}: probabilities leave [0, 1]"
    assert exp.method == name, f"{name}: Explanation.method is {exp.method!r}"
    assert exp.target == target, f"{name}: Explanation.target is {exp.target!r}, expected {target!r}"
    meta = exp.metadata(0)
    assert meta["method"] == name and "probability" in meta, f"{name}: metadata() lacks method or probability"


def _check_failure_releases_hooks(explainer: Explainer, model: Any, images: torch.Tensor, hooks_before: int) -> None:
    """An exception raised inside the model's forward pass propagates, and the explainer's hooks are gone after."""
    name = explainer.name

    def boom(*_: Any) -> None:
        raise RuntimeError("injected failure")

    handle = model.register_forward_hook(boom)
    try:
        explainer.explain(model, images)
    except RuntimeError as exc:
        assert "injected failure" in str(exc), f"{name}: unexpected error {exc!r}"
    else:  # pragma: no cover
        raise AssertionError(f"{name}: an exception in the forward pass was swallowed")
    finally:
        handle.remove()
    assert count_hooks(model) == hooks_before, f"{name}: hooks left on the model after an exception"


def check_explainer(explainer_cls: type[Explainer], model: Model, images: torch.Tensor | None = None) -> None:
    """Assert the explainer contract on ``model``: shape, dtype, range, probabilities, determinism (when tagged),
    both targets, hooks released after success and after an exception, parameter gradients and ``requires_grad``
    flags untouched, train/eval mode and the input restored. Raises AssertionError naming what failed."""
    name = explainer_cls.name
    # lower case, no spaces; a family member keeps its library's spelling after the namespace (captum:DeepLift)
    namespace, colon, member = name.partition(":")
    ok = name == name.lower() if not colon else namespace == namespace.lower() and bool(member)
    assert name and ok and " " not in name, f"{explainer_cls.__name__}: bad plugin name {name!r}"
    assert explainer_cls.description, f"{name}: needs a description"
    assert isinstance(explainer_cls.tags, Tags), f"{name}: tags must be a Tags instance"
    explainer = explainer_cls()
    assert isinstance(explainer.params, dict), f"{name}: params must be a dict (set in __init__)"
    explainer.check_model(model)
    if images is None:
        images = example_images(model)
    original = images.clone()

    is_module = isinstance(model, nn.Module)
    params = list(model.parameters()) if is_module else []  # type: ignore[attr-defined]
    # a mixed pattern of requires_grad flags and a train-mode model must come back exactly as they were
    flags = [i % 2 == 0 for i in range(len(params))]
    for p, flag in zip(params, flags, strict=True):
        p.requires_grad_(flag)
        p.grad = None
    if is_module:
        model.train()  # type: ignore[attr-defined]
    hooks_before = count_hooks(model)

    try:
        exp = explainer.explain(model, images, target="abnormal")
        _check_explanation(exp, images, name, "abnormal")
        assert torch.equal(images, original), f"{name}: explain() modified the input tensor in place"
        assert not images.requires_grad, f"{name}: explain() left requires_grad on the input"
        with torch.no_grad():
            if is_module:
                model.eval()
            expected = model.predict_proba(images).cpu().numpy()
            if is_module:
                model.train()  # type: ignore[attr-defined]
        assert np.allclose(exp.probabilities, expected, atol=1e-4), f"{name}: probabilities differ from the model's"
        if explainer_cls.tags.deterministic:
            again = explainer_cls().explain(model, images, target="abnormal")
            assert np.allclose(exp.maps, again.maps, atol=1e-5), f"{name}: tagged deterministic, but maps differ"
        normal = explainer.explain(model, images, target="normal")
        _check_explanation(normal, images, name, "normal")
        try:
            explainer.explain(model, images, target="benign")
        except PluginError:
            pass
        else:  # pragma: no cover - the failure branch
            raise AssertionError(f"{name}: an unknown target must raise PluginError")
        assert count_hooks(model) == hooks_before, f"{name}: hooks left on the model after explain()"

        if is_module:  # hooks and flags must also be restored when the forward pass fails midway
            _check_failure_releases_hooks(explainer, model, images, hooks_before)

        for p, flag in zip(params, flags, strict=True):
            assert p.requires_grad == flag, f"{name}: requires_grad flags of the parameters were not restored"
            assert p.grad is None, f"{name}: parameter gradients were computed while explaining"
        if is_module:
            assert model.training, f"{name}: the model's train/eval mode was not restored"  # type: ignore[attr-defined]
    finally:
        for p in params:
            p.requires_grad_(True)
        if is_module:
            model.eval()
