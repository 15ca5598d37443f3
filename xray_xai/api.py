"""The Python API: whatever a command does, the function of the same name here does (floor 3 of DESIGN.md).

The one place that composes services: the command line and the web app call these functions and hold no logic of
their own (model resolution, method lists, ``--layer``, ``--param``, the Ray backend are all decided here); scripts
and notebooks use them directly::

    from xray_xai import api

    root = api.synth("phantoms", n_studies=60, seed=0)
    run = api.train("cnn-small", root, epochs=3, image_size=64)
    metrics = api.evaluate(run.checkpoint, root, split="test")
    result = api.explain(run.checkpoint, "gradcam,saliency", data=root, split="test", out="explanations")
    clusters = api.cluster(run.checkpoint, root, k=4, out_dir="clusters")
    grid = api.audit([run.checkpoint], ["gradcam", "saliency"], root, n=20, out_dir="audit")

A model is named the same way everywhere (:mod:`xray_xai.models.resolve`): a registered name (the newest trained one
in the store), a checkpoint path or a model object; ``checkpoint=`` beside a name pins that name's weights.

Importing this module is cheap (no torch, numpy or sklearn); each function imports its service when first called.
"""

from __future__ import annotations

import json as _json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from xray_xai._util.params import ParamError, method_params, parse_params, split_names
from xray_xai.defaults import DECISION_THRESHOLD, DEFAULT_METHOD
from xray_xai.errors import PluginError, XrayXaiError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from xray_xai.cluster.features import FeatureSet
    from xray_xai.demo import DemoConfig
    from xray_xai.explain.engine import ModelFilms
    from xray_xai.explain.service import ExplainResult
    from xray_xai.models.config import TrainConfig
    from xray_xai.models.runs import TrainResult
    from xray_xai.sdk.interfaces import DatasetPlugin, Model, Problem, Record
    from xray_xai.sdk.registry import PluginInfo

    ModelSpec = str | Path | Model

__all__ = [
    "CLUSTER_EXPLAINER",
    "DECISION_THRESHOLD",
    "DEFAULT_METHOD",
    "PREDICTION_FIELDS",
    "ParamError",
    "audit",
    "cluster",
    "data_summary",
    "demo",
    "epoch_line",
    "evaluate",
    "explain",
    "explain_films",
    "explainer_names",
    "extract_features",
    "format_stat",
    "list_plugins",
    "list_store",
    "load_model",
    "method_params",
    "models_dir",
    "open_dataset",
    "parse_params",
    "predict",
    "predictions_csv",
    "prepare_process",
    "ray_unsupported",
    "read_image_bytes",
    "resolve_model",
    "resolve_specs",
    "save_model",
    "select_k",
    "serve",
    "split_names",
    "synth",
    "to_json",
    "train",
    "write_predictions",
    "write_report",
]

#: explainer whose maps ``cluster(on="explanations")`` groups: one backward pass per film, cheap for a whole data set
CLUSTER_EXPLAINER = "gradcam"

#: columns of :func:`predict`'s rows, in the order of ``xray-xai predict``'s CSV
PREDICTION_FIELDS: tuple[str, ...] = (
    "path", "study", "region", "label", "probability", "prediction", "study_probability",
)  # fmt: skip

#: options the Ray backend lacks, per command, with the value that means "not used"
_LOCAL_ONLY: dict[str, dict[str, Any]] = {
    "explain": {"only": "all", "per_member": False, "resume": False},
    "cluster": {"per_region": False, "select_k_range": None, "on": "features"},
}


