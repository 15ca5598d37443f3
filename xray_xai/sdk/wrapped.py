"""Any torch classifier as an xray-xai model: :class:`WrappedModel` (behind ``api.wrap_model`` and ``xray-xai import``).

A network from elsewhere keeps its own module names and its own ``forward``; the wrapper adds what explainers, the
audit and clustering read from a :class:`~xray_xai.sdk.torch_model.TorchModel`:

* ``forward`` turns the network's output into one logit per image, by the declared ``output`` convention:

  - ``"logit"``: one output, the logit itself;
  - ``"probability"``: one output that already went through a sigmoid (``torch.logit`` of it, clamped to
    ``[1e-7, 1 - 1e-7]``, so ``predict_proba`` gives back the network's own probability);
  - ``"softmax"``: ``K >= 2`` class scores before a softmax; the logit of class ``positive_index`` against the rest,
    ``z_pos - logsumexp(z_others)`` (``z1 - z0`` for two classes), so ``sigmoid(logit)`` is its softmax probability;
  - ``"softmax-probability"``: ``K`` probabilities from a softmax inside ``forward``: ``log p_pos - log(1 - p_pos)``.

* ``features`` is the input of the network's last ``nn.Linear`` (its head), tapped by a pre-hook through the
  parameter-free ``feature_tap`` module (``feature_layer``);
* ``classifier`` is an ``nn.Linear(D, 1)`` giving the logit from the features: the head itself (one output), or for
  two softmax classes one built from the difference of their rows (read afresh on each access, so it follows the
  weights); none for more classes;
* ``target_layer``: given by name (``resolve_layer`` rules), else the module that gives the last feature map of the
  forward pass (4-D output, outside the head and global pooling): ``layer4`` in a ResNet, ``features`` in a torchvision
  DenseNet/MobileNet/EfficientNet, ``bn2`` in timm's EfficientNet;
* ``tags.has_linear_head`` is measured, not assumed: one probe pass checks that the spatial mean of the target map's
  ReLU is the features and the classifier turns them into the logit (CAM, which weighs that ReLU, is exact only
  then; a head with hidden layers fails it, and CAM refuses the model, pointing to Grad-CAM).

The network is held as ``backbone`` (module names ``backbone.<its own name>``; ``layer4`` and ``features.*`` typed
by a user still resolve). In-place activations are switched off (they break Grad-CAM hooks; outputs are unchanged).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
from torch import nn

from xray_xai.errors import PluginError
from xray_xai.sdk.backbone import disable_inplace
from xray_xai.sdk.interfaces import Preprocessing, Tags
from xray_xai.sdk.torch_model import TorchModel

__all__ = ["OUTPUTS", "WrappedModel", "find_head", "find_target_layer"]

#: the output conventions a wrapped network may follow (see the module docstring)
OUTPUTS: tuple[str, ...] = ("logit", "probability", "softmax", "softmax-probability")
_EPS = 1e-7
_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.Flatten)


def find_head(net: nn.Module) -> str:
    """The name of ``net``'s last ``nn.Linear`` in registration order (timm: ``get_classifier()``), or ``""``."""
    get = getattr(net, "get_classifier", None)
    if callable(get):
        head = get()
        for name, mod in net.named_modules():
            if mod is head and isinstance(mod, nn.Linear):
                return name
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else ""


def _probe_input(pre: Preprocessing) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, pre.channels, pre.input_size, pre.input_size, generator=g)


