"""LayerCAM (Jiang et al., IEEE TIP 2021) at a chosen stage, and its fusion over several stages.

Why: the last convolutional map of an ImageNet CNN is 7 x 7 at 224 px, one cell per 32 px, while a fracture covers
about 1% of a film. Grad-CAM's channel-averaged gradient cannot point inside a cell; LayerCAM weights every
activation by its own positive gradient, ``M = ReLU(sum_k ReLU(dS/dA_k) * A_k)``, which stays meaningful at earlier,
finer stages (56 x 56 or 28 x 28), where findings a few pixels wide still have their own cells.

* ``layer``: a module name (``backbone.blocks.2``; ``blocks.2`` and torchvision's ``features.denseblock3`` are
  accepted too, a wrong name lists close ones). Without it the stage is chosen by ``stride``: the deepest stage
  (a child of the trunk, or of its block list) whose output is at least ``input / stride`` pixels wide - the same
  rule picks ``backbone.blocks.1`` in EfficientNet-Lite0, ``backbone.denseblock1`` in DenseNet and
  ``backbone.layer1`` in ResNet-50 at the default ``stride=4`` (56 x 56 at 224 px).
* ``tta``: averages the maps of the image and its flips (each map flipped back): the finding is the same under a
  flip, the model's checkerboard and padding artefacts are not. ``"h"`` (the default) adds the horizontal flip,
  ``"v"`` the vertical one, ``True`` both, ``False`` none.
* ``scales``: multi-scale averaging, e.g. ``scales=1,2``: the film is also explained enlarged by each factor
  (bilinear), each map scaled to [0, 1] and resized back, then averaged. A fracture line a few pixels wide at
  224 px spans a stride-4 cell at 448 px, so the enlarged pass resolves detail the native pass blurs, while the
  native pass keeps the scale the model was trained at. Probabilities always come from the native pass.
* ``blur``: Gaussian smoothing of the final map, sigma in pixels of the input (0 = none; default 4).

The default (``tta="h"``, ``scales=1``, ``blur=4``: two passes) was chosen for cost: about 3.7x Grad-CAM's time per
film where the previous default (``tta=True, scales=1,2``: three passes at 224 px and three at 448 px) took about
30x, for a pointing game on the FracAtlas test films of 0.25 against 0.31 (0.34 against 0.36 with the 3.5%
tolerance); docs/localisation.md has the study. ``tta=true scales=1,2`` gives the previous default's maps.

The score is the single logit (``target="abnormal"``) or its negation (``"normal"``); gradients are taken with
``torch.autograd.grad`` w.r.t. the captured activations only (parameters are frozen by the base class), and every
hook is removed when the call returns or raises. The stage machinery (layer choice, views, fusion, blur) is the SDK's
:class:`~xray_xai.sdk.StageCAM`; this module adds the LayerCAM map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from xray_xai.errors import PluginError
from xray_xai.sdk import (
    FUSIONS,
    StageCAM,
    Tags,
    parse_layers,
    parse_strides,
)

__all__ = ["LayerCAM", "MultiLayerCAM", "layercam_maps"]


def layercam_maps(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM ``(B, h, w)``: ReLU of the activations weighted by their own positive gradients, summed."""
    return torch.relu((torch.relu(grads) * acts).sum(dim=1))


class _LayerCAMStep(StageCAM):
    """The stage flow with LayerCAM's per-layer map."""

    def layer_maps(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        return layercam_maps(acts, grads)


class LayerCAM(_LayerCAMStep):
    """LayerCAM at one stage: by name (``layer``) or the deepest stage at least ``input / stride`` wide."""

    name = "layercam"
    description = "LayerCAM at a mid-resolution stage (element-wise positive-gradient weighting; small findings)"
    tags = Tags(needs_gradients=True, deterministic=True, supports_batch=True)

    def __init__(
        self,
        *,
        layer: str | None = None,
        stride: int = 4,
        # the film and its horizontal flip, blurred: within 4x Grad-CAM's cost per film, the best pointing on the
        # FracAtlas test and val films among 26 combinations of views (docs/localisation.md, "Cost")
        tta: bool | str = "h",
        blur: float = 4.0,
        scales: float | str | Sequence[float] = 1.0,
        seed: int | None = 0,
    ) -> None:
        super().__init__(
            wanted_layers=parse_layers(layer),
            wanted_strides=parse_strides(int(stride)),
            tta=tta,
            blur=blur,
            scales=scales,
            seed=seed,
            layer=layer,
            stride=int(stride),
        )
        if self._layers is not None and len(self._layers) != 1:
            raise PluginError(f"layercam takes one layer, got {layer!r}; use multilayer-cam for several")


class MultiLayerCAM(_LayerCAMStep):
    """LayerCAM at several stages, each scaled to [0, 1], upsampled to the input and fused (``fusion``)."""

    name = "multilayer-cam"
    description = "LayerCAM maps of several stages fused (mean, geometric mean, max or product)"
    tags = Tags(needs_gradients=True, deterministic=True, supports_batch=True)

    def __init__(
        self,
        *,
        layers: str | Sequence[str] | None = None,
        strides: str | Sequence[int] = (4, 8, 16),
        fusion: str = "mean",
        tta: bool = False,
        blur: float = 0.0,
        scales: float | str | Sequence[float] = 1.0,
        seed: int | None = 0,
    ) -> None:
        if fusion not in FUSIONS:
            raise PluginError(f"unknown fusion {fusion!r}; expected one of {', '.join(FUSIONS)}")
        parsed = parse_layers(layers)
        stride_list = parse_strides(strides)
        super().__init__(
            wanted_layers=parsed,
            wanted_strides=stride_list,
            tta=tta,
            blur=blur,
            scales=scales,
            seed=seed,
            layers=",".join(parsed) if parsed else None,
            strides=",".join(str(s) for s in stride_list),
            fusion=fusion,
        )
        self.fusion = fusion
