"""Explainers: the contract on every built-in, analytic checks on tiny models, hooks, ensembles."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from torch import nn

import xray_xai
from xray_xai.errors import PluginError
from xray_xai.sdk.explainer import count_hooks, fuse_member_maps, normalize_maps
from xray_xai.sdk.interfaces import Model, Preprocessing, Tags
from xray_xai.testing.explainers import LinearModel, check_explainer, example_images, tiny_convnet


def explainer(name: str, **params: Any) -> Any:
    return xray_xai.get_explainer(name)(**params)


@pytest.mark.parametrize("name", ["cam", "gradcam", "gradcam++"])
def test_contract_with_inplace_relu_after_target_layer(name: str) -> None:
    """DenseNet applies F.relu(inplace=True) after norm5; tensor grad hooks break there (pytorch-grad-cam #147)."""
    model = tiny_convnet(inplace_relu=True)
    check_explainer(xray_xai.get_explainer(name), model)
    maps = explainer(name).explain(model, example_images(model)).maps
    assert maps.max() == pytest.approx(1.0)  # a real map, not all zeros


def test_saliency_of_linear_model_is_abs_weight() -> None:
    torch.manual_seed(0)
    model = LinearModel().eval()
    x = torch.rand(3, 1, 32, 32)
    exp = explainer("saliency", superpixels=False).explain(model, x)
    w = model.classifier.weight.detach().abs().reshape(32, 32).numpy()
    for i in range(3):
        np.testing.assert_allclose(exp.maps[i], w / w.max(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.probabilities, torch.sigmoid(model(x)).detach().numpy(), rtol=1e-5)


def test_cam_is_exact_decomposition_of_the_logit() -> None:
    model = tiny_convnet()
    x = example_images(model, 3)
    exp = explainer("cam").explain(model, x)
    logits = model(x).detach().numpy()
    np.testing.assert_allclose(exp.raw.mean(axis=(1, 2)) + model.classifier.bias.item(), logits, rtol=1e-4, atol=1e-5)


def test_gradcam_equals_cam_up_to_scale_for_gap_linear_head() -> None:
    model = tiny_convnet()
    x = example_images(model, 3)
    cam = explainer("cam").explain(model, x).maps
    grad = explainer("gradcam").explain(model, x).maps
    for i in range(3):
        assert pearsonr(cam[i].ravel(), grad[i].ravel())[0] > 0.99


def test_gradcam_plus_plus_closed_form_for_gap_linear_head() -> None:
    """With GAP + linear, every gradient of channel k is g_k = w_k / hw, so the closed form reduces to
    weight_k = hw * relu(g_k) / (2 + S_k g_k), S_k the summed activation of channel k."""
    model = tiny_convnet()
    x = example_images(model, 2)
    exp = explainer("gradcam++").explain(model, x)
    acts = model.body(x).detach()
    hw = acts.shape[2] * acts.shape[3]
    g = model.classifier.weight.detach()[0] / hw
    weights = hw * torch.relu(g)[None] / (2 + acts.sum(dim=(2, 3)) * g[None])
    expected = torch.einsum("bk,bkhw->bhw", weights, acts).numpy()
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["cam", "gradcam", "integrated-gradients", "occlusion"])
def test_target_normal_negates_the_evidence(name: str) -> None:
    model = tiny_convnet()
    x = example_images(model, 2)
    up = explainer(name).explain(model, x, target="abnormal")
    down = explainer(name).explain(model, x, target="normal")
    np.testing.assert_allclose(down.raw, -up.raw, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(down.probabilities, up.probabilities)  # still the probability of abnormal
    assert down.target == "normal"


def test_gradcam_normal_is_not_binary_target_bug() -> None:
    """For "normal" the evidence must be for -logit, not for 1 - sigmoid handled as another class (issue #428)."""
    model = tiny_convnet()
    x = example_images(model, 2)
    pos = explainer("gradcam").explain(model, x).raw
    neg = explainer("gradcam").explain(model, x, target="normal").raw
    assert np.allclose(neg, -pos, atol=1e-6) and np.abs(pos).max() > 0


@functools.cache
def _trained_tiny() -> nn.Module:
    """A tiny conv net trained for a few steps to find a bright blob: abnormal when present."""
    torch.manual_seed(0)
    model = tiny_convnet()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        x = torch.rand(16, 1, 32, 32, generator=g) * 0.3
        y = (torch.arange(16) % 2).float()
        for i in range(0, 16, 2):
            r, c = torch.randint(4, 24, (2,), generator=g).tolist()
            x[i + 1, :, r : r + 5, c : c + 5] = 1.0
        x = ((x.expand(16, 3, 32, 32) - 0.45) / 0.225).contiguous()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("name", ["saliency", "gradcam", "integrated-gradients"])
def test_randomised_weights_change_the_maps(name: str) -> None:
    """Adebayo et al.'s sanity check: a map that survives weight randomisation explains the input, not the model."""
    model = _trained_tiny()
    x = torch.full((2, 1, 32, 32), 0.1)
    x[0, :, 5:10, 20:25] = 1.0
    x[1, :, 18:23, 6:11] = 1.0
    x = ((x.expand(2, 3, 32, 32) - 0.45) / 0.225).contiguous()
    params = {"superpixels": False} if name == "saliency" else {}
    trained = explainer(name, **params).explain(model, x).maps
    random = tiny_convnet(seed=123)
    randomised = explainer(name, **params).explain(random, x).maps
    for i in range(2):
        rho = spearmanr(trained[i].ravel(), randomised[i].ravel())[0]
        assert np.isnan(rho) or rho < 0.5


def test_saliency_percentile_filter_removes_a_quarter_of_superpixels() -> None:
    model = tiny_convnet()
    x = example_images(model, 2)
    exp = explainer("saliency", n_segments=40, percentile=25.0).explain(model, x)
    labels, kept = exp.extras["superpixels"], exp.extras["kept_superpixels"]
    assert labels.shape == kept.shape == exp.maps.shape
    for i in range(2):
        ids = np.unique(labels[i])
        assert len(ids) >= 8
        kept_ids = np.unique(labels[i][kept[i]])
        assert len(ids) - len(kept_ids) >= 0.25 * len(ids)
        assert (exp.maps[i][~kept[i]] == 0).all()
        # each kept superpixel carries one value: the mean gradient over it
        for s in kept_ids[:5]:
            assert np.ptp(exp.maps[i][labels[i] == s]) < 1e-6
    none = explainer("saliency", n_segments=40, percentile=0.0).explain(model, x)
    assert none.extras["kept_superpixels"].all()


def test_superpixel_means_match_a_loop() -> None:
    from xray_xai_plugins.explainers.saliency import superpixel_means

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=(16, 16))
    values = rng.random((16, 16))
    means = superpixel_means(values, labels)
    np.testing.assert_allclose(means, np.array([values[labels == k].mean() for k in range(7)]), rtol=1e-6)


def test_smoothgrad_is_deterministic_for_a_seed_and_varies_with_it() -> None:
    model = tiny_convnet()
    x = example_images(model, 2)
    torch.manual_seed(5)
    before = torch.rand(1)
    a = explainer("smoothgrad", seed=1, nt_samples=4).explain(model, x).maps
    b = explainer("smoothgrad", seed=1, nt_samples=4).explain(model, x).maps
    c = explainer("smoothgrad", seed=2, nt_samples=4).explain(model, x).maps
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), before)  # the caller's RNG stream is untouched (forked)


