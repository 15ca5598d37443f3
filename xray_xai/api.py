"""The Python API: whatever a command does, the function of the same name here does (floor 3 of DESIGN.md).

The command line and the web app call these services and hold no logic of their own; scripts and notebooks use them
directly::

    from xray_xai import api

    root = api.synth("phantoms", n_studies=60, seed=0)
    run = api.train("cnn-small", root, epochs=3, image_size=64)
    metrics = api.evaluate(run.checkpoint, root, split="test")
    result = api.explain([run.checkpoint], ["gradcam", "saliency"], data=root, split="test", out="explanations")
    clusters = api.cluster(run.checkpoint, root, k=4, out_dir="clusters")
    grid = api.audit([str(run.checkpoint)], ["gradcam", "saliency"], root, n=20, out_dir="audit")

Importing this module is cheap; each function imports its service (and torch) when first called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.models.config import TrainConfig
    from xray_xai.models.runs import TrainResult
    from xray_xai.sdk.interfaces import Model, Problem

__all__ = [
    "audit",
    "cluster",
    "data_summary",
    "demo",
    "evaluate",
    "explain",
    "extract_features",
    "list_store",
    "load_model",
    "open_dataset",
    "predict",
    "save_model",
    "select_k",
    "synth",
    "train",
    "write_report",
]


def synth(out: str | Path, n_studies: int, seed: int = 0, **options: Any) -> Path:
    """Write synthetic phantoms in the MURA-v1.1 layout (``xray-xai synth``); see :mod:`xray_xai.data.datasets`."""
    from xray_xai.data.datasets import synth as _synth

    return _synth(out, n_studies, seed=seed, **options)


def open_dataset(root: str | Path, name: str | None = None, **options: Any) -> Any:
    """The dataset plugin for ``root`` (layout detected when ``name`` is None)."""
    from xray_xai.data.datasets import open_dataset as _open

    return _open(root, name, **options)


def data_summary(root: str | Path, name: str | None = None, *, images: bool = False, **options: Any) -> dict[str, Any]:
    """Counts by split, region and label, and the problems found (``xray-xai data``)."""
    from xray_xai.data.datasets import open_dataset as _open
    from xray_xai.data.datasets import summarize

    return summarize(_open(root, name, **options), images=images, progress=False)


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
    }  # fmt: skip
    options: dict[str, Any] = {k: v for k, v in recipe.items() if v is not None}
    extra: dict[str, Any] = {"hidden": hidden, "dropout": dropout, "init": init, "members": members}
    options.update(model_options or {})
    options.update({k: v for k, v in extra.items() if v is not None})
    return _train(
        model, data_root, config, dataset=dataset, dataset_options=dataset_options, init_from=init_from,
        out_dir=out_dir, resume=resume, save=save, progress=progress, on_epoch=on_epoch, **options,
    )  # fmt: skip


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
) -> dict[str, Any]:
    """Image- and study-level metrics with bootstrap intervals, overall and per region (``xray-xai evaluate``)."""
    from xray_xai.models.evaluation import evaluate as _evaluate

    return _evaluate(
        model, data_root, checkpoint=checkpoint, dataset=dataset, dataset_options=dataset_options, split=split,
        batch_size=batch_size, bootstrap=bootstrap, seed=seed, max_images=max_images, device=device, tta=tta,
        out_dir=out_dir, progress=progress,
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
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Per-image and per-study probabilities (``xray-xai predict``); returns ``(rows, problems)``.

    ``threshold`` None: the decision threshold of :mod:`xray_xai.defaults`."""
    from xray_xai.defaults import DECISION_THRESHOLD
    from xray_xai.models.evaluation import predict as _predict

    return _predict(
        model, inputs, checkpoint=checkpoint, data_root=data_root, split=split, dataset=dataset,
        dataset_options=dataset_options, batch_size=batch_size, device=device,
        threshold=DECISION_THRESHOLD if threshold is None else threshold, tta=tta, progress=progress,
    )  # fmt: skip


def explain(models: Any, methods: Any = None, **options: Any) -> Any:
    """Heatmaps for every model x method (``xray-xai explain``; default method ``layercam``); an ``ExplainResult``."""
    from xray_xai.explain.service import explain as _explain
    from xray_xai.sdk.explainer import DEFAULT_METHOD

    return _explain(models, methods or DEFAULT_METHOD, **options)


def extract_features(model: Any, records: Any, **options: Any) -> Any:
    """Cached features entering the final linear layer, and probabilities, from one forward pass."""
    from xray_xai.cluster.features import extract_features as _extract

    return _extract(model, records, **options)


def cluster(model: Any, data_root: str | Path, **options: Any) -> dict[str, Any]:
    """Cluster the features of images predicted abnormal (``xray-xai cluster``)."""
    from xray_xai.cluster.service import cluster as _cluster

    return _cluster(model, data_root, **options)


def select_k(X: Any, ks: Any = range(2, 11), **options: Any) -> dict[str, Any]:
    """Silhouette over a range of K."""
    from xray_xai.cluster.service import select_k as _select_k

    return _select_k(X, ks, **options)


def audit(models: Any, methods: Any, data_root: str | Path | None, **options: Any) -> dict[str, Any]:
    """Faithfulness, sanity, localisation, controls and shortcuts for every model x method (``xray-xai audit``)."""
    from xray_xai.audit.service import audit as _audit

    return _audit(models, methods, data_root, **options)


def write_report(out_dir: str | Path, **sections: Any) -> Path:
    """One self-contained HTML report (and report.json) from evaluation, audit and clustering results."""
    from xray_xai.report.html import write_report as _write

    return _write(out_dir, **sections)


def demo(out: str | Path = "xray-xai-demo", **options: Any) -> dict[str, Any]:
    """The whole pipeline on built-in synthetic data (``xray-xai demo``)."""
    from xray_xai.demo import demo as _demo

    return _demo(out, **options)


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
