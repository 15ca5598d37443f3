"""The shared flow of the stage CAMs (LayerCAM, multi-layer LayerCAM, HiResCAM): :class:`StageCAM`.

A stage CAM explains at one or several stages of the network, chosen by name or by stride
(:func:`~xray_xai.sdk.layers.layers_at_strides`). For each view of the film (the film itself; its horizontal and
vertical flips with ``tta``; the film enlarged by each factor of ``scales``) it runs one forward and one partial
backward, turns each stage's activation and gradient into a map (:meth:`StageCAM.layer_maps`, the one step a
subclass overrides), scales each map to [0, 1], resizes them to the input and fuses them (``fusion``), then averages
the views and smooths the result (``blur``, pixels of the input). Probabilities come from the native pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xray_xai.data.geometry import FLIP_DIMS
from xray_xai.errors import PluginError
from xray_xai.sdk.explainer import Attribution, TorchExplainer
from xray_xai.sdk.interfaces import Model
from xray_xai.sdk.layers import activations_and_gradients_at, layers_at_strides, resolve_layer

__all__ = ["FUSIONS", "StageCAM", "fuse_maps", "gaussian_blur", "parse_scales", "parse_strides"]

#: how several stages' maps are combined (each scaled to [0, 1] first)
FUSIONS: tuple[str, ...] = ("mean", "geomean", "max", "product")


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """Scale each ``(B, h, w)`` map to [0, 1] by its maximum (an all-zero map stays zero)."""
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return (maps / peak).clamp(0.0, 1.0)


def fuse_maps(maps: Sequence[torch.Tensor], size: tuple[int, int], fusion: str = "mean") -> torch.Tensor:
    """Per-layer maps scaled to [0, 1], upsampled (bilinear) to ``size`` and combined by ``fusion``.

    ``mean`` keeps what any stage sees; ``geomean``/``product`` keep only what every stage agrees on (the coarse
    stage's context gates the fine stage's detail); ``max`` is the union.
    """
    if fusion not in FUSIONS:
        raise PluginError(f"unknown fusion {fusion!r}; expected one of {', '.join(FUSIONS)}")
    up = torch.stack(
        [_unit(F.interpolate(m[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]) for m in maps]
    )
    if fusion == "mean":
        return up.mean(dim=0)
    if fusion == "max":
        return up.amax(dim=0)
    if fusion == "product":
        return up.prod(dim=0)
    return torch.exp(torch.log(up + 1e-6).mean(dim=0)) - 1e-6  # geomean


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, h, w)`` maps, sigma in pixels (replicate padding); ``sigma <= 0``: as is."""
    if sigma <= 0:
        return maps
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    out = F.pad(maps[:, None], (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1))
    out = F.conv2d(out, k.view(1, 1, -1, 1))
    return out[:, 0]


def parse_scales(scales: float | str | Sequence[float]) -> list[float]:
    """Scale factors from a ``scales=`` parameter (``2``, ``"1,2"`` or a list), each in [0.25, 8]."""
    if isinstance(scales, (int, float)):
        items: list[Any] = [scales]
    else:
        items = scales.split(",") if isinstance(scales, str) else list(scales)
    try:
        out = [float(s) for s in items if str(s).strip()]
    except ValueError:
        raise PluginError(f"scales must be numbers, got {scales!r}") from None
    if not out or any(not (0.25 <= s <= 8) for s in out):
        raise PluginError(f"scales must be factors between 0.25 and 8, got {scales!r}")
    return out


def parse_strides(strides: int | str | Sequence[int]) -> list[int]:
    """Positive strides from a ``stride=``/``strides=`` parameter (``4``, ``"4,8"`` or a list)."""
    if isinstance(strides, int):
        return [strides]
    items = strides.split(",") if isinstance(strides, str) else list(strides)
    try:
        out = [int(s) for s in items if str(s).strip()]
    except ValueError:
        raise PluginError(f"strides must be integers, got {strides!r}") from None
    if not out or any(s < 1 for s in out):
        raise PluginError(f"strides must be positive integers, got {strides!r}")
    return out