def find_target_layer(net: nn.Module, x: torch.Tensor, head: str = "") -> str:
    """The module of ``net`` whose output is the last 4-D feature map of a forward pass on ``x`` (see module
    docstring); ``""`` when none (a transformer without maps: name one or use a gradient method)."""
    order: list[tuple[str, int]] = []
    handles = []
    head_parents = {head.rsplit(".", i)[0] for i in range(head.count(".") + 1)} if head else set()
    for name, mod in net.named_modules():
        if not name or name in head_parents or isinstance(mod, _POOLS) or "pool" in type(mod).__name__.lower():
            continue

        def hook(_m: nn.Module, _a: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4:
                order.append((name, int(min(out.shape[-2:]))))

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return order[-1][0] if order else ""


class WrappedModel(TorchModel):
    """A torch network from anywhere as an xray-xai model (see the module docstring); ``api.wrap_model`` builds it."""

    name = "wrapped"
    description = "A torch classifier from outside xray-xai, wrapped with its output convention and preprocessing"
    tags: ClassVar[Tags] = Tags(differentiable=True)

    def __init__(
        self,
        net: nn.Module,
        *,
        name: str | None = None,
        preprocessing: Preprocessing | None = None,
        output: str = "logit",
        positive_index: int = 1,
        target_layer: str | None = None,
        **options: Any,
    ) -> None:
        pre = preprocessing or self.default_preprocessing
        super().__init__(image_size=pre.input_size, **options)
        if output not in OUTPUTS:
            raise PluginError(f"unknown output convention {output!r}; expected one of {', '.join(OUTPUTS)}")
        if not isinstance(net, nn.Module):
            raise PluginError(f"can only wrap a torch nn.Module, not {type(net).__name__}")
        self.preprocessing = pre
        if name:
            self.name = name  # type: ignore[misc]  # the instance's name; the class keeps the plugin's
        self.output = output
        self.positive_index = int(positive_index)
        self.backbone = disable_inplace(net)
        self.feature_tap = nn.Identity()
        self.head_name = find_head(net)
        if self.head_name:
            net.get_submodule(self.head_name).register_forward_pre_hook(self._tap)
        self._check_classes()
        self._set_layers(target_layer)

    # -- the contract -----------------------------------------------------------------------------------------
    def _tap(self, _module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (self.feature_tap(args[0]), *args[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_logit(self.backbone(x))

    def to_logit(self, out: Any) -> torch.Tensor:
        """The network's raw output -> one logit per image, by ``self.output``."""
        if not isinstance(out, torch.Tensor):
            raise PluginError(f"model {self.name!r}: forward returned {type(out).__name__}, not a tensor")
        b = out.shape[0]
        if self.output in ("logit", "probability"):
            if out.numel() != b:
                raise PluginError(
                    f"model {self.name!r}: output {self.output!r} needs one value per image, got shape "
                    f"{tuple(out.shape)} (a softmax classifier? use output='softmax')"
                )
            out = out.reshape(b)
            return torch.logit(out, eps=_EPS) if self.output == "probability" else out
        z = out.reshape(b, -1)
        k, pos = z.shape[1], self.positive_index
        if not 0 <= pos < k or k < 2:
            raise PluginError(f"model {self.name!r}: positive class {pos} is not among its {k} softmax outputs")
        others = torch.cat([z[:, :pos], z[:, pos + 1 :]], dim=1)
        if self.output == "softmax":
            return z[:, pos] - torch.logsumexp(others, dim=1)
        p = z[:, pos].clamp(_EPS, 1 - _EPS)
        return torch.log(p) - torch.log1p(-p)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if not self.head_name:
            raise PluginError(f"model {self.name!r} has no final nn.Linear: its features are not defined")
        box: dict[str, torch.Tensor] = {}
        handle = self.feature_tap.register_forward_hook(lambda _m, _a, out: box.__setitem__("f", out))
        try:
            self.backbone(x)
        finally:
            handle.remove()
        return box["f"].flatten(1)

    @property
    def classifier(self) -> nn.Linear:  # type: ignore[override]  # derived from the head, not a module of its own
        """``Linear(D, 1)`` from the features to the logit (see the module docstring)."""
        head = self.backbone.get_submodule(self.head_name) if self.head_name else None
        if not isinstance(head, nn.Linear):
            raise AttributeError("classifier")
        if head.out_features == 1 and self.output in ("logit", "probability"):
            return head
        if head.out_features == 2 and self.output == "softmax":
            pos = self.positive_index
            lin = nn.Linear(head.in_features, 1, bias=head.bias is not None).to(head.weight)
            with torch.no_grad():
                lin.weight.copy_((head.weight[pos] - head.weight[1 - pos]).unsqueeze(0))
                if head.bias is not None:
                    lin.bias.copy_((head.bias[pos] - head.bias[1 - pos]).reshape(1))
            return lin
        raise AttributeError("classifier")

    def config(self) -> dict[str, Any]:
        return {
            **self._options,
            "output": self.output,
            "positive_index": self.positive_index,
            "target_layer": self.target_layer,
        }

    # -- set-up ---------------------------------------------------------------------------------------------------
    def _check_classes(self) -> None:
        head = self.backbone.get_submodule(self.head_name) if self.head_name else None
        k = head.out_features if isinstance(head, nn.Linear) else None
        if k is None:
            return
        if self.output in ("logit", "probability") and k != 1:
            raise PluginError(
                f"model {self.name!r}: output {self.output!r} needs one output, its last linear layer "
                f"{self.head_name!r} has {k} (use output='softmax' with positive_index)"
            )
        if self.output.startswith("softmax") and not 0 <= self.positive_index < k:
            raise PluginError(
                f"model {self.name!r}: positive index {self.positive_index} is not among the {k} outputs of "
                f"{self.head_name!r}"
            )

    def _set_layers(self, target_layer: str | None) -> None:
        """Target and feature layers, and the tags measured on one probe pass (see the module docstring)."""
        from xray_xai.sdk.layers import resolve_layer

        was_training = self.training
        self.eval()
        try:
            x = _probe_input(self.preprocessing)
            if target_layer:
                self.target_layer = resolve_layer(self, target_layer)
            else:
                found = find_target_layer(self.backbone, x, self.head_name)
                self.target_layer = f"backbone.{found}" if found else ""
            self.feature_layer = "feature_tap" if self.head_name else ""
            linear = bool(self.target_layer) and self._linear_head_holds(x)
        finally:
            self.train(was_training)
        self.tags = replace(  # type: ignore[misc]
            type(self).tags, has_target_layer=bool(self.target_layer), has_linear_head=linear
        )

    def _linear_head_holds(self, x: torch.Tensor) -> bool:
        """Whether the target map's spatial mean is the features and the classifier turns them into the logit."""
        try:
            classifier = self.classifier
        except AttributeError:
            return False
        box: dict[str, torch.Tensor] = {}
        handle = self.get_submodule(self.target_layer).register_forward_hook(  # a copy: in-place ops may follow
            lambda _m, _a, out: box.__setitem__("map", out.detach().clone())
        )
        try:
            with torch.no_grad():
                feats = self.forward_features(x)
                logit = self(x)
        except Exception:  # a network that cannot run the probe: no claim of a linear head
            return False
        finally:
            handle.remove()
        fmap = box.get("map")
        if fmap is None or fmap.ndim != 4 or fmap.shape[1] != feats.shape[1]:
            return False
        with torch.no_grad():
            again = classifier(feats).reshape(-1)
        pooled = torch.relu(fmap).mean(dim=(2, 3))  # CAM weighs the ReLU of the map (DenseNet's ReLU is functional)
        return bool(
            torch.allclose(pooled, feats, atol=1e-5, rtol=1e-4) and torch.allclose(again, logit, atol=1e-4, rtol=1e-4)
        )
