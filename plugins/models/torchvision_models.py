"""ResNet-50 and MobileNet-V2 from torchvision with one logit, all layers trained.

Target layers (post-activation maps that global average pooling turns into the features):

* ``resnet50``: ``target_layer = "backbone.layer4"`` (2048 x h x w, after the last bottleneck's ReLU);
* ``mobilenet-v2``: ``target_layer = "backbone.18"`` (1280 x h x w, the last 1x1 conv + BN + ReLU6).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar

from torch import nn

from xray_xai.sdk import BackboneModel, Preprocessing, Tags

__all__ = ["MobileNetV2", "ResNet50"]

_RESIZE_224 = Preprocessing(name="resize-224-imagenet", input_size=224, mode="resize")
_TAGS = Tags(differentiable=True, has_linear_head=True, has_target_layer=True, pretrained_available=True)


class ResNet50(BackboneModel):
    """ResNet-50 (torchvision), every parameter trained."""

    name = "resnet50"
    description = "ResNet-50 (torchvision), all layers trained"
    tags: ClassVar[Tags] = _TAGS
    default_preprocessing: ClassVar[Preprocessing] = _RESIZE_224
    target_layer = "backbone.layer4"
    pretrained_source = "torchvision ResNet50_Weights.IMAGENET1K_V2"

    def __init__(self, *, pretrained: bool = False, **options: Any) -> None:
        super().__init__(pretrained=pretrained, **options)
        import torchvision.models as tvm

        net = tvm.resnet50(weights=None)
        if pretrained:
            from xray_xai.sdk import load_torchvision_weights

            net.load_state_dict(load_torchvision_weights(tvm.ResNet50_Weights.IMAGENET1K_V2))
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
        self.backbone = nn.Sequential(OrderedDict((n, getattr(net, n)) for n in names))
        self._finish(net.fc.in_features)


class MobileNetV2(BackboneModel):
    """MobileNet-V2 (torchvision), every parameter trained."""

    name = "mobilenet-v2"
    description = "MobileNet-V2 (torchvision), all layers trained"
    tags: ClassVar[Tags] = _TAGS
    default_preprocessing: ClassVar[Preprocessing] = _RESIZE_224
    target_layer = "backbone.18"
    pretrained_source = "torchvision MobileNet_V2_Weights.IMAGENET1K_V1"

    def __init__(self, *, pretrained: bool = False, **options: Any) -> None:
        super().__init__(pretrained=pretrained, **options)
        import torchvision.models as tvm

        net = tvm.mobilenet_v2(weights=None)
        if pretrained:
            from xray_xai.sdk import load_torchvision_weights

            net.load_state_dict(load_torchvision_weights(tvm.MobileNet_V2_Weights.IMAGENET1K_V1))
        self.backbone = net.features
        self._finish(net.last_channel)
