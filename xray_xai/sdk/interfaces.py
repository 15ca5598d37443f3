"""The contracts every plugin implements, and the data that flows between them.

This module is floor 1 (ground): it imports nothing heavy (no torch, no scikit-learn) so that the registry, the CLI's
``--help`` and ``xray-xai plugins`` stay fast. Torch-specific helpers live in :mod:`xray_xai.sdk.torch_model`.

Four plugin kinds, one abstract base class each:

* :class:`DatasetPlugin` turns a folder on disk into :class:`Record` objects.
* :class:`Model` maps a batch of preprocessed images to the probability of "abnormal" and to features.
* :class:`Explainer` maps a model and a batch of images to an :class:`Explanation` (heatmaps in [0, 1]).
* :class:`Clusterer` follows the scikit-learn estimator contract (``fit``, ``predict``, ``fit_predict``).

Capabilities are data (:class:`Tags`), never name checks: an explainer that needs gradients refuses a model whose
tags say it is not differentiable.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np
    import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REGIONS",
    "Box",
    "Clusterer",
    "DatasetPlugin",
    "Explainer",
    "Explanation",
    "Model",
    "Plugin",
    "Preprocessing",
    "Problem",
    "Record",
    "Tags",
]

#: MURA's seven upper-limb regions, lower-case, as used in ``Record.region``.
REGIONS: tuple[str, ...] = ("elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist")

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Tags:
    """Capabilities of a plugin, as data (scikit-learn's ``Tags``, pytorch-grad-cam's ``uses_gradients``).

    One dataclass serves every kind; fields that do not apply to a kind keep their defaults.
    """

    # models
    differentiable: bool = False  #: gradients w.r.t. the input exist (torch module end to end)
    has_linear_head: bool = False  #: global pooling then one linear layer: CAM applies
    has_target_layer: bool = False  #: a convolutional layer for CAM-style explainers is declared
    pretrained_available: bool = False  #: ImageNet (or other) weights can be loaded
    ensemble: bool = False  #: combines member models
    # explainers
    needs_gradients: bool = False
    needs_target_layer: bool = False
    needs_linear_head: bool = False
    # everyone
    deterministic: bool = True  #: same inputs and seed give the same output
    supports_batch: bool = True
    # datasets
    has_ground_truth: bool = False  #: records carry masks or boxes
    has_studies: bool = False  #: records are grouped in studies (several views)
    generator: bool = False  #: the plugin can write a synthetic data set (``generate``)

    def as_dict(self, only_true: bool = False) -> dict[str, bool]:
        d = asdict(self)
        return {k: v for k, v in d.items() if v} if only_true else d

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def sized_name(name: str, old: int, new: int) -> str:
    """A preset's name at another input side: the size it spells is replaced (``resize-128-gray-minmax`` at 64 px is
    ``resize-64-gray-minmax``), so a name never states a size the recipe does not use."""
    import re

    return re.sub(rf"(?<![0-9]){int(old)}(?![0-9])", str(int(new)), name)


@dataclass(frozen=True)
class Preprocessing:
    """How raw film pixels become a model's input tensor; travels with the weights (timm's ``PretrainedCfg``).

    ``mode``:
      * ``"center-crop"``: centre crop of ``crop`` px (padding if the film is smaller), then resize to
        ``input_size`` - the published DenseNet-169 MURA recipe (crop 312, resize 224); with ``resize`` set instead,
        torchvision's classic evaluation transform: the shorter side resized to ``resize`` (aspect kept), then the
        centre ``input_size`` square (``Resize(resize)`` + ``CenterCrop(input_size)``, the same integer arithmetic);
      * ``"resize"``: resize the whole film to ``input_size`` x ``input_size`` (aspect not kept);
      * ``"letterbox"``: resize the longer side to ``input_size`` and pad to a square (aspect kept).

    ``normalize``: ``"imagenet"`` subtracts ``mean`` and divides by ``std``; ``"minmax"`` rescales each image to
    [0, 1]; ``"none"`` leaves [0, 1] film intensities as they are.

    ``eight_bit``: round the film to 8 bits and resize it in PIL's 8-bit mode, then divide by 255, as torchvision's
    transforms do on a PIL image (``Resize`` on an ``"L"``/``"RGB"`` image, then ``ToTensor``); models trained that
    way see bit-identical inputs. Off (the default): the film is resized as float32, with no rounding.

    ``exif_orientation``: turn films upright by their EXIF orientation tag (the default, as viewers show them); off:
    pixels as stored, as PIL's ``Image.open`` gives them to torchvision (honoured where films are read for one model:
    ``evaluate``, ``predict``, ``train``; ``explain``, ``audit`` and the web page read each film once, upright).

    ``resize``, ``eight_bit`` and ``exif_orientation`` are left out of :meth:`to_dict` at their defaults, so the
    sidecars of models that do not use them are unchanged.
    """

    name: str
    input_size: int = 224
    mode: Literal["center-crop", "resize", "letterbox"] = "resize"
    crop: int | None = None
    channels: int = 3
    normalize: Literal["imagenet", "minmax", "none"] = "imagenet"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: int | None = None
    eight_bit: bool = False
    exif_orientation: bool = True

    def resized(self, input_size: int | None) -> Preprocessing:
        """The same recipe at another input side (``None``: unchanged); a centre crop keeps its ratio to the input."""
        if input_size is None or input_size == self.input_size:
            return self
        crop, resize = self.crop, self.resize
        if crop is not None:  # keep the crop/resize ratio of the recipe
            crop = round(crop * input_size / self.input_size)
        if resize is not None:
            resize = round(resize * input_size / self.input_size)
        name = sized_name(self.name, self.input_size, input_size)
        return replace(self, name=name, input_size=int(input_size), crop=crop, resize=resize)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, default in (("resize", None), ("eight_bit", False), ("exif_orientation", True)):
            if out[key] == default:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("mean", "std"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates of the original film (x0, y0 inclusive; x1, y1 exclusive)."""

    x0: float
    y0: float
    x1: float
    y1: float
    label: str = "abnormality"


