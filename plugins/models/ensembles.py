"""Ensembles of trained models: the mean of member probabilities, and a per-region calibrated router.

Design choices (documented because explainers and the store rely on them):

* Members must share one preprocessing (checked at construction, :class:`~xray_xai.errors.PluginError` otherwise),
  so an ensemble takes the same preprocessed batch as any model. The published ensembles (DenseNet-201 +
  MobileNet + NASNet; ResNet + DenseNet) all use 224 px ImageNet preprocessing.
* ``features`` is the concatenation of the members' features (D = sum of member D's).
* ``members`` (list of Model) and ``member_names`` are public: an explainer explains each member separately.
* Tags are per instance: ``ensemble=True``; ``differentiable=True`` iff every member is a torch module.
* Saving needs no new weights, only the member list (checkpoint paths) in the sidecar: ``config()`` returns it and
  :meth:`EnsembleMean.from_sidecar` rebuilds the ensemble from it, loading each member with the ``load_member``
  that the store hands it (a plugin never imports the store). Members given by name or path to the constructor
  need such a loader too (``load_member=xray_xai.api.load_model``); Model instances need none.

``ensemble200`` is the published MURA ensemble as a preset: ``ensemble-mean`` of exactly one ``densenet201``, one
``mobilenet-v1`` and one ``nasnet-mobile`` (``preset_members``; the trainer trains the three when no members are
given). All three take 224 px films with ImageNet statistics, so they share one preprocessing.

The "Res+Dense" rule of the literature (abnormal iff p_resnet + p_densenet >= 1) is exactly the mean rule at
threshold 0.5 for two members: (p1 + p2) / 2 >= 0.5  <=>  p1 + p2 >= 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from xray_xai.errors import PluginError
from xray_xai.sdk import Model, Preprocessing, Tags

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Ensemble200", "EnsembleCalibrated", "EnsembleMean", "select_region_learners"]


def _same_preprocessing(a: Preprocessing, b: Preprocessing) -> bool:
    da, db = a.to_dict(), b.to_dict()
    da.pop("name", None)
    db.pop("name", None)
    return da == db


#: loads a stored model by registered name or checkpoint path (the store's ``load_model``)
MemberLoader = Callable[[str], Model]


def _resolve(member: Any, load_member: MemberLoader | None, owner: str) -> Model:
    """``member`` itself if it is a Model, else the stored model it names, loaded by ``load_member``."""
    if isinstance(member, Model):
        return member
    if load_member is None:
        raise PluginError(
            f"{owner}: member {str(member)!r} is a name or path; pass Model instances, or a loader "
            "(load_member=xray_xai.api.load_model)"
        )
    return load_member(str(member))


class EnsembleMean(Model):
    """Probability = mean of the members' probabilities (members: Model instances, store names or checkpoints)."""

    name: ClassVar[str] = "ensemble-mean"
    description: ClassVar[str] = "Mean of member probabilities (e.g. DenseNet-201 + MobileNet-v2 + NASNet-Mobile)"
    tags: ClassVar[Tags] = Tags(ensemble=True)

    def __init__(
        self,
        members: Sequence[Any] = (),
        member_names: Sequence[str] | None = None,
        *,
        load_member: MemberLoader | None = None,
        **options: Any,
    ) -> None:
        if len(members) < 1:
            raise PluginError(f"{self.name}: needs at least one member")
        self.members: list[Model] = [_resolve(m, load_member, self.name) for m in members]
        if member_names is None:
            member_names = [str(m) if not isinstance(m, Model) else (m.name or type(m).__name__) for m in members]
        self.member_names: list[str] = [str(n) for n in member_names]
        if len(self.member_names) != len(self.members):
            raise PluginError(f"{self.name}: {len(self.members)} members but {len(self.member_names)} names")
        first = self.members[0].preprocessing
        for mname, m in zip(self.member_names, self.members, strict=True):
            if not _same_preprocessing(m.preprocessing, first):
                raise PluginError(
                    f"{self.name}: member {mname!r} preprocesses as {m.preprocessing.name!r} "
                    f"({m.preprocessing.input_size} px), the first member as {first.name!r} "
                    f"({first.input_size} px); ensemble members must share one preprocessing"
                )
        self.preprocessing = first
        self.options = dict(options)
        self.eval()  # an ensemble only predicts: members in eval mode (no dropout, frozen batch-norm statistics)
        import torch

        all_torch = all(isinstance(m, torch.nn.Module) for m in self.members)
        # tags are per instance: differentiable only when every member is a torch module
        vars(self)["tags"] = Tags(ensemble=True, differentiable=all_torch)

    # -- Model contract ----------------------------------------------------------------------------------------
    def member_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """``(M, B)``: each member's probability of abnormal."""
        import torch

        return torch.stack([m.predict_proba(images).reshape(-1).float() for m in self.members])

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return self.member_probabilities(images).mean(dim=0)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.cat([m.features(images).reshape(images.shape[0], -1) for m in self.members], dim=1)

    def to(self, device: Any) -> EnsembleMean:
        for m in self.members:
            if hasattr(m, "to"):
                m.to(device)
        return self

    def eval(self) -> EnsembleMean:
        for m in self.members:
            if hasattr(m, "eval"):
                m.eval()
        return self

    # -- persistence -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """No weights of its own: the store saves an empty weights file and the member list in the sidecar."""
        return {}

    def fingerprint(self) -> str:
        """Hash of the members' fingerprints (or names), in order, and the routing if any."""
        import hashlib

        h = hashlib.sha256(self.name.encode())
        for n, m in zip(self.member_names, self.members, strict=True):
            fp = getattr(m, "fingerprint", None)
            h.update((str(fp()) if callable(fp) else n).encode())
        for region, learner in sorted(getattr(self, "routes", {}).items()):
            fp = getattr(learner, "fingerprint", None)
            h.update(region.encode() + (str(fp()) if callable(fp) else "").encode())
        return h.hexdigest()[:16]

    def member_paths(self) -> list[str]:
        """Where each member's checkpoint is (the store sets ``checkpoint_path`` on loaded models), else its name."""
        out = []
        for n, m in zip(self.member_names, self.members, strict=True):
            path = getattr(m, "checkpoint_path", None)
            out.append(str(path) if path else n)
        return out

    def config(self) -> dict[str, Any]:
        return {"members": self.member_paths(), "member_names": list(self.member_names), **self.options}

    @classmethod
    def from_sidecar(cls, sidecar: Mapping[str, Any], weights_path: Path, *, load_member: MemberLoader) -> EnsembleMean:
        """Rebuild from a store sidecar: ``config`` (or the sidecar itself) lists ``members`` (and a calibrated
        ensemble's ``routes``) as checkpoints or names, each loaded with ``load_member``."""
        cfg = dict(sidecar.get("config", sidecar))
        members = cfg.pop("members", None)
        if not members:
            raise PluginError(f"{weights_path}: ensemble sidecar lists no members")
        return cls(members=members, load_member=load_member, **cfg)


