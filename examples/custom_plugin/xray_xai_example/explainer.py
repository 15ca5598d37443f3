"""Input x gradient: the smallest complete xray-xai explainer plugin, written on the SDK.

``TorchExplainer`` owns the flow: it refuses models without the capabilities in ``tags``, puts the model in eval
mode, freezes its parameters (restored after), seeds a forked RNG, moves the result to the CPU, keeps the positive
evidence, resizes it to the input and scales each map to [0, 1]. A plugin overrides one step, ``attribute``.
"""

from __future__ import annotations

import torch

from xray_xai.sdk import Attribution, Model, Tags, TorchExplainer, logits_of


class InputXGradient(TorchExplainer):
    """x * d score / d x, summed over channels: positive where the pixel's value pushes the score up."""

    name = "input-x-gradient"  # must equal the entry-point name in pyproject.toml
    description = "Input times gradient of the target score (example third-party plugin)."
    tags = Tags(needs_gradients=True, deterministic=True, supports_batch=True)

    def attribute(self, model: Model, images: torch.Tensor, sign: float) -> Attribution:
        x = images.clone().requires_grad_(True)
        with torch.enable_grad():
            logits = logits_of(model, x)  # one logit per image; sign is +1 for "abnormal", -1 for "normal"
            (grad,) = torch.autograd.grad((sign * logits).sum(), x)
        return Attribution(raw=(x * grad).sum(dim=1), probabilities=torch.sigmoid(logits))
