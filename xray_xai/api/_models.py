"""Models: training, evaluation, prediction, the one model/checkpoint rule, the store."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xray_xai._util.device import resolve_device
from xray_xai.defaults import DEFAULT_LEVELS

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.models.config import TrainConfig
    from xray_xai.models.runs import SaveTarget, TrainResult
    from xray_xai.sdk.interfaces import Model, Problem

    ModelSpec = str | Path | Model

#: columns of :func:`predict`'s rows, in the order of ``xray-xai predict``'s CSV
PREDICTION_FIELDS: tuple[str, ...] = (
    "path", "study", "region", "label", "probability", "prediction", "study_probability", "probability_raw",
    "threshold",
)  # fmt: skip


#: the keywords of :func:`train` that are :class:`~xray_xai.models.config.TrainConfig` fields
_CONFIG_KEYWORDS = (
    "epochs", "batch_size", "image_size", "letterbox", "lr", "optimizer", "weight_decay", "schedule",
    "plateau_patience", "monitor", "loss", "early_stop", "augment", "seed", "device", "amp", "channels_last",
    "num_workers", "max_images", "regions", "pretrained", "strict", "guide", "guide_loss", "guide_weight",
    "guide_fraction", "guide_layer", "guide_start", "guide_temperature",
)  # fmt: skip


def train(
    model: str,
    data_root: str | Path,
    config: TrainConfig | None = None,
    *,
    dataset: str | None = None,
    dataset_options: dict[str, Any] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    image_size: int | None = None,
    letterbox: bool | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    weight_decay: float | None = None,
    schedule: str | None = None,
    plateau_patience: int | None = None,
    monitor: str | None = None,
    loss: str | None = None,
    early_stop: int | None = None,
    augment: bool | str | None = None,
    seed: int | None = None,
    device: str | None = None,
    amp: bool | None = None,
    channels_last: bool | None = None,
    num_workers: int | None = None,
    max_images: int | None = None,
    regions: Sequence[str] | None = None,
    pretrained: bool | None = None,
    strict: bool | None = None,
    guide: str | None = None,
    guide_loss: str | None = None,
    guide_weight: float | tuple[float, ...] | None = None,
    guide_fraction: float | None = None,
    guide_layer: str | None = None,
    guide_start: int | None = None,
    guide_temperature: float | None = None,
    film_cache: str | Path | None = None,
    hidden: Sequence[int] | None = None,
    dropout: float | None = None,
    init: str | None = None,
    members: str | Sequence[str] | None = None,
    model_options: Mapping[str, Any] | None = None,
    init_from: str | Path | Model | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    save: SaveTarget = True,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_run_dir: Callable[[Path], None] | None = None,
) -> TrainResult:
    """Train and store a model (``xray-xai train``); returns a :class:`~xray_xai.models.runs.TrainResult`.

    The recipe is ``config`` (a :class:`~xray_xai.models.config.TrainConfig`, default: the MURA recipe) with every
    keyword given (not None) applied on top; ``hidden``, ``dropout``, ``init``, ``members`` and ``model_options``
    go to the model's constructor. ``on_epoch`` is called with each epoch's history row as it is saved,
    ``on_run_dir`` with the run's folder before the first epoch: a new folder per call unless ``resume`` (an
    ``out_dir`` that holds an earlier run is refused). ``save``: True the model store, a folder that folder, False
    nowhere. ``guide="boxes"`` adds the box-guidance term; the ``guide_*`` keywords are those of
    :class:`~xray_xai.models.config.TrainConfig` (families joined with ``+``, a weight each: :mod:`.guidance`).
    ``film_cache``: "off" (default), "auto" or a folder: read films prepared as 8-bit levels (:func:`prepare_films`),
    those missing prepared before the first epoch; the run then differs slightly from one that decodes (the rounding
    is at most half a grey level).
    """
    from xray_xai.models.training import train as _train

    given = locals()
    options: dict[str, Any] = {k: given[k] for k in _CONFIG_KEYWORDS if given[k] is not None}
    if film_cache is not None:
        options["film_cache"] = str(film_cache)
    if device is not None:
        options["device"] = resolve_device(device)
    extra: dict[str, Any] = {"hidden": hidden, "dropout": dropout, "init": init, "members": members}
    options.update(model_options or {})
    options.update({k: v for k, v in extra.items() if v is not None})
    return _train(
        model, data_root, config, dataset=dataset, dataset_options=dataset_options, init_from=init_from,
        out_dir=out_dir, resume=resume, save=save, progress=progress, on_epoch=on_epoch,
        on_run_dir=on_run_dir, **options,
    )  # fmt: skip


def launch_train(nproc: int, args: Sequence[str]) -> int:
    """Run ``xray-xai train ARGS`` (``--nproc`` dropped) in ``nproc`` processes on this machine with torchrun;
    their exit status. See :mod:`xray_xai.models.distributed`."""
    from xray_xai.models.distributed import launch

    return launch(nproc, args)


def recipe(name: str) -> Any:
    """The named training recipe ``name`` (:class:`~xray_xai.models.recipes.Recipe`: ``model``, ``dataset``,
    ``config()``); ``train(r.model, data, r.config(), dataset=r.dataset)`` runs it."""
    from xray_xai.models.recipes import recipe as _recipe

    return _recipe(name)


def recipe_names() -> tuple[str, ...]:
    """The names ``recipe`` knows, in the order they were written (so ``train --recipe``'s help cannot miss one)."""
    from xray_xai.models.recipes import RECIPES

    return tuple(RECIPES)


def epoch_line(row: Mapping[str, Any]) -> str:
    """One epoch's history row as the training log prints it (``epoch=3  train_loss=0.412 ... lr=5.00e-04``)."""
    from xray_xai.models.runs import epoch_line as _line

    return _line(dict(row))


def evaluate(
    model: str | Path | Model,
    data_root: str | Path,
    *,
    checkpoint: str | Path | None = None,
    dataset: str | None = None,
    dataset_options: dict[str, Any] | None = None,
    split: str = "test",
    batch_size: int = 32,
    bootstrap: int = 1000,
    seed: int = 0,
    max_images: int | None = None,
    device: str = "cpu",
    tta: bool = False,
    out_dir: str | Path | None = None,
    progress: bool = False,
    strict: bool = False,
    threshold: float | None = None,
    uncalibrated: bool = False,
    study_aggregation: str = "mean",
    calibration_bins: int = 10,
    adaptive_bins: bool = False,
    specificities: Sequence[float] = DEFAULT_LEVELS,
    sensitivities: Sequence[float] = DEFAULT_LEVELS,
    film_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Image- and study-level metrics with bootstrap intervals, overall and per region (``xray-xai evaluate``);
    ``strict`` skips films whose stream ends early however little is missing (else kept, listed as warnings).

    The probability is the calibrated one when the checkpoint holds a calibration (``uncalibrated``: raw), the
    threshold ``threshold`` or the recorded operating point (else 0.5); ``calibration`` reports Brier, ECE/MCE
    (``calibration_bins``; ``adaptive_bins`` for equal-mass bins), slope/intercept, sensitivity at
    ``specificities`` and specificity at ``sensitivities``, before and after calibration; ``operating_points`` the
    metrics at each recorded threshold. ``film_cache`` as :func:`train`'s. See
    :func:`xray_xai.models.evaluation.evaluate`."""
    from xray_xai.models.evaluation import evaluate as _evaluate

    return _evaluate(
        model, data_root, checkpoint=checkpoint, dataset=dataset, dataset_options=dataset_options, split=split,
        batch_size=batch_size, bootstrap=bootstrap, seed=seed, max_images=max_images, device=resolve_device(device),
        tta=tta,
        out_dir=out_dir, progress=progress, strict=strict, threshold=threshold, uncalibrated=uncalibrated,
        study_aggregation=study_aggregation, calibration_bins=calibration_bins, adaptive_bins=adaptive_bins,
        specificities=specificities, sensitivities=sensitivities, film_cache=film_cache,
    )  # fmt: skip


def predict(
    model: str | Path | Model,
    inputs: Sequence[str | Path] | None = None,
    *,
    checkpoint: str | Path | None = None,
    data_root: str | Path | None = None,
    split: str | None = None,
    dataset: str | None = None,
    dataset_options: dict[str, Any] | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    threshold: float | None = None,
    tta: bool = False,
    progress: bool = False,
    strict: bool = False,
    uncalibrated: bool = False,
    study_aggregation: str = "mean",
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Per-image and per-study probabilities (``xray-xai predict``); returns ``(rows, problems)``, damaged films
    that were kept listed last with severity "warning" (``strict`` skips them instead).

    ``probability`` is calibrated when the checkpoint holds a calibration (``uncalibrated``: raw; the model's own
    is always in ``probability_raw``); ``threshold`` None: the checkpoint's recorded operating point, else the
    decision threshold of :mod:`xray_xai.defaults`; ``study_aggregation``: mean, max or noisy-or."""
    from xray_xai.models.evaluation import predict as _predict

    return _predict(
        model, inputs, checkpoint=checkpoint, data_root=data_root, split=split, dataset=dataset,
        dataset_options=dataset_options, batch_size=batch_size, device=resolve_device(device),
        threshold=threshold, tta=tta, progress=progress, strict=strict, uncalibrated=uncalibrated,
        study_aggregation=study_aggregation,
    )  # fmt: skip


def resolve_model(
    model: ModelSpec | None = None, checkpoint: str | Path | None = None, *, device: str = "cpu"
) -> Model:
    """The one loaded model that ``model`` and ``checkpoint`` name together: a name resolves to the newest stored
    checkpoint, a path loads that one; both given = the checkpoint, checked to hold that model (or to be the same
    file), never two models. See :mod:`xray_xai.models.resolve`."""
    from xray_xai.models.resolve import resolve_model as _resolve

    return _resolve(model, checkpoint, device=device)


def resolve_specs(models: Sequence[ModelSpec], checkpoint: str | Path | None = None) -> list[ModelSpec]:
    """The models that several ``--model`` and one ``--checkpoint`` name (the checkpoint pins the first), checked
    but not loaded."""
    from xray_xai.models.resolve import resolve_specs as _resolve

    return _resolve(models, checkpoint)


def predictions_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """:func:`predict`'s rows as CSV text (columns :data:`PREDICTION_FIELDS`)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=PREDICTION_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_predictions(
    path: str | Path,
    rows: Sequence[Mapping[str, Any]],
    problems: Sequence[Problem],
    *,
    warnings: Sequence[Problem] = (),
) -> Path | None:
    """Write :func:`predict`'s rows to the CSV ``path`` (atomically) and its skipped files beside it as
    ``NAME.skipped.csv`` (damaged films kept: ``NAME.warnings.csv``; named after the table: ``path`` may be in a
    folder another command owns); returns the skipped list's path, or None when nothing was skipped or kept."""
    from xray_xai._util.fsutil import atomic_write_text, write_skipped_csv

    target = Path(path)
    atomic_write_text(target, predictions_csv(rows))
    if not problems and not warnings:
        return None
    listed = write_skipped_csv(target.with_name(f"{target.stem}.skipped.csv"), list(problems), warnings=list(warnings))
    return Path(listed)


def load_model(name_or_path: str | Path, *, device: str = "cpu") -> Model:
    """A trained model: a registered name resolves to the newest one in the store, a path loads that checkpoint."""
    from xray_xai.models.store import load_model as _load

    return _load(name_or_path, device=device)


def save_model(model: Model, out_dir: str | Path | None = None, *, metadata: dict[str, Any] | None = None) -> Path:
    """Save weights as safetensors with a JSON sidecar into the store (or ``out_dir``); the checkpoint folder."""
    from xray_xai.models.store import save_model as _save

    return _save(model, out_dir, metadata=metadata)


def list_store() -> list[dict[str, Any]]:
    """Every trained model in the store (``xray-xai models``)."""
    from xray_xai.models.store import list_store as _list

    return _list()


def models_dir() -> Path:
    """The model store's folder (``$XRAY_XAI_HOME/models``), where :func:`list_store` looks."""
    from xray_xai.models.store import models_dir as _models_dir

    return _models_dir()
