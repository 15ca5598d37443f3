"""The shared shape of the built-in torch models, for plugin authors too: conv trunk -> global average pool ->
optional MLP -> one logit. Subclass :class:`BackboneModel`, build ``self.backbone`` and call ``_finish(channels)``.

Module names (the contract explainers and the trainer rely on):

* ``backbone``: the convolutional trunk (torchvision/timm names kept inside it, e.g.
  ``backbone.denseblock3.denselayer32``). It cannot be called ``features``: that name is the
  :meth:`~xray_xai.sdk.interfaces.Model.features` method of the model contract;
* ``pool``: global average pooling + flatten;
* ``head``: the optional hidden layers (``nn.Identity`` when ``hidden=()``), whose output is ``forward_features``;
* ``classifier``: the final ``nn.Linear(D, 1)``.

``target_layer`` always names a module whose output is *exactly* the map that ``pool`` averages (post-activation,
never modified in place afterwards), so with ``hidden=()`` CAM is exact: logit = classifier(mean over h, w of the
target map). ``feature_layer`` is ``"head"``: its output is the vector entering ``classifier``.

Construction draws initial weights from torch's global RNG: seed (``torch.manual_seed``) before constructing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import torch
from torch import nn

from xray_xai.errors import PluginError
from xray_xai.sdk.torch_model import TorchModel

__all__ = ["BackboneModel", "build_head", "disable_inplace", "init_linear"]


def disable_inplace(module: nn.Module) -> nn.Module:
    """Set ``inplace=False`` on every activation/dropout: in-place ops break Grad-CAM and captum hooks."""
    for m in module.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False  # type: ignore[assignment]
    return module


def init_linear(layer: nn.Linear, init: str) -> None:
    if init == "he":
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    elif init == "xavier":
        nn.init.xavier_uniform_(layer.weight)
    else:
        raise PluginError(f"unknown init {init!r}; expected 'he' or 'xavier'")
    nn.init.zeros_(layer.bias)


def build_head(in_features: int, hidden: Sequence[int], dropout: float, init: str) -> tuple[nn.Module, int]:
    """Hidden layers ``Linear -> BatchNorm1d -> ReLU -> Dropout`` per size in ``hidden``; returns (module, D)."""
    if not hidden:
        return nn.Identity(), in_features
    layers: list[nn.Module] = []
    d = in_features
    for size in hidden:
        lin = nn.Linear(d, int(size))
        init_linear(lin, init)
        layers += [lin, nn.BatchNorm1d(int(size)), nn.ReLU(), nn.Dropout(dropout)]
        d = int(size)
    return nn.Sequential(*layers), d


class BackboneModel(TorchModel):
    """Base of the built-in torch models; subclasses build ``self.backbone`` and call :meth:`_finish`.

    ``trainable_prefixes`` (class attribute): parameter-name prefixes the fine-tuning regime trains; ``None``
    trains everything. The regime is applied at construction; ``train()`` keeps BatchNorm layers whose
    parameters are all frozen in eval mode, so a frozen trunk stays frozen (running statistics included).
    """

    trainable_prefixes: ClassVar[tuple[str, ...] | None] = None
    #: default hidden sizes of the head (the published architecture's own FC layers, if any)
    default_hidden: ClassVar[tuple[int, ...]] = ()
    #: the file ImageNet weights come from, for documentation; empty if none exist
    pretrained_source: ClassVar[str] = ""
    #: pooling goes straight into the classifier when the head has no hidden layer (then CAM applies)
    _linear_head_capable: ClassVar[bool] = False

    backbone: nn.Module

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """The class's tags describe its default head, so `xray-xai plugins` says what an instance built with the
        defaults can do: a default head with hidden layers has no linear head (CAM refuses it)."""
        super().__init_subclass__(**kwargs)
        cls._linear_head_capable = cls.tags.has_linear_head or cls._linear_head_capable
        cls.tags = replace(cls.tags, has_linear_head=cls._linear_head_capable and not cls.default_hidden)

    def __init__(
        self,
        *,
        pretrained: bool = False,
        hidden: Sequence[int] | None = None,
        dropout: float = 0.5,
        init: str = "he",
        image_size: int | None = None,
        **options: Any,
    ) -> None:
        hidden_t = tuple(int(h) for h in (self.default_hidden if hidden is None else hidden))
        if init not in ("he", "xavier"):
            raise PluginError(f"model {self.name!r}: unknown init {init!r}; expected 'he' or 'xavier'")
        if not 0.0 <= float(dropout) < 1.0:
            raise PluginError(f"model {self.name!r}: dropout must be in [0, 1), got {dropout}")
        if pretrained and not self.tags.pretrained_available:
            raise PluginError(f"model {self.name!r} has no pretrained weights; use pretrained=False")
        super().__init__(
            image_size=image_size,
            pretrained=bool(pretrained),
            hidden=list(hidden_t),
            dropout=float(dropout),
            init=init,
            **options,
        )
        self.hidden = hidden_t
        self.dropout = float(dropout)
        self.init = init
        self.pretrained = bool(pretrained)

    def _finish(self, channels: int) -> None:
        """Add pool, head and classifier after ``self.backbone`` (``channels`` maps), then apply the regime."""
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.head, d = build_head(channels, self.hidden, self.dropout, self.init)
        self.classifier = nn.Linear(d, 1)
        init_linear(self.classifier, self.init)
        self.feature_layer = "head"
        disable_inplace(self)
        linear = self._linear_head_capable and not self.hidden  # CAM needs pooling straight into the linear layer
        if linear != type(self).tags.has_linear_head:
            self.tags = replace(type(self).tags, has_linear_head=linear)  # type: ignore[misc]
        self.set_regime(list(self.trainable_prefixes) if self.trainable_prefixes is not None else None)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's last feature map ``(B, C, h, w)`` (the target layer's output)."""
        return self.backbone(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.feature_map(x)))

    def train(self, mode: bool = True) -> BackboneModel:
        super().train(mode)
        if mode:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    params = list(m.parameters(recurse=False))
                    if params and not any(p.requires_grad for p in params):
                        m.eval()
        return self
