"""The training recipe as one value: :class:`TrainConfig` (every option that decides what ``train`` computes).

``TrainConfig`` holds what changes the weights (epochs, batch size, learning rate, optimizer, schedule, monitor,
augmentation, loss, early stop, seed, input geometry, device and numerics, model options); where the run goes and
how it reports (``out_dir``, ``resume``, ``save``, ``progress``, ``on_epoch``) and which data it reads are
arguments of :func:`xray_xai.models.training.train`. Importing this module is cheap (no numpy, no torch): the CLI
reads the choices below when it starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xray_xai.errors import PluginError

__all__ = [
    "DEFAULT_LR",
    "DEFAULT_WEIGHT_DECAY",
    "LOSSES",
    "MONITORS",
    "OPTIMIZERS",
    "SCHEDULES",
    "WARMUP_EPOCHS",
    "TrainConfig",
]

LOSSES = ("bce", "weighted-bce", "region-weighted-bce")
OPTIMIZERS = ("sgd", "adam", "adamw")
DEFAULT_LR = {"sgd": 1e-3, "adam": 1e-4, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 0.0, "adam": 0.0, "adamw": 0.01}
SCHEDULES = ("plateau", "cosine")
MONITORS = ("accuracy", "auroc", "loss")
WARMUP_EPOCHS = 0.5


@dataclass(frozen=True)
class TrainConfig:
    """The recipe of one training run; the defaults are the MURA DenseNet-169 recipe (see :mod:`.training`).

    ``lr``/``weight_decay`` None take the optimizer's default (:attr:`learning_rate`, :attr:`decay`); ``augment``
    is ``True`` (``"standard"``), ``False`` (``"none"``) or a preset name; ``regions`` restricts both splits;
    ``max_images`` takes a seeded subset of each split; ``model_options`` go to the model's constructor
    (``hidden``, ``dropout``, ``init``, an ensemble's ``members``...); ``film_cache`` reads films prepared as 8-bit
    levels in model geometry (:mod:`xray_xai.data.film_cache`), preparing those missing first. Invalid choices raise
    :class:`~xray_xai.errors.PluginError` when the config is made.
    """

    epochs: int = 10
    batch_size: int = 8
    image_size: int | None = None
    letterbox: bool = False
    lr: float | None = None
    optimizer: str = "sgd"
    weight_decay: float | None = None
    schedule: str = "plateau"
    plateau_patience: int = 5
    monitor: str = "accuracy"
    loss: str = "bce"
    early_stop: int = 4
    augment: bool | str = True
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    channels_last: bool = True
    num_workers: int = 0
    max_images: int | None = None
    regions: tuple[str, ...] | None = None
    pretrained: bool | None = None
    strict: bool = False  #: skip films whose stream ends early however little is missing (else kept with a warning)
    guide: str = "none"  #: "boxes": box-guided training (xray_xai.models.guidance)
    guide_loss: str = "outside"
    guide_weight: float | tuple[float, ...] = 0.3  #: one per family of a "+"-joined guide_loss, or one for all
    guide_fraction: float = 1.0
    guide_layer: str | None = None
    guide_start: int = 1
    guide_temperature: float = 1.0
    #: prepared films: "off" (decode every film), "auto" (the cache under $XRAY_XAI_HOME) or a cache folder
    film_cache: str = "off"
    model_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.guide_weight, list):  # read back from JSON; before guide_spec below reads it
            object.__setattr__(self, "guide_weight", tuple(self.guide_weight))
        for value, choices, what in (
            (self.optimizer, OPTIMIZERS, "optimizer"),
            (self.loss, LOSSES, "loss"),
            (self.schedule, SCHEDULES, "schedule"),
            (self.monitor, MONITORS, "monitor"),
        ):
            if value not in choices:
                raise PluginError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")
        from xray_xai.data.augment import AUGMENTATIONS

        if self.augment_name not in AUGMENTATIONS:
            raise PluginError(f"unknown augmentation {self.augment!r}; expected one of {', '.join(AUGMENTATIONS)}")
        if self.guide_spec.active and self.guide_start > self.epochs:  # no epoch would be guided, none kept
            raise PluginError(f"guide start {self.guide_start} is after the last epoch ({self.epochs})")
        if not str(self.film_cache).strip():
            raise PluginError("film_cache must be 'off', 'auto' or a folder, not empty")
        if self.regions is not None and not isinstance(self.regions, tuple):
            object.__setattr__(self, "regions", tuple(self.regions))
        object.__setattr__(self, "model_options", dict(self.model_options))

    @property
    def augment_name(self) -> str:
        """The augmentation preset: ``True`` is ``"standard"``, ``False`` is ``"none"``."""
        return ("standard" if self.augment else "none") if isinstance(self.augment, bool) else self.augment

    @property
    def guide_spec(self) -> Any:
        """The guidance options as a :class:`~xray_xai.models.guidance.GuideSpec` (validated)."""
        from xray_xai.models.guidance import GuideSpec

        weight = self.guide_weight
        weights = tuple(float(w) for w in weight) if isinstance(weight, tuple) else float(weight)
        return GuideSpec(self.guide, self.guide_loss, weights, float(self.guide_fraction), self.guide_layer,
                         int(self.guide_start), float(self.guide_temperature))  # fmt: skip

    @property
    def learning_rate(self) -> float:
        """``lr``, or the optimizer's default (:data:`DEFAULT_LR`)."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def decay(self) -> float:
        """``weight_decay``, or the optimizer's default (:data:`DEFAULT_WEIGHT_DECAY`)."""
        return DEFAULT_WEIGHT_DECAY[self.optimizer] if self.weight_decay is None else float(self.weight_decay)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_options(cls, config: TrainConfig | None = None, **options: Any) -> TrainConfig:
        """``config`` (or the defaults) with ``options`` applied: names of fields set the field, any other name is
        a model option (added to ``model_options``)."""
        base = config if config is not None else cls()
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in options.items() if k in names}
        extra = {k: v for k, v in options.items() if k not in names}
        if extra:
            fields["model_options"] = {**dict(fields.get("model_options", base.model_options)), **extra}
        if isinstance(fields.get("regions"), Sequence) and not isinstance(fields["regions"], str):
            fields["regions"] = tuple(fields["regions"])
        return base.replace(**fields) if fields else base
