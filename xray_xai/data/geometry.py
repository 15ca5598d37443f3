"""From a decoded film to a model's input tensor: presets as data, one geometry shared by images, masks and boxes.

A :class:`~xray_xai.sdk.interfaces.Preprocessing` travels with a model's weights. Its geometry (centre crop, resize or
letterbox, to ``input_size`` squared) is computed once as a plan (:func:`_plan`) and applied identically to the film
(:func:`geometry`, bilinear), to ground-truth masks (:func:`geometry_mask`, nearest) and to boxes or points
(:func:`geometry_boxes`, :func:`geometry_points`), so that a heatmap at the model's resolution lines up with the
ground truth pixel for pixel. Normalisation is a separate, last step (:func:`to_tensor`); :func:`denormalize` undoes
it for overlays. Augmentation lives in :mod:`xray_xai.data.augment`, reading films into batches in
:mod:`xray_xai.data.loader`.

torch is imported inside the functions so that importing this module (for :data:`PRESETS`) stays cheap.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from xray_xai.errors import XrayXaiError
from xray_xai.sdk.interfaces import Box, Preprocessing, sized_name

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

    from xray_xai.data.augment import Augment

__all__ = [
    "FLIP_DIMS",
    "PRESETS",
    "denormalize",
    "geometry",
    "geometry_boxes",
    "geometry_mask",
    "geometry_points",
    "geometry_to_tensor",
    "preset",
    "to_tensor",
]

#: Test-time flips of a ``(B, C, H, W)`` batch, as ``torch.flip`` dims: the film, its horizontal and its vertical flip.
#: Prediction TTA (:func:`xray_xai.models.evaluation.predict_records`) and map TTA (``layercam``) use the same
#: three views.
FLIP_DIMS: tuple[tuple[int, ...], ...] = ((), (3,), (2,))

#: Named preprocessing recipes. Models declare one of these (possibly at another size, see :func:`preset`).
PRESETS: dict[str, Preprocessing] = {
    # Published DenseNet-169 MURA recipe: centre crop 312 px of the film, resize to 224, ImageNet statistics.
    "densenet-mura": Preprocessing(name="densenet-mura", input_size=224, mode="center-crop", crop=312),
    "resize-224-imagenet": Preprocessing(name="resize-224-imagenet", input_size=224, mode="resize"),
    "resize-256-minmax": Preprocessing(name="resize-256-minmax", input_size=256, mode="resize", normalize="minmax"),
    "letterbox-224": Preprocessing(name="letterbox-224", input_size=224, mode="letterbox"),
}


def preset(name: str, size: int | None = None) -> Preprocessing:
    """The preset ``name``, optionally at another input ``size`` (a centre crop is scaled in proportion).

    The returned object keeps the preset's name; its fields (saved with the weights) say the actual size.
    """
    try:
        pre = PRESETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, PRESETS, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise XrayXaiError(
            f"unknown preprocessing preset {name!r} (known: {', '.join(sorted(PRESETS))}){hint}"
        ) from None
    if size is None or size == pre.input_size:
        return pre
    if size < 1:
        raise XrayXaiError(f"preprocessing input size must be positive, not {size}")
    crop = None if pre.crop is None else max(1, round(pre.crop * size / pre.input_size))
    return replace(pre, name=sized_name(pre.name, pre.input_size, size), input_size=int(size), crop=crop)


# -------------------------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Plan:
    """The film, first resized whole to ``rh x rw`` when those are given (torchvision's ``Resize`` before its
    ``CenterCrop``), then a window of it (rows ``top..top+win_h``, cols ``left..left+win_w``; outside the film =
    black padding) is resized to ``out_h x out_w`` and placed at ``(oy, ox)`` on a black ``size x size`` canvas."""

    top: int
    left: int
    win_h: int
    win_w: int
    out_h: int
    out_w: int
    oy: int
    ox: int
    size: int
    rh: int = 0  #: 0: no resize of the whole film first
    rw: int = 0

    @property
    def sx(self) -> float:
        return self.out_w / self.win_w

    @property
    def sy(self) -> float:
        return self.out_h / self.win_h


def _plan(shape: Sequence[int], pre: Preprocessing) -> _Plan:
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"film shape must be positive, got {tuple(shape)}")
    s = int(pre.input_size)
    if pre.mode == "center-crop" and pre.resize:
        return _resize_then_crop(h, w, int(pre.resize), s)
    if pre.mode == "center-crop":
        c = int(pre.crop) if pre.crop else min(h, w)
        return _Plan((h - c) // 2, (w - c) // 2, c, c, s, s, 0, 0, s)
    if pre.mode == "resize":
        return _Plan(0, 0, h, w, s, s, 0, 0, s)
    if pre.mode == "letterbox":
        scale = s / max(h, w)
        oh, ow = min(s, max(1, round(h * scale))), min(s, max(1, round(w * scale)))
        return _Plan(0, 0, h, w, oh, ow, (s - oh) // 2, (s - ow) // 2, s)
    raise XrayXaiError(f"unknown preprocessing mode {pre.mode!r} in preset {pre.name!r}")


def _resize_then_crop(h: int, w: int, r: int, s: int) -> _Plan:
    """torchvision's ``Resize(r)`` (shorter side to ``r``, the longer ``int(r * long / short)``) then
    ``CenterCrop(s)`` (offsets ``int(round((side - s) / 2))``), with torchvision's own integer arithmetic so that the
    same pixels are kept. We write the two lines of arithmetic ourselves because torchvision is not a dependency of
    the data layer; ``tests/test_import.py`` checks them against torchvision."""
    if r < s:
        raise XrayXaiError(f"preprocessing resize {r} is smaller than the input size {s}: the crop would need padding")
    rh, rw = (int(r * h / w), r) if w <= h else (r, int(r * w / h))
    top, left = round((rh - s) / 2.0), round((rw - s) / 2.0)  # Python 3 round: half to even, as torchvision
    return _Plan(top, left, s, s, s, s, 0, 0, s, rh, rw)


def _window(arr: np.ndarray, p: _Plan) -> np.ndarray:
    """The plan's film window, padded with zeros where it extends beyond the film."""
    h, w = arr.shape
    if p.top == 0 and p.left == 0 and (p.win_h, p.win_w) == (h, w):
        return arr
    out = np.zeros((p.win_h, p.win_w), dtype=arr.dtype)
    y0, x0 = max(0, p.top), max(0, p.left)
    y1, x1 = min(h, p.top + p.win_h), min(w, p.left + p.win_w)
    if y1 > y0 and x1 > x0:
        out[y0 - p.top : y1 - p.top, x0 - p.left : x1 - p.left] = arr[y0:y1, x0:x1]
    return out


