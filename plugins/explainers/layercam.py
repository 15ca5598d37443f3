"""LayerCAM (Jiang et al., IEEE TIP 2021) at a chosen stage, and its fusion over several stages.

Why: the last convolutional map of an ImageNet CNN is 7 x 7 at 224 px, one cell per 32 px, while a fracture covers
about 1% of a film. Grad-CAM's channel-averaged gradient cannot point inside a cell; LayerCAM weights every
activation by its own positive gradient, ``M = ReLU(sum_k ReLU(dS/dA_k) * A_k)``, which stays meaningful at earlier,
finer stages (56 x 56 or 28 x 28), where findings a few pixels wide still have their own cells.

* ``layer``: a module name (``backbone.blocks.2``; ``blocks.2`` and torchvision's ``features.denseblock3`` are
  accepted too, a wrong name lists close ones). Without it the stage is chosen by ``stride``: the deepest stage
  (a child of the trunk, or of its block list) whose output is at least ``input / stride`` pixels wide - the same
  rule picks ``backbone.blocks.1`` in EfficientNet-Lite0, ``backbone.denseblock1`` in DenseNet and
  ``backbone.layer1`` in ResNet-50 at the default ``stride=4`` (56 x 56 at 224 px).
* ``tta=True`` averages the maps of the image and its horizontal and vertical flips (each map flipped back): the
  finding is the same under a flip, the model's checkerboard and padding artefacts are not.
* ``scales``: multi-scale averaging, e.g. ``scales=1,2``: the film is also explained enlarged by each factor
  (bilinear), each map scaled to [0, 1] and resized back, then averaged. A fracture line a few pixels wide at
  224 px spans a stride-4 cell at 448 px, so the enlarged pass resolves detail the native pass blurs, while the
  native pass keeps the scale the model was trained at. Probabilities always come from the native pass.
* ``blur``: Gaussian smoothing of the final map, sigma in pixels of the input (0 = none).

The score is the single logit (``target="abnormal"``) or its negation (``"normal"``); gradients are taken with
``torch.autograd.grad`` w.r.t. the captured activations only (parameters are frozen by the base class), and every
hook is removed when the call returns or raises.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xray_xai.data.preprocessing import FLIP_DIMS
from xray_xai.errors import PluginError
from xray_xai.sdk.explainer import Attribution, TorchExplainer, find_layer, logits_of
from xray_xai.sdk.interfaces import Model, Tags

__all__ = [
    "FUSIONS",
    "LayerCAM",
    "MultiLayerCAM",
    "activations_and_gradients_at",
    "capture_layers",
    "fuse_maps",
    "layercam_maps",
    "layers_at_strides",
    "resolve_layer",
    "stage_layers",
]

#: how :class:`MultiLayerCAM` combines the per-stage maps (each scaled to [0, 1] first)
FUSIONS: tuple[str, ...] = ("mean", "geomean", "max", "product")


# -- layers ---------------------------------------------------------------------------------------------------------
def resolve_layer(model: nn.Module, name: str) -> str:
    """The ``named_modules`` name meant by ``name``: exact, under ``backbone.``, or torchvision's ``features.*``."""
    modules = dict(model.named_modules())
    candidates = [name, f"backbone.{name}"]
    if name.startswith("features."):
        candidates.append("backbone." + name[len("features.") :])
    for cand in candidates:
        if cand and cand in modules:
            return cand
    close = difflib.get_close_matches(name, [n for n in modules if n], n=4, cutoff=0.5)
    close += [
        n for n in difflib.get_close_matches(f"backbone.{name}", list(modules), n=4, cutoff=0.5) if n not in close
    ]
    hint = f"; did you mean {', '.join(repr(c) for c in close[:4])}?" if close else ""
    stages = stage_layers(model)
    listing = f" (stages: {', '.join(stages)})" if stages else ""
    raise PluginError(f"model has no layer {name!r}{hint}{listing}")


def stage_layers(model: nn.Module) -> list[str]:
    """Candidate stages, in definition order: the trunk's (``backbone``) children, a block list expanded into its
    blocks; a model without a ``backbone`` offers its own children, each ``Sequential`` expanded one level."""
    backbone = getattr(model, "backbone", None)
    root, prefix = (backbone, "backbone.") if isinstance(backbone, nn.Module) else (model, "")
    names: list[str] = []
    for child_name, child in root.named_children():
        expand = isinstance(child, nn.Sequential | nn.ModuleList) and (
            not prefix or child_name in ("blocks", "stages", "layers")
        )
        if expand:
            names += [f"{prefix}{child_name}.{n}" for n, _ in child.named_children()]
        else:
            names.append(f"{prefix}{child_name}")
    return names


