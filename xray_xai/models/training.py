"""The training loop: published defaults, resumable, deterministic on CPU, lean enough to keep a GPU busy.

Defaults follow the MURA DenseNet-169 recipe (Rajpurkar et al. 2018): SGD lr 1e-3 momentum 0.9 (Adam: lr 1e-4),
binary cross-entropy, learning rate divided by 10 when the validation loss has not improved for 5 epochs
(``ReduceLROnPlateau``), early stop when the validation accuracy has not improved for ``early_stop`` epochs; the
best epoch (validation accuracy, ties to the lower validation loss) is the one kept.

For fine-tuning a pretrained backbone the loop also offers the usual modern recipe: ``optimizer="adamw"`` (decoupled
weight decay, default 0.01), ``schedule="cosine"`` (linear warm-up over the first half epoch, then cosine decay to
zero per step, so the last epoch trains at a small learning rate), ``monitor="auroc"`` (keep and early-stop on the
validation AUROC: the threshold-free metric that matters when classes are unbalanced, as in FracAtlas) and
``augment="light"`` (flips and +-10 degree rotations).

Losses: ``bce``; ``weighted-bce`` weighs each image by the other class's share on the training split
(normal: |A|/(|N|+|A|), abnormal: |N|/(|N|+|A|)); ``region-weighted-bce`` does the same per region t
(normal: |A_t|/(|N_t|+|A_t|), abnormal: |N_t|/(|N_t|+|A_t|)), as in the MURA paper.

The best weights go to the model store (:func:`xray_xai.models.store.save_model`) with a sidecar describing the run.

The parts, each in a module named for it: the recipe (:mod:`.config`, :class:`TrainConfig`), the data of a run
(:mod:`.splits`: splits, fingerprint, loss weights), the epoch loop of torch models (:mod:`.epochs`), the run folder
(:mod:`.runs`: history, curves, ``last.pt``, :class:`TrainResult`) and ensembles (:mod:`.ensemble_training`). This
module is the entry point: it validates the recipe, prepares the run and dispatches it.

A run is seeded without touching the process: torch's global random state is forked for the run (model init,
dropout and augmentation draw from it) and restored afterwards; the loader shuffles with a generator of its own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xray_xai._util.fsutil import write_skipped_csv
from xray_xai.errors import PluginError
from xray_xai.models.config import (
    DEFAULT_LR,
    DEFAULT_WEIGHT_DECAY,
    LOSSES,
    MONITORS,
    OPTIMIZERS,
    SCHEDULES,
    WARMUP_EPOCHS,
    TrainConfig,
)
from xray_xai.models.distributed import Ranks, join, on_main
from xray_xai.models.ensemble_training import ENSEMBLES, train_ensemble
from xray_xai.models.epochs import RunSpec, train_torch
from xray_xai.models.films import prepared_films
from xray_xai.models.guidance import GUIDE_LOSSES, GUIDE_SOURCES
from xray_xai.models.runs import (
    HISTORY_FIELDS,
    EpochCallback,
    SaveTarget,
    TrainResult,
    default_run_dir,
    epoch_line,
    open_run_dir,
    save_to_store,
    write_history,
)
from xray_xai.models.splits import class_weights, open_splits, region_class_weights, split_fingerprint
from xray_xai.sdk.interfaces import Problem, Record

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from xray_xai.sdk.interfaces import Model

__all__ = [
    "DEFAULT_LR",
    "DEFAULT_WEIGHT_DECAY",
    "GUIDE_LOSSES",
    "GUIDE_SOURCES",
    "HISTORY_FIELDS",
    "LOSSES",
    "MONITORS",
    "OPTIMIZERS",
    "SCHEDULES",
    "WARMUP_EPOCHS",
    "TrainConfig",
    "TrainResult",
    "class_weights",
    "default_run_dir",
    "epoch_line",
    "region_class_weights",
    "split_fingerprint",
    "train",
]


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic kernels for the run (warn-only where none exists); the process's previous setting restored."""
    import torch

    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    bench = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)
        torch.backends.cudnn.benchmark = bench


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The run's random state: torch's global generator (and ``device``'s) seeded with ``seed`` inside a fork that
    restores the process's state afterwards.

    Model initialisation, dropout and augmentation draw from the global generator (a module's initialiser takes no
    generator), so seeding it in a fork gives the weights ``torch.manual_seed(seed)`` gave, without leaving the
    process seeded. Only the CPU generator and the training device's are touched.
    """
    import torch

    kind = device.type
    if kind == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        forked, fork_kind = [index], "cuda"
    elif kind == "mps":
        forked, fork_kind = [0], "mps"
    else:
        forked, fork_kind = [], "cuda"
    with torch.random.fork_rng(devices=forked, device_type=fork_kind):
        torch.random.default_generator.manual_seed(seed)
        if kind == "cuda":
            with torch.cuda.device(forked[0]):
                torch.cuda.manual_seed(seed)
        elif kind == "mps":
            torch.mps.manual_seed(seed)
        yield


# -- preparing a run ----------------------------------------------------------------------------------------------
def _build_model(
    model_name: str, image_size: int | None, pretrained: bool | None, init_from: Any, options: dict[str, Any]
) -> Model:
    from xray_xai.sdk.interfaces import Model as ModelBase

    if isinstance(init_from, ModelBase):
        return init_from
    if init_from is not None:
        from xray_xai.models.store import load_model

        return load_model(init_from)
    from xray_xai.sdk.registry import models

    cls = models.get(model_name)
    kwargs = dict(options)
    if image_size is not None:
        kwargs["image_size"] = image_size
    if pretrained is not None:
        kwargs["pretrained"] = pretrained
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise PluginError(f"model {model_name!r} does not take these options: {exc}") from exc


def _prepare(
    model_name: str,
    data_root: str | Path,
    cfg: TrainConfig,
    dataset: str | None,
    dataset_options: dict[str, Any] | None,
    init_from: Any,
    out_dir: str | Path | None,
    resume: bool,
    ranks: Ranks | None = None,
) -> tuple[Model, RunSpec]:
    """The splits, the model (fresh, or from ``init_from``; letterboxed if asked) and the run folder (a new one
    unless ``resume``: :func:`~xray_xai.models.runs.open_run_dir`; under torchrun rank 0's, shared by all)."""
    ds_name, train_recs, val_recs = open_splits(
        data_root, dataset, cfg.regions, cfg.max_images, cfg.seed, dataset_options
    )
    fingerprint = split_fingerprint(train_recs, val_recs)
    model = _build_model(model_name, cfg.image_size, cfg.pretrained, init_from, dict(cfg.model_options))
    if cfg.letterbox:
        from dataclasses import replace

        pre = model.preprocessing
        model.preprocessing = replace(pre, name=f"letterbox-{pre.input_size}", mode="letterbox", crop=None)
    name = getattr(model, "name", model_name) or model_name
    run_dir = on_main(ranks, open_run_dir, name, fingerprint, cfg.seed, out_dir, resume)
    return model, RunSpec(name, ds_name, train_recs, val_recs, fingerprint, run_dir)


# -- the public entry point ---------------------------------------------------------------------------------------
def train(
    model_name: str,
    data_root: str | Path,
    config: TrainConfig | None = None,
    *,
    dataset: str | None = None,
    dataset_options: dict[str, Any] | None = None,
    init_from: str | Path | Model | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    save: SaveTarget = True,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    on_run_dir: Callable[[Path], None] | None = None,
    **options: Any,
) -> TrainResult:
    """Train ``model_name`` on the ``train`` split of ``data_root``, validate on ``val``, keep the best epoch.

    The recipe is ``config`` (a :class:`TrainConfig`; default: the MURA recipe) with ``options`` applied: a keyword
    named like a :class:`TrainConfig` field (``epochs=``, ``lr=``, ``optimizer=``, ``augment=``, ``seed=``...) sets
    it, any other keyword is a model option (``hidden=``, ``dropout=``, ``members=``...). ``dataset_options`` go to
    the dataset reader (e.g. MURA's ``val_fraction``); ``init_from`` (a Model, a store name or a checkpoint path)
    starts from trained weights instead of a fresh ``model_name``; each run writes into a folder of its own
    (``out_dir``, refused when it holds an earlier run, or a new ``$XRAY_XAI_HOME/runs/...`` folder), passed to
    ``on_run_dir`` before the first epoch and recorded in the sidecar's ``run_dir``; ``resume`` continues
    ``out_dir``'s ``last.pt`` (without ``out_dir``: the newest run of this model, split and seed); ``save`` False
    keeps the weights out of the store, a folder puts them there; ``on_epoch`` is called with each epoch's history
    row as soon as the epoch is saved (``xray-xai train`` prints it). Ensembles (``members=``) and models without
    epochs (``lbp-logreg``: ``fit``) are dispatched to their own procedure. The test split is never read.
    ``letterbox`` fits each film into the input square with its aspect ratio kept (black bars) instead of the
    model's resize or crop; the sidecar records it, so explanations and evaluation use the same geometry.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) each process trains its share of every global batch of ``batch_size``
    films (:mod:`.distributed`); rank 0 alone reports (``progress``, ``on_epoch``, ``on_run_dir``) and writes.
    """
    cfg = TrainConfig.from_options(config, **options)
    ranks = join(cfg.batch_size, cfg.device)
    try:
        if ranks is not None and (model_name in ENSEMBLES and init_from is None):
            raise PluginError(f"{model_name!r} trains its members one by one; run it in one process")
        if ranks is not None and not ranks.is_main:
            progress, on_epoch, on_run_dir = False, None, None
        return _train(
            model_name, data_root, cfg, dataset, dataset_options, init_from, out_dir, resume, save, progress,
            on_epoch, on_run_dir, ranks,
        )  # fmt: skip
    finally:
        if ranks is not None:
            ranks.close()


def _train(
    model_name: str,
    data_root: str | Path,
    cfg: TrainConfig,
    dataset: str | None,
    dataset_options: dict[str, Any] | None,
    init_from: str | Path | Model | None,
    out_dir: str | Path | None,
    resume: bool,
    save: SaveTarget,
    progress: bool,
    on_epoch: EpochCallback | None,
    on_run_dir: Callable[[Path], None] | None,
    ranks: Ranks | None,
) -> TrainResult:
    if model_name in ENSEMBLES and init_from is None:
        return train_ensemble(
            model_name, data_root, cfg, dataset=dataset, dataset_options=dataset_options, out_dir=out_dir, save=save,
            progress=progress, on_epoch=on_epoch, on_run_dir=on_run_dir,
        )  # fmt: skip
    import torch

    dev = torch.device(cfg.device) if ranks is None else ranks.device
    with _seeded(cfg.seed, dev):
        model, spec = _prepare(model_name, data_root, cfg, dataset, dataset_options, init_from, out_dir, resume, ranks)
        if on_run_dir is not None:
            on_run_dir(spec.run_dir)
        if not isinstance(model, torch.nn.Module):
            if ranks is not None:
                raise PluginError(f"model {spec.name!r} has no epochs to share; train it in one process")
            return _train_fit(model, spec, cfg, save, on_epoch)
        spec.films = prepared_films(  # draws no random number: the run's draws stay as they were
            cfg.film_cache,
            spec.train_recs + spec.val_recs,
            model.preprocessing,
            workers=cfg.num_workers,
            progress=progress,
        )
        with _deterministic():
            return train_torch(
                model, spec, cfg, dev=dev, resume=resume, progress=progress, save=save, on_epoch=on_epoch,
                init_from=str(init_from) if isinstance(init_from, (str, Path)) else None, ranks=ranks,
            )  # fmt: skip


# -- models without epochs ----------------------------------------------------------------------------------------
def _load_films(records: list[Record], pre: Any, batch_size: int) -> tuple[Any, list[int], list[Problem]]:
    """Preprocessed tensors of ``records`` (bad images skipped), and the indices kept."""
    import torch
    from torch.utils.data import DataLoader

    from xray_xai.data.loader import RecordDataset, collate_skip_bad

    ds = RecordDataset(records, pre, augment=None)
    xs, idxs = [], []
    for x, _, idx, problems in DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate_skip_bad):
        ds.add_skipped(problems)
        if len(idx) == 0:
            continue
        xs.append(x)
        idxs.append(idx)
    if not xs:
        return torch.zeros(0), [], list(ds.skipped)
    return torch.cat(xs), torch.cat(idxs).tolist(), list(ds.skipped)


def _train_fit(
    model: Any, spec: RunSpec, cfg: TrainConfig, save: SaveTarget, on_epoch: EpochCallback | None = None
) -> TrainResult:
    """Models without epochs (``lbp-logreg``): one ``fit(images, labels)`` on the training split, scored on val."""
    import numpy as np
    import torch

    from xray_xai.models.metrics import binary_metrics

    name, train_recs, val_recs = spec.name, spec.train_recs, spec.val_recs
    if not hasattr(model, "fit"):
        raise PluginError(f"model {name!r} is neither a torch module nor has fit(); it cannot be trained")
    t0 = time.perf_counter()
    x, kept, skipped = _load_films(train_recs, model.preprocessing, cfg.batch_size)
    y = torch.tensor([float(train_recs[i].label or 0) for i in kept])
    model.fit(x, y)
    vx, vkept, vskipped = _load_films(val_recs, model.preprocessing, cfg.batch_size)
    probs = model.predict_proba(vx).detach().cpu().numpy() if len(vkept) else np.zeros(0)
    m = binary_metrics([int(val_recs[i].label or 0) for i in vkept], probs)
    seconds = time.perf_counter() - t0
    row = {
        "epoch": 1,
        "train_loss": None,
        "val_loss": None,
        "val_accuracy": m["accuracy"],
        "val_auroc": m["auroc"],
        "val_kappa": m["kappa"],
        "val_study_kappa": None,
        "lr": None,
        "seconds": round(seconds, 3),
        "img_per_s": round(len(kept) / seconds, 2) if seconds > 0 else None,
    }
    skipped = skipped + vskipped
    write_skipped_csv(spec.run_dir / "skipped.csv", skipped)
    write_history(spec.run_dir, [row], plot=False)
    if on_epoch is not None:
        on_epoch(dict(row))
    metadata = {
        "dataset": spec.ds_name,
        "split_fingerprint": spec.fingerprint,
        "n_train": len(train_recs),
        "n_val": len(val_recs),
        "epochs": 1,
        "best_epoch": 1,
        "metrics": row,
        "seed": cfg.seed,
        "hyperparameters": {"fit": True},
        "run_dir": str(spec.run_dir),
    }
    checkpoint = save_to_store(model, metadata, save) if save else spec.run_dir
    return TrainResult(name, checkpoint, spec.run_dir, [row], 1, row, skipped)