def test_hooks_released_after_exception_in_target_layer() -> None:
    model = tiny_convnet()
    before = count_hooks(model)
    with pytest.raises(PluginError, match="no layer"):
        explainer("gradcam", layer="nope").explain(model, example_images(model))
    handle = model.body.register_forward_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        explainer("gradcam").explain(model, example_images(model))
    handle.remove()
    assert count_hooks(model) == before


def test_layer_parameter_selects_another_layer() -> None:
    model = tiny_convnet()
    exp = explainer("gradcam", layer="body.0").explain(model, example_images(model))
    assert exp.raw.shape == (2, 32, 32)  # the first conv keeps full resolution; the target layer halves it
    assert explainer("gradcam").explain(model, example_images(model)).raw.shape == (2, 16, 16)


def test_cam_refuses_a_head_that_does_not_match_the_target_layer() -> None:
    model = tiny_convnet()
    with pytest.raises(PluginError, match="use gradcam"):
        explainer("cam", layer="body.0").explain(model, example_images(model))


def test_gradient_explainers_refuse_non_differentiable_models() -> None:
    class NotTorch(Model):
        name = "not-torch"
        tags = Tags()
        preprocessing = Preprocessing(name="p", input_size=16, channels=1, normalize="none")

        def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(images.mean(dim=(1, 2, 3)) * 4 - 2)

        def features(self, images: torch.Tensor) -> torch.Tensor:
            return images.flatten(1)

    x = torch.rand(2, 1, 16, 16)
    tags = {n: xray_xai.get_explainer(n).tags for n in xray_xai.list_explainers()}
    needy = [n for n, t in tags.items() if t.needs_gradients or t.needs_target_layer or t.needs_linear_head]
    assert {"saliency", "gradcam", "cam", "integrated-gradients", "smoothgrad"} <= set(needy)
    for name in needy:
        with pytest.raises(PluginError, match="needs"):
            explainer(name).explain(NotTorch(), x)
    exp = explainer("occlusion", window=0.25).explain(NotTorch(), x)  # needs only predictions
    assert exp.maps.shape == (2, 16, 16) and exp.maps.max() == pytest.approx(1.0)


