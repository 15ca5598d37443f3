"""HiResCAM (Draelos & Carin, 2020): the element-wise product of gradient and activation, summed over channels.

Why beside Grad-CAM: Grad-CAM averages each channel's gradient over space before weighting, which can move evidence
to places the model did not use; HiResCAM keeps the gradient where it is, ``M = ReLU(sum_k dS/dA_k * A_k)``, so at
the last layer of a global-pooling + linear head it is CAM divided by the number of cells (its cells sum to the
logit minus the bias). Unlike LayerCAM it keeps negative gradients, i.e. evidence against the target cancels
evidence for it. Defaults to the model's ``target_layer``; ``layer`` (by name) or ``stride`` pick another stage,
``tta`` and ``blur`` as in ``layercam`` (the stage flow is the SDK's :class:`~xray_xai.sdk.StageCAM`).
"""

from __future__ import annotations

import torch

from xray_xai.errors import PluginError
from xray_xai.sdk import Model, StageCAM, Tags, parse_layers

__all__ = ["HiResCAM", "hirescam_maps"]


def hirescam_maps(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM ``(B, h, w)`` before the ReLU: signed sum over channels of gradient times activation."""
    return (grads * acts).sum(dim=1)


class HiResCAM(StageCAM):
    """HiResCAM on ``model.target_layer`` (or ``layer`` by name, or the stage picked by ``stride``)."""

    name = "hirescam"
    description = "HiResCAM: element-wise gradient x activation summed over channels (faithful at the last layer)"
    tags = Tags(needs_gradients=True, needs_target_layer=True, deterministic=True, supports_batch=True)

    def __init__(
        self,
        *,
        layer: str | None = None,
        stride: int | None = None,
        tta: bool = False,
        blur: float = 0.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__(
            wanted_layers=parse_layers(layer),
            wanted_strides=[int(stride)] if stride is not None else [32],
            tta=tta,
            blur=blur,
            seed=seed,
            layer=layer,
            stride=stride,
        )
        if self._layers is not None and len(self._layers) != 1:
            raise PluginError(f"hirescam takes one layer, got {layer!r}")
        self._by_stride = stride is not None

    def chosen_layers(self, model: Model, images: torch.Tensor) -> list[str]:
        if self._layers is None and not self._by_stride:
            target = str(getattr(model, "target_layer", "") or "")
            if not target:
                raise PluginError(f"model {model.name!r} declares no target layer; pass layer= or stride=")
            return [target]
        return super().chosen_layers(model, images)

    def layer_maps(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return hirescam_maps(acts, grads)
