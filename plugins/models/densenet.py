"""DenseNet-169 with one logit in three fine-tuning regimes (the published MURA baseline), and DenseNet-201.

torchvision's ``DenseNet.forward`` applies ``F.relu(inplace=True)`` to the last feature map, which breaks Grad-CAM's
hooks (pytorch-grad-cam issue #147). Here the trunk is rebuilt as ``backbone = Sequential(<torchvision's ``features``
children, names kept>, relu5=ReLU())`` with every ReLU non-in-place, so:

* ``target_layer = "backbone.relu5"``: output is the post-ReLU 1664 x h x w map (1920 for DenseNet-201), exactly what
  global average pooling turns into the feature vector (``backbone.norm5`` would be the pre-ReLU map);
* ``feature_layer = "head"``: output is the vector entering ``classifier`` (the pooled 1664-vector when
  ``hidden=()``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar

from torch import nn

from xray_xai.sdk import BackboneModel, Preprocessing, Tags

__all__ = ["DenseNet201", "DenseNetDense32", "DenseNetFull", "DenseNetLinear"]

#: the published MURA recipe: centre crop 312, resize 224, ImageNet statistics on 3 channels
DENSENET_MURA = Preprocessing(name="densenet-mura", input_size=224, mode="center-crop", crop=312, channels=3)

_TAGS = Tags(differentiable=True, has_linear_head=True, has_target_layer=True, pretrained_available=True)


class _DenseNet(BackboneModel):
    tags: ClassVar[Tags] = _TAGS
    default_preprocessing: ClassVar[Preprocessing] = DENSENET_MURA
    target_layer = "backbone.relu5"
    arch: ClassVar[str] = "densenet169"
    weights_enum: ClassVar[str] = "DenseNet169_Weights"

    def __init__(self, *, pretrained: bool = False, **options: Any) -> None:
        super().__init__(pretrained=pretrained, **options)
        import torchvision.models as tvm

        net = getattr(tvm, self.arch)(weights=None)
        if pretrained:
            from xray_xai.sdk import load_torchvision_weights

            net.load_state_dict(load_torchvision_weights(getattr(tvm, self.weights_enum).IMAGENET1K_V1))
        channels = net.classifier.in_features
        self.backbone = nn.Sequential(OrderedDict([*net.features.named_children(), ("relu5", nn.ReLU())]))
        self._finish(channels)


class DenseNetLinear(_DenseNet):
    """DenseNet-169, only the final linear layer (and any hidden head layers) trained."""

    name = "densenet-linear"
    description = "DenseNet-169 (ImageNet init possible), only the classifier trained"
    trainable_prefixes = ("head.", "classifier.")


class DenseNetDense32(_DenseNet):
    """DenseNet-169, the last dense layer of dense block 3 and the classifier trained."""

    name = "densenet-dense32"
    description = "DenseNet-169, last dense layer of block 3 (denselayer32) + classifier trained"
    trainable_prefixes = ("backbone.denseblock3.denselayer32.", "head.", "classifier.")


class DenseNetFull(_DenseNet):
    """DenseNet-169, every parameter trained (the MURA paper's setting)."""

    name = "densenet-full"
    description = "DenseNet-169, all layers trained (MURA baseline)"


class DenseNet201(_DenseNet):
    """DenseNet-201, every parameter trained."""

    name = "densenet201"
    description = "DenseNet-201, all layers trained"
    arch = "densenet201"
    weights_enum = "DenseNet201_Weights"
    default_preprocessing = Preprocessing(name="resize-224-imagenet", input_size=224, mode="resize")