def test_explaining_computes_no_parameter_gradients() -> None:
    model = tiny_convnet()
    for p in model.parameters():
        p.requires_grad_(True)
    for name in xray_xai.list_explainers():
        explainer(name).explain(model, example_images(model))
        assert all(p.grad is None for p in model.parameters()), name
        assert all(p.requires_grad for p in model.parameters()), name


def test_normalize_maps_keeps_zero_and_scales_by_max() -> None:
    m = np.array([[[0.0, 2.0], [1.0, -1.0]], [[0.0, 0.0], [0.0, np.nan]]], dtype=np.float32)
    given = m.copy()
    out = normalize_maps(m)
    np.testing.assert_allclose(out[0], np.array([[0.0, 1.0], [0.5, 0.0]]))
    assert (out[1] == 0).all() and out.dtype == np.float32
    np.testing.assert_array_equal(m, given)  # scaled in place on its own copy, never the caller's array


class _Ensemble(Model):
    name = "tiny-ensemble"
    tags = Tags(ensemble=True, differentiable=True, has_target_layer=True, has_linear_head=True)

    def __init__(self, members: list[Any]) -> None:
        self.members: list[Any] = members
        self.preprocessing = members[0].preprocessing

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.predict_proba(images) for m in self.members]).mean(dim=0)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.features(images) for m in self.members], dim=1)


def test_ensemble_member_maps_fused_and_disagreement() -> None:
    members = [tiny_convnet(seed=s) for s in range(3)]
    ens = _Ensemble(members)
    x = example_images(members[0], 2)
    exp = explainer("gradcam").explain(ens, x)
    per = [explainer("gradcam").explain(m, x) for m in members]
    member_maps = np.stack([p.maps for p in per])
    probs = np.stack([p.probabilities for p in per])
    np.testing.assert_allclose(exp.extras["member_maps"], member_maps, atol=1e-6)
    np.testing.assert_allclose(exp.extras["member_probabilities"], probs, atol=1e-6)
    fused = (probs[:, :, None, None] * member_maps).sum(0) / probs.sum(0)[:, None, None]
    np.testing.assert_allclose(exp.raw, fused, atol=1e-5)
    np.testing.assert_allclose(exp.maps, normalize_maps(fused), atol=1e-5)
    np.testing.assert_allclose(exp.extras["disagreement"], member_maps.std(axis=0), atol=1e-5)
    np.testing.assert_allclose(exp.probabilities, probs.mean(0), atol=1e-5)
    assert len(exp.extras["member_names"]) == 3


def test_fuse_with_zero_weights_is_plain_mean() -> None:
    maps = np.random.default_rng(0).random((2, 1, 4, 4))
    fused, dis = fuse_member_maps(maps, np.zeros((2, 1)))
    np.testing.assert_allclose(fused, maps.mean(0), rtol=1e-6)
    np.testing.assert_allclose(dis, maps.std(0), rtol=1e-5)


def test_unknown_target_and_bad_shapes_raise() -> None:
    model = tiny_convnet()
    with pytest.raises(PluginError, match="target"):
        explainer("gradcam").explain(model, example_images(model), target="fracture")
    with pytest.raises(PluginError, match="shape"):
        explainer("gradcam").explain(model, example_images(model)[0])


