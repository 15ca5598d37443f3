"""Xception (and a NASNet-Mobile placeholder) through timm, with one logit.

* ``xception`` is timm's ``legacy_xception``: Chollet's original Xception (the Keras ImageNet weights ported by
  Cadene), unlike timm's ``xception41/65/71`` which are the deeper DeepLab variants. Input 299 px, mean/std 0.5.
  ``target_layer = "backbone.act4"``: the post-ReLU 2048 x h x w map after the last separable conv.
* ``nasnet-mobile``: timm (checked with 1.0) ships only NASNet-A *Large* (``nasnetalarge``), whose cell count is
  fixed; there is no NASNet-Mobile. The plugin is registered so that it is listed, and raises
  :class:`~xray_xai.errors.PluginError` when constructed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from xray_xai.errors import PluginError
from xray_xai.sdk import BackboneModel, Preprocessing, Tags

__all__ = ["NasNetMobile", "TimmModel", "Xception"]

_TAGS = Tags(differentiable=True, has_linear_head=True, has_target_layer=True, pretrained_available=True)


class TimmModel(BackboneModel):
    """A timm classifier's trunk (``forward_features``) under our pool, head and one-logit classifier."""

    tags: ClassVar[Tags] = _TAGS
    arch: ClassVar[str] = ""
    #: extra keyword arguments for ``timm.create_model``
    timm_kwargs: ClassVar[dict[str, Any]] = {}

    def __init__(self, *, pretrained: bool = False, **options: Any) -> None:
        super().__init__(pretrained=pretrained, **options)
        import timm

        if self.arch not in timm.list_models(self.arch):
            raise PluginError(f"model {self.name!r} needs timm architecture {self.arch!r}, which timm lacks")
        net = timm.create_model(self.arch, pretrained=False, num_classes=0, **self.timm_kwargs)
        if pretrained:
            net.load_state_dict(self._pretrained_state(net), strict=True)
        self.backbone = net
        self._finish(int(net.num_features))  # type: ignore[arg-type]

    def _pretrained_state(self, net: torch.nn.Module) -> dict[str, torch.Tensor]:
        """ImageNet weights for ``net`` (the ImageNet classifier dropped); from the local hub cache only."""
        from xray_xai.sdk import load_timm_weights

        own = net.state_dict()
        return {k: v for k, v in load_timm_weights(self.arch).items() if k in own}

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)  # type: ignore[operator]


class Xception(TimmModel):
    """Xception (timm ``legacy_xception``), every parameter trained."""

    name = "xception"
    description = "Xception (timm legacy_xception, 299 px), all layers trained"
    arch = "legacy_xception"
    default_preprocessing: ClassVar[Preprocessing] = Preprocessing(
        name="resize-299-inception", input_size=299, mode="resize", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    )
    target_layer = "backbone.act4"
    pretrained_source = "timm legacy_xception.tf_in1k (xception-43020ad28.pth)"


class NasNetMobile(TimmModel):
    """NASNet-Mobile: not available (timm has only NASNet-A Large); construction raises PluginError."""

    name = "nasnet-mobile"
    description = "NASNet-Mobile - unavailable: timm ships only nasnetalarge"
    arch = "nasnetamobile"
    tags: ClassVar[Tags] = Tags(differentiable=True, has_linear_head=True, has_target_layer=True)
    target_layer = "backbone.act_final"

    def __init__(self, **options: Any) -> None:
        import timm

        if self.arch not in timm.list_models(self.arch):
            raise PluginError(
                f"model 'nasnet-mobile' is not available: timm {timm.__version__} has no NASNet-Mobile "
                "(only 'nasnetalarge'); use 'mobilenet-v2' or 'efficientnet-lite0' instead"
            )
        super().__init__(**options)  # pragma: no cover - only with a timm that has it
