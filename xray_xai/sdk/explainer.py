"""The shared flow of every torch explainer: checks, frozen parameters, hooks, seeding, resizing, normalisation.

:class:`TorchExplainer` owns the flow (pytorch-grad-cam's ``BaseCAM.forward`` pattern); a plugin overrides one step,
:meth:`TorchExplainer.attribute`, which returns an :class:`Attribution` at any resolution. The base class then

* refuses models lacking a capability (``check_model``) and unknown targets;
* runs ``attribute`` with the model in eval mode, every parameter frozen (``requires_grad=False``, restored after,
  so explaining never computes parameter gradients) and the torch RNG forked and seeded (reproducible noise);
* resizes the evidence map to the input resolution and scales each map to [0, 1];
* explains an ensemble member by member and fuses the maps (weighted mean + per-pixel disagreement).

Hooks are registered only through context managers (:func:`capture_activation`) and are removed on success and on
error alike.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from xray_xai.errors import PluginError
from xray_xai.sdk.interfaces import Explainer, Explanation, Model, Preprocessing

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import nn

__all__ = [
    "TARGETS",
    "Attribution",
    "TorchExplainer",
    "capture_activation",
    "count_hooks",
    "eval_mode",
    "film_from_tensor",
    "find_layer",
    "fingerprint",
    "frozen_parameters",
    "fuse_member_maps",
    "logits_of",
    "normalize_maps",
    "resize_maps",
    "score_sign",
]

#: what an explanation can be evidence for: the single logit (abnormal) or its negation (normal)
TARGETS: tuple[str, ...] = ("abnormal", "normal")


def score_sign(target: str) -> float:
    """+1 for "abnormal" (evidence for the logit), -1 for "normal" (evidence against it)."""
    if target == "abnormal":
        return 1.0
    if target == "normal":
        return -1.0
    raise PluginError(f"unknown explanation target {target!r}; expected 'abnormal' or 'normal'")


@dataclass
class Attribution:
    """What a plugin's :meth:`TorchExplainer.attribute` step returns for a batch.

    ``raw``: ``(B, h, w)`` the method's own map (any scale, may be signed); stored in ``Explanation.raw``.
    ``probabilities``: ``(B,)`` probability of abnormal, from the same forward pass where the method has one.
    ``evidence``: ``(B, h', w')`` non-negative map to resize and scale to [0, 1]; ``None`` means ``relu(raw)``.
    ``extras``: method-specific arrays (superpixel labels, ...), first axis the batch.
    """

    raw: Any
    probabilities: Any
    evidence: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


# -- context managers ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def frozen_parameters(module: nn.Module) -> Iterator[None]:
    """Set ``requires_grad=False`` on every parameter, restoring each previous flag afterwards (also on error).

    Explanations need gradients w.r.t. inputs or activations only; frozen parameters make autograd skip the weight
    gradients (faster, less memory) and guarantee that ``p.grad`` is never touched.
    """
    # the modules' own parameters, each once (``parameters()`` would also build every dotted name: 2x the cost)
    params = list(dict.fromkeys(p for m in module.modules() for p in m._parameters.values() if p is not None))
    trainable = [p for p in params if p.requires_grad]
    try:
        for p in trainable:
            p.requires_grad_(False)
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode (batch norm statistics, no dropout) and restore each one's mode after.

    A model already in eval mode, the usual case, is left alone: ``eval()`` and the restore walk every submodule
    through ``nn.Module.__setattr__`` (about 10 ms per call on a DenseNet-169's 600 modules).
    """
    modes = [(m, m.training) for m in module.modules()]
    if not any(mode for _, mode in modes):
        yield
        return
    try:
        module.eval()
        yield
    finally:
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Fork the torch RNG and seed it, so noise drawn inside is reproducible and the caller's RNG is untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        yield


