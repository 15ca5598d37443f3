"""Finding, naming and capturing the layers of a torch model: what every layer-based explainer shares.

* :func:`resolve_layer` turns what a user types (``blocks.2``, torchvision's ``features.denseblock3``) into the
  ``named_modules`` name, or fails with the close names and the model's stages;
* :func:`stage_layers` lists a model's stages (children of its trunk ``backbone``, block lists expanded) and
  :func:`layers_at_strides` picks the deepest stage at least ``input / stride`` pixels wide (one probe pass);
* :func:`capture_layers` captures several layers' outputs differentiably in one graph, and
  :func:`activations_and_gradients_at` returns each layer's activation and ``d (sign * logit) / d activation``
  from one forward and one partial backward;
* :func:`parse_layers` reads ``layer=`` / ``layers=`` parameters (``"a,b"`` or a list).

Hooks are registered only inside context managers and are removed on success and on error. The single-layer
helpers (:func:`~xray_xai.sdk.explainer.find_layer`, :func:`~xray_xai.sdk.explainer.capture_activation`) live in
:mod:`xray_xai.sdk.explainer`.
"""

from __future__ import annotations

import contextlib
import difflib
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from xray_xai.errors import PluginError
from xray_xai.sdk.explainer import find_layer, logits_of
from xray_xai.sdk.interfaces import Model

__all__ = [
    "activations_and_gradients_at",
    "capture_layers",
    "layers_at_strides",
    "parse_layers",
    "resolve_layer",
    "stage_layers",
]


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
    """Candidate stages, in definition order: the trunk's (``backbone``) children, a block list (``blocks``,
    ``stages``, ``layers``, or the ``features`` of a wrapped torchvision network) expanded into its blocks; a model
    without a ``backbone`` offers its own children, each ``Sequential`` expanded one level."""
    backbone = getattr(model, "backbone", None)
    root, prefix = (backbone, "backbone.") if isinstance(backbone, nn.Module) else (model, "")
    names: list[str] = []
    for child_name, child in root.named_children():
        expand = isinstance(child, nn.Sequential | nn.ModuleList) and (
            not prefix or child_name in ("blocks", "stages", "layers", "features")
        )
        if expand:
            names += [f"{prefix}{child_name}.{n}" for n, _ in child.named_children()]
        else:
            names.append(f"{prefix}{child_name}")
    return names


#: stage sides seen by the probe pass, per model and input shape (weak keys: a model's entry goes with it)
_STAGE_SIDES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], list[tuple[str, int]]]] = (
    weakref.WeakKeyDictionary()
)


def layers_at_strides(model: nn.Module, images: torch.Tensor, strides: Sequence[int]) -> list[str]:
    """For each stride, the deepest stage whose output is at least ``input_side / stride`` wide.

    A stride finer than every stage gives the first stage; duplicates are dropped, order kept. The stages' sides come
    from one probe pass on one image, remembered per model and input shape: explaining a single film would otherwise
    pay a whole extra forward pass per call.
    """
    stages = stage_layers(model)
    key = (*(int(n) for n in images.shape[1:]), hash(tuple(stages)))  # a trunk rebuilt in place is probed again
    known = _STAGE_SIDES.setdefault(model, {})
    if key not in known:
        known[key] = _stage_sides(model, stages, images[:1])
    seen = known[key]
    side = int(min(images.shape[-2:]))
    chosen: list[str] = []
    for stride in strides:
        want = side / max(float(stride), 1.0)
        ok = [n for n, s in seen if s >= want - 1e-9]
        name = ok[-1] if ok else seen[0][0]
        if name not in chosen:
            chosen.append(name)
    return chosen


def _stage_sides(model: nn.Module, stages: Sequence[str], probe: torch.Tensor) -> list[tuple[str, int]]:
    """``(stage, smaller side of its output)`` for every stage giving a ``(B, C, h, w)`` map, in execution order."""
    seen: list[tuple[str, int]] = []

    def make_hook(name: str) -> Any:
        def hook(_m: nn.Module, _a: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4 and all(n != name for n, _ in seen):
                seen.append((name, int(min(out.shape[-2:]))))

        return hook

    handles = [find_layer(model, s).register_forward_hook(make_hook(s)) for s in stages]
    try:
        with torch.no_grad():
            logits_of(model, probe)  # type: ignore[arg-type]
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise PluginError("no stage of the model's trunk gives a (B, C, h, w) map; pass layer= by name")
    return seen


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


def parse_layers(layers: str | Sequence[str] | None) -> list[str] | None:
    """Layer names from a ``layer=``/``layers=`` parameter: ``"a, b"`` or a list; ``None`` or empty gives None."""
    if layers is None:
        return None
    items = layers.split(",") if isinstance(layers, str) else list(layers)
    names = [s.strip() for s in items if s and s.strip()]
    return names or None
