"""The sanity cascade of one (model, method) pair: do the maps depend on the weights? (Adebayo et al., 2018)

The model is randomised from the output layer down in ``sanity_stages`` cumulative stages
(:func:`xray_xai.audit.randomization.cascading_randomization`); at each stage the method explains the first
``sanity_n`` images on the randomised copy, and Spearman and SSIM compare those maps with the maps on the trained
model. The fully randomised model then explains every image: the last stage is scored on all of them, and those
maps are also the "randomized-model" control. The pair passes when the mean Spearman at full randomisation is
below ``sanity_threshold``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from xray_xai.audit import scores as am
from xray_xai.audit.scoring import AuditSettings, explain_maps
from xray_xai.sdk.interfaces import Model

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["SanityResult", "sanity_cascade"]


@dataclass
class SanityResult:
    """The ``"sanity"`` block of a pair, and the maps of the fully randomised model on every image (None for a
    model without torch parameters, which cannot be randomised)."""

    summary: dict[str, Any]
    randomized_maps: np.ndarray | None


def _stage(layer: str, maps: np.ndarray, rmaps: np.ndarray, s: AuditSettings) -> dict[str, Any]:
    """Spearman and SSIM between the trained model's ``maps`` and the randomised model's ``rmaps``."""
    rho, ssim = am.spearman_maps(maps, rmaps), am.ssim_maps(maps, rmaps)
    return {
        "layer": layer,
        "spearman": am.summarize(rho, n_boot=s.n_boot, seed=s.seed),
        "ssim": am.summarize(ssim, n_boot=s.n_boot, seed=s.seed),
    }


def sanity_cascade(
    explainer: Any,
    model: Model,
    images: torch.Tensor,
    maps: np.ndarray,
    settings: AuditSettings,
    tick: Callable[[int], None] | None = None,
) -> SanityResult:
    """Run the cascade for ``explainer`` on ``model`` (``maps``: its maps on the trained model, all ``images``);
    ``tick`` is called with the number of images explained by each batch (progress)."""
    from xray_xai.audit.randomization import cascading_randomization

    s = settings
    n_img = len(images)
    sub = list(range(min(s.sanity_n, n_img)))
    stages: list[dict[str, Any]] = []
    rand_model: Any = None
    rmaps = np.zeros((0, *maps.shape[1:]), np.float32)
    for layer, rmodel in cascading_randomization(model, s.seed, n_stages=s.sanity_stages):
        rmaps = explain_maps(explainer, rmodel, images[sub], s.batch_size, tick)
        stages.append(_stage(layer, maps[sub], rmaps, s))
        rand_model = rmodel
    if rand_model is None:
        return SanityResult({"status": "not applicable", "reason": "the model has no torch parameters"}, None)
    rest = list(range(len(sub), n_img))
    rmaps_all = np.concatenate(
        [rmaps, explain_maps(explainer, rand_model, images[rest], s.batch_size, tick)] if rest else [rmaps]
    )
    del rand_model
    # the last stage (fully randomised) is scored on every image, since they were all explained
    full_stage = _stage(stages[-1]["layer"], maps, rmaps_all, s)
    stages[-1] |= {"spearman": full_stage["spearman"], "ssim": full_stage["ssim"]}
    full = stages[-1]["spearman"]["mean"]
    passed = am.sanity_passed(np.nan if full is None else full, s.sanity_threshold)
    summary = {
        "status": "pass" if passed else "fail",
        "spearman_full": full,
        "ssim_full": stages[-1]["ssim"]["mean"],
        "threshold": s.sanity_threshold,
        "n_images": len(sub),
        "n_images_full": n_img,
        "stages": stages,
    }
    return SanityResult(summary, rmaps_all)
