"""xray-xai: train, explain and audit classifiers of musculoskeletal radiographs.

Lookups return plugin *classes*; instantiate them with their options::

    import xray_xai
    Explainer = xray_xai.get_explainer("gradcam")
    xray_xai.list_models("densenet*")  # ['densenet-dense32', 'densenet-full', 'densenet-linear', 'densenet201']

Importing this package is cheap: plugins load on first lookup, torch only when a plugin needs it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "get_clusterer",
    "get_dataset",
    "get_explainer",
    "get_model",
    "list_clusterers",
    "list_datasets",
    "list_explainers",
    "list_models",
]


def get_model(name: str) -> Any:
    """The model plugin class registered as ``name`` (e.g. ``"densenet-full"``)."""
    from xray_xai.sdk.registry import models

    return models.get(name)


def get_explainer(name: str) -> Any:
    """The explainer plugin class registered as ``name`` (e.g. ``"gradcam"``)."""
    from xray_xai.sdk.registry import explainers

    return explainers.get(name)


def get_clusterer(name: str) -> Any:
    """The clusterer plugin class registered as ``name`` (e.g. ``"pca-kmeans"``)."""
    from xray_xai.sdk.registry import clusterers

    return clusterers.get(name)


def get_dataset(name: str) -> Any:
    """The dataset plugin class registered as ``name`` (e.g. ``"mura"``)."""
    from xray_xai.sdk.registry import datasets

    return datasets.get(name)


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the model plugins, optionally filtered by an fnmatch pattern."""
    from xray_xai.sdk.registry import models

    return models.names(pattern)


def list_explainers(pattern: str | None = None) -> list[str]:
    """Names of the explainer plugins, optionally filtered by an fnmatch pattern."""
    from xray_xai.sdk.registry import explainers

    return explainers.names(pattern)


def list_clusterers(pattern: str | None = None) -> list[str]:
    """Names of the clusterer plugins, optionally filtered by an fnmatch pattern."""
    from xray_xai.sdk.registry import clusterers

    return clusterers.names(pattern)


def list_datasets(pattern: str | None = None) -> list[str]:
    """Names of the dataset plugins, optionally filtered by an fnmatch pattern."""
    from xray_xai.sdk.registry import datasets

    return datasets.names(pattern)
