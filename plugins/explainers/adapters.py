"""What the library adapters (``captum:*``, ``grad-cam:*``) share: our contract mapped onto a library's.

Our contract: a model with **one logit** (abnormal) and a declared **target layer**, inputs already preprocessed.
A library method wants a forward function with a class axis, a layer module, sometimes baselines or a feature mask.
The mapping, the same for both libraries:

* :class:`SignedLogit` wraps the model so that its output is ``(B, 1)``: ``sign * logit`` (``+1`` for
  "abnormal", ``-1`` for "normal"); the method explains class 0 of that output (captum ``target=0``,
  pytorch-grad-cam ``ClassifierOutputTarget(0)``). Holding the model as a submodule keeps every layer module the
  same object, so a layer method gets ``model.target_layer`` (or ``layer=``) directly.
* Baselines are films, not raw tensors: :func:`baseline_batch` gives ``"blur"`` (the default: the film blurred by a
  Gaussian of ``blur_sigma`` x the side, which removes fine structure such as a fracture line but keeps the bone's
  outline and brightness), ``"black"`` (an all-black film through the model's normalisation), ``"mean"`` (each
  film's mean intensity) or ``"zeros"`` (zeros in normalised space, the libraries' own default).
  :func:`baseline_distribution` stacks black, mean and blurred films for the SHAP-style methods, which average
  over a distribution of baselines.
* Perturbation methods perturb a partition of the film: by default a ``grid`` x ``grid`` partition into square
  patches (:func:`grid_mask`: deterministic, cheap and the same for every film and method, which keeps their costs
  comparable), or SLIC superpixels of each film (:func:`slic_mask`), which follow the bone's edges and a fracture
  line instead of cutting across them.
* :func:`unsupported_activations` names the activation modules of a model that a rule-based method (DeepLift,
  guided backprop, LRP) has no rule for; the adapters refuse such a model instead of silently falling back to
  plain gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from xray_xai.data.geometry import to_tensor
from xray_xai.errors import PluginError
from xray_xai.sdk import Model, Preprocessing, film_from_tensor, gaussian_blur, logits_of, resolve_layer

__all__ = [
    "BASELINES",
    "SEGMENTS",
    "SignedLogit",
    "baseline_batch",
    "baseline_distribution",
    "grid_mask",
    "layer_of",
    "numpy_seeded",
    "slic_mask",
    "split_options",
    "unsupported_activations",
]

BASELINES = ("blur", "black", "mean", "zeros")
SEGMENTS = ("grid", "slic")  #: the partitions a perturbation method can perturb


class SignedLogit(nn.Module):
    """``(B, 1)`` output ``sign * logit`` of a one-logit model: what a multi-class library explains as class 0."""

    def __init__(self, model: Model, sign: float) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise PluginError(f"model {model.name!r} is not a torch module; library methods need one")
        self.model = model
        self.sign = float(sign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.sign * logits_of(self.model, x))[:, None]


@contextlib.contextmanager
def numpy_seeded(seed: int | None) -> Iterator[None]:
    """Seed numpy's global generator (some library methods draw from it: GradientShap, RandomCAM) and restore its
    state afterwards, so a seed gives the same map and the caller's numpy stream is untouched."""
    state = np.random.get_state()
    try:
        np.random.seed(0 if seed is None else int(seed) % 2**32)
        yield
    finally:
        np.random.set_state(state)


def layer_of(model: Model, layer: str | None) -> nn.Module:
    """The module of ``layer`` (a name or an alias, see :func:`~xray_xai.sdk.resolve_layer`), default the model's
    declared target layer."""
    module: nn.Module = model  # type: ignore[assignment]
    name = resolve_layer(module, layer) if layer else str(getattr(model, "target_layer", "") or "")
    if not name:
        raise PluginError(f"model {model.name!r} declares no target layer; give layer=NAME")
    return dict(module.named_modules())[name]


