"""Every attribution method of the installed captum, as explainers named ``captum:<ClassName>``.

:func:`members` (the ``captum`` entry point of the ``xray_xai.explainer_families`` group) walks ``captum.attr``'s
namespace at run time, so a method added in a new captum release appears without a change here. Each class is:

* **skipped** (not listed) when it is one of captum's abstract bases (defined in ``captum.attr._utils.attribution``)
  or not an attribution class at all (summarisers, interpretable inputs, LLM providers);
* **listed as unsupported**, with the reason, when it cannot explain one film's logit: neuron-level methods (they
  explain one unit of a layer), methods for language models, :data:`UNSUPPORTED` (permutation across a batch, exact
  Shapley values, wrappers, data-loader attributions), or a constructor/``attribute`` argument we cannot fill;
* **adapted** otherwise, by :class:`CaptumAdapter`, which fills the library's arguments by their names:
  ``forward_func``/``model`` get :class:`~xray_xai_plugins.explainers.adapters.SignedLogit` (the logit as class 0),
  ``layer`` the model's target layer (or ``layer=``), ``baselines`` the baseline film (``baseline=``, default
  ``blur``; a distribution of black, mean and blurred films for the SHAP-style methods), ``feature_mask`` a
  ``grid`` x ``grid`` partition into patches (``segments="grid"``, the default) or SLIC superpixels of each film
  (``segments="slic"``, about ``n_segments`` of them; each film is then attributed on its own, with its own
  mask), ``sliding_window_shapes``/``strides`` one patch of that grid,
  ``layer_mask`` one feature per spatial position of the layer, ``n_steps``/``n_samples`` a CPU-sized budget
  (:data:`BUDGET`). Any other keyword of the class's constructor or ``attribute`` passes through unchanged
  (``-p captum:LayerGradCam.relu_attributions=true``).

The map is the attribution summed over channels (input channels, or the layer's channels for layer methods, then
upsampled to the input); its positive part is the evidence for the target. Rule-based methods (DeepLift, guided
backprop, deconvolution, LRP) refuse a model with an activation module their rules do not cover (for example the
ReLU6 of EfficientNet-Lite0) instead of silently falling back to plain gradients; activations called as functions
inside ``forward`` cannot be seen and are the model author's responsibility.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from xray_xai_plugins.explainers.adapters import (
    BASELINES,
    SEGMENTS,
    SignedLogit,
    baseline_batch,
    baseline_distribution,
    grid_mask,
    layer_of,
    numpy_seeded,
    slic_mask,
    split_options,
    unsupported_activations,
)

from xray_xai.errors import PluginError
from xray_xai.sdk import Attribution, Model, Tags, TorchExplainer, seeded
from xray_xai.sdk.registry import FamilyMember

__all__ = ["BUDGET", "CLASS_AGNOSTIC", "UNSUPPORTED", "CaptumAdapter", "adapter_for", "members"]

#: listed, not offered: class name -> why it cannot explain one film's logit
UNSUPPORTED: dict[str, str] = {
    "FeaturePermutation": "permutes each feature across the films of a batch; one film has nothing to permute "
    "with, and the map would depend on the other films",
    "LayerFeaturePermutation": "permutes layer features across the films of a batch (see FeaturePermutation)",
    "ShapleyValues": "exact Shapley values evaluate every permutation of the features (n! forward passes); "
    "use captum:ShapleyValueSampling",
    "LimeBase": "needs user-written maps to and from an interpretable space; captum:Lime is its image form",
    "NoiseTunnel": "wraps another method (SmoothGrad-style averaging); use the smoothgrad explainer or "
    "integrated-gradients with nt_samples",
    "DataLoaderAttribution": "attributes a metric over a whole data loader, not the logit of one film",
    "LRP": "needs every operation of the forward pass as a module with an LRP rule; the models' functional "
    "pooling and the signed one-logit head run outside modules and captum's relevance bookkeeping fails on them "
    "(KeyError in lrp_rules)",
    "LayerLRP": "the layer form of LRP (see captum:LRP)",
}

#: methods whose map does not depend on the explained target (noted in their description)
CLASS_AGNOSTIC = {"LayerActivation"}

#: CPU-sized defaults of the libraries' cost knobs (class name -> option -> value); others keep captum's own
BUDGET: dict[str, dict[str, Any]] = {
    "ShapleyValueSampling": {"n_samples": 2},  # permutations: 2 x (grid^2 + 1) forward passes
    "KernelShap": {"n_samples": 64},
    "Lime": {"n_samples": 64},
    "GradientShap": {"n_samples": 8},
    "LayerGradientShap": {"n_samples": 8},
}
N_STEPS = 16  #: integration steps of the path methods (captum's default is 50)
GRID = 8  #: patches per side for the perturbation methods
COMPACTNESS = 0.1  #: SLIC compactness on the [0, 1] film (as the saliency explainer's superpixels)
PERTURBATIONS_PER_EVAL = 16
INTERNAL_BATCH_SIZE = 16

#: arguments the adapter fills itself (never passed through from options)
_FILLED = {"self", "inputs", "target", "forward_func", "model", "layer", "baselines", "feature_mask",
           "sliding_window_shapes", "strides", "layer_mask", "additional_forward_args", "show_progress",
           "return_convergence_delta", "kwargs", "args", "device_ids"}  # fmt: skip


def _captum() -> Any:
    import captum.attr

    return captum.attr


def _rule_types(cls: type) -> tuple[str, tuple[type, ...]] | None:
    """For a rule-based method: the rule set's name and the module types its rules cover (None otherwise)."""
    ca = _captum()
    if issubclass(cls, (ca.GuidedBackprop, ca.Deconvolution, ca.GuidedGradCam)):
        return "guided backprop", (nn.ReLU,)
    if issubclass(cls, ca.LRP):
        from captum.attr._core import lrp

        return "LRP", (*lrp.SUPPORTED_LAYERS_WITH_RULES, *lrp.SUPPORTED_NON_LINEAR_LAYERS)
    layer_deeplift = getattr(ca, "LayerDeepLift", None)
    if issubclass(cls, ca.DeepLift) or (layer_deeplift is not None and issubclass(cls, layer_deeplift)):
        from captum.attr._core import deep_lift

        return "DeepLift", tuple(deep_lift.SUPPORTED_NON_LINEAR)
    return None