def __getattr__(name: str) -> Any:
    """Constants the faces use for their choices, imported on first use: ``REGIONS`` (the MURA regions) and
    ``TRAIN_CHOICES`` (``{"optimizer": ..., "schedule": ..., "monitor": ..., "loss": ...}``, the names ``train``
    accepts)."""
    if name == "REGIONS":
        from xray_xai.sdk.interfaces import REGIONS

        return REGIONS
    if name == "TRAIN_CHOICES":
        from xray_xai.models import training

        return {
            "optimizer": training.OPTIMIZERS,
            "schedule": training.SCHEDULES,
            "monitor": training.MONITORS,
            "loss": training.LOSSES,
        }
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- process, output and option syntax -----------------------------------------------------------------------------
def prepare_process() -> None:
    """Process-wide tuning that only a program's entry point may choose (``xray-xai`` calls it once at start, a
    library call never does): freed memory is kept in the process (glibc ``mallopt``), so large activations are
    re-used, not page-faulted in every step (1.4x faster CPU training; see :mod:`xray_xai._util.allocator`)."""
    from xray_xai._util.allocator import keep_freed_memory

    keep_freed_memory()


def to_json(data: Any) -> str:
    """``data`` as indented JSON (numpy scalars and arrays, paths and records become plain values)."""
    from xray_xai._util.fsutil import json_default

    return _json.dumps(data, indent=2, default=json_default)


def ray_unsupported(command: Literal["explain", "cluster"], **options: Any) -> list[str]:
    """The names among ``options`` that ``command`` with ``backend="ray"`` cannot honour (given other than their
    default), e.g. ``ray_unsupported("explain", resume=True)`` -> ``["resume"]``."""
    unused = _LOCAL_ONLY[command]
    return [name for name, value in options.items() if name in unused and value != unused[name]]


def _refuse_on_ray(command: Literal["explain", "cluster"], **options: Any) -> None:
    bad = ray_unsupported(command, **options)
    if bad:
        raise XrayXaiError(f"{', '.join(bad)} only work with backend='local'")


# -- data --------------------------------------------------------------------------------------------------------
def synth(
    out: str | Path,
    n_studies: int,
    seed: int = 0,
    *,
    abnormal_fraction: float | None = None,
    image_size: int | None = None,
    regions: Sequence[str] | Mapping[str, float] | None = None,
    difficulty: float | None = None,
    overwrite: bool | None = None,
    progress: bool | None = None,
) -> Path:
    """Write synthetic phantoms in the MURA-v1.1 layout (``xray-xai synth``) with the registered ``synthetic``
    generator; returns the root to read back. Options left at None are not passed, so the generator's defaults
    apply (built-in: abnormal fraction 0.4, 256 px, all seven regions, difficulty 1, no overwrite, a progress bar)."""
    from xray_xai.data.datasets import synth as _synth

    given = {"abnormal_fraction": abnormal_fraction, "image_size": image_size, "regions": regions,
             "difficulty": difficulty, "overwrite": overwrite, "progress": progress}  # fmt: skip
    return _synth(out, n_studies, seed=seed, **{k: v for k, v in given.items() if v is not None})


def open_dataset(root: str | Path, name: str | None = None, **options: Any) -> DatasetPlugin:
    """The dataset plugin for ``root`` (layout detected when ``name`` is None); ``options`` are the plugin's own
    (e.g. ``val_fraction``, ``labels`` for ``folder``)."""
    from xray_xai.data.datasets import open_dataset as _open

    return _open(root, name, **options)


