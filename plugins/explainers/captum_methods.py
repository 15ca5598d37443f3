"""Integrated gradients, SmoothGrad and occlusion through captum, on the single logit (negated for "normal").

Baselines (integrated gradients, occlusion) are films, not tensors of zeros in normalised space:

* ``"black"``: an all-black film (intensity 0) pushed through the model's normalisation - "no tissue";
* ``"mean"``: a uniform film at each image's own mean intensity - keeps the overall brightness, removes structure.

Noise (SmoothGrad) is drawn from the forked, seeded torch RNG, so a seed gives the same map every time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import numpy as np
import torch

from xray_xai.data.geometry import to_tensor
from xray_xai.errors import PluginError
from xray_xai.sdk import Attribution, Model, Preprocessing, Tags, TorchExplainer, logits_of

__all__ = ["IntegratedGradients", "Occlusion", "SmoothGrad", "baseline_images"]

Baseline = Literal["black", "mean"]


def baseline_images(images: torch.Tensor, pre: Preprocessing, kind: str) -> torch.Tensor:
    """The baseline film of each image, in the model's input space (same shape as ``images``)."""
    if kind not in ("black", "mean"):
        raise PluginError(f"unknown baseline {kind!r}; expected 'black' or 'mean'")
    if kind == "mean":  # a uniform image at the per-image, per-channel mean: the mean film, normalised
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).contiguous()
    # an all-black film through the model's own normalisation (value per channel), broadcast to the batch
    black = to_tensor(np.zeros((2, 2), np.float32), replace(pre, mode="resize", input_size=2, crop=None))
    black = black[: images.shape[1], :1, :1].to(images)
    return black[None].expand_as(images).contiguous()