def _black(images: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    black = to_tensor(np.zeros((2, 2), np.float32), replace(pre, mode="resize", input_size=2, crop=None))
    black = black[: images.shape[1], :1, :1].to(images)
    return black[None].expand_as(images).contiguous()


def baseline_batch(images: torch.Tensor, pre: Preprocessing, kind: str, blur_sigma: float = 0.05) -> torch.Tensor:
    """The baseline of each image in the model's input space (same shape as ``images``); see the module doc."""
    if kind == "zeros":
        return torch.zeros_like(images)
    if kind == "black":
        return _black(images, pre)
    if kind == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).contiguous()
    if kind == "blur":
        b, c, h, w = images.shape
        sigma = float(blur_sigma) * max(h, w)
        return gaussian_blur(images.reshape(b * c, h, w), sigma).reshape(b, c, h, w).contiguous()
    raise PluginError(f"unknown baseline {kind!r}; expected one of {', '.join(BASELINES)}")


def baseline_distribution(images: torch.Tensor, pre: Preprocessing, blur_sigma: float = 0.05) -> torch.Tensor:
    """``(3 * B ... )``: black, mean and blurred films stacked (the baselines SHAP-style methods sample from).

    Captum draws from the first axis of this tensor independently of the batch, so it holds each film's own
    baselines only when explaining one film at a time; with a larger batch the films' baselines are pooled (the
    black film is the same for all; mean and blur vary a little between films)."""
    parts = [baseline_batch(images, pre, kind, blur_sigma) for kind in ("black", "mean", "blur")]
    return torch.cat(parts, dim=0)


def grid_mask(images: torch.Tensor, grid: int) -> torch.Tensor:
    """``(1, 1, H, W)`` integer ids of a ``grid`` x ``grid`` partition into patches (broadcast over channels)."""
    if grid < 1:
        raise PluginError(f"grid must be >= 1, got {grid}")
    h, w = int(images.shape[-2]), int(images.shape[-1])
    rows = torch.clamp(torch.arange(h) * grid // h, max=grid - 1)
    cols = torch.clamp(torch.arange(w) * grid // w, max=grid - 1)
    return (rows[:, None] * grid + cols[None, :])[None, None].to(images.device)


def slic_mask(images: torch.Tensor, pre: Preprocessing, n_segments: int, compactness: float) -> torch.Tensor:
    """``(B, 1, H, W)`` integer ids ``0..K_b - 1`` of SLIC superpixels (Achanta et al. 2012) of each film.

    SLIC runs on the gray film recovered from the model input (normalisation undone, channels averaged), so the
    superpixels follow intensity edges of the radiograph whatever the model's normalisation. SLIC rescales each film
    to [0, 1] first, so ``compactness`` weighs space against that range (small: boundaries follow edges; large:
    near-square cells). Ids are renumbered to be contiguous per film (captum counts features as ``max id + 1``)."""
    from skimage.segmentation import slic

    if n_segments < 1:
        raise PluginError(f"n_segments must be >= 1, got {n_segments}")
    if compactness <= 0:
        raise PluginError(f"compactness must be > 0, got {compactness}")
    films = film_from_tensor(images, pre)
    masks = np.empty(films.shape, dtype=np.int64)
    for i, film in enumerate(films):
        labels = slic(
            film.astype(np.float64),
            n_segments=int(n_segments),
            compactness=float(compactness),
            channel_axis=None,
            start_label=0,
            enforce_connectivity=True,
        )
        masks[i] = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
    return torch.from_numpy(masks)[:, None].to(images.device)


def unsupported_activations(model: nn.Module, supported: Iterable[type]) -> list[str]:
    """Names of the activation module types in ``model`` outside ``supported`` (sorted, once each)."""
    allowed = tuple(supported)
    activations = nn.modules.activation
    found = {
        type(m).__name__
        for m in model.modules()
        if type(m).__module__ == activations.__name__ and not isinstance(m, allowed) and not isinstance(m, nn.Identity)
    }
    return sorted(found)


def split_options(
    given: dict[str, Any], own: dict[str, Any], *accepted: Iterable[str], method: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``given`` options into ours (keys of ``own``, defaults filled in) and the library's (any key one of the
    ``accepted`` signatures names); an unknown key raises with the list of what is accepted."""
    library = {k for names in accepted for k in names}
    unknown = sorted(k for k in given if k not in own and k not in library)
    if unknown:
        allowed = ", ".join(sorted({*own, *library}))
        raise PluginError(f"{method}: unknown option(s) {', '.join(unknown)}; accepted: {allowed}")
    ours = {k: given.get(k, v) for k, v in own.items()}
    theirs = {k: v for k, v in given.items() if k not in own}
    return ours, theirs