def _apply(arr: np.ndarray, p: _Plan, resample: str = "bilinear") -> np.ndarray:
    """Window, resize and place ``arr`` per plan ``p``. ``resample``: "bilinear" (films; PIL adds an antialiasing
    support when shrinking, a few ms for a 1024 px float32 film), "nearest" (masks) or "box" (exact footprint
    average, for "any overlap" masks)."""
    from PIL import Image

    method = {
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
        "box": Image.Resampling.BOX,
    }[resample]
    if p.rh and (p.rh, p.rw) != arr.shape:
        arr = np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize((p.rw, p.rh), method))
    win = _window(arr, p)
    if (p.out_h, p.out_w) != win.shape:
        win = np.asarray(Image.fromarray(np.ascontiguousarray(win)).resize((p.out_w, p.out_h), method))
    if (p.out_h, p.out_w) == (p.size, p.size):
        return np.array(win, copy=True)
    canvas = np.zeros((p.size, p.size), dtype=win.dtype)
    canvas[p.oy : p.oy + p.out_h, p.ox : p.ox + p.out_w] = win
    return canvas


def _as_film(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale film (H, W), got shape {arr.shape}")
    return arr


def geometry(image: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """The film as the model sees it: float32 ``(S, S)`` in [0, 1], cropped/resized/letterboxed, not normalised.

    ``pre.eight_bit``: rounded to 8 bits and resized in PIL's 8-bit mode, then divided by 255 in float32, which is
    what torchvision's ``Resize`` on a PIL image followed by ``ToTensor`` computes."""
    film = _as_film(image)
    plan = _plan(np.shape(image), pre)
    if getattr(pre, "eight_bit", False):
        levels = np.round(np.clip(film, 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.asarray(_apply(levels, plan), dtype=np.float32) / np.float32(255.0)
    out = _apply(film, plan)
    return np.clip(out, 0.0, 1.0, out=out)


def geometry_mask(mask: np.ndarray, pre: Preprocessing, *, any_overlap: bool = False) -> np.ndarray:
    """A mask at the original film size mapped through the same geometry: bool ``(S, S)``.

    Nearest neighbour by default (the usual way to resize ground truth). When shrinking, nearest can miss regions a
    few pixels wide; ``any_overlap=True`` marks every output pixel whose footprint touches the mask instead.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D mask (H, W), got shape {m.shape}")
    p = _plan(m.shape, pre)
    if any_overlap:
        return _apply((m != 0).astype(np.float32), p, "box") > 0
    return _apply((m != 0).astype(np.uint8), p, "nearest") > 0


def geometry_points(
    points: np.ndarray | Sequence[Sequence[float]], original_shape: Sequence[int], pre: Preprocessing
) -> np.ndarray:
    """Map ``(N, 2)`` points ``(x, y)`` in original-film pixel coordinates to model-input coordinates (not clipped)."""
    p = _plan(original_shape, pre)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    fx = p.rw / float(original_shape[1]) if p.rw else 1.0  # the whole film's resize first, if the plan has one
    fy = p.rh / float(original_shape[0]) if p.rh else 1.0
    x = (pts[:, 0] * fx - p.left) * p.sx + p.ox
    y = (pts[:, 1] * fy - p.top) * p.sy + p.oy
    return np.stack([x, y], axis=1)


def geometry_boxes(boxes: Iterable[Box], original_shape: Sequence[int], pre: Preprocessing) -> list[Box]:
    """Map boxes from original-film pixels to model-input pixels, clipped to the input square.

    Boxes that fall entirely outside the input (e.g. cut away by a centre crop) are dropped, so the result may be
    shorter than ``boxes``; labels are kept.
    """
    s = float(pre.input_size)
    out: list[Box] = []
    for b in boxes:
        (x0, y0), (x1, y1) = geometry_points([(b.x0, b.y0), (b.x1, b.y1)], original_shape, pre)
        x0, x1 = sorted((min(max(x0, 0.0), s), min(max(x1, 0.0), s)))
        y0, y1 = sorted((min(max(y0, 0.0), s), min(max(y1, 0.0), s)))
        if x1 > x0 and y1 > y0:
            out.append(Box(float(x0), float(y0), float(x1), float(y1), b.label))
    return out


# --------------------------------------------------------------------------------------------------- normalisation


def _channel_stats(pre: Preprocessing) -> tuple[list[float], list[float]]:
    """Mean and std per output channel; a single gray channel uses the average of ImageNet's three."""
    mean, std, c = list(pre.mean), list(pre.std), int(pre.channels)
    if len(mean) != c:
        mean = [float(np.mean(mean))] * c
    if len(std) != c:
        std = [float(np.mean(std))] * c
    return mean, std


def _normalize(x: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """``x``: ``(1, S, S)`` film in [0, 1] -> ``(C, S, S)`` normalised per ``pre.normalize``."""
    import torch

    c = int(pre.channels)
    if pre.normalize == "imagenet":
        mean, std = _channel_stats(pre)
        m = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
        s = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
        return (x - m) / s  # broadcasts (1, S, S) to (C, S, S)
    if pre.normalize == "minmax":
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
        return x.expand(c, -1, -1)
    if pre.normalize == "none":
        return x.expand(c, -1, -1)
    raise XrayXaiError(f"unknown normalisation {pre.normalize!r} in preset {pre.name!r}")


def to_tensor(
    image: np.ndarray,
    pre: Preprocessing,
    *,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A film (float ``(H, W)`` in [0, 1]) to the model's input ``(C, S, S)`` float32: geometry, optional
    augmentation (on the un-normalised film, so padding stays black), normalisation, channel replication."""

    return geometry_to_tensor(geometry(image, pre), pre, augment=augment, generator=generator)


def geometry_to_tensor(
    film: np.ndarray,
    pre: Preprocessing,
    *,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
    extra: np.ndarray | None = None,
) -> torch.Tensor:
    """The second half of :func:`to_tensor`: a film already in model geometry ``(S, S)`` to ``(C, S, S)``.

    ``extra`` (``(S, S)``, e.g. a ground-truth mask for box-guided training) is augmented with the film, in the same
    draw, and returned un-normalised as one more channel: ``(C + 1, S, S)``."""
    import torch

    x = torch.from_numpy(np.asarray(film, dtype=np.float32)).unsqueeze(0)
    if extra is not None:
        x = torch.cat([x, torch.from_numpy(np.asarray(extra, dtype=np.float32)).unsqueeze(0)])
    if augment is not None:
        x = augment(x, generator=generator)
    if extra is not None:
        return torch.cat([_normalize(x[:1], pre), x[1:]]).contiguous()
    return _normalize(x, pre).contiguous()


def denormalize(tensor: Any, pre: Preprocessing) -> np.ndarray:
    """Model inputs ``(B, C, S, S)`` or ``(C, S, S)`` back to gray films ``(B, S, S)`` in [0, 1] for overlays."""
    import torch

    x = torch.as_tensor(tensor).detach().to("cpu", torch.float32)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"expected (B, C, S, S) or (C, S, S), got shape {tuple(x.shape)}")
    if pre.normalize == "imagenet":
        c = x.shape[1]
        mean, std = _channel_stats(replace(pre, channels=c))
        x = x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    return np.ascontiguousarray(x.mean(dim=1).clamp(0.0, 1.0).numpy(), dtype=np.float32)