def test_integrated_gradients_completeness_on_linear_model() -> None:
    """IG from the black film sums to logit(x) - logit(black); for a linear model attribution = w * x exactly."""
    torch.manual_seed(0)
    model = LinearModel().eval()
    x = torch.rand(2, 1, 32, 32)
    exp = explainer("integrated-gradients", n_steps=8).explain(model, x)
    w = model.classifier.weight.detach().reshape(32, 32)
    np.testing.assert_allclose(exp.raw, (w[None] * x[:, 0]).numpy(), rtol=1e-4, atol=1e-6)
    black = torch.zeros_like(x)
    np.testing.assert_allclose(exp.raw.sum(axis=(1, 2)), (model(x) - model(black)).detach().numpy(), rtol=1e-4)


def test_smoothgrad_of_linear_model_is_abs_weight_whatever_the_noise() -> None:
    torch.manual_seed(0)
    model = LinearModel().eval()
    exp = explainer("smoothgrad", nt_samples=3, stdevs=0.5).explain(model, torch.rand(1, 1, 32, 32))
    w = model.classifier.weight.detach().abs().reshape(32, 32).numpy()
    np.testing.assert_allclose(exp.maps[0], w / w.max(), rtol=1e-5, atol=1e-6)


def test_black_baseline_is_black_film_in_input_space() -> None:
    from xray_xai_plugins.explainers.captum_methods import baseline_images

    model = tiny_convnet()
    x = example_images(model, 2)
    black = baseline_images(x, model.preprocessing, "black")
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    torch.testing.assert_close(black * std + mean, torch.zeros_like(x), atol=1e-6, rtol=0)
    mean_film = baseline_images(x, model.preprocessing, "mean")
    torch.testing.assert_close(mean_film.mean(dim=(2, 3)), x.mean(dim=(2, 3)))
    assert mean_film.std(dim=(2, 3)).max() < 1e-6


def test_integrated_gradients_noise_tunnel_is_seeded_and_smooths() -> None:
    model = tiny_convnet()
    x = example_images(model, 2)
    plain = explainer("integrated-gradients", n_steps=8).explain(model, x).maps
    a = explainer("integrated-gradients", n_steps=8, nt_samples=3, seed=1).explain(model, x).maps
    b = explainer("integrated-gradients", n_steps=8, nt_samples=3, seed=1).explain(model, x).maps
    c = explainer("integrated-gradients", n_steps=8, nt_samples=3, seed=2).explain(model, x).maps
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, plain)
    assert a.shape == plain.shape and a.min() >= 0 and a.max() <= 1
    with pytest.raises(PluginError, match="nt_samples"):
        explainer("integrated-gradients", nt_samples=-1)


def test_eval_mode_leaves_an_eval_model_alone_and_restores_a_mixed_one() -> None:
    from xray_xai.sdk.explainer import eval_mode

    model = tiny_convnet().eval()
    calls: list[bool] = []
    model.train = lambda mode=True: calls.append(mode)  # type: ignore[method-assign,assignment,return-value]
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert calls == []  # already in eval mode: eval() not called, nothing to restore
    del model.train
    model.train()
    child = next(iter(model.children()))
    child.eval()  # a frozen part in a training model
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and not child.training
    assert all(m.training for m in model.modules() if m is not child and not any(m is c for c in child.modules()))


def test_frozen_parameters_restores_each_flag_once_shared_parameters_included() -> None:
    from xray_xai.sdk.explainer import frozen_parameters

    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(3, 1))  # one weight used twice
    net[3].weight.requires_grad_(False)  # a frozen parameter stays frozen
    with frozen_parameters(net):
        assert not any(p.requires_grad for p in net.parameters())
    assert shared.weight.requires_grad and shared.bias.requires_grad
    assert not net[3].weight.requires_grad and net[3].bias.requires_grad


def test_saliency_does_not_copy_or_change_the_input() -> None:
    from xray_xai_plugins.explainers.saliency import input_gradients

    model = tiny_convnet().eval()
    images = example_images(model, batch=2)
    before = images.clone()
    grad, _ = input_gradients(model, images, 1.0)
    assert torch.equal(images, before) and not images.requires_grad and images.grad is None
    xi = images.clone().requires_grad_(True)
    model(xi).sum().backward()
    torch.testing.assert_close(grad, xi.grad)