def layers_at_strides(model: nn.Module, images: torch.Tensor, strides: Sequence[int]) -> list[str]:
    """For each stride, the deepest stage whose output is at least ``input_side / stride`` wide (one probe pass).

    A stride finer than every stage gives the first stage; duplicates are dropped, order kept.
    """
    stages = stage_layers(model)
    seen: list[tuple[str, int]] = []

    def make_hook(name: str) -> Any:
        def hook(_m: nn.Module, _a: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4 and all(n != name for n, _ in seen):
                seen.append((name, int(min(out.shape[-2:]))))

        return hook

    handles = [find_layer(model, s).register_forward_hook(make_hook(s)) for s in stages]
    try:
        with torch.no_grad():
            logits_of(model, images[:1])  # type: ignore[arg-type]
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise PluginError("no stage of the model's trunk gives a (B, C, h, w) map; pass layer= by name")
    side = int(min(images.shape[-2:]))
    chosen: list[str] = []
    for stride in strides:
        want = side / max(float(stride), 1.0)
        ok = [n for n, s in seen if s >= want - 1e-9]
        name = ok[-1] if ok else seen[0][0]
        if name not in chosen:
            chosen.append(name)
    return chosen


@contextlib.contextmanager
def capture_layers(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Capture the outputs of several layers, all differentiable in one graph.

    The first captured output that is not yet part of a graph becomes a leaf requiring grad (nothing before it is
    recorded: no parameter gradients, partial backward); later ones are kept as graph nodes. The network always runs
    on a clone, so in-place ops after a layer cannot corrupt what was captured. Hooks go when the block exits.
    """
    captured: dict[str, torch.Tensor] = {}

    def make_hook(name: str) -> Any:
        def hook(_m: nn.Module, _a: Any, out: Any) -> Any:
            if not isinstance(out, torch.Tensor):
                raise PluginError(f"layer {name!r} returns {type(out).__name__}, not a tensor; choose another layer")
            kept = out if out.requires_grad else out.detach().requires_grad_(True)
            captured[name] = kept
            return kept.clone()

        return hook

    handles = []
    try:
        for name in layers:
            handles.append(find_layer(model, name).register_forward_hook(make_hook(name)))
        yield captured
    finally:
        for h in handles:
            h.remove()


def activations_and_gradients_at(
    model: Model, images: torch.Tensor, layers: Sequence[str], sign: float
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Activations ``A_l``, ``d (sign * logit) / d A_l`` per layer and the logits: one forward, one backward."""
    if not isinstance(model, nn.Module):
        raise PluginError(f"layer CAMs need a torch model; {model.name!r} is not one")
    with capture_layers(model, layers) as captured, torch.enable_grad():
        logits = logits_of(model, images)
        missing = [name for name in layers if name not in captured]
        if missing:
            raise PluginError(f"layer(s) {', '.join(missing)} were not run by the model's forward pass")
        acts = [captured[name] for name in layers]
        if not logits.requires_grad:
            raise PluginError(f"the logit of model {model.name!r} does not depend on {', '.join(layers)}")
        grads = torch.autograd.grad((sign * logits).sum(), acts, allow_unused=True)
    out_grads = [torch.zeros_like(a) if g is None else g.detach() for a, g in zip(acts, grads, strict=True)]
    for name, a in zip(layers, acts, strict=True):
        if a.ndim != 4:
            raise PluginError(f"layer {name!r} gives shape {tuple(a.shape)}, not a (B, C, h, w) feature map")
    return [a.detach() for a in acts], out_grads, logits.detach()


def layercam_maps(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM ``(B, h, w)``: ReLU of the activations weighted by their own positive gradients, summed."""
    return torch.relu((torch.relu(grads) * acts).sum(dim=1))


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


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, h, w)`` maps, sigma in pixels (replicate padding)."""
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


def _parse_layers(layers: str | Sequence[str] | None) -> list[str] | None:
    if layers is None:
        return None
    items = layers.split(",") if isinstance(layers, str) else list(layers)
    names = [s.strip() for s in items if s and s.strip()]
    return names or None


def _parse_scales(scales: float | str | Sequence[float]) -> list[float]:
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


def _parse_strides(strides: int | str | Sequence[int]) -> list[int]:
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


# -- explainers -----------------------------------------------------------------------------------------------------
class _StageCAM(TorchExplainer):
    """Shared flow: choose layers, one forward/backward per (flipped) view, per-layer maps, fusion, TTA, blur."""

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
        scale_list = _parse_scales(scales)
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
        """The per-layer map (the step HiResCAM overrides); may be signed, ReLU'd before fusion."""
        return layercam_maps(acts, grads)

    def _one_view(self, model: Model, images: torch.Tensor, layers: list[str], sign: float) -> tuple[Any, Any]:
        acts, grads, logits = activations_and_gradients_at(model, images, layers, sign)
        maps = [self.layer_maps(a, g) for a, g in zip(acts, grads, strict=True)]
        return maps, logits

    def attribute(self, model: Model, images: torch.Tensor, sign: float) -> Attribution:
        layers = self.chosen_layers(model, images)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        maps, logits = self._one_view(model, images, layers, sign)
        raw = maps[0] if len(maps) == 1 else None
        fused = fuse_maps([torch.relu(m) for m in maps], size, self.fusion)
        views = [fused]
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
        if len(views) > 1:
            fused = torch.stack(views).mean(dim=0)
        fused = _gaussian_blur(fused, self.blur)
        single_pass = len(views) == 1
        return Attribution(
            raw=fused if raw is None or not single_pass or self.blur > 0 else raw,
            probabilities=torch.sigmoid(logits),
            evidence=fused,
            extras={"layers": [layers] * int(images.shape[0])},
        )


class LayerCAM(_StageCAM):
    """LayerCAM at one stage: by name (``layer``) or the deepest stage at least ``input / stride`` wide."""

    name = "layercam"
    description = "LayerCAM at a mid-resolution stage (element-wise positive-gradient weighting; small findings)"
    tags = Tags(needs_gradients=True, deterministic=True, supports_batch=True)

    def __init__(
        self,
        *,
        layer: str | None = None,
        stride: int = 4,
        tta: bool = True,  # flips helped on FracAtlas: pointing 0.15 -> 0.25 (docs/localisation.md)
        blur: float = 0.0,
        # the film at 1x and 2x: pointing 0.29 -> 0.40, with tolerance 0.44 -> 0.55 (docs/localisation.md)
        scales: float | str | Sequence[float] = (1.0, 2.0),
        seed: int | None = 0,
    ) -> None:
        super().__init__(
            wanted_layers=_parse_layers(layer),
            wanted_strides=_parse_strides(int(stride)),
            tta=tta,
            blur=blur,
            scales=scales,
            seed=seed,
            layer=layer,
            stride=int(stride),
        )
        if self._layers is not None and len(self._layers) != 1:
            raise PluginError(f"layercam takes one layer, got {layer!r}; use multilayer-cam for several")


class MultiLayerCAM(_StageCAM):
    """LayerCAM at several stages, each scaled to [0, 1], upsampled to the input and fused (``fusion``)."""

    name = "multilayer-cam"
    description = "LayerCAM maps of several stages fused (mean, geometric mean, max or product)"
    tags = Tags(needs_gradients=True, deterministic=True, supports_batch=True)

    def __init__(
        self,
        *,
        layers: str | Sequence[str] | None = None,
        strides: str | Sequence[int] = (4, 8, 16),
        fusion: str = "mean",
        tta: bool = False,
        blur: float = 0.0,
        scales: float | str | Sequence[float] = 1.0,
        seed: int | None = 0,
    ) -> None:
        if fusion not in FUSIONS:
            raise PluginError(f"unknown fusion {fusion!r}; expected one of {', '.join(FUSIONS)}")
        parsed = _parse_layers(layers)
        stride_list = _parse_strides(strides)
        super().__init__(
            wanted_layers=parsed,
            wanted_strides=stride_list,
            tta=tta,
            blur=blur,
            scales=scales,
            seed=seed,
            layers=",".join(parsed) if parsed else None,
            strides=",".join(str(s) for s in stride_list),
            fusion=fusion,
        )
        self.fusion = fusion