def select_region_learners(
    scores: Mapping[str, Mapping[str, Mapping[str, Any]]], metrics: Sequence[str] = ("auroc", "accuracy", "kappa")
) -> dict[str, str]:
    """Per region, the member best on validation in at least two of AUROC, accuracy and kappa.

    ``scores[member][region]`` holds those metrics (``None`` = undefined, ranks last). A member wins a metric if
    its value is the highest (ties: each tied member wins). The chosen member is the one winning >= 2 metrics; if
    none does (or several do), the tie-break is the best AUROC, then accuracy, then member order.
    """
    members = list(scores)
    regions = sorted({r for per in scores.values() for r in per})
    out: dict[str, str] = {}

    def value(member: str, region: str, metric: str) -> float:
        v = scores[member].get(region, {}).get(metric)
        return float("-inf") if v is None else float(v)

    for region in regions:
        wins = dict.fromkeys(members, 0)
        for metric in metrics:
            best = max(value(m, region, metric) for m in members)
            for m in members:
                if value(m, region, metric) == best:
                    wins[m] += 1
        candidates = [m for m in members if wins[m] >= 2] or members
        out[region] = max(
            candidates,
            key=lambda m: (value(m, region, "auroc"), value(m, region, "accuracy"), -members.index(m)),
        )
    return out


