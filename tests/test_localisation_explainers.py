"""Explainers for small findings (layercam, multilayer-cam, hirescam): contract, analytic identities, stage choice,
and a tiny CNN trained on phantoms with small planted fractures, where they must out-point last-layer Grad-CAM."""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import xray_xai
from xray_xai.audit import scores as am
from xray_xai.errors import PluginError
from xray_xai.sdk import (
    Preprocessing,
    Tags,
    TorchModel,
    activations_and_gradients_at,
    capture_activation,
    count_hooks,
    fuse_maps,
    layers_at_strides,
    resolve_layer,
    stage_layers,
)
from xray_xai.testing.explainers import check_explainer, example_images, tiny_convnet

NAMES = ["layercam", "multilayer-cam", "hirescam"]
REPO = Path(__file__).resolve().parents[1]


def explainer(name: str, **params: Any) -> Any:
    return xray_xai.get_explainer(name)(**params)


class StagedNet(TorchModel):
    """Four conv stages (each halves the side) -> GAP -> Linear: a trunk named ``backbone`` like the built-ins."""

    name = "staged-net"
    description = "test model: 4 conv+BN stages, GAP, linear"
    tags = Tags(differentiable=True, has_linear_head=True, has_target_layer=True)
    target_layer = "backbone.stage4"
    feature_layer = "backbone.stage4"

    default_preprocessing = Preprocessing(name="staged", input_size=48, channels=1, normalize="none")

    def __init__(self, *, image_size: int = 48, widths: tuple[int, ...] = (8, 16, 32, 32)) -> None:
        super().__init__(image_size=image_size)
        stages: list[tuple[str, nn.Module]] = []
        cin = 1
        for i, w in enumerate(widths, start=1):
            block = nn.Sequential(
                nn.Conv2d(cin, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(),
                nn.Conv2d(w, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            stages.append((f"stage{i}", block))
            cin = w
        self.backbone = nn.Sequential(OrderedDict(stages))
        self.classifier = nn.Linear(cin, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).mean(dim=(2, 3))


def staged_net(seed: int = 0, size: int = 48) -> StagedNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = StagedNet(image_size=size)
    return model.eval()


# -- contract --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("inplace", [False, True])
def test_contract_on_tiny_convnet(name: str, inplace: bool) -> None:
    check_explainer(xray_xai.get_explainer(name), tiny_convnet(inplace_relu=inplace))


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("layercam", {"stride": 4, "tta": True}),
        ("layercam", {"layer": "stage2", "blur": 1.5}),
        ("multilayer-cam", {"strides": "2,4,8", "fusion": "geomean"}),
        ("multilayer-cam", {"layers": ["backbone.stage1", "backbone.stage3"], "fusion": "max"}),
        ("hirescam", {"stride": 4}),
        ("layercam", {"stride": 4, "tta": True, "scales": "1,2"}),
        ("multilayer-cam", {"strides": "4,8", "scales": [1.0, 1.5]}),
    ],
)
def test_variants_give_maps_in_unit_range_without_side_effects(name: str, params: dict[str, Any]) -> None:
    model = staged_net()
    images = example_images(model, batch=3)
    hooks = count_hooks(model)
    exp = explainer(name, **params).explain(model, images)
    again = explainer(name, **params).explain(model, images)
    assert exp.maps.shape == (3, 48, 48) and exp.maps.dtype == np.float32
    assert exp.maps.min() >= 0.0 and exp.maps.max() == pytest.approx(1.0)
    np.testing.assert_allclose(exp.maps, again.maps, atol=1e-6)  # tagged deterministic
    assert count_hooks(model) == hooks
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


# -- analytic identities ---------------------------------------------------------------------------------------------
def test_hirescam_at_last_layer_is_cam_times_cells() -> None:
    """For GAP + linear, dS/dA_k = w_k / (h w), so HiResCAM * h * w is exactly CAM (Draelos & Carin)."""
    model = staged_net()
    images = example_images(model, batch=2)
    hi = explainer("hirescam").explain(model, images)
    cam = explainer("cam").explain(model, images)
    h, w = hi.raw.shape[-2:]
    np.testing.assert_allclose(hi.raw * h * w, cam.raw, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hi.maps, cam.maps, atol=1e-5)


def test_target_normal_negates_hirescam_and_flips_layercam_gradients() -> None:
    model = staged_net(seed=1)
    images = example_images(model, batch=2, seed=3)
    ab = explainer("hirescam", stride=4).explain(model, images, target="abnormal")
    no = explainer("hirescam", stride=4).explain(model, images, target="normal")
    np.testing.assert_allclose(no.raw, -ab.raw, rtol=1e-5, atol=1e-6)
    # LayerCAM for "normal" keeps the activations whose gradient of the logit is negative
    (acts,), (grads,), _ = activations_and_gradients_at(model, images, ["backbone.stage2"], 1.0)
    expected = torch.relu((torch.relu(-grads) * acts).sum(dim=1)).numpy()
    lc = explainer("layercam", layer="backbone.stage2", tta=False, scales=1, blur=0)
    got = lc.explain(model, images, target="normal").raw
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_multi_layer_capture_matches_single_layer_captures() -> None:
    """Capturing several stages in one pass must give each the same gradient as capturing it alone."""
    model = staged_net(seed=2)
    images = example_images(model, batch=2, seed=1)
    layers = ["backbone.stage1", "backbone.stage3", "backbone.stage4"]
    acts, grads, logits = activations_and_gradients_at(model, images, layers, 1.0)
    for name, a, g in zip(layers, acts, grads, strict=True):
        with capture_activation(model, name, differentiable=True) as cap, torch.enable_grad():
            out = model(images)
            (ref,) = torch.autograd.grad(out.sum(), cap.get(name))
        torch.testing.assert_close(a, cap.get(name).detach())
        torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(logits, model(images).detach())
    assert all(p.grad is None for p in model.parameters())


# -- layers ----------------------------------------------------------------------------------------------------------
def test_stride_picks_the_deepest_stage_at_least_that_fine() -> None:
    model = staged_net()
    images = example_images(model, batch=1)
    assert stage_layers(model) == [f"backbone.stage{i}" for i in range(1, 5)]
    # outputs are 24, 12, 6, 3 px wide at 48 px input
    assert layers_at_strides(model, images, [2, 4, 8, 16]) == [f"backbone.stage{i}" for i in range(1, 5)]
    assert layers_at_strides(model, images, [1, 3]) == ["backbone.stage1"]  # finer than any stage: the first
    assert count_hooks(model) == 0


def test_layer_names_accept_aliases_and_suggest_close_ones() -> None:
    model = staged_net()
    assert resolve_layer(model, "backbone.stage2") == "backbone.stage2"
    assert resolve_layer(model, "stage2") == "backbone.stage2"
    assert resolve_layer(model, "features.stage3") == "backbone.stage3"  # torchvision-style name
    with pytest.raises(PluginError, match=r"stage5.*did you mean.*backbone\.stage"):
        resolve_layer(model, "stage5")
    with pytest.raises(PluginError, match="stage9"):
        explainer("layercam", layer="stage9").explain(model, example_images(model))
    assert count_hooks(model) == 0


def test_bad_parameters_raise() -> None:
    with pytest.raises(PluginError, match="fusion"):
        explainer("multilayer-cam", fusion="median")
    with pytest.raises(PluginError, match="strides"):
        explainer("multilayer-cam", strides="4,x")
    with pytest.raises(PluginError, match="blur"):
        explainer("layercam", blur=-1)
    with pytest.raises(PluginError, match="one layer"):
        explainer("layercam", layer="stage1,stage2")
    with pytest.raises(PluginError, match="scales"):
        explainer("layercam", scales="1,x")
    with pytest.raises(PluginError, match="scales"):
        explainer("layercam", scales=0)


def test_fusions() -> None:
    a = torch.tensor([[[0.0, 2.0], [1.0, 0.0]]])
    b = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    size = (2, 2)
    np.testing.assert_allclose(fuse_maps([a, b], size, "mean")[0], [[0.5, 1.0], [0.25, 0.0]], atol=1e-6)
    np.testing.assert_allclose(fuse_maps([a, b], size, "max")[0], [[1.0, 1.0], [0.5, 0.0]], atol=1e-6)
    np.testing.assert_allclose(fuse_maps([a, b], size, "product")[0], [[0.0, 1.0], [0.0, 0.0]], atol=1e-6)
    geo = fuse_maps([a, b], size, "geomean")[0]
    assert geo[0, 1] == pytest.approx(1.0, abs=1e-5) and geo[1, 0] == pytest.approx(0.0, abs=1e-3)
    up = fuse_maps([torch.ones(1, 2, 2), torch.ones(1, 4, 4)], (8, 8), "mean")
    assert up.shape == (1, 8, 8)
    with pytest.raises(PluginError):
        fuse_maps([a], size, "median")


def test_tta_averages_the_flipped_views_flipped_back() -> None:
    model = staged_net(seed=4)
    images = example_images(model, batch=2, seed=2)
    tta = explainer("layercam", stride=4, tta=True, scales=1, blur=0).explain(model, images).maps
    plain = explainer("layercam", stride=4, tta=False, scales=1, blur=0)
    views = [
        plain.explain(model, images).maps,
        plain.explain(model, torch.flip(images, dims=[3])).maps[:, :, ::-1],
        plain.explain(model, torch.flip(images, dims=[2])).maps[:, ::-1, :],
    ]
    expected = np.mean(views, axis=0)
    expected /= expected.reshape(2, -1).max(axis=1)[:, None, None]
    np.testing.assert_allclose(tta, expected, atol=1e-5)


# -- small planted fractures -----------------------------------------------------------------------------------------
def _phantom_set(n: int, seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    from xray_xai_plugins.datasets._phantoms import ViewParams, phantom

    rng = np.random.default_rng(seed)
    xs, ys, ms = [], [], []
    for i in range(n):
        label = i % 2
        vp = ViewParams(
            size,
            size,
            rotation=float(rng.uniform(-15, 15)),
            marker_corner=str(rng.choice(["tl", "tr", "bl", "br"])),
        )
        region = ("forearm", "humerus")[(i // 2) % 2]
        img, masks = phantom(region, rng, size, abnormality="fracture" if label else None, contrast=6.0, view_params=vp)
        xs.append(img)
        ys.append(label)
        ms.append(masks["abnormality"])
    return torch.tensor(np.stack(xs))[:, None], torch.tensor(ys, dtype=torch.float32), np.stack(ms)


#: models trained per test: one small CNN's maps depend on its seed far more than on the method (on one torch build
#: seed 0's LayerCAM found 1 fracture in 32, on another most of them), so the claim is tested over several models
_SEEDS = range(8)


@pytest.fixture(scope="module")
def fracture_models() -> tuple[list[tuple[StagedNet, float]], torch.Tensor, np.ndarray]:
    """4-stage CNNs, one per seed, trained for 12 epochs on 256 phantoms at 48 px (fractures cover ~0.8% of a film),
    each with its test AUROC; the fractured test films and their masks."""
    from sklearn.metrics import roc_auc_score

    size = 48
    x, y, _ = _phantom_set(256, 0, size)
    xt, yt, mt = _phantom_set(64, 1, size)
    models = []
    for seed in _SEEDS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = StagedNet(image_size=size)
            opt = torch.optim.Adam(model.parameters(), 3e-3)
            model.train()
            for epoch in range(12):
                perm = torch.randperm(len(x))
                for i in range(0, len(x), 32):
                    idx = perm[i : i + 32]
                    xb = torch.flip(x[idx], dims=[3]) if epoch % 2 else x[idx]
                    loss = nn.functional.binary_cross_entropy_with_logits(model(xb), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        model.eval()
        for p in model.parameters():
            p.grad = None
        with torch.no_grad():
            models.append((model, float(roc_auc_score(yt.numpy(), model.predict_proba(xt).numpy()))))
    pos = yt.numpy() == 1
    return models, xt[torch.from_numpy(pos)], mt[pos]


def test_stage_cams_out_point_last_layer_gradcam_on_small_fractures(
    fracture_models: tuple[list[tuple[StagedNet, float]], torch.Tensor, np.ndarray],
) -> None:
    models, images, masks = fracture_models
    # the models found the fractures; otherwise localisation means nothing
    assert np.mean([auc for _, auc in models]) > 0.8

    def pointing(name: str, **params: Any) -> tuple[float, float]:
        """Pointing exact and with tolerance, pooled over the models' films."""
        hits = [explainer(name, **params).explain(model, images).maps for model, _ in models]
        exact = float(np.mean([np.nanmean(am.pointing_game(m, masks)) for m in hits]))
        tol_px = am.tolerance_px(images.shape[-1])
        tol = float(np.mean([np.nanmean(am.pointing_game(m, masks, tolerance=tol_px)) for m in hits]))
        return exact, tol

    gradcam, gradcam_tol = pointing("gradcam")  # last layer: 3 x 3 cells at 48 px
    layercam, layercam_tol = pointing("layercam", stride=4)
    multi, multi_tol = pointing("multilayer-cam", strides="2,4,8", fusion="mean")
    assert layercam > gradcam + 0.1 and layercam_tol > gradcam_tol + 0.1
    assert multi > gradcam + 0.2 and multi_tol > gradcam_tol + 0.2
    # randomised weights: the same method must lose the fractures (it explains the model, not the film)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        random_model = StagedNet(image_size=images.shape[-1]).eval()
    maps = explainer("multilayer-cam", strides="2,4,8").explain(random_model, images).maps
    assert float(np.nanmean(am.pointing_game(maps, masks))) < multi - 0.2


# -- the study script ------------------------------------------------------------------------------------------------
def _study() -> Any:
    spec = importlib.util.spec_from_file_location("localisation_study", REPO / "benchmarks" / "localisation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_study_parses_method_specs_and_scores_maps() -> None:
    study = _study()
    assert study.parse_method("multilayer-cam:strides=4,8:fusion=geomean:tta=true:blur=1.5") == (
        "multilayer-cam",
        {"strides": "4,8", "fusion": "geomean", "tta": True, "blur": 1.5},
    )
    assert study.parse_method("layercam:stride=4") == ("layercam", {"stride": 4})
    masks = np.zeros((2, 32, 32), bool)
    masks[:, 10:12, 10:12] = True
    maps = np.zeros((2, 32, 32), np.float32)
    maps[0, 11, 11] = 1.0  # inside
    maps[1, 12, 11] = 1.0  # 1 px below the box: a hit only with the tolerance (3.5% of 32 px = 1.12 px)
    scores = study.score_maps(maps, masks, 32)
    assert scores["pointing"].tolist() == [1.0, 0.0]
    assert scores["pointing_tol"].tolist() == [1.0, 1.0]
    assert scores["mass"][0] == pytest.approx(1.0)
    chance = study.chance_levels(masks, 32)
    assert chance["pointing"] == pytest.approx(4 / 1024)
    assert chance["pointing_tol"] > chance["pointing"]


def test_scales_average_the_enlarged_views_resized_back() -> None:
    import torch.nn.functional as F

    model = staged_net(seed=4)
    images = example_images(model, batch=2, seed=2)
    multi = explainer("layercam", stride=4, tta=False, scales="1,2", blur=0).explain(model, images)
    plain = explainer("layercam", stride=4, tta=False, scales=1, blur=0)
    native = plain.explain(model, images)
    # at twice the size the same stage (chosen on the native film) is explained; its map is resized to 48 px
    from xray_xai_plugins.explainers.layercam import layercam_maps

    layer = layers_at_strides(model, images, [4])[0]
    big = F.interpolate(images, size=[96, 96], mode="bilinear", align_corners=False)
    acts, grads, _ = activations_and_gradients_at(model, big, [layer], 1.0)
    back = fuse_maps([layercam_maps(acts[0], grads[0])], (48, 48), "mean")
    expected = (native.maps + back.numpy()) / 2
    expected /= expected.reshape(2, -1).max(axis=1)[:, None, None]
    np.testing.assert_allclose(multi.maps, expected, atol=1e-5)
    np.testing.assert_allclose(multi.probabilities, native.probabilities, atol=1e-6)  # from the native pass
    default = explainer("layercam").params  # chosen on FracAtlas for cost (docs/localisation.md)
    assert (default["tta"], default["scales"], default["blur"]) == ("h", "1", 4.0)
    assert explainer("layercam", scales=1).params["scales"] == "1"


# -- views stacked into few passes -----------------------------------------------------------------------------------
def _count_forwards(model: nn.Module) -> tuple[list[int], Any]:
    calls: list[int] = []
    handle = model.register_forward_hook(lambda _m, args, _o: calls.append(int(args[0].shape[0])))
    return calls, handle


def _views_by_hand(model: StagedNet, images: torch.Tensor, views: list[tuple[float, tuple[int, ...]]]) -> np.ndarray:
    """The mean of the views' LayerCAM maps at the stride-4 stage, one pass per view, each resized and flipped back."""
    import torch.nn.functional as F
    from xray_xai_plugins.explainers.layercam import layercam_maps

    layer = layers_at_strides(model, images, [4])[0]
    side = int(images.shape[-1])
    maps = []
    for scale, dims in views:
        x = images if scale == 1 else F.interpolate(images, size=[round(scale * side)] * 2, mode="bilinear")
        x = torch.flip(x, dims=dims) if dims else x
        acts, grads, _ = activations_and_gradients_at(model, x, [layer], 1.0)
        m = fuse_maps([layercam_maps(acts[0], grads[0])], (side, side), "mean")
        maps.append(torch.flip(m, dims=[d - 1 for d in dims]) if dims else m)
    expected = torch.stack(maps).mean(dim=0).numpy()
    return expected / expected.reshape(len(expected), -1).max(axis=1)[:, None, None]


def test_stacked_views_give_the_maps_of_one_pass_per_view() -> None:
    """``tta=true, scales=1,2`` (the default until the cost study) stacks the views of each scale into one pass;
    in eval mode every image of a batch is computed alone, so the maps are those of one pass per view."""
    model = staged_net(seed=4)
    images = example_images(model, batch=2, seed=2)
    stacked = explainer("layercam", stride=4, tta=True, scales="1,2", blur=0)
    one_by_one = explainer("layercam", stride=4, tta=True, scales="1,2", blur=0)
    one_by_one.pass_pixels = 0
    stacked.explain(model, images)  # the stage probe runs once per model and input shape; not counted below
    calls, handle = _count_forwards(model)
    try:
        a = stacked.explain(model, images)
        assert calls == [6, 6]  # the film and its two flips, then the three enlarged views: one pass each
        calls.clear()
        b = one_by_one.explain(model, images)
        assert calls == [2] * 6
    finally:
        handle.remove()
    np.testing.assert_allclose(a.maps, b.maps, atol=1e-6)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
    views = [(1.0, ()), (1.0, (3,)), (1.0, (2,)), (2.0, ()), (2.0, (3,)), (2.0, (2,))]
    np.testing.assert_allclose(a.maps, _views_by_hand(model, images, views), atol=1e-5)
    assert a.params["tta"] is True and a.params["scales"] == "1,2"


@pytest.mark.parametrize(("tta", "views"), [("h", [(1.0, ()), (1.0, (3,))]), ("v", [(1.0, ()), (1.0, (2,))])])
def test_one_flip_averages_the_film_and_that_flip(tta: str, views: list[tuple[float, tuple[int, ...]]]) -> None:
    model = staged_net(seed=5)
    images = example_images(model, batch=3, seed=1)
    exp = explainer("layercam", stride=4, tta=tta, scales=1, blur=0).explain(model, images)
    by_hand = _views_by_hand(model, images, views)
    np.testing.assert_allclose(exp.maps, by_hand, atol=1e-5)
    assert exp.params["tta"] == tta
    if tta == "h":  # the default: the film and its horizontal flip, blurred with sigma 4 px
        from xray_xai.sdk import gaussian_blur

        blurred = gaussian_blur(torch.from_numpy(by_hand), 4.0).numpy()
        blurred /= blurred.reshape(len(blurred), -1).max(axis=1)[:, None, None]
        np.testing.assert_allclose(explainer("layercam").explain(model, images).maps, blurred, atol=1e-5)


def test_tta_values() -> None:
    assert explainer("layercam", tta="hv").params["tta"] is True
    assert explainer("layercam", tta="true").params["tta"] is True
    assert explainer("layercam", tta="false").params["tta"] is False
    assert explainer("layercam", tta=False, scales=1).views() == [(1.0, ())]
    assert explainer("layercam", tta="vh", scales="1,2").views() == [
        (1.0, ()),
        (1.0, (3,)),
        (1.0, (2,)),
        (2.0, ()),
        (2.0, (3,)),
        (2.0, (2,)),
    ]
    for bad in ("x", "hh", "horizontal"):
        with pytest.raises(PluginError, match="tta must be"):
            explainer("layercam", tta=bad)


def test_the_stage_probe_runs_once_per_model_and_input_shape() -> None:
    model = staged_net(seed=6)
    images = example_images(model, batch=2)
    calls, handle = _count_forwards(model)
    try:
        assert layers_at_strides(model, images, [4]) == ["backbone.stage2"]
        assert calls == [1]  # the probe: one image
        assert layers_at_strides(model, images[:1], [8, 4]) == ["backbone.stage3", "backbone.stage2"]
        assert calls == [1]  # same shape per image: remembered
        bigger = torch.nn.functional.interpolate(images, size=[96, 96])
        assert layers_at_strides(model, bigger, [8]) == ["backbone.stage3"]  # 96 / 8 = 12 px wide
        assert calls == [1, 1]
    finally:
        handle.remove()


def test_view_study_combinations_are_the_plugins_maps() -> None:
    """benchmarks/layercam_views.py scores combinations of views built from one pass per view; each must be the map
    the plugin gives for its spec (the default included), or the study would rank something no user can run."""
    spec = importlib.util.spec_from_file_location("layercam_views", REPO / "benchmarks" / "layercam_views.py")
    assert spec is not None and spec.loader is not None
    views = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(views)
    model = staged_net(seed=7)
    images = example_images(model, batch=3, seed=4)
    maps, secs = views.view_maps(model, images, batch=2)
    assert set(maps) == set(views.VIEWS) and secs["gradcam"] > 0
    assert views.check_plugin(model, images, maps) < 1e-5
    default = explainer("layercam").explain(model, images[:2]).maps
    np.testing.assert_allclose(views.combine({k: v[:2] for k, v in maps.items()}, "1+1h", 4.0), default, atol=1e-5)
