"""Box-guided training: a loss term that puts the model's evidence inside the ground-truth boxes.

Training on labels alone lets a model find a fracture by whatever correlates with it; the films that come with
boxes or masks (FracAtlas's fractured films) can say *where* the evidence should be. :class:`Guide` adds, for the
abnormal training films chosen to carry their ground truth, a term computed from a class-activation map of the
guided layer (by default the model's ``target_layer``, the map Grad-CAM reads):

* ``outside`` ("right for the right reasons" on the CAM, after Ross et al. 2017, who penalised input gradients
  outside an annotation): the share of the map's positive mass that falls outside the boxes. Scale-free, in [0, 1].
* ``point``: a soft pointing game. The map is standardised per film and turned into a distribution with a softmax;
  the term is minus the log of the probability inside the boxes, so the map's *peak* is pulled into the box (the
  pointing game scores the peak).
* ``input-grad``: Ross et al.'s own term, the share of the input gradient's magnitude (of the abnormal logit)
  outside the boxes. Needs a second backward pass through the whole network (about 12x the cost of a step).
* ``layercam``: the share of the LayerCAM map (the positive gradient times the activation, summed over channels)
  outside the boxes, at the stage the default explainer reads (the deepest one at least a quarter of the input wide,
  56 x 56 at 224 px; ``layer`` names another). It trains the map users look at, at its own resolution, instead of
  the 7 x 7 map whose cells are larger than most fractures. Its double backward runs through most of the network, so
  it is computed in a second forward pass over the guided films alone (a few per batch), with the batch-norm layers
  on their running statistics so that pass neither updates them nor depends on which films share it.
* ``layercam-point``: the soft pointing game (``point``) on that same stride-4 LayerCAM map, blurred as the default
  explainer blurs what it shows (sigma 4 px = one cell at stride 4). ``layercam`` trains the map's *mass*; the
  pointing game scores its *peak*, which mass alone left outside the box on more than half of FracAtlas's films.

Families join with ``+`` (``outside+layercam-point``, a weight each): the terms add up, each on its own map, so
the last layer's CAM and the default explainer's map can be trained together (:class:`Guides`).

For the first two the map is Grad-CAM's (channel weights = the spatial mean of the logit's gradient), computed with
``create_graph=True`` so the term trains the weights: for a linear head after global average pooling this is the
CAM, and the double backward only goes through the head. Films without ground truth, normal films and films not
drawn by ``fraction`` contribute nothing; the term is averaged over the guided films of the batch and multiplied by
``weight``.

How masks travel: a guided :class:`~xray_xai.data.loader.RecordDataset` appends the ground-truth mask in model
geometry as one extra channel *before* augmentation, so flips, rotations and zooms move film and mask together; a
film without guidance gets a channel of -1. :meth:`Guide.split` takes it off again before the forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xray_xai.errors import PluginError
from xray_xai.sdk.interfaces import Record

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["GUIDE_LOSSES", "GUIDE_SOURCES", "Guide", "GuideSpec", "Guides", "guided_indices", "make_guide"]

#: Sources of guidance ``train --guide`` accepts (``none``: labels only).
GUIDE_SOURCES = ("none", "boxes")
#: Loss families of the guidance term.
GUIDE_LOSSES = ("outside", "point", "input-grad", "layercam", "layercam-point")
#: The mask value of a film that carries no guidance.
NO_MASK = -1.0


@dataclass(frozen=True)
class GuideSpec:
    """What the recipe says about guidance (part of :class:`~xray_xai.models.config.TrainConfig`).

    ``loss`` is one family or several joined with ``+`` (``"outside+layercam-point"``: their terms add up); then
    ``weight`` is one weight for all or a tuple with one per family, in the same order."""

    source: str = "none"
    loss: str = "outside"  # the family and weight that measured best on FracAtlas (docs/localisation.md)
    weight: float | tuple[float, ...] = 0.3
    fraction: float = 1.0
    layer: str | None = None
    start: int = 1  #: the first epoch with the term; the kept epoch is chosen among those from it on
    #: the pointing families' softmax temperature, in standard deviations of the map: 1 weighs every cell's
    #: exp(z), lower values weigh the peaks alone (the pointing game scores the single highest cell)
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.source not in GUIDE_SOURCES:
            raise PluginError(f"unknown guide {self.source!r}; expected one of {', '.join(GUIDE_SOURCES)}")
        families = self.families
        for family in families:
            if family not in GUIDE_LOSSES:
                raise PluginError(f"unknown guide loss {family!r}; expected one of {', '.join(GUIDE_LOSSES)}")
        if len(set(families)) < len(families):
            raise PluginError(f"guide loss {self.loss!r} names a family twice")
        if not 0.0 < self.fraction <= 1.0:
            raise PluginError(f"guide fraction must be in (0, 1], got {self.fraction}")
        weights = self.weights
        if len(weights) != len(families):  # a single weight was shared, so only a list of another length is left
            raise PluginError(
                f"guide loss {self.loss!r} has {len(families)} families but {len(weights)} weights; "
                "give one for all or one each"
            )
        if any(w < 0 for w in weights):
            raise PluginError(f"guide weight must be >= 0, got {self.weight}")
        if self.start < 1:
            raise PluginError(f"guide start must be an epoch >= 1, got {self.start}")
        if not self.temperature > 0:
            raise PluginError(f"guide temperature must be > 0, got {self.temperature}")

    @property
    def active(self) -> bool:
        return self.source != "none"

    @property
    def families(self) -> tuple[str, ...]:
        """The loss families whose terms add up (one for a single family)."""
        return tuple(part.strip() for part in self.loss.split("+"))

    @property
    def weights(self) -> tuple[float, ...]:
        """One weight per family: the tuple given, or the single weight repeated for each."""
        given = self.weight if isinstance(self.weight, tuple) else (self.weight,)
        return tuple(float(w) for w in given) * len(self.families) if len(given) == 1 else given

    def parts(self) -> list[GuideSpec]:
        """One spec per family with its own weight (for a single family, the spec itself)."""
        from dataclasses import replace

        return [replace(self, loss=f, weight=w) for f, w in zip(self.families, self.weights, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        weight = list(self.weight) if isinstance(self.weight, tuple) else self.weight
        out = {"source": self.source, "loss": self.loss, "weight": weight, "fraction": self.fraction,
               "layer": self.layer}  # fmt: skip
        if self.start != 1:  # sidecars of runs guided from the first epoch stay as they were
            out["start"] = self.start
        if self.temperature != 1.0:  # likewise for the temperature
            out["temperature"] = self.temperature
        return out

    def on(self, epoch: int) -> bool:
        """Whether the term trains in ``epoch`` (1-based)."""
        return self.active and epoch >= self.start


def guided_indices(records: Sequence[Record], fraction: float, seed: int) -> list[int]:
    """Indices of the abnormal records with ground truth that carry it into training: all of them, or a seeded
    ``fraction`` (at least one) drawn with numpy, so torch's random stream, which drives the weights and the
    augmentation, is the same as in an unguided run."""
    import numpy as np

    candidates = [i for i, r in enumerate(records) if r.label == 1 and r.has_ground_truth]
    if fraction >= 1.0 or not candidates:
        return candidates
    n = max(1, round(fraction * len(candidates)))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(candidates, size=n, replace=False))


def _resolve_layer(model: Any, name: str | None) -> Any:
    layer = name or getattr(model, "target_layer", "")
    if not layer:
        raise PluginError(
            f"model {getattr(model, 'name', type(model).__name__)!r} declares no target_layer; "
            "name the guided layer with --guide-layer"
        )
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise PluginError(f"guided layer {layer!r} is not a module of the model") from None


class Guide:
    """The guidance term of one run: hooks the guided layer, splits masks off batches, computes the term."""

    def __init__(self, spec: GuideSpec, model: Any) -> None:
        if len(spec.families) > 1:
            raise PluginError(f"Guide takes one loss family, got {spec.loss!r}: use make_guide")
        self.spec = spec
        self._weight = spec.weights[0]
        self._acts: Any = None
        self._hook = None
        self._model = model
        self.layer: str | None = None
        if spec.loss in _SECOND_PASS:
            self.layer = spec.layer or _explainer_stage(model)
            self._hook = _resolve_layer(model, self.layer).register_forward_hook(self._keep_second_pass)
        elif spec.loss != "input-grad":
            self.layer = spec.layer or getattr(model, "target_layer", None)
            self._hook = _resolve_layer(model, spec.layer).register_forward_hook(self._keep)
        self._second_pass = False

    def _keep(self, module: Any, inputs: Any, output: Any) -> None:
        if module.training:
            self._acts = output

    def _keep_second_pass(self, module: Any, inputs: Any, output: Any) -> None:
        if self._second_pass:
            self._acts = output

    def close(self) -> None:
        """Remove the hook (the trained model carries nothing of the guidance)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._acts = None

    def discard(self) -> None:
        """Drop the map kept from this forward pass (an epoch before the term starts)."""
        self._acts = None

    @staticmethod
    def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C+1, S, S)`` from a guided dataset -> images ``(B, C, S, S)`` and masks ``(B, S, S)`` (-1: none)."""
        return x[:, :-1], x[:, -1]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The images as the forward pass should take them (``input-grad`` needs their gradient)."""
        if self.spec.loss == "input-grad":
            return x.requires_grad_(True)
        return x

    def term(self, logits: torch.Tensor, masks: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The weighted guidance term of a batch (0 when no film of it is guided)."""
        import torch

        guided = masks.flatten(1).amax(1) > 0  # a guided film's mask has at least one pixel in the box
        acts, self._acts = self._acts, None
        if not bool(guided.any()) or self._weight == 0:
            return logits.new_zeros(())
        target = (masks[guided] > 0.5).float()
        if self.spec.loss == "input-grad":
            if x is None or not x.requires_grad:
                raise PluginError("input-grad guidance needs the images with requires_grad (Guide.prepare)")
            (grad,) = torch.autograd.grad(logits[guided].sum(), x, create_graph=True)
            saliency = grad[guided].abs().sum(1)
            return self._weight * outside_share(saliency, target).mean()
        if self.spec.loss in _SECOND_PASS:
            if x is None:
                raise PluginError(f"{self.spec.loss} guidance needs the batch's images")
            cam = self._layercam(x[guided].detach())
            cells = _cells(target, cam.shape[-2:])
            if self.spec.loss == "layercam":
                return self._weight * outside_share(torch.relu(cam), cells).mean()
            from xray_xai.sdk.stage_cam import gaussian_blur

            # sigma one cell: the default explainer's blur=4 px at stride 4, so the peak the term pulls into the box
            # is the peak the user will see, not a lone cell the blur removes
            return self._weight * soft_pointing(gaussian_blur(cam, 1.0), cells > 0, self.spec.temperature).mean()
        if acts is None:
            raise PluginError("the guided layer produced no output in this forward pass")
        (grad,) = torch.autograd.grad(logits[guided].sum(), acts, create_graph=True)
        weights = grad[guided].float().mean(dim=(2, 3), keepdim=True)
        cam = (weights * acts[guided].float()).sum(1)
        if self.spec.loss == "outside":
            return self._weight * outside_share(torch.relu(cam), _cells(target, cam.shape[-2:])).mean()
        inside = _cells(target, cam.shape[-2:]) > 0
        return self._weight * soft_pointing(cam, inside, self.spec.temperature).mean()

    def _layercam(self, images: torch.Tensor) -> torch.Tensor:
        """The LayerCAM map ``(n, h, w)`` of the guided films at the guided stage, from a second pass."""
        import torch

        model = self._model
        was_training = model.training
        model.eval()  # running batch-norm statistics: these few films are not a batch to normalise by
        self._second_pass = True
        try:
            logits = _logits(model(images))
        finally:
            self._second_pass = False
            model.train(was_training)
        acts, self._acts = self._acts, None
        if acts is None:
            raise PluginError(f"the guided layer {self.layer!r} produced no output in the guidance pass")
        (grad,) = torch.autograd.grad(logits.sum(), acts, create_graph=True)
        return (torch.relu(grad.float()) * acts.float()).sum(1)


class Guides:
    """Several loss families at once (``GuideSpec.loss = "outside+layercam-point"``): one :class:`Guide` per family,
    their terms added. Each keeps its own hook, so a family on the last layer and one on the explainer's stage can
    train together; the second pass of the LayerCAM families runs once per family."""

    def __init__(self, spec: GuideSpec, model: Any) -> None:
        self.spec = spec
        self.parts = [Guide(part, model) for part in spec.parts()]

    split = staticmethod(Guide.split)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        for part in self.parts:
            x = part.prepare(x)
        return x

    def term(self, logits: torch.Tensor, masks: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The sum of the families' weighted terms."""
        total = logits.new_zeros(())
        for part in self.parts:
            total = total + part.term(logits, masks, x)
        return total

    def discard(self) -> None:
        for part in self.parts:
            part.discard()

    def close(self) -> None:
        for part in self.parts:
            part.close()


def make_guide(spec: GuideSpec, model: Any) -> Guide | Guides:
    """The guidance term of a run: a :class:`Guide` for one family, :class:`Guides` for several."""
    return Guide(spec, model) if len(spec.families) == 1 else Guides(spec, model)


#: The families whose term is computed on the default explainer's stage in a second pass.
_SECOND_PASS = ("layercam", "layercam-point")


def _logits(out: Any) -> torch.Tensor:
    """The abnormal logit per film from a model's output (``(B,)`` or ``(B, 1)``)."""
    return out.reshape(out.shape[0], -1)[:, -1] if out.ndim > 1 else out


def _explainer_stage(model: Any) -> str:
    """The stage the default explainer (``layercam``, ``stride=4``) reads, found with one probe pass in eval mode."""
    import torch

    from xray_xai.sdk.layers import layers_at_strides

    pre = model.preprocessing
    probe = torch.zeros(1, int(pre.channels), int(pre.input_size), int(pre.input_size))
    was_training = model.training
    model.eval()
    try:
        return layers_at_strides(model, probe, [4])[0]
    finally:
        model.train(was_training)


def _cells(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The share of each map cell covered by the mask ``(n, S, S)`` -> ``(n, h, w)``."""
    import torch.nn.functional as F

    return F.adaptive_avg_pool2d(mask.unsqueeze(1), (int(size[0]), int(size[1]))).squeeze(1)


def outside_share(positive: torch.Tensor, inside: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per film, the share of a non-negative map's mass outside the (soft) mask ``inside`` in [0, 1]."""
    total = positive.flatten(1).sum(1)
    outside = (positive * (1.0 - inside)).flatten(1).sum(1)
    return outside / (total + eps)


def soft_pointing(cam: torch.Tensor, inside: torch.Tensor, temperature: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """Per film, ``-log`` of the softmax mass of the standardised map inside the boolean mask, times the
    temperature: 0 when the map's mass is all inside, large when its peak sits elsewhere. Films whose mask covers
    no cell give 0. At temperature 1 the thousands of cells near the mean outweigh a peak a few standard deviations
    high (on a 56 x 56 map their exp-sum is several times the peak's), so the term also pushes the bulk down; as the
    temperature falls it tends to the gap between the highest cell and the highest cell inside the mask, in
    standard deviations: the pointing game's own question."""
    import torch

    flat = cam.flatten(1)
    z = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + eps) / temperature
    inside_flat = inside.flatten(1)
    masked = z.masked_fill(~inside_flat, float("-inf"))
    loss = temperature * (torch.logsumexp(z, 1) - torch.logsumexp(masked, 1))
    return torch.where(inside_flat.any(1), loss, torch.zeros_like(loss))
