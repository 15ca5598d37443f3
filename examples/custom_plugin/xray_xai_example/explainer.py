"""Input x gradient: a one-function explainer showing the smallest complete xray-xai plugin."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xray_xai.sdk.interfaces import Explainer, Explanation, Model, Tags


class InputXGradient(Explainer):
    """|x * d logit / d x|, summed over channels, scaled to [0, 1] per image."""

    name = "input-x-gradient"
    description = "Input times gradient of the abnormal logit (example third-party plugin)."
    tags = Tags(needs_gradients=True, deterministic=True, supports_batch=True)

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)

    def explain(self, model: Model, images: torch.Tensor, target: str = "abnormal") -> Explanation:
        self.check_model(model)
        module: Any = model
        flags = [p.requires_grad for p in module.parameters()]
        for p in module.parameters():  # never compute parameter gradients while explaining
            p.requires_grad_(False)
        try:
            x = images.detach().clone().requires_grad_(True)
            logits = module(x)
            score = logits if target == "abnormal" else -logits
            (grad,) = torch.autograd.grad(score.sum(), x)
        finally:
            for p, flag in zip(module.parameters(), flags, strict=True):
                p.requires_grad_(flag)
        raw = (x.detach() * grad).sum(dim=1).abs()
        maps = F.interpolate(raw[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        flat = maps.flatten(1)
        lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        maps = ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(maps)
        return Explanation(
            maps=maps.numpy().astype(np.float32),
            raw=raw.numpy().astype(np.float32),
            probabilities=torch.sigmoid(logits.detach()).numpy(),
            method=self.name,
            target=target,
            params=dict(self.params),
            model=model.name,
        )