def _score(model: Model, sign: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: sign * logits_of(model, x)


def _probabilities(model: Model, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.sigmoid(logits_of(model, images))


class IntegratedGradients(TorchExplainer):
    """Integrated gradients (Sundararajan et al. 2017) from a black (default) or mean film to the image.

    The map is the positive part of the attribution summed over channels (evidence for the target);
    ``internal_batch_size`` bounds memory to that many images per forward. ``nt_samples > 0`` wraps it in captum's
    noise tunnel (SmoothGrad-averaged IG over that many seeded noisy copies, noise ``stdevs`` x the input range),
    which removes much of IG's pixel-level speckle at ``nt_samples`` times the cost.
    """

    name = "integrated-gradients"
    description = "Integrated gradients from a black (or mean) film; positive attribution summed over channels"
    tags = Tags(needs_gradients=True, deterministic=True, supports_batch=True)

    def __init__(
        self,
        *,
        n_steps: int = 32,
        baseline: Baseline = "black",
        internal_batch_size: int = 16,
        nt_samples: int = 0,
        stdevs: float = 0.15,
        seed: int | None = 0,
    ) -> None:
        if baseline not in ("black", "mean"):
            raise PluginError(f"integrated-gradients: unknown baseline {baseline!r}; expected 'black' or 'mean'")
        if nt_samples < 0 or stdevs < 0:
            raise PluginError("integrated-gradients: nt_samples and stdevs must be >= 0")
        super().__init__(
            n_steps=n_steps,
            baseline=baseline,
            internal_batch_size=internal_batch_size,
            nt_samples=nt_samples,
            stdevs=stdevs,
            seed=seed,
        )
        self.n_steps = n_steps
        self.baseline = baseline
        self.internal_batch_size = internal_batch_size
        self.nt_samples = int(nt_samples)
        self.stdevs = float(stdevs)

    def attribute(self, model: Model, images: torch.Tensor, sign: float) -> Attribution:
        from captum.attr import IntegratedGradients as CaptumIG

        base = baseline_images(images, model.preprocessing, self.baseline)
        ig = CaptumIG(_score(model, sign))
        with torch.enable_grad():
            if self.nt_samples > 0:
                from captum.attr import NoiseTunnel

                span = float(images.max() - images.min()) or 1.0
                attr = NoiseTunnel(ig).attribute(
                    images,
                    nt_type="smoothgrad",
                    nt_samples=self.nt_samples,
                    nt_samples_batch_size=1,  # one noisy copy of the batch at a time: IG already runs n_steps
                    stdevs=self.stdevs * span,
                    baselines=base,
                    n_steps=self.n_steps,
                    internal_batch_size=max(1, self.internal_batch_size),
                )
            else:
                attr = ig.attribute(
                    images, baselines=base, n_steps=self.n_steps, internal_batch_size=max(1, self.internal_batch_size)
                )
        return Attribution(raw=attr.sum(dim=1), probabilities=_probabilities(model, images))


class SmoothGrad(TorchExplainer):
    """SmoothGrad (Smilkov et al. 2017): |gradient| averaged over noisy copies, max over channels.

    ``stdevs`` is the noise level as a fraction of the batch's input range (the paper's sigma / (max - min));
    ``nt_samples_batch_size`` bounds how many noisy copies run per forward.
    """

    name = "smoothgrad"
    description = "SmoothGrad: absolute input gradients averaged over noisy copies (seeded noise)"
    tags = Tags(needs_gradients=True, deterministic=True, supports_batch=True)

    def __init__(
        self,
        *,
        nt_samples: int = 16,
        stdevs: float = 0.15,
        nt_samples_batch_size: int = 8,
        seed: int | None = 0,
    ) -> None:
        if nt_samples < 1 or stdevs < 0:
            raise PluginError("smoothgrad: nt_samples must be >= 1 and stdevs >= 0")
        super().__init__(nt_samples=nt_samples, stdevs=stdevs, nt_samples_batch_size=nt_samples_batch_size, seed=seed)
        self.nt_samples = nt_samples
        self.stdevs = stdevs
        self.nt_samples_batch_size = nt_samples_batch_size

    def attribute(self, model: Model, images: torch.Tensor, sign: float) -> Attribution:
        from captum.attr import NoiseTunnel
        from captum.attr import Saliency as CaptumSaliency

        span = float(images.max() - images.min()) or 1.0
        with torch.enable_grad():
            attr = NoiseTunnel(CaptumSaliency(_score(model, sign))).attribute(
                images,
                nt_type="smoothgrad",
                nt_samples=self.nt_samples,
                nt_samples_batch_size=max(1, min(self.nt_samples, self.nt_samples_batch_size)),
                stdevs=self.stdevs * span,
                abs=True,
            )
        return Attribution(raw=attr.amax(dim=1), probabilities=_probabilities(model, images))


class Occlusion(TorchExplainer):
    """Occlusion (Zeiler & Fergus 2014): the drop of the target score when a square patch is replaced by the
    baseline film. ``window`` is the patch side as a fraction of the image side, ``stride`` a fraction of the
    window. Needs no gradients, so it also explains models that are not differentiable."""

    name = "occlusion"
    description = "Occlusion: score drop when a sliding patch (a fraction of the image) is blanked out"
    tags = Tags(deterministic=True, supports_batch=True)

    def __init__(
        self,
        *,
        window: float = 0.125,
        stride: float = 0.5,
        baseline: Baseline = "mean",
        perturbations_per_eval: int = 8,
        seed: int | None = 0,
    ) -> None:
        if not 0.0 < window <= 1.0 or not 0.0 < stride <= 1.0:
            raise PluginError("occlusion: window and stride must be fractions in (0, 1]")
        if baseline not in ("black", "mean"):
            raise PluginError(f"occlusion: unknown baseline {baseline!r}; expected 'black' or 'mean'")
        super().__init__(
            window=window, stride=stride, baseline=baseline, perturbations_per_eval=perturbations_per_eval, seed=seed
        )
        self.window = window
        self.stride = stride
        self.baseline = baseline
        self.perturbations_per_eval = perturbations_per_eval

    def attribute(self, model: Model, images: torch.Tensor, sign: float) -> Attribution:
        from captum.attr import Occlusion as CaptumOcclusion

        c, h, w = (int(s) for s in images.shape[1:])
        win = max(1, round(self.window * min(h, w)))
        step = max(1, round(self.stride * win))
        base = baseline_images(images, model.preprocessing, self.baseline)
        with torch.no_grad():
            attr = CaptumOcclusion(_score(model, sign)).attribute(
                images,
                sliding_window_shapes=(c, win, win),
                strides=(c, step, step),
                baselines=base,
                perturbations_per_eval=max(1, self.perturbations_per_eval),
            )
        return Attribution(raw=attr.mean(dim=1), probabilities=_probabilities(model, images))
