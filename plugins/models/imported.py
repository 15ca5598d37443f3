"""``imported``: a timm or torchvision architecture rebuilt, without any weight download, for weights brought in by
``xray-xai import`` (``api.import_model``). Not trained by xray-xai: construct it through the import.

``arch`` is ``timm:<model>`` or ``torchvision:<model>``; the network is built with ``num_classes`` outputs and the
constructor options ``arch_options`` (e.g. ``drop_rate``). Two options are applied after construction to every
BatchNorm layer, because they are not stored in a state dict and many constructors do not take them: ``bn_eps`` and
``bn_momentum``. Everything after the network's last linear layer in the original code (a sigmoid, a softmax) has no
weights and is not rebuilt, so the rebuilt network outputs scores: ``output="probability"`` is read as ``"logit"``
and ``"softmax-probability"`` as ``"softmax"`` (:class:`~xray_xai.sdk.wrapped.WrappedModel` does the rest).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

from xray_xai.errors import PluginError
from xray_xai.sdk.interfaces import Preprocessing, Tags
from xray_xai.sdk.wrapped import WrappedModel

__all__ = ["ARCH_FAMILIES", "ImportedModel", "build_network"]

ARCH_FAMILIES: tuple[str, ...] = ("timm", "torchvision")
#: options applied to every BatchNorm layer after construction (name -> BatchNorm attribute)
_BN_OPTIONS: dict[str, str] = {"bn_eps": "eps", "bn_momentum": "momentum"}
#: output conventions of the original forward -> the convention of the rebuilt network (no activation after it)
_REBUILT_OUTPUT: dict[str, str] = {"probability": "logit", "softmax-probability": "softmax"}


def _unknown(kind: str, model: str, known: list[str]) -> PluginError:
    close = difflib.get_close_matches(model, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return PluginError(f"{kind} has no model {model!r}{hint}")


def build_network(arch: str, num_classes: int, options: Mapping[str, Any] | None = None) -> nn.Module:
    """``timm:<model>`` or ``torchvision:<model>`` with ``num_classes`` outputs and random weights (never fetched)."""
    family, sep, model = arch.partition(":")
    if not sep or family not in ARCH_FAMILIES or not model:
        raise PluginError(f"architecture {arch!r}: expected timm:<model> or torchvision:<model>")
    opts = dict(options or {})
    bn = {attr: opts.pop(key) for key, attr in _BN_OPTIONS.items() if key in opts}
    try:
        if family == "timm":
            import timm

            if not timm.is_model(model):
                raise _unknown("timm", model, timm.list_models())
            net = timm.create_model(model, pretrained=False, num_classes=int(num_classes), **opts)
        else:
            import torchvision.models as tvm

            if model not in tvm.list_models():
                raise _unknown("torchvision", model, tvm.list_models())
            net = tvm.get_model(model, weights=None, num_classes=int(num_classes), **opts)
    except (TypeError, ValueError, AssertionError) as exc:
        raise PluginError(f"architecture {arch!r} refuses options {opts}: {exc}".splitlines()[0]) from None
    for mod in net.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            for attr, value in bn.items():
                setattr(mod, attr, float(value))
    return net


class ImportedModel(WrappedModel):
    """A timm/torchvision network rebuilt from an import's sidecar (see the module docstring)."""

    name = "imported"
    description = "A timm/torchvision classifier imported with `xray-xai import` (not trained by xray-xai)"
    tags: ClassVar[Tags] = Tags(differentiable=True)

    def __init__(
        self,
        *,
        arch: str = "",
        arch_options: Mapping[str, Any] | None = None,
        num_classes: int = 1,
        output: str = "logit",
        positive_index: int = 1,
        target_layer: str | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        image_size: int | None = None,
    ) -> None:
        if not arch:
            raise PluginError(
                "model 'imported' is made by `xray-xai import WEIGHTS --arch timm:<model>|torchvision:<model> "
                "--name NAME`; it cannot be built or trained on its own"
            )
        pre = Preprocessing.from_dict(preprocessing) if preprocessing else self.default_preprocessing
        pre = pre.resized(image_size)
        self.arch = arch
        self.arch_options = dict(arch_options or {})
        self.num_classes = int(num_classes)
        self.declared_output = output
        net = build_network(arch, self.num_classes, self.arch_options)
        super().__init__(
            net,
            preprocessing=pre,
            output=_REBUILT_OUTPUT.get(output, output),
            positive_index=positive_index,
            target_layer=target_layer,
        )

    def config(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "arch_options": dict(self.arch_options),
            "num_classes": self.num_classes,
            "output": self.declared_output,
            "positive_index": self.positive_index,
            "target_layer": self.target_layer.removeprefix("backbone.") or None,
            "preprocessing": self.preprocessing.to_dict(),
        }
