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

__all__ = [
    "FUSIONS",
    "NATIVE",
    "PASS_PIXELS",
    "StageCAM",
    "View",
    "fuse_maps",
    "gaussian_blur",
    "parse_flips",
    "parse_scales",
    "parse_strides",
]

#: how several stages' maps are combined (each scaled to [0, 1] first)
FUSIONS: tuple[str, ...] = ("mean", "geomean", "max", "product")

#: one view of the film: the factor it is enlarged by and the ``torch.flip`` dims of a ``(B, C, H, W)`` batch
View = tuple[float, tuple[int, ...]]
#: the film itself; always explained (the probabilities come from it)
NATIVE: View = (1.0, ())

#: input pixels one stacked pass may hold (8 films at 224 px, the explain command's batch): a film explained alone
#: runs with its flip in one pass (CPU time per film 10% lower: 2.99x vs 3.31x Grad-CAM for ``tta=h``), a batch of 8
#: runs one view per pass, because on a CPU a pass of 16-24 films at 224 px costs more per film than one of 8
#: (``tta=h``: 3.80x vs 3.63x; ``tta=true``: 7.3x vs 5.5x; fracatlas-lite0, 1 thread, CPU seconds)
PASS_PIXELS = 8 * 224 * 224

_FLIP_NAMES = {"h": (3,), "v": (2,)}


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
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
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


def parse_flips(tta: bool | str) -> tuple[tuple[int, ...], ...]:
    """The flips averaged by ``tta``: ``True`` the film and its horizontal and vertical flips
    (:data:`~xray_xai.data.geometry.FLIP_DIMS`), ``False`` the film alone, ``"h"`` / ``"v"`` the film and one flip,
    ``"hv"`` both (as ``True``); ``"true"``/``"false"`` as the booleans."""
    if isinstance(tta, bool):
        return FLIP_DIMS if tta else FLIP_DIMS[:1]
    text = str(tta).strip().lower()
    if text in ("true", "false", "1", "0", "yes", "no", ""):
        return FLIP_DIMS if text in ("true", "1", "yes") else FLIP_DIMS[:1]
    if any(c not in _FLIP_NAMES for c in text) or len(set(text)) != len(text):
        raise PluginError(f"tta must be true, false, 'h', 'v' or 'hv', got {tta!r}")
    return (FLIP_DIMS[0], *(d for d in FLIP_DIMS[1:] if any(_FLIP_NAMES[c] == d for c in text)))


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
    """Shared flow: choose layers, forward/backward passes over the (flipped, scaled) views (views of one scale
    stacked into one pass), per-layer maps, fusion, TTA, blur. Subclasses override :meth:`layer_maps` and pass their
    public parameters on as ``**params``."""

    fusion: str = "mean"
    #: input pixels per stacked pass (:data:`PASS_PIXELS`); 0 runs one view per pass
    pass_pixels: int = PASS_PIXELS

    def __init__(
        self,
        *,
        wanted_layers: list[str] | None,
        wanted_strides: list[int],
        tta: bool | str,
        blur: float,
        seed: int | None,
        scales: float | str | Sequence[float] = 1.0,
        **params: Any,
    ) -> None:
        if float(blur) < 0:
            raise PluginError(f"blur must be >= 0 (pixels), got {blur}")
        scale_list = parse_scales(scales)
        flips = parse_flips(tta)
        # recorded as given before flip subsets existed: both flips are true, none false, one its letter
        tta_param: bool | str = {FLIP_DIMS: True, FLIP_DIMS[:1]: False}.get(
            flips, "".join(k for k, d in _FLIP_NAMES.items() if d in flips)
        )
        super().__init__(
            seed=seed, **params, tta=tta_param, blur=float(blur), scales=",".join(f"{s:g}" for s in scale_list)
        )
        self._layers = wanted_layers
        self._strides = wanted_strides
        self.flips = flips
        self.tta = len(flips) > 1
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

    def views(self) -> list[View]:
        """The views averaged, in order: the native film, then each scale's views (``tta``: and their flips)."""
        out: list[View] = [NATIVE]
        for scale in self.scales:
            for dims in self.flips:
                if (scale, dims) not in out:
                    out.append((scale, dims))
        return out

    def view_maps(
        self, model: Model, images: torch.Tensor, layers: list[str], sign: float, views: Sequence[View]
    ) -> tuple[dict[View, list[torch.Tensor]], torch.Tensor | None]:
        """Each view's per-layer maps (in the view's own scale and orientation) and the native view's logits.

        The views of one scale are stacked into one batch, so one forward and one backward serve several views
        (up to :attr:`pass_pixels` input pixels per pass; a view is never split). In eval mode every image of a
        batch is computed independently, so a stacked pass gives each view's maps up to float rounding.
        """
        size = [int(images.shape[-2]), int(images.shape[-1])]
        n = int(images.shape[0])
        out: dict[View, list[torch.Tensor]] = {}
        logits: torch.Tensor | None = None
        for scale in dict.fromkeys(s for s, _ in views):
            group = [v for v in views if v[0] == scale]
            scaled = images
            if scale != 1.0:
                scaled_size = [max(8, round(scale * side)) for side in size]
                scaled = F.interpolate(images, size=scaled_size, mode="bilinear", align_corners=False)
            per_view = n * int(scaled.shape[-2]) * int(scaled.shape[-1])
            step = max(1, int(self.pass_pixels) // max(1, per_view))
            for i in range(0, len(group), step):
                chunk = group[i : i + step]
                parts = [torch.flip(scaled, dims=dims) if dims else scaled for _, dims in chunk]
                batch = parts[0] if len(parts) == 1 else torch.cat(parts)
                maps, chunk_logits = self._one_view(model, batch, layers, sign)
                for j, view in enumerate(chunk):
                    out[view] = [m[j * n : (j + 1) * n] for m in maps]
                    if view == NATIVE:
                        logits = chunk_logits[j * n : (j + 1) * n]
        return out, logits

    def fused_view(self, view: View, maps: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """One view's layer maps fused on the input's grid (each stage scaled to [0, 1] at its own resolution,
        then resized) and flipped back to the input's orientation."""
        fused = fuse_maps([torch.relu(m) for m in maps], size, self.fusion)
        dims = view[1]
        return torch.flip(fused, dims=tuple(d - 1 for d in dims)) if dims else fused

    def attribute(self, model: Model, images: torch.Tensor, sign: float) -> Attribution:
        layers = self.chosen_layers(model, images)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        views = self.views()
        per_view, logits = self.view_maps(model, images, layers, sign, views)
        assert logits is not None  # the native view is always among the views
        native = per_view[NATIVE]
        raw = native[0] if len(native) == 1 else None
        fused_views = [self.fused_view(v, per_view[v], size) for v in views]
        fused = fused_views[0] if len(fused_views) == 1 else torch.stack(fused_views).mean(dim=0)
        fused = gaussian_blur(fused, self.blur)
        single_pass = len(views) == 1
        return Attribution(
            raw=fused if raw is None or not single_pass or self.blur > 0 else raw,
            probabilities=torch.sigmoid(logits),
            evidence=fused,
            extras={"layers": [layers] * int(images.shape[0])},
        )