class _Captured:
    """Holder filled by :func:`capture_activation`'s forward hook."""

    def __init__(self) -> None:
        self.activation: torch.Tensor | None = None

    def get(self, layer: str) -> torch.Tensor:
        if self.activation is None:
            raise PluginError(f"target layer {layer!r} was not run by the model's forward pass")
        return self.activation


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (as in ``named_modules``); a clear error with close matches otherwise."""
    modules = dict(model.named_modules())
    if not name:
        raise PluginError(f"model {getattr(model, 'name', type(model).__name__)!r} declares no target layer")
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise PluginError(f"model has no layer {name!r}{hint}")
    return modules[name]


@contextlib.contextmanager
def capture_activation(model: nn.Module, layer: str, *, differentiable: bool = False) -> Iterator[_Captured]:
    """Capture the output of ``layer`` during the forward passes run inside the ``with`` block.

    With ``differentiable=True`` the captured tensor is a fresh leaf that requires grad and the rest of the network
    runs on a clone of it, so ``torch.autograd.grad(score, captured)`` gives d score / d activation with a partial
    backward only (nothing before the layer is recorded; no parameter gradients). The clone also makes in-place ops
    after the layer (DenseNet's ``F.relu(..., inplace=True)``) harmless: they modify the clone, never the leaf, which
    is what breaks tensor grad hooks (pytorch-grad-cam issue #147). Without ``differentiable`` a detached copy is
    kept. The hook is removed when the block exits, also on error.
    """
    import torch

    module = find_layer(model, layer)
    captured = _Captured()

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor):
            raise PluginError(f"layer {layer!r} returns {type(output).__name__}, not a tensor; choose another layer")
        if differentiable:
            leaf = output.detach().requires_grad_(True)
            captured.activation = leaf
            return leaf.clone()
        captured.activation = output.detach().clone()
        return None

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def count_hooks(model: Any) -> int:
    """Number of hooks of every kind on every submodule (for tests: explaining must leave none behind)."""
    from torch import nn

    if not isinstance(model, nn.Module):
        return 0
    total = 0
    for m in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
            "_load_state_dict_pre_hooks",
        ):
            total += len(getattr(m, attr, {}) or {})
    return total


# -- helpers ---------------------------------------------------------------------------------------------------
def logits_of(model: Model, images: torch.Tensor) -> torch.Tensor:
    """One logit per image, ``(B,)``: the torch model's forward, or the logit of ``predict_proba`` otherwise."""
    import torch
    from torch import nn

    if isinstance(model, nn.Module):
        out = model(images)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim != 1:
            raise PluginError(f"model {model.name!r} returns shape {tuple(out.shape)}; expected one logit per image")
        return out
    p = model.predict_proba(images).clamp(1e-7, 1 - 1e-7)
    return torch.log(p) - torch.log1p(-p)


def film_from_tensor(images: torch.Tensor, pre: Preprocessing) -> np.ndarray:
    """Gray films ``(B, H, W)`` in [0, 1] recovered from preprocessed input tensors (undo the normalisation)."""
    from xray_xai.data.geometry import denormalize

    return denormalize(images, pre)


def resize_maps(maps: Any, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(B, h, w)`` maps to ``size`` (no-op when already there); float32 numpy."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.asarray(maps, dtype=np.float32) if not isinstance(maps, torch.Tensor) else maps)
    t = t.detach().float().cpu()
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return t.numpy().astype(np.float32, copy=False)


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Scale each non-negative map to [0, 1] by its maximum (zero stays zero: no evidence); NaN/neg -> 0."""
    m = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)  # a copy: in place below
    np.maximum(m, 0.0, out=m)
    peak = m.reshape(m.shape[0], -1).max(axis=1) if m.size else np.zeros(m.shape[0], np.float32)
    scale = np.where(peak > 0, peak, 1.0).astype(np.float32)
    m /= scale.reshape((-1,) + (1,) * (m.ndim - 1))
    return np.clip(m, 0.0, 1.0, out=m)


def fingerprint(model: Any) -> str:
    """The model's weights fingerprint ("" when it has none); see :mod:`xray_xai.sdk.fingerprint` (memoised)."""
    from xray_xai.sdk.fingerprint import weights_fingerprint

    return weights_fingerprint(model) or ""


def fuse_member_maps(member_maps: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ``(M, B, H, W)`` member maps: weighted mean (weights ``(M, B)``; all-zero weights: plain mean) scaled
    to [0, 1] per image, and the disagreement map, the per-pixel standard deviation across members."""
    maps = np.asarray(member_maps, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum(axis=0)
    w = np.where(total[None] > 0, w / np.where(total > 0, total, 1.0)[None], 1.0 / maps.shape[0])
    fused = np.einsum("mb,mbhw->bhw", w, maps)
    disagreement = maps.std(axis=0)
    return fused.astype(np.float32), disagreement.astype(np.float32)


# -- the base class ----------------------------------------------------------------------------------------------
class TorchExplainer(Explainer):
    """Owns the explanation flow; subclasses implement :meth:`attribute` (one step) and declare their parameters
    as keyword arguments of ``__init__`` passed on to ``super().__init__``. ``seed`` seeds the forked torch RNG."""

    def __init__(self, *, seed: int | None = 0, **params: Any) -> None:
        super().__init__(seed=seed, **params)
        self.seed = seed

    # the one step a plugin overrides
    def attribute(self, model: Model, images: torch.Tensor, sign: float) -> Attribution:
        """Evidence of ``sign * logit`` for each image (model already in eval mode, parameters frozen)."""
        raise NotImplementedError

    # the flow
    def explain(self, model: Model, images: torch.Tensor, target: str = "abnormal") -> Explanation:
        sign = score_sign(target)
        if images.ndim != 4:
            raise PluginError(
                f"explainer {self.name!r} expects images of shape (B, C, H, W), got {tuple(images.shape)}"
            )
        if model.tags.ensemble and getattr(model, "members", None):
            return self._explain_ensemble(model, images, target)
        self.check_model(model)
        from torch import nn

        with contextlib.ExitStack() as stack:
            if isinstance(model, nn.Module):
                stack.enter_context(eval_mode(model))
                stack.enter_context(frozen_parameters(model))
            stack.enter_context(seeded(self.seed))
            result = self.attribute(model, images.detach(), sign)

        raw = _to_numpy(result.raw)
        evidence = np.maximum(raw, 0.0) if result.evidence is None else _to_numpy(result.evidence)
        maps = normalize_maps(resize_maps(evidence, (int(images.shape[-2]), int(images.shape[-1]))))
        return Explanation(
            maps=maps,
            raw=raw.astype(np.float32, copy=False),
            probabilities=_to_numpy(result.probabilities).reshape(-1).astype(np.float32),
            method=self.name,
            target=target,
            params=_json_params(self.params),
            model=model.name,
            model_fingerprint=fingerprint(model),
            seed=self.seed,
            extras=dict(result.extras),
        )

    def _explain_ensemble(self, model: Model, images: torch.Tensor, target: str) -> Explanation:
        """One explanation per member; fused map weighted by each member's probability of ``target``."""
        import torch
        from torch import nn

        members: list[Model] = list(model.members)
        for member in members:
            self.check_model(member)
        parts = [self.explain(member, images, target) for member in members]
        member_maps = np.stack([p.maps for p in parts])  # (M, B, H, W)
        member_probs = np.stack([p.probabilities for p in parts])  # (M, B)
        weights = member_probs if target == "abnormal" else 1.0 - member_probs
        fused, disagreement = fuse_member_maps(member_maps, weights)
        with contextlib.ExitStack() as stack, torch.no_grad():
            if isinstance(model, nn.Module):
                stack.enter_context(eval_mode(model))
            probs = model.predict_proba(images.detach())
        names = list(getattr(model, "member_names", None) or [getattr(m, "name", "member") for m in members])
        if len(set(names)) < len(names):  # the same architecture twice: number them
            names = [f"{i}-{n}" for i, n in enumerate(names)]
        return Explanation(
            maps=normalize_maps(fused),
            raw=fused,
            probabilities=_to_numpy(probs).reshape(-1).astype(np.float32),
            method=self.name,
            target=target,
            params=_json_params(self.params),
            model=model.name,
            model_fingerprint=fingerprint(model),
            seed=self.seed,
            extras={
                "member_names": names,
                "member_maps": member_maps.astype(np.float32),
                "member_probabilities": member_probs.astype(np.float32),
                "disagreement": disagreement,
            },
        )


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, str | int | float | bool | type(None)) else repr(v)) for k, v in params.items()}
