"""Vanilla gradient saliency, optionally pooled over SLIC superpixels of the film.

|d score / d pixel| (max over channels) is noisy at pixel level; averaging it over superpixels of the gray film and
discarding the least salient ones (below the ``percentile``-th rank) gives regions a reader can check against
anatomy. ``superpixels=False`` returns the raw gradient map.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from xray_xai.errors import PluginError
from xray_xai.sdk import Attribution, Model, Tags, TorchExplainer, film_from_tensor, logits_of

__all__ = ["Saliency", "input_gradients", "superpixel_means"]


def input_gradients(model: Model, images: torch.Tensor, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d (sign * logit) / d input, logits)`` for a batch: one forward and one backward, input gradients only.

    Images are independent in eval mode, so the gradient of the summed scores gives every image's own gradient. The
    input is not copied: a detached leaf shares the caller's storage, and autograd refuses in-place changes to it.
    """
    x = images.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = logits_of(model, x)
        (grad,) = torch.autograd.grad((sign * logits).sum(), x)
    return grad, logits.detach()


def superpixel_means(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over each label of ``labels`` (same shape, labels 0..n-1), vectorised with bincount."""
    flat = labels.ravel()
    n = int(flat.max()) + 1 if flat.size else 0
    sums = np.bincount(flat, weights=values.ravel().astype(np.float64), minlength=n)
    counts = np.bincount(flat, minlength=n)
    return (sums / np.maximum(counts, 1)).astype(np.float32)


class Saliency(TorchExplainer):
    """Input-gradient saliency (Simonyan et al. 2014) pooled over SLIC superpixels."""

    name = "saliency"
    description = "|d score / d pixel| (max over channels), averaged over SLIC superpixels; dimmest ones discarded"
    tags = Tags(needs_gradients=True, deterministic=True, supports_batch=True)

    def __init__(
        self,
        *,
        superpixels: bool = True,
        n_segments: int = 150,
        compactness: float = 0.1,
        percentile: float = 25.0,
        seed: int | None = 0,
    ) -> None:
        if not 0.0 <= percentile < 100.0:
            raise PluginError(f"saliency: percentile must be in [0, 100), got {percentile}")
        if n_segments < 1:
            raise PluginError(f"saliency: n_segments must be positive, got {n_segments}")
        super().__init__(
            superpixels=superpixels, n_segments=n_segments, compactness=compactness, percentile=percentile, seed=seed
        )
        self.superpixels = superpixels
        self.n_segments = n_segments
        self.compactness = compactness
        self.percentile = percentile

    def attribute(self, model: Model, images: torch.Tensor, sign: float) -> Attribution:
        grad, logits = input_gradients(model, images, sign)
        raw = grad.abs().amax(dim=1).cpu().numpy().astype(np.float32)  # (B, H, W)
        probs = torch.sigmoid(logits)
        if not self.superpixels:
            return Attribution(raw=raw, probabilities=probs)
        films = film_from_tensor(images, model.preprocessing)
        evidence, labels, kept = self._pool(raw, films)
        return Attribution(
            raw=raw,
            probabilities=probs,
            evidence=evidence,
            extras={"superpixels": labels, "kept_superpixels": kept},
        )

    def _pool(self, raw: np.ndarray, films: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Superpixel-mean saliency with the lowest ``percentile`` fraction of superpixels set to zero."""
        from skimage.segmentation import slic

        evidence = np.zeros_like(raw)
        labels_all = np.zeros(raw.shape, dtype=np.int32)
        kept_all = np.zeros(raw.shape, dtype=bool)
        for i, (grad, film) in enumerate(zip(raw, films, strict=True)):
            labels = slic(
                film.astype(np.float64),
                n_segments=self.n_segments,
                compactness=self.compactness,
                channel_axis=None,
                start_label=0,
                enforce_connectivity=True,
            ).astype(np.int32)
            means = superpixel_means(grad, labels)
            n = means.size
            # rank-based so that exactly ceil(q * n) superpixels go, whatever the ties
            drop = min(n - 1, math.ceil(n * self.percentile / 100.0)) if n > 1 else 0
            keep = np.ones(n, dtype=bool)
            keep[np.argsort(means, kind="stable")[:drop]] = False
            evidence[i] = np.where(keep[labels], means[labels], 0.0)
            labels_all[i] = labels
            kept_all[i] = keep[labels]
        return evidence, labels_all, kept_all
