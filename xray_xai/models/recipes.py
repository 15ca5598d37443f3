"""Named training recipes: a model, a data set and every option that decides the weights, under one name.

``xray-xai train --recipe fracatlas-lite0 --data DIR`` trains what the shipped model was trained with; an option
given on the command line overrides the recipe's. A recipe is documented where its numbers are (the model card,
docs/localisation.md), so a user can reproduce a published result with one flag. Importing this module is cheap.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xray_xai.errors import PluginError

__all__ = ["RECIPES", "Recipe", "recipe"]


@dataclass(frozen=True)
class Recipe:
    """One named recipe: the model plugin, the dataset plugin and the :class:`~xray_xai.models.config.TrainConfig`
    fields it sets (the rest keep their defaults)."""

    name: str
    model: str
    dataset: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def config(self) -> Any:
        """The recipe as a :class:`~xray_xai.models.config.TrainConfig`."""
        from xray_xai.models.config import TrainConfig

        return TrainConfig.from_options(**dict(self.options))


_FRACATLAS_LITE0 = {
    "epochs": 8, "batch_size": 32, "optimizer": "adamw", "lr": 5e-4, "schedule": "cosine", "monitor": "auroc",
    "augment": "standard", "loss": "weighted-bce", "early_stop": 8, "seed": 0,
}  # fmt: skip

#: both guidance terms: the last layer's CAM outside the boxes and the soft pointing game on the default explainer's map
_GUIDED_POINT = {
    **_FRACATLAS_LITE0, "guide": "boxes", "guide_loss": "outside+layercam-point", "guide_weight": (0.3, 0.05),
}  # fmt: skip

#: the recipes ``train --recipe`` knows, by name
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "fracatlas-lite0", "efficientnet-lite0", "fracatlas", _FRACATLAS_LITE0,
            "The shipped model fracatlas-lite0: EfficientNet-Lite0 fine-tuned on FracAtlas with labels alone "
            "(docs/model-card-fracatlas-lite0.md).",
        ),
        Recipe(
            "fracatlas-lite0-guided", "efficientnet-lite0", "fracatlas",
            {**_FRACATLAS_LITE0, "guide": "boxes", "guide_loss": "outside", "guide_weight": 0.3},
            "The same with box guidance (the share of the last layer's CAM outside the fracture boxes, weight 0.3), "
            "the shipped model fracatlas-lite0-guided: on the test split LayerCAM and Grad-CAM find the fracture "
            "more often at an AUROC as good (docs/localisation.md, 'Box-guided training').",
        ),
        Recipe(
            "fracatlas-lite0-guided-layercam", "efficientnet-lite0", "fracatlas",
            {**_FRACATLAS_LITE0, "guide": "boxes", "guide_loss": "layercam", "guide_weight": 0.3},
            "Box guidance on the default explainer's own map (the share of the stride-4 LayerCAM map outside the "
            "fracture boxes, weight 0.3): the default explainer finds the fracture most often of all recipes, "
            "last-layer Grad-CAM no more than on labels alone (docs/localisation.md, 'Guiding the default "
            "explainer's map').",
        ),
        Recipe(
            "fracatlas-lite0-guided-point", "efficientnet-lite0", "fracatlas",
            _GUIDED_POINT,
            "Two guidance terms: the last layer's CAM mass outside the fracture boxes (weight 0.3) and the soft "
            "pointing game on the default explainer's stride-4 map (0.05): the best localisation of both explainers "
            "and the fastest deletion at 224 px, at a lower AUROC (docs/localisation.md, 'Both maps at once').",
        ),
        Recipe(
            "fracatlas-lite0-guided-point-288", "efficientnet-lite0", "fracatlas",
            {**_GUIDED_POINT, "image_size": 288, "epochs": 6},
            "fracatlas-lite0-guided-point at 288 px for 6 epochs, the same training time as 8 epochs at 224 px: "
            "more pixels per fracture for a better AUROC and faster deletion at the same pointing "
            "(docs/localisation.md, 'More pixels per fracture').",
        ),
    )
}  # fmt: skip


def recipe(name: str) -> Recipe:
    """The recipe ``name``; an unknown name lists the close ones."""
    try:
        return RECIPES[name]
    except KeyError:
        close = difflib.get_close_matches(name, RECIPES, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else f" (known: {', '.join(RECIPES)})"
        raise PluginError(f"unknown recipe {name!r}{hint}") from None
