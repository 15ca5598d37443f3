"""Small CNNs trained from scratch on grey-level films (no ImageNet weights exist for them).

* ``convnet``: VGG-style, 7 pairs of 3x3 conv (16-32-64-128-256-512-1024 filters, BatchNorm + ReLU after each conv),
  each pair followed by 2x2 max-pooling (``ceil_mode=True``, so any input of at least 1 px works; maps stop shrinking
  at 1 x 1), then global average pooling and FC 512 -> FC 256 -> logit (``hidden=(512, 256)`` by default).
  ``target_layer = "backbone.pool7"``: the 1024-channel map after the last pooling (2 x 2 at 224 px: coarse).
* ``cnn-small``: 3 conv layers (32/64/128, 3x3, ReLU, 2x2 max-pooling), global average pooling, FC 64 -> FC 128 with
  dropout -> logit (``hidden=(64, 128)``). ``target_layer = "backbone.pool3"`` (128 channels, 1/8 of the input).

Both default to ``hidden`` layers, so CAM does not apply unless built with ``hidden=()``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar

from torch import nn

from xray_xai.sdk import BackboneModel, Preprocessing, Tags

__all__ = ["CnnSmall", "ConvNet"]

_TAGS = Tags(differentiable=True, has_linear_head=True, has_target_layer=True, pretrained_available=False)


def _conv(cin: int, cout: int, bn: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU())
    return layers


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ConvNet(BackboneModel):
    """VGG-style 14-conv network with BatchNorm, trained from scratch."""

    name = "convnet"
    description = "VGG-style CNN, 14 conv layers (16..1024 filters) + FC 512/256, from scratch"
    tags: ClassVar[Tags] = _TAGS
    default_hidden: ClassVar[tuple[int, ...]] = (512, 256)
    default_preprocessing: ClassVar[Preprocessing] = Preprocessing(
        name="resize-224-gray-minmax", input_size=224, mode="resize", channels=1, normalize="minmax"
    )
    target_layer = "backbone.pool7"
    widths: ClassVar[tuple[int, ...]] = (16, 32, 64, 128, 256, 512, 1024)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        layers: list[tuple[str, nn.Module]] = []
        cin = self.preprocessing.channels
        for i, width in enumerate(self.widths, start=1):
            block = nn.Sequential(*_conv(cin, width, True), *_conv(width, width, True))
            layers += [(f"block{i}", block), (f"pool{i}", nn.MaxPool2d(2, ceil_mode=True))]
            cin = width
        self.backbone = nn.Sequential(OrderedDict(layers))
        _init_convs(self.backbone)
        self._finish(cin)


class CnnSmall(BackboneModel):
    """Three conv layers and two hidden FC layers: a fast baseline from scratch."""

    name = "cnn-small"
    description = "Small CNN (3 conv 32/64/128 + FC 64/128, dropout), from scratch"
    tags: ClassVar[Tags] = _TAGS
    default_hidden: ClassVar[tuple[int, ...]] = (64, 128)
    default_preprocessing: ClassVar[Preprocessing] = Preprocessing(
        name="resize-128-gray-minmax", input_size=128, mode="resize", channels=1, normalize="minmax"
    )
    target_layer = "backbone.pool3"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        layers: list[tuple[str, nn.Module]] = []
        cin = self.preprocessing.channels
        for i, width in enumerate((32, 64, 128), start=1):
            conv = nn.Sequential(*_conv(cin, width, False))
            layers += [(f"conv{i}", conv), (f"pool{i}", nn.MaxPool2d(2, ceil_mode=True))]
            cin = width
        self.backbone = nn.Sequential(OrderedDict(layers))
        _init_convs(self.backbone)
        self._finish(cin)