def data_summary(
    root: str | Path, name: str | None = None, *, images: bool = False, progress: bool = False, **options: Any
) -> dict[str, Any]:
    """Counts by split, region and label, and the problems found (``xray-xai data``); ``images`` also reads every
    image header. ``options`` go to the dataset plugin."""
    from xray_xai.data.datasets import open_dataset as _open
    from xray_xai.data.datasets import summarize

    return summarize(_open(root, name, **options), images=images, progress=progress)


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
    hidden: Sequence[int] | None = None,
    dropout: float | None = None,
    init: str | None = None,
    members: str | Sequence[str] | None = None,
    model_options: Mapping[str, Any] | None = None,
    init_from: str | Path | Model | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    save: bool = True,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train and store a model (``xray-xai train``); returns a :class:`~xray_xai.models.runs.TrainResult`.

    The recipe is ``config`` (a :class:`~xray_xai.models.config.TrainConfig`, default: the MURA recipe) with every
    keyword given (not None) applied on top; ``hidden``, ``dropout``, ``init``, ``members`` and ``model_options``
    go to the model's constructor. ``on_epoch`` is called with each epoch's history row as it is saved.
    """
    from xray_xai.models.training import train as _train

    recipe = {
        "epochs": epochs, "batch_size": batch_size, "image_size": image_size, "letterbox": letterbox, "lr": lr,
        "optimizer": optimizer, "weight_decay": weight_decay, "schedule": schedule,
        "plateau_patience": plateau_patience, "monitor": monitor, "loss": loss, "early_stop": early_stop,
        "augment": augment, "seed": seed, "device": device, "amp": amp, "channels_last": channels_last,
        "num_workers": num_workers, "max_images": max_images, "regions": regions, "pretrained": pretrained,
        "strict": strict,
    }  # fmt: skip
    options: dict[str, Any] = {k: v for k, v in recipe.items() if v is not None}
    extra: dict[str, Any] = {"hidden": hidden, "dropout": dropout, "init": init, "members": members}
    options.update(model_options or {})
    options.update({k: v for k, v in extra.items() if v is not None})
    return _train(
        model, data_root, config, dataset=dataset, dataset_options=dataset_options, init_from=init_from,
        out_dir=out_dir, resume=resume, save=save, progress=progress, on_epoch=on_epoch, **options,
    )  # fmt: skip


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
) -> dict[str, Any]:
    """Image- and study-level metrics with bootstrap intervals, overall and per region (``xray-xai evaluate``);
    ``strict`` skips films whose stream ends early however little is missing (else kept, listed as warnings)."""
    from xray_xai.models.evaluation import evaluate as _evaluate

    return _evaluate(
        model, data_root, checkpoint=checkpoint, dataset=dataset, dataset_options=dataset_options, split=split,
        batch_size=batch_size, bootstrap=bootstrap, seed=seed, max_images=max_images, device=device, tta=tta,
        out_dir=out_dir, progress=progress, strict=strict,
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
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Per-image and per-study probabilities (``xray-xai predict``); returns ``(rows, problems)``, damaged films
    that were kept listed last with severity "warning" (``strict`` skips them instead).

    ``threshold`` None: the decision threshold of :mod:`xray_xai.defaults`."""
    from xray_xai.defaults import DECISION_THRESHOLD
    from xray_xai.models.evaluation import predict as _predict

    return _predict(
        model, inputs, checkpoint=checkpoint, data_root=data_root, split=split, dataset=dataset,
        dataset_options=dataset_options, batch_size=batch_size, device=device,
        threshold=DECISION_THRESHOLD if threshold is None else threshold, tta=tta, progress=progress, strict=strict,
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


# -- explain -----------------------------------------------------------------------------------------------------
def _with_layer(methods: Sequence[str], params: dict[str, dict[str, Any]], layer: str) -> None:
    """``layer`` becomes ``layer=`` of every method that takes one (``layers=`` for fusions); ParamError if none."""
    import inspect

    from xray_xai.sdk.registry import explainers

    def key(name: str) -> str | None:
        accepted = inspect.signature(explainers.get(name).__init__).parameters
        return "layer" if "layer" in accepted else "layers" if "layers" in accepted else None

    taken = [m for m in methods if key(m) is not None]
    if not taken:
        able = [m for m in explainers.names() if key(m) is not None]
        raise ParamError(f"layer: none of {', '.join(methods)} takes a layer ({', '.join(able)} do)")
    for name in taken:
        params.setdefault(name, {}).setdefault(str(key(name)), layer)


def _specs(models: ModelSpec | Sequence[ModelSpec]) -> list[ModelSpec]:
    from xray_xai.sdk.interfaces import Model

    return [models] if isinstance(models, str | Path | Model) else list(models)


def explain(
    models: ModelSpec | Sequence[ModelSpec] = (),
    methods: str | Sequence[str] | None = None,
    *,
    checkpoint: str | Path | None = None,
    inputs: Sequence[str | Path] = (),
    data: str | Path | None = None,
    split: str | None = None,
    dataset: str | None = None,
    records: Sequence[Record] | None = None,
    only: Literal["all", "predicted-abnormal"] = "all",
    threshold: float = DECISION_THRESHOLD,
    out: str | Path | None = None,
    formats: str | Sequence[str] = ("png", "npy", "json"),
    per_member: bool = False,
    batch_size: int = 8,
    target: Literal["abnormal", "normal"] = "abnormal",
    seed: int | None = 0,
    resume: bool = False,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    layer: str | None = None,
    limit: int | None = None,
    show_progress: bool = True,
    backend: str = "local",
    concurrency: int = 2,
    ray_address: str | None = None,
    strict: bool = False,
) -> ExplainResult | dict[str, Any]:
    """Heatmaps for every model x method (``xray-xai explain``): an :class:`~xray_xai.explain.service.ExplainResult`
    (a JSON-ready dict with ``backend="ray"``).

    ``models``: names, checkpoint paths or model objects (``checkpoint`` pins the first, see :func:`resolve_model`);
    ``methods``: names or comma-separated lists (default :data:`DEFAULT_METHOD`). Images come from ``records``,
    ``inputs`` (files and folders) or the data set at ``data`` (``split``, ``dataset``); ``limit`` keeps the first
    ones. ``only="predicted-abnormal"`` keeps the films some model calls abnormal (p >= ``threshold``).
    ``params``: ``{method: {option: value}}``; ``layer``: explain at this layer with every method that takes one.
    ``out=None`` writes nothing and returns the maps in memory. ``backend="ray"`` spreads the work over a Ray cluster
    (``concurrency`` actors, ``ray_address``) and returns a JSON-ready summary of Parquet shards under ``out``
    (no ``records``, ``only``, ``per_member`` or ``resume`` there). ``strict`` skips films whose stream ends early
    however little is missing (by default they are read and listed as warnings).
    """
    chosen = split_names(methods) or [DEFAULT_METHOD]
    options = {m: dict(p) for m, p in (params or {}).items()}
    if layer:
        _with_layer(chosen, options, layer)
    fmt = formats.split(",") if isinstance(formats, str) else list(formats)
    if backend == "ray":
        _refuse_on_ray("explain", only=only, per_member=per_member, resume=resume)
        if records is not None:
            raise XrayXaiError("records only work with backend='local'; give inputs or data")
        from xray_xai.scale.ray import explain_command

        return explain_command(
            resolve_specs(_specs(models), checkpoint), chosen, inputs=inputs, data=data, dataset=dataset, split=split,
            limit=limit, out=out if out is not None else "explanations", batch_size=batch_size, target=target,
            params=options, seed=seed, concurrency=concurrency, address=ray_address,
        )  # fmt: skip
    if backend != "local":
        raise PluginError(f"unknown backend {backend!r}; expected 'local' or 'ray'")
    from xray_xai.explain.service import explain as _explain
    from xray_xai.models.resolve import resolve_models

    return _explain(
        resolve_models(_specs(models), checkpoint), chosen, inputs=inputs, data=data, split=split, dataset=dataset,
        records=records, only=only, threshold=threshold, out=out, formats=fmt, per_member=per_member,
        batch_size=batch_size, target=target, seed=seed, resume=resume, params=options, limit=limit,
        show_progress=show_progress, strict=strict,
    )  # fmt: skip


# -- cluster -----------------------------------------------------------------------------------------------------
def extract_features(
    model: Model,
    records: Sequence[Record],
    *,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    use_cache: bool = True,
) -> FeatureSet:
    """Features entering the final linear layer, and probabilities, from one forward pass; cached on disk."""
    from xray_xai.cluster.features import extract_features as _extract

    return _extract(model, records, batch_size=batch_size, cache_dir=cache_dir, progress=progress, use_cache=use_cache)


def cluster(
    model: ModelSpec | None,
    data_root: str | Path,
    *,
    checkpoint: str | Path | None = None,
    dataset: str | None = None,
    k: int = 4,
    method: str = "pca-kmeans",
    method_params: Mapping[str, Any] | None = None,
    splits: Sequence[str] = ("train", "test"),
    threshold: float | None = DECISION_THRESHOLD,
    region: str | None = None,
    per_region: bool = False,
    on: Literal["features", "explanations"] = "features",
    explainer: str = CLUSTER_EXPLAINER,
    grid: int = 16,
    select_k_range: Sequence[int] | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 32,
    montage_size: int = 16,
    cache_dir: str | Path | None = None,
    json: bool = False,
    progress: bool = True,
    backend: str = "local",
    concurrency: int = 2,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Cluster the films a model predicts abnormal (p >= ``threshold``; None keeps all) by their features, or by
    where ``explainer`` looks (``on="explanations"``, maps at ``grid`` x ``grid``) (``xray-xai cluster``).

    ``model``/``checkpoint``: see :func:`resolve_model`. ``splits`` are pooled; ``region`` keeps one region,
    ``per_region`` clusters each separately; ``select_k_range`` picks K by silhouette. ``method_params`` go to the
    clusterer. Returns the JSON-ready summary written as ``summary.json`` (with ``json`` false also ``"labels"``
    and ``"feature_set"``). ``backend="ray"`` embeds on a Ray cluster and writes ``assignments.parquet`` (no
    ``per_region``, ``select_k_range`` or ``on="explanations"`` there).
    """
    params = dict(method_params or {})
    if backend == "ray":
        _refuse_on_ray("cluster", per_region=per_region, select_k_range=select_k_range, on=on)
        from xray_xai.models.resolve import resolve_spec
        from xray_xai.scale.ray import cluster_command

        return cluster_command(
            resolve_spec(model, checkpoint), data_root, dataset=dataset, k=k, method=method, splits=splits,
            threshold=threshold, region=region, out_dir=out_dir, seed=seed, batch_size=batch_size,
            method_params=params, concurrency=concurrency, address=ray_address,
        )  # fmt: skip
    if backend != "local":
        raise PluginError(f"unknown backend {backend!r}; expected 'local' or 'ray'")
    from xray_xai.cluster.service import cluster as _cluster

    return _cluster(
        resolve_model(model, checkpoint), data_root, dataset=dataset, k=k, method=method, splits=splits,
        threshold=threshold, region=region, per_region=per_region, on=on, explainer=explainer, out_dir=out_dir,
        seed=seed, batch_size=batch_size, json=json, select_k_range=select_k_range, method_params=params, grid=grid,
        montage_size=montage_size, cache_dir=cache_dir, progress=progress,
    )  # fmt: skip


def select_k(
    X: Any,
    ks: Iterable[int] = range(2, 11),
    *,
    method: str = "pca-kmeans",
    params: Mapping[str, Any] | None = None,
    random_state: int = 0,
    plot: str | Path | None = None,
    sample_size: int = 10_000,
) -> dict[str, Any]:
    """Silhouette of ``method`` for each K in ``ks`` on the rows of ``X``: ``{"ks", "silhouette", "best_k",
    "plot"}``."""
    from xray_xai.cluster.service import select_k as _select_k

    return _select_k(X, ks, method=method, params=dict(params or {}), random_state=random_state, plot=plot,
                     sample_size=sample_size)  # fmt: skip


# -- audit and report --------------------------------------------------------------------------------------------
def audit(
    models: ModelSpec | Sequence[ModelSpec],
    methods: str | Sequence[str],
    data_root: str | Path | None,
    *,
    dataset: str | DatasetPlugin | None = None,
    split: str = "test",
    n: int = 100,
    seed: int = 0,
    steps: int = 32,
    grid: int = 8,
    baseline: Literal["blur", "mean"] = "blur",
    batch_size: int = 16,
    faithfulness_batch_size: int | None = None,
    sanity_stages: int = 4,
    sanity_n: int = 16,
    sanity_threshold: float | None = None,
    tolerance_frac: float | None = None,
    border_frac: float | None = None,
    n_boot: int = 1000,
    n_examples: int = 3,
    control_faithfulness: bool = True,
    channels_last: bool = True,
    curve_check_n: int = 0,
    explainer_options: Mapping[str, Mapping[str, Any]] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    title: str = "xray-xai audit",
) -> dict[str, Any]:
    """Faithfulness, sanity, localisation, controls and shortcuts for every model x method on ``n`` films of
    ``split`` (``xray-xai audit``); with ``out_dir`` also ``report.html`` and ``report.json`` there.

    ``models``: names, checkpoint paths or model objects; ``methods``: names or a comma-separated list.
    ``steps``/``grid``: deletion/insertion steps and cell size in px; ``baseline``: what removed pixels become.
    Options left at None (``faithfulness_batch_size``, ``sanity_threshold``, ``tolerance_frac``, ``border_frac``)
    take the audit's defaults; see :func:`xray_xai.audit.service.audit` for every option.
    """
    from xray_xai.audit.service import audit as _audit

    tuned = {"faithfulness_batch_size": faithfulness_batch_size, "sanity_threshold": sanity_threshold,
             "tolerance_frac": tolerance_frac, "border_frac": border_frac}  # fmt: skip
    specs = [str(m) if isinstance(m, Path) else m for m in _specs(models)]
    return _audit(
        specs, split_names(methods), data_root, dataset=dataset, split=split, n=n, seed=seed, steps=steps, grid=grid,
        batch_size=batch_size, out_dir=out_dir, progress=progress, title=title, baseline=baseline,
        sanity_stages=sanity_stages, sanity_n=sanity_n, n_boot=n_boot, n_examples=n_examples,
        control_faithfulness=control_faithfulness, channels_last=channels_last, curve_check_n=curve_check_n,
        explainer_options=explainer_options, **{k: v for k, v in tuned.items() if v is not None},
    )  # fmt: skip


def format_stat(stat: Any, digits: int = 3) -> str:
    """``"0.123 [0.100, 0.150]"`` for a ``{"mean", "ci"}`` summary of :func:`audit`, the number alone for a scalar."""
    from xray_xai.report.html import format_stat as _format

    return _format(stat, digits)


def write_report(
    out_dir: str | Path,
    *,
    audit: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    clustering: Mapping[str, Any] | None = None,
    title: str = "xray-xai report",
) -> Path:
    """One self-contained HTML report (and report.json) from evaluation, audit and clustering results."""
    from xray_xai.report.html import write_report as _write

    return _write(out_dir, audit=audit, evaluation=evaluation, clustering=clustering, title=title)


# -- the whole pipeline, plugins, the web app ----------------------------------------------------------------------
def demo(
    out: str | Path = "xray-xai-demo",
    *,
    quick: bool = False,
    seed: int | None = None,
    config: DemoConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The whole pipeline on built-in synthetic data (``xray-xai demo``): ``config`` (default the full
    :class:`~xray_xai.demo.DemoConfig`, or its reduced ``quick()`` run), ``seed`` overriding its seed."""
    from dataclasses import replace

    from xray_xai.demo import DemoConfig
    from xray_xai.demo import demo as _demo

    chosen = config if config is not None else DemoConfig.quick() if quick else DemoConfig()
    if seed is not None:
        chosen = replace(chosen, seed=seed)
    return _demo(out, config=chosen, progress=progress, log=log)


def list_plugins(kind: Literal["model", "explainer", "clusterer", "dataset"] | None = None) -> list[PluginInfo]:
    """Every installed plugin (of ``kind``), loaded; one that fails to import is listed with its error."""
    from xray_xai.sdk.registry import all_plugins

    return [info for info in all_plugins() if kind is None or info.kind == kind]


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    models: Sequence[str | Path] | None = None,
    *,
    max_upload_mb: float = 20.0,
    log_level: str = "info",
    warn: Callable[[str], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> None:
    """Serve the web page and JSON API (``xray-xai serve``) until interrupted; ``models`` default to every stored
    one. A missing web dependency is an :class:`~xray_xai.errors.XrayXaiError` naming the extra to install.
    ``warn`` gets the warning for a non-loopback ``host``, ``log`` the address once the server starts."""
    import importlib.util

    needed = {"fastapi": "fastapi", "uvicorn": "uvicorn", "jinja2": "jinja2", "python_multipart": "python-multipart"}
    missing = [pkg for mod, pkg in needed.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise XrayXaiError(f"the web server needs {', '.join(missing)}: pip install 'xray-xai[web]'")
    from xray_xai.web import run_server

    if log is not None:
        log(f"serving on http://{host}:{port}/ (Ctrl+C to stop)")
    run_server(host, port, models, max_upload_mb=max_upload_mb, log_level=log_level, warn=warn)


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


# -- in memory: decoded films, for the web page and notebooks ------------------------------------------------------
def read_image_bytes(data: bytes, name: str = "upload") -> np.ndarray:
    """Decode an in-memory PNG, JPEG or DICOM file (format sniffed from the content, pixel-count guard) to a float
    ``(H, W)`` film in [0, 1]; ``name`` is used in messages. Bad content raises :class:`xray_xai.errors.ImageError`."""
    from xray_xai.data.images import read_image_bytes as _read

    return _read(data, name)


def explain_films(
    films: Sequence[np.ndarray],
    models: Any,
    methods: str | Sequence[str] | None = None,
    *,
    names: Sequence[str] = (),
    target: str = "abnormal",
    seed: int | None = 0,
    params: Mapping[str, dict[str, Any]] | None = None,
    predict: bool = True,
    keep_errors: bool = False,
    threshold: float = DECISION_THRESHOLD,
) -> list[ModelFilms]:
    """Probabilities, maps and overlays of decoded films (e.g. the views of one study) under each loaded model
    (a :class:`~xray_xai.sdk.interfaces.Model` or a list of them), in memory: the engine of ``xray-xai explain``
    without files. ``methods`` None is :data:`DEFAULT_METHOD`, ``()`` probabilities only; with ``keep_errors`` a
    method that cannot explain a model is reported in its result instead of raised. One
    :class:`~xray_xai.explain.engine.ModelFilms` per model (``probabilities``, ``study_probability``,
    ``prediction``, ``films``, ``methods``, ``overlay(method, view)`` and PNG bytes of each)."""
    from xray_xai.explain.engine import explain_films as _explain_films

    return _explain_films(
        films,
        models,
        methods,
        names=names,
        target=target,
        seed=seed,
        params=params,
        predict=predict,
        keep_errors=keep_errors,
        threshold=threshold,
    )


def explainer_names() -> list[str]:
    """Every registered explanation method, the default (:data:`DEFAULT_METHOD`) first, then by name."""
    from xray_xai.sdk.registry import explainers

    return sorted(explainers.names(), key=lambda n: (n != DEFAULT_METHOD, n))


def models_dir() -> Path:
    """The model store's folder (``$XRAY_XAI_HOME/models``), where :func:`list_store` looks."""
    from xray_xai.models.store import models_dir as _models_dir

    return _models_dir()
