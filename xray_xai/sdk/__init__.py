"""What a plugin author imports, for every kind: ``from xray_xai.sdk import ...``.

* contracts and the data between them: :class:`Model`, :class:`Explainer`, :class:`Clusterer`,
  :class:`DatasetPlugin`, :class:`Tags`, :class:`Preprocessing`, :class:`Record`, :class:`Explanation`,
  :class:`Problem`, :class:`Box` (from :mod:`xray_xai.sdk.interfaces`);
* torch models: :class:`TorchModel` (one logit, features, named layers) and :class:`BackboneModel` (trunk -> pool
  -> optional MLP -> one logit, with fine-tuning regimes); ImageNet weights from the local cache only
  (:func:`load_torchvision_weights`, :func:`load_timm_weights`, :func:`load_url_weights`);
* torch explainers: :class:`TorchExplainer` (override :meth:`~TorchExplainer.attribute`, return an
  :class:`Attribution`), :class:`StageCAM` (override ``layer_maps``), and the layer helpers
  (:func:`capture_activation`, :func:`find_layer`, :func:`resolve_layer`, :func:`stage_layers`,
  :func:`layers_at_strides`, :func:`capture_layers`, :func:`activations_and_gradients_at`, :func:`logits_of`...).

The contracts are imported here directly (they import nothing heavy); every torch- or numpy-dependent name is loaded
on first use (module ``__getattr__``), so ``import xray_xai.sdk`` and the registry never import torch and
``xray-xai --help`` / ``xray-xai plugins`` stay fast. The registry itself is :mod:`xray_xai.sdk.registry`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from xray_xai.sdk.interfaces import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    REGIONS,
    Box,
    Clusterer,
    DatasetPlugin,
    Explainer,
    Explanation,
    Model,
    Plugin,
    Preprocessing,
    Problem,
    Record,
    Tags,
)

if TYPE_CHECKING:  # pragma: no cover - what the lazy names are, for type checkers
    from xray_xai.sdk.backbone import BackboneModel, build_head, disable_inplace, init_linear
    from xray_xai.sdk.explainer import (
        TARGETS,
        Attribution,
        TorchExplainer,
        capture_activation,
        count_hooks,
        eval_mode,
        film_from_tensor,
        find_layer,
        frozen_parameters,
        fuse_member_maps,
        logits_of,
        normalize_maps,
        resize_maps,
        score_sign,
        seeded,
    )
    from xray_xai.sdk.layers import (
        activations_and_gradients_at,
        capture_layers,
        layers_at_strides,
        parse_layers,
        resolve_layer,
        stage_layers,
    )
    from xray_xai.sdk.pretrained import checkpoints_dir, load_timm_weights, load_torchvision_weights, load_url_weights
    from xray_xai.sdk.stage_cam import FUSIONS, StageCAM, fuse_maps, gaussian_blur, parse_scales, parse_strides
    from xray_xai.sdk.torch_model import TorchModel

#: lazily loaded name -> the submodule that defines it
_LAZY: dict[str, str] = {
    **dict.fromkeys(("TorchModel",), "torch_model"),
    **dict.fromkeys(("BackboneModel", "build_head", "disable_inplace", "init_linear"), "backbone"),
    **dict.fromkeys(
        (
            "TARGETS",
            "Attribution",
            "TorchExplainer",
            "capture_activation",
            "count_hooks",
            "eval_mode",
            "film_from_tensor",
            "find_layer",
            "frozen_parameters",
            "fuse_member_maps",
            "logits_of",
            "normalize_maps",
            "resize_maps",
            "score_sign",
            "seeded",
        ),
        "explainer",
    ),
    **dict.fromkeys(
        (
            "activations_and_gradients_at",
            "capture_layers",
            "layers_at_strides",
            "parse_layers",
            "resolve_layer",
            "stage_layers",
        ),
        "layers",
    ),
    **dict.fromkeys(
        ("FUSIONS", "StageCAM", "fuse_maps", "gaussian_blur", "parse_scales", "parse_strides"), "stage_cam"
    ),
    **dict.fromkeys(
        ("checkpoints_dir", "load_timm_weights", "load_torchvision_weights", "load_url_weights"), "pretrained"
    ),
}

__all__ = [
    "FUSIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REGIONS",
    "TARGETS",
    "Attribution",
    "BackboneModel",
    "Box",
    "Clusterer",
    "DatasetPlugin",
    "Explainer",
    "Explanation",
    "Model",
    "Plugin",
    "Preprocessing",
    "Problem",
    "Record",
    "StageCAM",
    "Tags",
    "TorchExplainer",
    "TorchModel",
    "activations_and_gradients_at",
    "build_head",
    "capture_activation",
    "capture_layers",
    "checkpoints_dir",
    "count_hooks",
    "disable_inplace",
    "eval_mode",
    "film_from_tensor",
    "find_layer",
    "frozen_parameters",
    "fuse_maps",
    "fuse_member_maps",
    "gaussian_blur",
    "init_linear",
    "layers_at_strides",
    "load_timm_weights",
    "load_torchvision_weights",
    "load_url_weights",
    "logits_of",
    "normalize_maps",
    "parse_layers",
    "parse_scales",
    "parse_strides",
    "resize_maps",
    "resolve_layer",
    "score_sign",
    "seeded",
    "stage_layers",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
