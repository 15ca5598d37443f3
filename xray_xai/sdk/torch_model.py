"""The base class of every torch model plugin: one logit for "abnormal", features, and named layers.

Explainers, the feature cache and the trainer rely only on what is declared here:

* ``forward(x)`` returns one logit per image, shape ``(B,)`` (positive = abnormal);
* ``forward_features(x)`` returns the vector entering the final linear layer, ``(B, D)``;
* ``classifier`` is that final ``nn.Linear(D, 1)`` (CAM reads its weights);
* ``target_layer`` names the module whose output is the last convolutional feature map (Grad-CAM hooks it);
* ``feature_layer`` names the module whose output is the features (the vector entering ``classifier``);
* ``preprocessing`` says how films become inputs; ``config()`` gives the options needed to rebuild the model.

Subclasses build their network in ``__init__`` and implement ``forward_features``; the fine-tuning regime decides
which parameters are trainable (:meth:`set_regime`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from xray_xai.sdk.interfaces import Model, Preprocessing

__all__ = ["TorchModel"]


class TorchModel(nn.Module, Model):
    """A torch binary classifier of radiographs (see module docstring for the contract)."""

    #: the default preprocessing of this architecture; instances may override (e.g. another input size)
    default_preprocessing: ClassVar[Preprocessing] = Preprocessing(name="resize-224-imagenet")
    target_layer: str = ""
    feature_layer: str = ""
    classifier: nn.Linear

    def __init__(self, *, image_size: int | None = None, **options: Any) -> None:
        nn.Module.__init__(self)
        pre = self.default_preprocessing.resized(image_size)  # a centre crop keeps its ratio to the input
        self.preprocessing = pre
        self._options: dict[str, Any] = {"image_size": pre.input_size, **options}

    # -- the contract ----------------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract in spirit
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x)).squeeze(-1)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(images))

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)

    def config(self) -> dict[str, Any]:
        return dict(self._options)

    # -- helpers -----------------------------------------------------------------------------------------------
    def set_regime(self, trainable: list[str] | None) -> None:
        """Make trainable exactly the parameters whose names start with one of ``trainable`` (None: all)."""
        for pname, param in self.named_parameters():
            param.requires_grad_(trainable is None or any(pname.startswith(p) for p in trainable))

    def fingerprint(self) -> str:
        """A short hash of the architecture name and every weight: equal fingerprints, equal outputs."""
        from xray_xai.sdk.fingerprint import hash_state, memoised

        return memoised(self, lambda: hash_state(self.name, self.state_dict()))  # remembered until a weight changes
