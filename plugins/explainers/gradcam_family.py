"""Every CAM method of the installed pytorch-grad-cam, as explainers named ``grad-cam:<ClassName>``.

:func:`members` (the ``grad-cam`` entry point of the ``xray_xai.explainer_families`` group) walks the
``pytorch_grad_cam`` namespace at run time: every subclass of ``BaseCAM`` (FullGrad, ScoreCAM, EigenCAM... and any
added by a later release) is adapted by :class:`GradCamAdapter`; the other public classes that compute maps are
listed as unsupported with the reason (:data:`UNSUPPORTED`); helpers (hooks, ablation layers) are not listed.

The adapter maps our contract onto the library's: the model is wrapped by
:class:`~xray_xai_plugins.explainers.adapters.SignedLogit` (``(B, 1)`` output, the logit or its negation) and
``ClassifierOutputTarget(0)`` selects it; ``target_layers`` is the model's target layer (or ``layer=``). The
input is a copy that requires grad, because parameters stay frozen and the library's gradient hooks need a graph.
Every hook the library registers is released when the call returns or raises. Extra keywords of a class's
constructor or call (``-p grad-cam:AblationCAM.ratio_channels_to_ablate=0.1``, ``aug_smooth``, ``eigen_smooth``)
pass through. The library scales each map to [0, 1] and resizes it to the input itself, so ``raw`` is that map.
Methods whose map ignores the target (EigenCAM and relatives, RandomCAM) say so in their description: for
"normal" they return the same map as for "abnormal". RandomCAM draws from numpy's global generator; the adapter
seeds it from ``seed`` and restores its state afterwards. A BaseCAM subclass in :data:`UNSUPPORTED` (ShapleyCAM)
is listed with its reason instead of adapted.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from xray_xai_plugins.explainers.adapters import SignedLogit, layer_of, numpy_seeded, split_options

from xray_xai.errors import PluginError
from xray_xai.sdk import Attribution, Model, Tags, TorchExplainer
from xray_xai.sdk.registry import FamilyMember

__all__ = ["CLASS_AGNOSTIC", "UNSUPPORTED", "GradCamAdapter", "adapter_for", "members"]

#: listed, not offered: class name -> why
UNSUPPORTED: dict[str, str] = {
    "FinerCAM": "contrasts the target class with similar classes; a one-logit model has no other class",
    "RefineCAM": "a wrapper that refines another CAM (base_method); use that method",
    "SESS": "a wrapper that tiles and rescales the film around another CAM (base_method); use that method",
    "DeepFeatureFactorization": "factorises activations into concepts (several maps per film), not one map",
    "GuidedBackpropReLUModel": "guided backprop by replacing the model's ReLUs; use captum:GuidedBackprop",
    "ShapleyCAM": "differentiates the gradient again through the weights' graph, which frozen parameters do not "
    "record; on piecewise-linear heads its second-order term is zero and it equals GradCAM",
}
#: methods whose map does not depend on the explained target (noted in their description)
CLASS_AGNOSTIC = {"EigenCAM", "KPCA_CAM", "SegEigenCAM", "RandomCAM", "FEM"}
#: classes exported for other purposes (hooks, layers used by AblationCAM): not listed
_HELPERS = {"ActivationsAndGradients"}


def _library() -> Any:
    import pytorch_grad_cam

    return pytorch_grad_cam


def _base_cam() -> type:
    from pytorch_grad_cam.base_cam import BaseCAM

    return BaseCAM


class GradCamAdapter(TorchExplainer):
    """One pytorch-grad-cam class behind our contract (see the module doc); subclasses set ``library_class``."""

    name = ""
    description = ""
    tags = Tags(needs_gradients=True, needs_target_layer=True, deterministic=True, supports_batch=True)
    library_class: type | None = None

    def __init__(self, *, layer: str | None = None, seed: int | None = 0, **options: Any) -> None:
        cls = self.library_class
        if cls is None:
            raise PluginError("GradCamAdapter is a base; use a grad-cam:<Method> explainer")
        lib: Any = cls
        ctor = [k for k in inspect.signature(lib.__init__).parameters if k not in ("self", "model", "target_layers")]
        call = [k for k in inspect.signature(lib.__call__).parameters if k not in ("self", "input_tensor", "targets")]
        _, theirs = split_options(dict(options), {}, [k for k in ctor if k != "reshape_transform"], call,
                                  method=self.name)  # fmt: skip
        super().__init__(layer=layer, seed=seed, **theirs)
        self.layer = layer
        self._ctor = {k: v for k, v in theirs.items() if k in ctor}
        self._call = {k: v for k, v in theirs.items() if k in call}

    def check_model(self, model: Model) -> None:
        super().check_model(model)
        layer_of(model, self.layer)

    def attribute(self, model: Model, images: torch.Tensor, sign: float) -> Attribution:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls = self.library_class
        assert cls is not None
        wrapped = SignedLogit(model, sign)
        cam = cls(model=wrapped, target_layers=[layer_of(model, self.layer)], **self._ctor)
        try:
            x = images.clone().requires_grad_(True)
            with numpy_seeded(self.seed), torch.enable_grad():
                maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(0)] * len(images), **self._call)
        finally:
            cam.activations_and_grads.release()
        with torch.no_grad():
            probs = torch.sigmoid(sign * wrapped(images)[:, 0])
        raw = torch.as_tensor(np.asarray(maps, dtype=np.float32))
        return Attribution(raw=raw, probabilities=probs)


def adapter_for(name: str, cls: type) -> type[GradCamAdapter]:
    """The explainer class ``grad-cam:<name>`` adapting ``cls`` (a ``BaseCAM`` subclass)."""
    doc = (inspect.getdoc(cls) or "").strip().split("\n\n")[0].replace("\n", " ")
    agnostic = " Class-agnostic: the map ignores the target." if name in CLASS_AGNOSTIC else ""
    uses_gradients = bool(getattr(cls, "uses_gradients", True))
    return type(
        f"GradCam{name}",
        (GradCamAdapter,),
        {
            "name": f"grad-cam:{name}",
            "description": f"pytorch-grad-cam {name} on the target layer{': ' + doc[:120] if doc else ''}.{agnostic}",
            "tags": Tags(needs_gradients=uses_gradients, needs_target_layer=True, deterministic=True),
            "library_class": cls,
            "__module__": __name__,
            "__doc__": f"pytorch_grad_cam.{name} behind the xray-xai contract (see the module doc).",
        },
    )


def _discovered() -> Iterator[tuple[str, type]]:
    base = _base_cam()
    for name, obj in sorted(vars(_library()).items()):
        if name.startswith("_") or not inspect.isclass(obj) or obj is base or name in _HELPERS:
            continue
        if issubclass(obj, torch.nn.Module):  # ablation layers and other building blocks
            continue
        yield name, obj


def members() -> list[FamilyMember]:
    """Every CAM class of the installed pytorch-grad-cam: an adapter, or unsupported with its reason."""
    base = _base_cam()
    out = []
    for name, cls in _discovered():
        if issubclass(cls, base) and name not in UNSUPPORTED:
            out.append(FamilyMember(name, loader=lambda n=name, c=cls: adapter_for(n, c)))  # type: ignore[misc]
        else:
            reason = UNSUPPORTED.get(name, "not a BaseCAM subclass: its call does not follow the CAM signature")
            out.append(FamilyMember(name, unsupported=reason))
    return out
