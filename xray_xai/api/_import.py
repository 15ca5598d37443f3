"""Models from elsewhere: :func:`import_model` (``xray-xai import``) into the store, :func:`wrap_model` in memory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.models.importing import ImportResult
    from xray_xai.sdk.interfaces import Model, Preprocessing

__all__ = ["IMPORT_OUTPUTS", "import_model", "preprocessing", "wrap_model"]

#: the output conventions ``import_model`` and ``wrap_model`` accept (see :mod:`xray_xai.sdk.wrapped`)
IMPORT_OUTPUTS: tuple[str, ...] = ("logit", "probability", "softmax", "softmax-probability")


def preprocessing(
    *,
    input_size: int | None = None,
    mode: str | None = None,
    resize: int | None = None,
    crop: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    normalize: str | None = None,
    channels: int | None = None,
    eight_bit: bool | None = None,
    exif_orientation: bool | None = None,
) -> Preprocessing:
    """How films become a model's input, from the import options (default: 224 px resize, ImageNet mean/std, a grey
    film repeated on 3 channels, films as torchvision's PIL transforms see them: 8-bit resizing, EXIF orientation
    ignored). torchvision equivalents:
    ``Resize((S, S))`` = ``mode="resize", input_size=S``; ``Resize(R) + CenterCrop(S)`` = ``mode="center-crop",
    resize=R, input_size=S``; ``Normalize(m, s)`` = ``mean=m, std=s``."""
    from xray_xai.models.importing import make_preprocessing

    return make_preprocessing(
        input_size=input_size, mode=mode, resize=resize, crop=crop, mean=mean, std=std, normalize=normalize,
        channels=channels, eight_bit=eight_bit, exif_orientation=exif_orientation,
    )  # fmt: skip


def import_model(
    weights: str | Path,
    arch: str,
    name: str,
    *,
    arch_options: Mapping[str, Any] | None = None,
    output: str = "logit",
    positive_index: int = 1,
    num_classes: int | None = None,
    preprocessing: Preprocessing | None = None,
    target_layer: str | None = None,
    trained_on: str | None = None,
    out_dir: str | Path | None = None,
) -> ImportResult:
    """Turn an outside weights file into a store checkpoint named ``name`` that every command accepts.

    ``arch``: ``timm:<model>``, ``torchvision:<model>`` or a registered model plugin. ``weights``: ``.safetensors``
    or a ``.pt``/``.pth``/``.bin``/``.ckpt`` state dict (read with ``torch.load(weights_only=True)``; a pickled whole
    model is refused unexecuted). ``preprocessing``: from :func:`preprocessing` (default: 224 px resize, ImageNet
    statistics). ``out_dir``: write the checkpoint there instead of the store. See :mod:`xray_xai.models.importing`.
    """
    from xray_xai.models.importing import import_model as _import

    return _import(
        weights, arch, name, arch_options=arch_options, output=output, positive_index=positive_index,
        num_classes=num_classes, preprocessing=preprocessing, target_layer=target_layer, trained_on=trained_on,
        out_dir=out_dir,
    )  # fmt: skip


def wrap_model(
    module: Any,
    *,
    preprocessing: Preprocessing | None = None,
    output: str = "logit",
    positive_index: int = 1,
    target_layer: str | None = None,
    name: str | None = None,
) -> Model:
    """Any torch ``nn.Module`` classifier as a model that every explainer, the audit, clustering and the web app
    accept, without the store. ``output``: ``"logit"``, ``"probability"`` (a sigmoid inside ``forward``),
    ``"softmax"`` (class scores; ``positive_index`` is the abnormal class) or ``"softmax-probability"``;
    ``target_layer``: the module for CAM methods (found automatically where the network has feature maps). The
    module is used as it is (put in eval mode; in-place activations switched off)."""
    from xray_xai.models.importing import wrap

    return wrap(
        module, name=name, preprocessing=preprocessing, output=output, positive_index=positive_index,
        target_layer=target_layer,
    )  # fmt: skip