class StageCAM(TorchExplainer):
    """Shared flow: choose layers, one forward/backward per (flipped, scaled) view, per-layer maps, fusion, TTA,
    blur. Subclasses override :meth:`layer_maps` and pass their public parameters on as ``**params``."""

    fusion: str = "mean"

    def __init__(
        self,
        *,
        wanted_layers: list[str] | None,
        wanted_strides: list[int],
        tta: bool,
        blur: float,
        seed: int | None,
        scales: float | str | Sequence[float] = 1.0,
        **params: Any,
    ) -> None:
        if float(blur) < 0:
            raise PluginError(f"blur must be >= 0 (pixels), got {blur}")
        scale_list = parse_scales(scales)
        super().__init__(
            seed=seed, **params, tta=bool(tta), blur=float(blur), scales=",".join(f"{s:g}" for s in scale_list)
        )
        self._layers = wanted_layers
        self._strides = wanted_strides
        self.tta = bool(tta)
        self.blur = float(blur)
        self.scales = scale_list

    def chosen_layers(self, model: Model, images: torch.Tensor) -> list[str]:
        """The module names explained, after resolving aliases or choosing stages by stride."""
        if not isinstance(model, nn.Module):
            raise PluginError(f"explainer {self.name!r} needs a torch model; {model.name!r} is not one")
        if self._layers:
            return [resolve_layer(model, name) for name in self._layers]
        return layers_at_strides(model, images, self._strides)

    def layer_maps(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """The ``(B, h, w)`` map of one layer from its activations and gradients (may be signed; ReLU'd before
        fusion). The one step a stage CAM overrides."""
        raise NotImplementedError

    def _one_view(self, model: Model, images: torch.Tensor, layers: list[str], sign: float) -> tuple[Any, Any]:
        acts, grads, logits = activations_and_gradients_at(model, images, layers, sign)
        maps = [self.layer_maps(a, g) for a, g in zip(acts, grads, strict=True)]
        return maps, logits

    def _extra_views(self, model: Model, images: torch.Tensor, layers: list[str], sign: float) -> list[torch.Tensor]:
        """The fused maps of the flipped and rescaled views, each brought back to the input's grid and orientation."""
        size = (int(images.shape[-2]), int(images.shape[-1]))
        views = []
        for scale in self.scales:
            scaled = images
            if scale != 1.0:
                scaled_size = [max(8, round(scale * n)) for n in size]
                scaled = F.interpolate(images, size=scaled_size, mode="bilinear", align_corners=False)
            for dims in FLIP_DIMS if self.tta else FLIP_DIMS[:1]:
                if scale == 1.0 and not dims:
                    continue  # the native pass, already done
                view = torch.flip(scaled, dims=dims) if dims else scaled
                view_maps, _ = self._one_view(model, view, layers, sign)
                # each stage is scaled to [0, 1] at its own resolution, then resized back to the input's grid
                fused_view = fuse_maps([torch.relu(m) for m in view_maps], size, self.fusion)
                views.append(torch.flip(fused_view, dims=tuple(d - 1 for d in dims)) if dims else fused_view)
        return views

    def attribute(self, model: Model, images: torch.Tensor, sign: float) -> Attribution:
        layers = self.chosen_layers(model, images)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        maps, logits = self._one_view(model, images, layers, sign)
        raw = maps[0] if len(maps) == 1 else None
        fused = fuse_maps([torch.relu(m) for m in maps], size, self.fusion)
        views = [fused, *self._extra_views(model, images, layers, sign)]
        if len(views) > 1:
            fused = torch.stack(views).mean(dim=0)
        fused = gaussian_blur(fused, self.blur)
        single_pass = len(views) == 1
        return Attribution(
            raw=fused if raw is None or not single_pass or self.blur > 0 else raw,
            probabilities=torch.sigmoid(logits),
            evidence=fused,
            extras={"layers": [layers] * int(images.shape[0])},
        )
