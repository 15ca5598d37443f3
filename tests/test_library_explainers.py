"""The captum and pytorch-grad-cam families: discovery from the installed libraries, the contract on a tiny CNN and
on EfficientNet-Lite0, closed forms on a linear model, and refusals with their reason."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from xray_xai_plugins.explainers import captum_family, gradcam_family

from xray_xai.errors import PluginError
from xray_xai.sdk.registry import Registry, explainers
from xray_xai.testing.explainers import LinearModel, check_explainer, example_images, tiny_convnet


@pytest.fixture(autouse=True, scope="module")
def _families() -> Iterator[None]:
    """The families through the registry even where the installed metadata predates their entry points."""
    missing = [ns for ns in ("captum", "grad-cam") if ns not in explainers.families()]
    providers = {"captum": captum_family.members, "grad-cam": gradcam_family.members}
    for ns in missing:
        explainers.register_family(ns, providers[ns], package="xray-xai")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns about in-place ops and sampling; the checks decide
        yield
    if missing:
        explainers.reset()


def _members() -> list[str]:
    return sorted(
        [f"captum:{m.name}" for m in captum_family.members() if m.unsupported is None]
        + [f"grad-cam:{m.name}" for m in gradcam_family.members() if m.unsupported is None]
    )


#: small budgets for the tests (the defaults are sized for a 224 px film on a CPU)
CHEAP = {"grid": 2, "n_steps": 4, "n_samples": 4, "ratio_channels_to_ablate": 0.25}


def cheap(name: str) -> type:
    """The explainer class of ``name`` with :data:`CHEAP` budgets where it takes them."""
    cls = explainers.get(name)
    accepted = set(cls().params)
    small = {k: v for k, v in CHEAP.items() if k in accepted}

    def __init__(self: Any, **options: Any) -> None:
        cls.__init__(self, **{**small, **options})

    return type(cls.__name__, (cls,), {"__init__": __init__, "name": cls.name, "__module__": cls.__module__})


def _fresh(namespace: str, provider: Any) -> Registry[Any]:
    """A new explainer registry (re-reads the entry points) that has the family ``namespace``."""
    fresh: Registry[Any] = Registry("explainer", explainers.base)
    if namespace not in fresh.families():
        fresh.register_family(namespace, provider)
    return fresh


# -- discovery ---------------------------------------------------------------------------------------------------
def test_every_captum_and_gradcam_class_is_listed_or_knowingly_left_out() -> None:
    import captum.attr as ca
    import pytorch_grad_cam as pg
    from pytorch_grad_cam.base_cam import BaseCAM

    listed = set(explainers.names()) | set(explainers.unsupported())
    attribution = {n for n, c in vars(ca).items() if isinstance(c, type) and issubclass(c, ca.Attribution)}
    bases = {n for n in attribution if vars(ca)[n].__module__ == "captum.attr._utils.attribution"}
    assert {f"captum:{n}" for n in attribution - bases} <= listed
    cams = {n for n, c in vars(pg).items() if isinstance(c, type) and issubclass(c, BaseCAM) and c is not BaseCAM}
    assert {f"grad-cam:{n}" for n in cams} <= listed
    assert len(_members()) >= 35  # 24 captum + 15 grad-cam in captum 0.9 / grad-cam 1.5.7


def test_a_class_added_to_captum_appears_without_a_code_change(monkeypatch: pytest.MonkeyPatch) -> None:
    import captum.attr as ca

    class TimesTwoGradient(ca.GradientAttribution):  # a "new release" method: 2 x input gradient
        def attribute(self, inputs: torch.Tensor, target: Any = None) -> torch.Tensor:
            from captum._utils.gradient import compute_gradients

            return 2 * compute_gradients(self.forward_func, inputs, target)[0]

    monkeypatch.setattr(ca, "TimesTwoGradient", TimesTwoGradient, raising=False)
    fresh = _fresh("captum", captum_family.members)
    assert "captum:TimesTwoGradient" in fresh.names()
    model = LinearModel().eval()
    x = example_images(model)
    exp = fresh.get("captum:TimesTwoGradient")().explain(model, x)
    w = model.classifier.weight.detach().reshape(32, 32)
    np.testing.assert_allclose(exp.raw, np.broadcast_to(2 * w.numpy(), exp.raw.shape), rtol=1e-5, atol=1e-6)


def test_a_cam_added_to_gradcam_appears_without_a_code_change(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytorch_grad_cam as pg
    from pytorch_grad_cam.base_cam import BaseCAM

    class OnesCAM(BaseCAM):  # every channel weighted 1
        def get_cam_weights(self, input_tensor: Any, target_layer: Any, targets: Any, activations: Any,
                            grads: Any) -> np.ndarray:  # fmt: skip
            return np.ones(activations.shape[:2], dtype=np.float32)

    monkeypatch.setattr(pg, "OnesCAM", OnesCAM, raising=False)
    fresh = _fresh("grad-cam", gradcam_family.members)
    assert "grad-cam:OnesCAM" in fresh.names()
    check_explainer(fresh.get("grad-cam:OnesCAM"), tiny_convnet(seed=0))


def _reread_families() -> None:
    """Forget the expanded families (they are read again when next needed, as in a new process)."""
    explainers.reset()
    providers = {"captum": captum_family.members, "grad-cam": gradcam_family.members}
    for ns in [ns for ns in providers if ns not in explainers.families()]:
        explainers.register_family(ns, providers[ns], package="xray-xai")


def test_plugins_json_lists_every_library_class_and_those_added_at_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """`xray-xai plugins --json` lists every captum attribution class and every grad-cam CAM of the installed
    libraries, each adapted or unsupported with a reason; a class that appears in the library's module (a new
    release) is listed with no change to xray-xai."""
    import json

    import captum.attr as ca
    import pytorch_grad_cam as pg
    from click.testing import CliRunner
    from pytorch_grad_cam.base_cam import BaseCAM

    from xray_xai.cli import main

    class BrandNewGradient(ca.GradientAttribution):
        def attribute(self, inputs: torch.Tensor, target: Any = None) -> torch.Tensor:
            return inputs

    class BrandNewCAM(BaseCAM):
        pass

    with monkeypatch.context() as mp:
        mp.setattr(ca, "BrandNewGradient", BrandNewGradient, raising=False)
        mp.setattr(pg, "BrandNewCAM", BrandNewCAM, raising=False)
        _reread_families()
        try:
            result = CliRunner().invoke(main, ["plugins", "--kind", "explainer", "--json"])
            attribution = {n for n, c in vars(ca).items() if isinstance(c, type) and issubclass(c, ca.Attribution)
                           and c.__module__ != "captum.attr._utils.attribution"}  # fmt: skip
            cams = {n for n, c in vars(pg).items() if isinstance(c, type) and issubclass(c, BaseCAM)
                    and c is not BaseCAM}  # fmt: skip
        finally:
            _reread_families()  # the added classes must not outlive the test
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    captum_rows = {n.split(":", 1)[1] for n in rows if n.startswith("captum:")}
    assert captum_rows == attribution and len(attribution) >= 45  # 24 adapted + 20 unsupported in 0.9, and the new one
    assert {f"grad-cam:{n}" for n in cams} <= set(rows) and len(cams) >= 16  # 15 adapted in 1.5.7, and the new one
    for name, row in rows.items():
        if name.startswith(("captum:", "grad-cam:")):
            assert row["error"] is None, name
            assert (row["unsupported"] is None) == bool(row["description"]), name  # adapted, or unsupported: why
    assert rows["captum:BrandNewGradient"]["unsupported"] is None
    assert rows["grad-cam:BrandNewCAM"]["unsupported"] is None
    assert "neuron" in rows["captum:NeuronGradient"]["unsupported"]
    assert "captum:BrandNewGradient" not in explainers.names()  # gone once the library is as installed


def test_unsupported_members_are_listed_with_a_reason_and_refused_in_one_line() -> None:
    reasons = explainers.unsupported()
    assert "neuron" in reasons["captum:NeuronGradient"]
    assert "batch" in reasons["captum:FeaturePermutation"]
    assert "other class" in reasons["grad-cam:FinerCAM"]
    with pytest.raises(PluginError, match=r"not supported: .*permutes") as err:
        explainers.get("captum:FeaturePermutation")
    assert "\n" not in str(err.value)
    assert "captum:NeuronGradient" not in explainers.names()


def test_a_short_name_lookup_does_not_expand_the_families() -> None:
    import captum.attr as ca

    from xray_xai.sdk.registry import FamilyMember

    calls: list[str] = []

    def load() -> type:
        return type("Lazy", (captum_family.adapter_for("Saliency", ca.Saliency),), {"name": "lazy:Saliency"})

    def provider() -> list[Any]:
        calls.append("expanded")
        return [FamilyMember("Saliency", loader=load), FamilyMember("Broken", unsupported="for the test")]

    fresh: Registry[Any] = Registry("explainer", explainers.base)
    fresh.register_family("lazy", provider)
    fresh.get("gradcam")
    assert calls == []
    assert fresh.get("lazy:Saliency").name == "lazy:Saliency"
    assert calls == ["expanded"]
    assert "lazy:Broken" not in fresh.names() and fresh.unsupported()["lazy:Broken"] == "for the test"
    assert calls == ["expanded"]


def test_a_family_whose_library_fails_is_listed_broken_and_the_rest_work() -> None:
    def provider() -> list[Any]:
        raise ImportError("no module named fancylib")

    fresh: Registry[Any] = Registry("explainer", explainers.base)
    fresh.register_family("fancy", provider)
    assert "fancylib" in fresh.failures()["fancy:*"]
    assert "gradcam" in fresh.names()


# -- the contract --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", _members())
def test_library_method_contract_on_tiny_cnn(name: str) -> None:
    check_explainer(cheap(name), tiny_convnet(seed=0))


#: refused on EfficientNet-Lite0, with the reason the adapter gives (rule-based methods and its ReLU6)
REFUSED_ON_LITE0 = {
    "captum:DeepLift": "ReLU6",
    "captum:DeepLiftShap": "ReLU6",
    "captum:LayerDeepLift": "ReLU6",
    "captum:LayerDeepLiftShap": "ReLU6",
    "captum:GuidedBackprop": "ReLU6",
    "captum:Deconvolution": "ReLU6",
    "captum:GuidedGradCam": "ReLU6",
}


#: run on EfficientNet-Lite0 in the default suite, one per kind of adapter (input gradient, layer, path, SHAP,
#: perturbation, grad-cam with and without gradients, FullGrad); the others are marked slow and the refusals are
#: always checked (instant). `pytest -m slow -k lite0` ran the 24 slow ones in 3 min 11 s wall on the shared 2-core
#: CPU (44 s of CPU): ScoreCAM 81 s and AblationCAM 74 s (a forward pass per channel of the 1280-channel layer),
#: every other one under 2 s
LITE0_DEFAULT = {"captum:InputXGradient", "captum:LayerGradCam", "captum:IntegratedGradients", "captum:GradientShap",
                 "captum:FeatureAblation", "grad-cam:GradCAM", "grad-cam:EigenCAM", "grad-cam:FullGrad"}  # fmt: skip


def _lite0_param(name: str) -> Any:
    fast = name in LITE0_DEFAULT or name in REFUSED_ON_LITE0
    return name if fast else pytest.param(name, marks=pytest.mark.slow)


@pytest.fixture(scope="module")
def lite0() -> Any:
    import xray_xai

    torch.manual_seed(0)
    return xray_xai.get_model("efficientnet-lite0")(pretrained=False, image_size=64).eval()


@pytest.mark.parametrize("name", [_lite0_param(n) for n in _members()])
def test_library_method_contract_on_efficientnet_lite0(name: str, lite0: Any) -> None:
    if name in REFUSED_ON_LITE0:
        with pytest.raises(PluginError, match=REFUSED_ON_LITE0[name]):
            explainers.get(name)().check_model(lite0)
        return
    check_explainer(cheap(name), lite0)


# -- closed forms on a linear model (logit = w . x + b) ---------------------------------------------------------------
def _linear() -> tuple[LinearModel, torch.Tensor, np.ndarray, np.ndarray]:
    torch.manual_seed(1)
    model = LinearModel().eval()
    x = example_images(model, batch=2, seed=3)
    w = model.classifier.weight.detach().reshape(32, 32).numpy()
    return model, x, x[:, 0].numpy(), w


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("captum:InputXGradient", {}),
        ("captum:DeepLift", {"baseline": "zeros"}),
        ("captum:IntegratedGradients", {"baseline": "zeros"}),
    ],
)
def test_x_times_w_methods(name: str, options: dict[str, Any]) -> None:
    model, x, xs, w = _linear()
    for target, sign in (("abnormal", 1.0), ("normal", -1.0)):
        exp = explainers.get(name)(**options).explain(model, x, target=target)
        np.testing.assert_allclose(exp.raw, sign * xs * w, rtol=1e-4, atol=1e-6)


def test_integrated_gradients_from_a_blurred_film_is_the_difference_times_w() -> None:
    from xray_xai_plugins.explainers.adapters import baseline_batch

    model, x, xs, w = _linear()
    base = baseline_batch(x, model.preprocessing, "blur", 0.1)[:, 0].numpy()
    exp = explainers.get("captum:IntegratedGradients")(baseline="blur", blur_sigma=0.1).explain(model, x)
    np.testing.assert_allclose(exp.raw, (xs - base) * w, rtol=1e-4, atol=1e-6)
    assert not np.allclose(base, xs)


def test_saliency_is_the_absolute_weight() -> None:
    model, x, _xs, w = _linear()
    exp = explainers.get("captum:Saliency")().explain(model, x)
    np.testing.assert_allclose(exp.raw, np.broadcast_to(np.abs(w), exp.raw.shape), rtol=1e-5)


@pytest.mark.parametrize("name", ["captum:FeatureAblation", "captum:ShapleyValueSampling", "captum:Occlusion"])
def test_patch_methods_give_each_patch_its_sum_of_x_times_w(name: str) -> None:
    """An additive model: removing a patch (zero baseline) changes the logit by the patch's sum of x * w, which is
    also its exact Shapley value; every pixel of the patch carries it."""
    model, x, xs, w = _linear()
    exp = explainers.get(name)(baseline="zeros", grid=4).explain(model, x)
    contrib = (xs * w).reshape(2, 4, 8, 4, 8).sum(axis=(2, 4))
    expected = np.repeat(np.repeat(contrib, 8, axis=1), 8, axis=2)
    np.testing.assert_allclose(exp.raw, expected, rtol=1e-4, atol=1e-5)


# -- options ---------------------------------------------------------------------------------------------------------
def test_options_reach_the_library_and_unknown_ones_are_refused() -> None:
    lgc = explainers.get("captum:LayerGradCam")(relu_attributions=True)
    assert lgc.params["relu_attributions"] is True
    with pytest.raises(PluginError, match=r"unknown option\(s\) n_segments; accepted: .*layer"):
        explainers.get("captum:LayerGradCam")(n_segments=3)
    with pytest.raises(PluginError, match="baseline must be one of"):
        explainers.get("captum:IntegratedGradients")(baseline="white")
    abl = explainers.get("grad-cam:AblationCAM")(ratio_channels_to_ablate=0.5)
    assert abl.params["ratio_channels_to_ablate"] == 0.5


def test_layer_methods_take_the_model_target_layer_or_the_one_given() -> None:
    model = tiny_convnet(seed=0)
    x = example_images(model)
    default = explainers.get("captum:LayerGradCam")().explain(model, x)
    assert np.asarray(default.raw).shape == (2, 16, 16)  # the target layer "body" is at stride 2
    first = explainers.get("captum:LayerGradCam")(layer="body.0").explain(model, x)
    assert np.asarray(first.raw).shape == (2, 32, 32)
    with pytest.raises(PluginError, match="no layer"):
        explainers.get("grad-cam:GradCAM")(layer="nope").explain(model, x)


def test_random_cam_is_seeded_and_leaves_numpy_alone() -> None:
    model = tiny_convnet(seed=0)
    x = example_images(model)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = explainers.get("grad-cam:RandomCAM")(seed=1).explain(model, x).maps
    assert np.array_equal(np.random.get_state()[1], before)
    b = explainers.get("grad-cam:RandomCAM")(seed=1).explain(model, x).maps
    c = explainers.get("grad-cam:RandomCAM")(seed=2).explain(model, x).maps
    assert np.allclose(a, b) and not np.allclose(a, c)


# -- superpixels instead of the grid (segments="slic") ---------------------------------------------------------------
FEATURE_MASK_METHODS = ["captum:FeatureAblation", "captum:ShapleyValueSampling", "captum:KernelShap", "captum:Lime"]


def test_slic_segments_are_computed_on_the_film_whatever_the_normalisation() -> None:
    """The same films through a model without normalisation (1 channel) and one with ImageNet normalisation
    (3 channels) get the same superpixels: SLIC runs on the denormalised film. Ids are contiguous per film."""
    from skimage.segmentation import slic
    from xray_xai_plugins.explainers.adapters import slic_mask

    plain, imagenet = LinearModel(), tiny_convnet(seed=0)
    assert imagenet.preprocessing.normalize == "imagenet" and plain.preprocessing.normalize == "none"
    xp, xi = example_images(plain, seed=5), example_images(imagenet, seed=5)
    a = slic_mask(xp, plain.preprocessing, 12, 0.1)
    b = slic_mask(xi, imagenet.preprocessing, 12, 0.1)
    assert a.shape == (2, 1, 32, 32) and a.dtype == torch.int64
    assert torch.equal(a, b)
    for film, mask in zip(xp[:, 0].numpy(), a[:, 0].numpy(), strict=True):
        direct = slic(film.astype(np.float64), n_segments=12, compactness=0.1, channel_axis=None, start_label=0)
        k = len(np.unique(direct))
        assert sorted(np.unique(mask)) == list(range(k))  # 0..K-1, as many as SLIC made
        assert 6 <= k <= 24  # about n_segments
    assert not torch.equal(a[0], a[1])  # one mask per film


@pytest.mark.parametrize("name", FEATURE_MASK_METHODS)
def test_slic_attributions_are_constant_within_each_superpixel(name: str) -> None:
    model, x, xs, w = _linear()
    exp = explainers.get(name)(segments="slic", n_segments=12, baseline="zeros").explain(model, x)
    seg = exp.extras["segments"]
    raw = np.asarray(exp.raw)
    assert seg.shape == raw.shape == (2, 32, 32)
    for j in range(2):
        ids = np.unique(seg[j])
        assert list(ids) == list(range(len(ids))) and 6 <= len(ids) <= 24
        for k in ids:
            values = raw[j][seg[j] == k]
            np.testing.assert_allclose(values, values[0], rtol=1e-5, atol=1e-6)
        assert len(np.unique(raw[j].round(5))) > 1  # not one value over the whole film
        if name in ("captum:FeatureAblation", "captum:ShapleyValueSampling"):  # additive model: exact
            expected = np.zeros_like(raw[j])
            for k in ids:
                expected[seg[j] == k] = (xs[j] * w)[seg[j] == k].sum()
            np.testing.assert_allclose(raw[j], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["captum:FeatureAblation", "captum:KernelShap"])
def test_slic_explains_each_film_as_if_alone(name: str) -> None:
    """Each film has its own superpixels (and count), its own surrogate model and its own seeded draws: its map
    is the same in a batch as alone."""
    model = tiny_convnet(seed=0)
    x = example_images(model, batch=2, seed=2)
    options = {"segments": "slic", "n_segments": 10} | ({"n_samples": 32} if name == "captum:KernelShap" else {})
    both = explainers.get(name)(**options).explain(model, x)
    second = explainers.get(name)(**options).explain(model, x[1:])
    np.testing.assert_array_equal(both.extras["segments"][1:], second.extras["segments"])
    assert len(np.unique(both.extras["segments"][0])) != len(np.unique(both.extras["segments"][1]))
    assert len(np.unique(np.asarray(second.raw).round(6))) > 2
    np.testing.assert_allclose(np.asarray(both.raw)[1:], second.raw, rtol=1e-5, atol=1e-6)


def test_the_grid_stays_the_default_and_bad_segments_are_refused() -> None:
    model = tiny_convnet(seed=0)
    x = example_images(model, batch=2, seed=2)
    method = explainers.get("captum:FeatureAblation")
    default = method()
    assert default.params["segments"] == "grid" and default.params["grid"] == 8
    assert "segments" not in default.explain(model, x).extras
    with pytest.raises(PluginError, match="segments must be one of grid, slic") as err:
        method(segments="watershed")
    assert "\n" not in str(err.value)
    with pytest.raises(PluginError, match=r"unknown option\(s\) segments"):  # Occlusion slides a window: no mask
        explainers.get("captum:Occlusion")(segments="slic")