#: leaf modules that pass relevance through unchanged (captum's IdentityRule; LRP has no default rule for them)
_PASS_THROUGH = (nn.Identity, nn.Flatten, nn.Dropout)


def _needs_distribution(cls: type) -> bool:
    """SHAP-style methods average over a distribution of baselines (at least two)."""
    ca = _captum()
    bases = [getattr(ca, n, None) for n in ("DeepLiftShap", "GradientShap", "LayerDeepLiftShap", "LayerGradientShap")]
    return any(b is not None and issubclass(cls, b) for b in bases)


def _params(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


class CaptumAdapter(TorchExplainer):
    """One captum attribution class behind our contract (see the module doc); subclasses set ``library_class``."""

    name = ""
    description = ""
    tags = Tags(needs_gradients=True, deterministic=True, supports_batch=True)
    library_class: type | None = None

    def __init__(self, *, seed: int | None = 0, **options: Any) -> None:
        cls = self.library_class
        if cls is None:
            raise PluginError("CaptumAdapter is a base; use a captum:<Method> explainer")
        lib: Any = cls
        ctor, attr = _params(lib.__init__), _params(lib.attribute)
        own: dict[str, Any] = {}
        if "layer" in ctor:
            own["layer"] = None
        if "baselines" in attr:
            own["baseline"] = "distribution" if _needs_distribution(cls) else "blur"
            own["blur_sigma"] = 0.05
        if {"feature_mask", "sliding_window_shapes"} & set(attr):
            own["grid"] = GRID
        if "feature_mask" in attr:  # the same budget as the grid: as many superpixels as patches
            own |= {"segments": "grid", "n_segments": GRID * GRID, "compactness": COMPACTNESS}
        for knob, default in (("n_steps", N_STEPS), ("internal_batch_size", INTERNAL_BATCH_SIZE),
                              ("perturbations_per_eval", PERTURBATIONS_PER_EVAL)):  # fmt: skip
            if knob in attr:
                own[knob] = default
        if "n_samples" in attr:
            own["n_samples"] = attr["n_samples"].default
        own.update({k: v for k, v in BUDGET.get(cls.__name__, {}).items() if k in own})
        passable = [k for k in (*ctor, *attr) if k not in _FILLED and k not in own]
        ours, theirs = split_options(dict(options), own, passable, method=self.name)
        if "baseline" in ours and ours["baseline"] not in (*BASELINES, "distribution"):
            raise PluginError(f"{self.name}: baseline must be one of {', '.join(BASELINES)} or distribution")
        if "segments" in ours and ours["segments"] not in SEGMENTS:
            raise PluginError(f"{self.name}: segments must be one of {', '.join(SEGMENTS)}, got {ours['segments']!r}")
        if "segments" in ours and (int(ours["n_segments"]) < 1 or float(ours["compactness"]) <= 0):
            raise PluginError(f"{self.name}: n_segments must be >= 1 and compactness > 0")
        super().__init__(seed=seed, **ours, **theirs)
        self.ours, self.theirs = ours, theirs
        self._ctor, self._attr = ctor, attr

    def check_model(self, model: Model) -> None:
        super().check_model(model)
        if not isinstance(model, nn.Module):
            raise PluginError(f"explainer {self.name!r} needs a torch model; {model.name!r} is not one")
        rules = _rule_types(self.library_class)  # type: ignore[arg-type]
        if rules is not None:
            what, covered = rules
            if what == "LRP":  # every leaf module needs an LRP rule
                bad = sorted({type(m).__name__ for m in model.modules() if not list(m.children())
                              and not isinstance(m, (*covered, *_PASS_THROUGH))})  # fmt: skip
            else:
                bad = unsupported_activations(model, covered)
            if bad:
                raise PluginError(
                    f"explainer {self.name!r}: model {model.name!r} uses {', '.join(bad)}, which {what} rules do not "
                    "cover (the attribution would silently fall back to plain gradients there)"
                )
        if "layer" in self._ctor:
            layer_of(model, self.ours.get("layer"))

    # -- the one step ------------------------------------------------------------------------------------------
    def attribute(self, model: Model, images: torch.Tensor, sign: float) -> Attribution:
        cls = self.library_class
        assert cls is not None
        wrapped = SignedLogit(model, sign)
        kwargs = {k: v for k, v in self.theirs.items() if k in self._ctor}
        for key in self._ctor:
            if key in ("forward_func", "model"):
                kwargs[key] = wrapped
            elif key == "layer":
                kwargs[key] = layer_of(model, self.ours.get("layer"))
        method = cls(**kwargs)
        call = {k: v for k, v in self.theirs.items() if k in self._attr}
        call |= self._filled(model, images, wrapped)
        if "target" in self._attr:
            call["target"] = 0
        before = {m for m in model.modules() if hasattr(m, "rule")}  # type: ignore[attr-defined]
        if _rule_types(cls) is not None and _rule_types(cls)[0] == "LRP":  # type: ignore[index]
            from captum.attr._utils.lrp_rules import IdentityRule

            for m in model.modules():  # type: ignore[attr-defined]
                if isinstance(m, _PASS_THROUGH) and not hasattr(m, "rule"):
                    m.rule = IdentityRule()  # relevance passes through unchanged (LRP has no default for these)
        x = images.clone()
        if issubclass(cls, _captum().GradientAttribution):  # frozen parameters: the graph must start at the input
            x.requires_grad_(True)
        per_film = self.ours.get("segments") == "slic"  # one mask per film: attribute each film on its own
        try:
            with torch.enable_grad():
                if per_film:
                    parts = []
                    for i in range(len(x)):  # reseeded per film: its map does not depend on the films beside it
                        with seeded(self.seed), numpy_seeded(self.seed):
                            parts.append(method.attribute(x[i : i + 1], **_one_film(call, i, len(x))))
                    out = torch.cat(parts)
                else:
                    with numpy_seeded(self.seed):
                        out = method.attribute(x, **call)
        finally:  # LRP attaches a rule attribute to every layer; leave the model as it was
            for m in model.modules():  # type: ignore[attr-defined]
                if m not in before and hasattr(m, "rule"):
                    del m.rule
        out = out[0] if isinstance(out, tuple) else out
        if out.ndim == 4:
            raw = out.sum(dim=1)
        elif out.ndim == 3:
            raw = out
        else:
            raise PluginError(f"{self.name}: attribution of shape {tuple(out.shape)} is not a map")
        with torch.no_grad():
            probs = torch.sigmoid(sign * wrapped(images)[:, 0])
        extras = {"segments": call["feature_mask"][:, 0].cpu().numpy().astype(np.int32)} if per_film else {}
        return Attribution(raw=raw.detach(), probabilities=probs, extras=extras)

    def _filled(self, model: Model, images: torch.Tensor, wrapped: nn.Module) -> dict[str, Any]:
        """The library arguments we fill: baselines, masks, windows and the budget knobs."""
        o, attr, call = self.ours, self._attr, {}
        if "baselines" in attr:
            pre = model.preprocessing
            if o["baseline"] == "distribution":
                call["baselines"] = baseline_distribution(images, pre, float(o["blur_sigma"]))
            else:
                call["baselines"] = baseline_batch(images, pre, str(o["baseline"]), float(o["blur_sigma"]))
        if "feature_mask" in attr:
            if o["segments"] == "slic":
                call["feature_mask"] = slic_mask(images, model.preprocessing, int(o["n_segments"]),
                                                 float(o["compactness"]))  # fmt: skip
            else:
                call["feature_mask"] = grid_mask(images, int(o["grid"]))
        if "sliding_window_shapes" in attr:
            c, h, w = (int(s) for s in images.shape[1:])
            win = (c, max(1, h // int(o["grid"])), max(1, w // int(o["grid"])))
            call["sliding_window_shapes"], call["strides"] = win, win
        if "layer_mask" in attr:
            call["layer_mask"] = _position_mask(wrapped, layer_of(model, o.get("layer")), images[:1])
        for knob in ("n_steps", "n_samples", "internal_batch_size", "perturbations_per_eval"):
            if knob in o:
                call[knob] = o[knob]
        return call


def _one_film(call: dict[str, Any], i: int, n: int) -> dict[str, Any]:
    """The arguments of :meth:`CaptumAdapter.attribute`'s call for film ``i`` alone: every per-film tensor (first
    axis the batch of ``n``) sliced to that film; the rest (budgets, shared tensors) unchanged."""
    return {k: v[i : i + 1] if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape[0] == n and n > 1 else v
            for k, v in call.items()}  # fmt: skip


def _position_mask(wrapped: nn.Module, layer: nn.Module, one: torch.Tensor) -> torch.Tensor:
    """``(1, 1, h, w)`` ids, one per spatial position of ``layer``'s output (ablating a position ablates all its
    channels: h x w forward passes instead of C x h x w)."""
    shape: list[int] = []
    handle = layer.register_forward_hook(lambda _m, _a, out: shape.extend(out.shape))
    try:
        with torch.no_grad():
            wrapped(one)
    finally:
        handle.remove()
    if len(shape) != 4:
        raise PluginError(f"layer output of shape {tuple(shape)} has no spatial grid")
    h, w = shape[2], shape[3]
    return torch.arange(h * w, device=one.device).reshape(1, 1, h, w)


def _why_unsupported(name: str, cls: type) -> str | None:
    ca = _captum()
    if name in UNSUPPORTED:
        return UNSUPPORTED[name]
    if issubclass(cls, ca.NeuronAttribution):
        return "neuron-level: explains one unit of a layer, not the model's logit"
    llm = getattr(ca, "LLMAttribution", None), getattr(ca, "LLMGradientAttribution", None)
    if "LLM" in name or any(b is not None and issubclass(cls, b) for b in llm):
        return "for generative language models (token attributions), not image classifiers"
    kinds = tuple(getattr(ca, n) for n in ("GradientAttribution", "PerturbationAttribution", "LayerAttribution"))
    if not issubclass(cls, kinds):
        return "not a gradient, perturbation or layer attribution: no known way to call it on one film"
    lib: Any = cls
    ctor, attr = _params(lib.__init__), _params(lib.attribute)
    for where, sig, fillable in (("constructor", ctor, {"forward_func", "model", "layer"}),
                                 ("attribute()", attr, {"inputs", "baselines", "sliding_window_shapes"})):  # fmt: skip
        required = [k for k, p in sig.items() if k != "self" and p.default is inspect.Parameter.empty
                    and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and k not in fillable]  # fmt: skip
        if required:
            return f"its {where} needs {', '.join(required)}, which this adapter cannot fill"
    return None


def _is_method_class(cls: Any) -> bool:
    ca = _captum()
    return (
        inspect.isclass(cls)
        and issubclass(cls, ca.Attribution)
        and cls.__module__ != "captum.attr._utils.attribution"  # the abstract bases
    )


def adapter_for(name: str, cls: type) -> type[CaptumAdapter]:
    """The explainer class ``captum:<name>`` adapting captum's ``cls``."""
    lib: Any = cls
    layer = issubclass(cls, _captum().LayerAttribution) or "layer" in _params(lib.__init__)
    doc = (inspect.getdoc(cls) or "").strip().split("\n\n")[0].replace("\n", " ")
    kind = "layer attribution, upsampled" if layer else "input attribution"
    summary = doc[:140] + ("..." if len(doc) > 140 else "")
    if name in CLASS_AGNOSTIC:
        summary += " Class-agnostic: the map ignores the target."
    gradients = not issubclass(cls, _captum().PerturbationAttribution)
    return type(
        f"Captum{name}",
        (CaptumAdapter,),
        {
            "name": f"captum:{name}",
            "description": f"captum {name} ({kind}): {summary}" if summary else f"captum {name} ({kind})",
            "tags": Tags(needs_gradients=gradients, needs_target_layer=layer, deterministic=True),
            "library_class": cls,
            "__module__": __name__,
            "__doc__": f"captum.attr.{name} behind the xray-xai contract (see the module doc).",
        },
    )


def _discovered() -> Iterator[tuple[str, type]]:
    for name, obj in sorted(vars(_captum()).items()):
        if not name.startswith("_") and _is_method_class(obj):
            yield name, obj


def members() -> list[FamilyMember]:
    """Every attribution class of the installed ``captum.attr``: an adapter, or unsupported with its reason."""
    out = []
    for name, cls in _discovered():
        reason = _why_unsupported(name, cls)
        if reason is not None:
            out.append(FamilyMember(name, unsupported=reason))
        else:
            out.append(FamilyMember(name, loader=lambda n=name, c=cls: adapter_for(n, c)))  # type: ignore[misc]
    return out
