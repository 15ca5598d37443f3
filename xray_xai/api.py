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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xray_xai.defaults import DECISION_THRESHOLD, DEFAULT_METHOD

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from xray_xai.explain.engine import ModelFilms

__all__ = [
    "DECISION_THRESHOLD",
    "DEFAULT_METHOD",
    "audit",
    "cluster",
    "data_summary",
    "demo",
    "evaluate",
    "explain",
    "explain_films",
    "explainer_names",
    "extract_features",
    "list_store",
    "load_model",
    "models_dir",
    "open_dataset",
    "predict",
    "read_image_bytes",
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


def train(model: str, data_root: str | Path, **options: Any) -> Any:
    """Train and store a model (``xray-xai train``); returns a :class:`xray_xai.models.training.TrainResult`."""
    from xray_xai.models.training import train as _train

    return _train(model, data_root, **options)


def evaluate(model: str | Path | Any, data_root: str | Path, **options: Any) -> dict[str, Any]:
    """Image- and study-level metrics with bootstrap intervals, overall and per region (``xray-xai evaluate``)."""
    from xray_xai.models.evaluation import evaluate as _evaluate

    return _evaluate(model, data_root, **options)


def predict(model: str | Path | Any, inputs: Any = None, **options: Any) -> Any:
    """Per-image and per-study probabilities (``xray-xai predict``); returns ``(rows, problems)``."""
    from xray_xai.models.evaluation import predict as _predict

    return _predict(model, inputs, **options)


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


def load_model(name_or_path: str | Path, **options: Any) -> Any:
    """A trained model: a registered name resolves to the newest one in the store, a path loads that checkpoint."""
    from xray_xai.models.store import load_model as _load

    return _load(name_or_path, **options)


def save_model(model: Any, out_dir: str | Path | None = None, **options: Any) -> Path:
    """Save weights as safetensors with a JSON sidecar into the store (or ``out_dir``)."""
    from xray_xai.models.store import save_model as _save

    return _save(model, out_dir, **options)


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