@dataclass(frozen=True)
class Problem:
    """Something wrong found while reading a data set; readers collect these instead of dying midway."""

    path: str
    problem: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass
class Record:
    """One image and everything known about it. Every stage adds fields; none re-reads the disk for them.

    ``label`` is 1 for abnormal (MURA "positive", FracAtlas "fractured"), 0 for normal, ``None`` if unknown.
    Localisation ground truth is optional: ``boxes`` and ``polygons`` in original-film pixels, or ``mask_path``
    to a binary mask image of the film's size. ``metadata`` holds any further columns (view, hardware,
    abnormality type, marker side...) that clustering and the audit may break results down by.
    """

    path: Path
    split: str = "all"
    region: str | None = None
    patient: str | None = None
    study: str | None = None
    label: int | None = None
    view: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    boxes: tuple[Box, ...] = ()
    polygons: tuple[tuple[tuple[float, float], ...], ...] = ()
    mask_path: Path | None = None

    @property
    def has_ground_truth(self) -> bool:
        return bool(self.boxes or self.polygons or self.mask_path is not None)

    @property
    def image_id(self) -> str:
        """A stable identifier: study/filename when the image belongs to a study, else the file name."""
        return f"{self.study}/{self.path.name}" if self.study else self.path.name


class Plugin(abc.ABC):  # noqa: B024 - a marker base with class attributes, no abstract method of its own
    """What every plugin class declares. ``name`` is the public, lower-case, hyphenated name."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    tags: ClassVar[Tags] = Tags()


class DatasetPlugin(Plugin):
    """Reads one on-disk layout into records.

    Subclasses take the data set's root folder plus options in ``__init__`` and must not touch the disk beyond
    reading CSVs and listing files there (images are decoded later, by :mod:`xray_xai.data.images`). Problems found (a
    missing CSV, a label that disagrees with its folder, an unreadable file) are collected in ``self.problems``
    rather than raised, so that a batch command can list them and carry on; a root that is not this layout at all
    raises :class:`~xray_xai.errors.DataError`.
    """

    #: the splits this layout offers, in order; "all" is always accepted too
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    #: other names accepted for splits, e.g. ``{"valid": "test"}`` (MURA's valid set is its test split); the one place
    #: split aliases live: readers, commands and clustering go through :meth:`resolve_split`
    aliases: ClassVar[dict[str, str]] = {}

    def __init__(self, root: str | Path, **options: Any) -> None:
        self.root = Path(root)
        self.options = dict(options)
        self.problems: list[Problem] = []

    @abc.abstractmethod
    def records(self, split: str | None = None) -> list[Record]:
        """All records, or those of one split (``None`` or ``"all"``: every split), in a deterministic order."""

    @classmethod
    def detect(cls, root: str | Path) -> bool:
        """Whether ``root`` looks like this layout (used when ``--dataset`` is not given)."""
        return False

    @classmethod
    def resolve_split(cls, split: str | None, *, lenient: bool = False) -> str:
        """The split that ``split`` names in this layout: ``"all"`` for None or "all", an offered split as is, an
        alias (:attr:`aliases`) as its target; else :class:`~xray_xai.errors.DataError` listing the names known.

        ``lenient`` (commands that pool splits, such as ``cluster``) also maps the held-out set's other names for
        layouts that declare no alias (``valid``/``validation`` -> ``test``, ``test`` -> ``valid``) and, in a
        one-split layout (a plain folder), any name to ``"all"``."""
        if split is None or split == "all":
            return "all"
        name = cls.aliases.get(split, split)
        if name in cls.splits:
            return name
        if lenient:
            if name in ("valid", "validation") and "test" in cls.splits:
                return "test"
            if name == "test" and "valid" in cls.splits:
                return "valid"
            if tuple(cls.splits) == ("all",):
                return "all"
        from xray_xai.errors import DataError

        known = ", ".join(dict.fromkeys([*cls.splits, *cls.aliases, "all"]))
        raise DataError(None, f"unknown split {split!r} for dataset {cls.name!r}; expected one of {known}")

    def studies(self, split: str | None = None) -> dict[str, list[Record]]:
        """Records grouped by study (an image without a study is its own study), in record order."""
        grouped: dict[str, list[Record]] = {}
        for rec in self.records(split):
            grouped.setdefault(rec.study or rec.image_id, []).append(rec)
        return grouped

    @classmethod
    def generate(cls, out: str | Path, *, n_studies: int, seed: int = 0, **options: Any) -> Path:
        """Write a synthetic data set to ``out`` (only for plugins tagged ``generator``)."""
        raise NotImplementedError(f"dataset {cls.name!r} cannot generate data")


class Model(Plugin):
    """A binary classifier of radiographs: probability of "abnormal" per image, and features.

    Inputs are batches already preprocessed with ``self.preprocessing`` (float tensor ``(B, C, H, W)``). Torch
    models subclass :class:`xray_xai.sdk.torch_model.TorchModel`, which also declares ``target_layer`` and
    ``feature_layer`` by module name and whose ``forward`` returns one logit per image, shape ``(B,)``.

    Besides the two abstract methods, everything the store, the trainer, the evaluator and the explainers read is
    declared here with a default that fits a plain model, so a plugin overrides only what differs. One optional hook
    is not declared, because its mere presence is the signal: ``fit(images, labels)`` for a model trained in one
    call rather than by epochs (``lbp-logreg``); the trainer calls it when a model is not a torch module.
    """

    #: the preprocessing of the published recipe; an instance may differ (another ``image_size``)
    default_preprocessing: ClassVar[Preprocessing] = Preprocessing(name="resize-224-imagenet")
    preprocessing: Preprocessing
    #: ``predict_proba(images, regions=[...])`` needs each image's region (a per-region router); the evaluator and
    #: the explain command then pass the records' regions
    needs_regions: ClassVar[bool] = False
    #: parameter-name prefixes that fine-tuning trains (None: all); the store saves them and restores the regime
    trainable_prefixes: ClassVar[tuple[str, ...] | None] = None
    #: an ensemble's member models and their names: explainers explain each member and fuse the maps
    members: Sequence[Model] = ()
    member_names: Sequence[str] = ()
    #: set by the store on a loaded model: the weights file and its JSON sidecar (reports name the checkpoint)
    checkpoint_path: Path | None = None
    sidecar: dict[str, Any] | None = None

    def __init__(self, *, image_size: int | None = None, **options: Any) -> None:
        """``image_size`` is the input side in pixels (None: the recipe's). Every model built from options alone
        takes it: ``xray-xai train --image-size`` passes it, the store rebuilds from the ``config()`` that records it,
        and ``xray_xai.testing.check_model`` builds models small with it."""
        self.preprocessing = self.default_preprocessing.resized(image_size)

    @abc.abstractmethod
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Probability of abnormal, shape ``(B,)``, in [0, 1]."""

    @abc.abstractmethod
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The vector entering the final linear layer, shape ``(B, D)``."""

    def config(self) -> dict[str, Any]:
        """Constructor options needed to rebuild this model from its weights (stored in the JSON sidecar)."""
        return {}

    @property
    def fitted(self) -> bool:
        """Whether the model can predict yet (a ``fit`` model is not until fitted; contract checks stop there)."""
        return True

    def set_regime(self, trainable: list[str] | None) -> None:
        """Make trainable exactly the parameters whose names start with one of ``trainable`` (None: all). The store
        calls it with the saved prefixes after loading; a model without parameters has nothing to do."""

    def eval(self) -> Model:
        """Inference mode (no dropout, frozen batch-norm statistics); the store and the commands call it."""
        return self

    def to(self, device: Any) -> Model:
        """Move to ``device``; a model without tensors stays where it is."""
        return self

    def state_dict(self) -> Mapping[str, Any]:
        """Name -> tensor of everything learned; the store writes it as safetensors. Default: no weights (a model
        described by its ``config()`` alone, or an ensemble whose members are other checkpoints)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> Any:
        """Put back what :meth:`state_dict` gave; the store calls it after building the model from its config."""
        if state:
            from xray_xai.errors import CheckpointError

            raise CheckpointError(None, f"model {self.name!r} has no weights, but the file holds {len(state)}")

    def fingerprint(self) -> str:
        """A short hash of the name and every weight (equal fingerprints, equal outputs); stored in the sidecar and
        in every explanation's metadata."""
        import hashlib

        import numpy as np

        h = hashlib.sha256(self.name.encode())
        for key, tensor in sorted(self.state_dict().items()):
            h.update(key.encode())
            value = tensor.detach().cpu().contiguous().numpy() if hasattr(tensor, "detach") else np.asarray(tensor)
            h.update(value.tobytes())
        return h.hexdigest()[:16]

    @classmethod
    def from_sidecar(
        cls, sidecar: Mapping[str, Any], weights_path: Path, *, load_member: Callable[[str], Model]
    ) -> Model | None:
        """Rebuild a stored model that is more than a weights file of its own (an ensemble: its members are other
        checkpoints). ``load_member`` loads a stored model by name or path (the store passes its ``load_model``:
        plugins never import the store). Return None (the default) to be rebuilt the usual way: ``cls(**config)``
        from the sidecar, then the weights file loaded into it."""
        return None


@dataclass
class Explanation:
    """What an explainer returns for a batch.

    ``maps``: ``(B, H, W)`` float32 in [0, 1] at the model's input resolution, high = evidence for ``target``.
    ``raw``: the maps before upsampling and normalisation (``(B, h, w)``, any scale).
    ``probabilities``: the model's probability of abnormal for each image, ``(B,)``.
    ``extras``: method-specific arrays (per-member maps of an ensemble, the disagreement map, superpixel labels).
    """

    maps: np.ndarray
    raw: np.ndarray
    probabilities: np.ndarray
    method: str
    target: str = "abnormal"
    params: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    model_fingerprint: str = ""
    seed: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def metadata(self, index: int | None = None) -> dict[str, Any]:
        """JSON-ready metadata; with ``index``, for one image of the batch."""
        meta: dict[str, Any] = {
            "method": self.method,
            "target": self.target,
            "params": self.params,
            "model": self.model,
            "model_fingerprint": self.model_fingerprint,
            "seed": self.seed,
        }
        if index is not None:
            meta["probability"] = float(self.probabilities[index])
        else:
            meta["probabilities"] = [float(p) for p in self.probabilities]
        return meta


class Explainer(Plugin):
    """Turns a model and a batch into heatmaps. Parameters are keyword arguments of ``__init__``.

    Subclasses implement :meth:`explain`; the shared flow (eval mode, frozen parameters, hooks released, maps
    resized to the input and scaled to [0, 1]) lives in :class:`xray_xai.sdk.explainer.TorchExplainer`, where a
    plugin overrides only ``attribute``. An explainer that works at a chosen layer names that parameter ``layer``
    (one) or ``layers`` (several): ``xray-xai explain --layer`` fills whichever a method takes.
    """

    #: the parameters this instance was built with (JSON-ready); they go into every explanation's metadata
    params: dict[str, Any]

    def __init__(self, **params: Any) -> None:
        self.params = dict(params)

    @abc.abstractmethod
    def explain(self, model: Model, images: torch.Tensor, target: str = "abnormal") -> Explanation:
        """Explain ``images`` (preprocessed, ``(B, C, H, W)``); ``target`` is ``"abnormal"`` or ``"normal"``."""

    def check_model(self, model: Model) -> None:
        """Raise :class:`~xray_xai.errors.PluginError` if ``model`` lacks a capability this explainer needs."""
        from xray_xai.errors import PluginError

        need = self.tags
        have = model.tags
        missing = [
            what
            for what, needed, present in (
                ("input gradients", need.needs_gradients, have.differentiable),
                ("a convolutional target layer", need.needs_target_layer, have.has_target_layer),
                ("a global-pooling + linear head", need.needs_linear_head, have.has_linear_head),
            )
            if needed and not present
        ]
        if missing:
            raise PluginError(
                f"explainer {self.name!r} needs {' and '.join(missing)}, which model {model.name!r} does not have"
            )


class Clusterer(Plugin):
    """A scikit-learn style clusterer: parameters only stored in ``__init__``; ``fit`` sets ``labels_``.

    Built-ins also inherit ``sklearn.base.BaseEstimator`` and ``ClusterMixin`` so that
    ``sklearn.utils.estimator_checks`` can check them; this base stays free of scikit-learn imports. The cluster
    command reads and sets parameters with ``get_params``/``set_params`` (``BaseEstimator`` provides them), and
    sweeps ``n_clusters`` when the clusterer has that parameter.
    """

    #: cluster index of each training row, set by :meth:`fit`
    labels_: np.ndarray

    @abc.abstractmethod
    def fit(self, X: np.ndarray, y: Any = None) -> Clusterer:
        """Fit on ``X`` of shape ``(n_samples, n_features)``; sets ``labels_`` (and ``cluster_centers_`` if any)."""

    @abc.abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Cluster index of each row of ``X``."""

    def fit_predict(self, X: np.ndarray, y: Any = None) -> np.ndarray:
        return self.fit(X).labels_

    def reduce(self, X: np.ndarray) -> np.ndarray:
        """The space the clusters live in (e.g. after PCA), for per-cluster statistics; default: ``X`` itself."""
        import numpy as np

        return np.asarray(X)

    def transform_2d(self, X: np.ndarray) -> np.ndarray:
        """A 2-D projection of ``X`` for plots (the first two principal components by default)."""
        import numpy as np

        Xc = np.asarray(X, dtype=np.float64) - np.asarray(X, dtype=np.float64).mean(axis=0)
        _, _, vt = np.linalg.svd(Xc, full_matrices=False)
        return np.asarray(Xc @ vt[:2].T)
