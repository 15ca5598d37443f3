"""Class activation mapping (Zhou et al. 2016): CAM = sum_k w_k A_k from the head's weights and the last features.

Exact for networks that globally average-pool the target layer's (post-ReLU) output into one linear layer: the
spatial mean of the CAM plus the bias is the logit. Needs no gradient at all: one forward pass, which also gives
the probabilities.
"""

from __future__ import annotations

import torch
from torch import nn

from xray_xai.errors import PluginError
from xray_xai.sdk import Attribution, Model, Tags, TorchExplainer, capture_activation, logits_of

__all__ = ["CAM", "linear_head_weights"]


def linear_head_weights(model: Model, channels: int) -> torch.Tensor:
    """The ``(channels,)`` weights of the model's one-logit linear head; a clear error if CAM does not apply."""
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Linear) or head.out_features != 1:
        raise PluginError(f"cam needs a classifier nn.Linear(D, 1) on model {model.name!r}; use gradcam")
    if head.in_features != channels:
        raise PluginError(
            f"cam needs global pooling + one linear layer; use gradcam (model {model.name!r}: classifier takes "
            f"{head.in_features} features, the target layer gives {channels} channels)"
        )
    return head.weight.detach()[0]


class CAM(TorchExplainer):
    """Class activation map from the classifier weights; ``layer`` defaults to ``model.target_layer``."""

    name = "cam"
    description = "Class activation map: classifier weights times the last convolutional features (one forward)"
    tags = Tags(needs_target_layer=True, needs_linear_head=True, deterministic=True, supports_batch=True)

    def __init__(self, *, layer: str | None = None, seed: int | None = 0) -> None:
        super().__init__(layer=layer, seed=seed)
        self.layer = layer

    def check_model(self, model: Model) -> None:
        """The generic refusal, plus where to go instead: Grad-CAM needs no linear head."""
        try:
            super().check_model(model)
        except PluginError as err:
            raise PluginError(f"{err}; use gradcam (the same map from gradients, any head)") from None

    def attribute(self, model: Model, images: torch.Tensor, sign: float) -> Attribution:
        if not isinstance(model, nn.Module):
            raise PluginError(f"cam needs a torch model; {model.name!r} is not one")
        layer = str(self.layer or getattr(model, "target_layer", ""))
        with capture_activation(model, layer) as captured, torch.no_grad():
            logits = logits_of(model, images)
        acts = captured.get(layer)
        if acts.ndim != 4:
            raise PluginError(f"cam: layer {layer!r} gives shape {tuple(acts.shape)}, not a (B, C, h, w) feature map")
        w = linear_head_weights(model, int(acts.shape[1])).to(acts)
        cam = sign * torch.einsum("k,bkhw->bhw", w, torch.relu(acts))
        return Attribution(raw=cam, probabilities=torch.sigmoid(logits))
