"""Xception and MobileNet-V1 through timm, with one logit.

* ``xception`` is timm's ``legacy_xception``: Chollet's original Xception (the Keras ImageNet weights ported by
  Cadene), unlike timm's ``xception41/65/71`` which are the deeper DeepLab variants. Input 299 px, mean/std 0.5.
  ``target_layer = "backbone.act4"``: the post-ReLU 2048 x h x w map after the last separable conv.
* ``mobilenet-v1`` is timm's ``mobilenetv1_100`` (Howard et al. 2017, width 1.0: the MobileNet of Keras and of
  the published MURA ensemble ``ensemble200``). It takes ImageNet-normalised input, like ``densenet201`` and
  ``nasnet-mobile``, so that the three share one preprocessing in ``ensemble200``; timm's ImageNet weights were
  trained on input normalised with mean = std = 0.5, so the model first maps its input to that scale (a fixed
  affine map, exact, no weights). ``target_layer = "backbone.blocks.4.1.bn2"``: the last depthwise-separable
  block's BatchNorm + ReLU6, the 1024 x h x w map that is pooled (timm's ``conv_head`` and ``bn2`` are identities
  for this model).

``nasnet-mobile`` (timm has only NASNet-A Large) is our own implementation in :mod:`.nasnet`; ``NasNetMobile`` is
imported here too because installs made before it moved point their entry point at this module.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from xray_xai.errors import PluginError
from xray_xai.sdk import BackboneModel, Preprocessing, Tags

from .nasnet import NasNetMobile

__all__ = ["MobileNetV1", "NasNetMobile", "TimmModel", "Xception"]

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


class MobileNetV1(TimmModel):
    """MobileNet-V1, width 1.0 (timm ``mobilenetv1_100``), every parameter trained; ImageNet-normalised input."""

    name = "mobilenet-v1"
    description = "MobileNet-V1 1.0 (timm mobilenetv1_100), all layers trained"
    arch = "mobilenetv1_100"
    default_preprocessing: ClassVar[Preprocessing] = Preprocessing(
        name="resize-224-imagenet", input_size=224, mode="resize"
    )
    target_layer = "backbone.blocks.4.1.bn2"
    pretrained_source = "timm mobilenetv1_100.ra4_e3600_r224_in1k (Hugging Face timm/mobilenetv1_100...)"

    def __init__(self, *, pretrained: bool = False, **options: Any) -> None:
        super().__init__(pretrained=pretrained, **options)
        pre = self.preprocessing
        # ImageNet-normalised x -> (pixel - 0.5) / 0.5, the scale timm's weights were trained on: x * a + b
        mean = torch.tensor(pre.mean if pre.normalize == "imagenet" else (0.5,) * pre.channels)
        std = torch.tensor(pre.std if pre.normalize == "imagenet" else (0.5,) * pre.channels)
        self.register_buffer("input_scale", (std / 0.5).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_shift", ((mean - 0.5) / 0.5).view(1, -1, 1, 1), persistent=False)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x * self.input_scale + self.input_shift)  # type: ignore[operator]
