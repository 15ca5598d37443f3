"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018) for one-logit binary heads.

Written for this project's contract rather than wrapping pytorch-grad-cam:

* the score is the single logit for "abnormal" and its negation for "normal" (pytorch-grad-cam's
  ``BinaryClassifierOutputTarget`` gets the "normal" case wrong, issue #428);
* the activation is captured by a forward hook as a fresh leaf tensor and differentiated with
  ``torch.autograd.grad`` - no tensor grad hooks, which in-place ReLUs after the layer break (issue #147, DenseNet),
  and no parameter gradients: one forward pass and a backward from the logit down to the target layer only;
* the probabilities come from that same forward pass.
"""

from __future__ import annotations

import torch
from torch import nn

from xray_xai.errors import PluginError
from xray_xai.sdk import Attribution, Model, Tags, TorchExplainer, capture_activation, logits_of, resolve_layer

__all__ = ["GradCAM", "GradCAMPlusPlus", "activations_and_gradients"]


def activations_and_gradients(
    model: Model, images: torch.Tensor, layer: str, sign: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A, d (sign * logit) / d A, logits)`` for the output ``A`` of ``layer``: one forward, partial backward."""
    if not isinstance(model, nn.Module):
        raise PluginError(f"grad-cam needs a torch model; {model.name!r} is not one")
    with capture_activation(model, layer, differentiable=True) as captured, torch.enable_grad():
        logits = logits_of(model, images)
        acts = captured.get(layer)
        if not logits.requires_grad:
            raise PluginError(f"the logit of model {model.name!r} does not depend on layer {layer!r}")
        (grads,) = torch.autograd.grad((sign * logits).sum(), acts)
    if acts.ndim != 4:
        raise PluginError(f"grad-cam: layer {layer!r} gives shape {tuple(acts.shape)}, not (B, C, h, w)")
    return acts.detach(), grads.detach(), logits.detach()


class GradCAM(TorchExplainer):
    """Grad-CAM: channel weights are the spatial mean of the score's gradient; map = ReLU(sum_k alpha_k A_k)."""

    name = "gradcam"
    description = "Grad-CAM on the target layer (gradient-weighted activations; one forward + partial backward)"
    tags = Tags(needs_gradients=True, needs_target_layer=True, deterministic=True, supports_batch=True)

    def __init__(self, *, layer: str | None = None, seed: int | None = 0) -> None:
        super().__init__(layer=layer, seed=seed)
        self.layer = layer

    def channel_weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` weights of the activation channels (the step Grad-CAM++ overrides)."""
        return grads.mean(dim=(2, 3))

    def attribute(self, model: Model, images: torch.Tensor, sign: float) -> Attribution:
        module: nn.Module = model  # type: ignore[assignment]
        # a named layer may be an alias (blocks.4, torchvision's features.denseblock3); default: the target layer
        layer = resolve_layer(module, self.layer) if self.layer else str(getattr(model, "target_layer", ""))
        acts, grads, logits = activations_and_gradients(model, images, layer, sign)
        weights = self.channel_weights(acts, grads)
        cam = torch.einsum("bk,bkhw->bhw", weights, acts)
        return Attribution(raw=cam, probabilities=torch.sigmoid(logits))


class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++: pixel-wise weighted positive gradients, alpha = g^2 / (2 g^2 + sum_ab A_ab g^3).

    The closed form assumes the score is exp(logit); its usual approximation applies to the single logit here.
    """

    name = "gradcam++"
    description = "Grad-CAM++ on the target layer (second/third-order gradient weighting, closed form)"
    tags = Tags(needs_gradients=True, needs_target_layer=True, deterministic=True, supports_batch=True)

    def channel_weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        g2 = grads.pow(2)
        g3 = g2 * grads
        sum_acts = acts.sum(dim=(2, 3), keepdim=True)
        denom = 2 * g2 + sum_acts * g3
        alpha = torch.where(denom.abs() > 1e-12, g2 / torch.where(denom.abs() > 1e-12, denom, 1.0), 0.0)
        return (alpha * torch.relu(grads)).sum(dim=(2, 3))