class EnsembleCalibrated(EnsembleMean):
    """Routes each image to its region's learner: the member best on that region, fine-tuned on its images.

    ``routes`` maps region -> Model, store name or checkpoint path of the fine-tuned learner (built by
    ``xray-xai train --model ensemble-calibrated``; names and paths need ``load_member``, as members do).
    ``predict_proba(images, regions=[...])`` needs each image's region; an image whose region has no route (or
    ``regions=None``) gets the mean of the members.
    """

    name: ClassVar[str] = "ensemble-calibrated"
    description: ClassVar[str] = "Per-region best member, fine-tuned on its region (needs each image's region)"
    tags: ClassVar[Tags] = Tags(ensemble=True)
    needs_regions: ClassVar[bool] = True

    def __init__(
        self,
        members: Sequence[Any] = (),
        member_names: Sequence[str] | None = None,
        routes: Mapping[str, Any] | None = None,
        *,
        load_member: MemberLoader | None = None,
        **options: Any,
    ) -> None:
        super().__init__(members, member_names, load_member=load_member, **options)
        self.routes: dict[str, Model] = {}
        self.route_names: dict[str, str] = {}
        for region, learner in (routes or {}).items():
            model = _resolve(learner, load_member, self.name)
            if not _same_preprocessing(model.preprocessing, self.preprocessing):
                raise PluginError(f"{self.name}: the learner of region {region!r} preprocesses differently")
            if hasattr(model, "eval"):
                model.eval()
            self.routes[region.lower()] = model
            path = getattr(model, "checkpoint_path", None)
            self.route_names[region.lower()] = str(path) if path else str(learner)

    select = staticmethod(select_region_learners)

    def predict_proba(self, images: torch.Tensor, regions: Sequence[str | None] | None = None) -> torch.Tensor:
        mean = super().predict_proba(images)
        if regions is None:
            return mean
        if len(regions) != images.shape[0]:
            raise PluginError(f"{self.name}: {images.shape[0]} images but {len(regions)} regions")
        out = mean.clone()
        for region in {(r or "").lower() for r in regions}:
            learner = self.routes.get(region)
            if learner is None:
                continue
            rows = [i for i, r in enumerate(regions) if (r or "").lower() == region]
            out[rows] = learner.predict_proba(images[rows]).reshape(-1).float()
        return out

    def to(self, device: Any) -> EnsembleCalibrated:
        super().to(device)
        for m in self.routes.values():
            if hasattr(m, "to"):
                m.to(device)
        return self

    def config(self) -> dict[str, Any]:
        return {**super().config(), "routes": dict(self.route_names)}


class Ensemble200(EnsembleMean):
    """The published MURA ensemble: DenseNet-201 + MobileNet(-V1) + NASNet-A Mobile, mean of probabilities.

    Built from trained members, one of each architecture in ``preset_members`` (any order); ``xray-xai train
    --model ensemble200`` trains the three with one recipe and builds it.
    """

    name: ClassVar[str] = "ensemble200"
    description: ClassVar[str] = "DenseNet-201 + MobileNet-V1 + NASNet-A Mobile, mean of probabilities (MURA)"
    tags: ClassVar[Tags] = Tags(ensemble=True)
    #: the member architectures (model plugin names), trained by ``xray-xai train --model ensemble200``
    preset_members: ClassVar[tuple[str, ...]] = ("densenet201", "mobilenet-v1", "nasnet-mobile")

    def __init__(
        self,
        members: Sequence[Any] = (),
        member_names: Sequence[str] | None = None,
        *,
        load_member: MemberLoader | None = None,
        **options: Any,
    ) -> None:
        wanted = ", ".join(self.preset_members)
        if len(members) == 0:
            raise PluginError(
                f"{self.name}: needs its trained members ({wanted}); `xray-xai train --model {self.name}` trains them"
            )
        super().__init__(members, member_names, load_member=load_member, **options)
        found = [m.name for m in self.members]
        if sorted(found) != sorted(self.preset_members):
            raise PluginError(f"{self.name}: members must be one each of {wanted}; got {', '.join(found)}")
        if member_names is None:  # name the members by architecture, not by checkpoint path
            self.member_names = found
