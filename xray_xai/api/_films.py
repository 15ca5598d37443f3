"""Prepared films: a data set's films decoded once into a model's geometry, for training and evaluation to read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.data.film_cache import FilmCache
    from xray_xai.sdk.interfaces import Model, Preprocessing


def films_dir() -> Path:
    """Where prepared films go unless told otherwise: ``$XRAY_XAI_HOME/cache/films``."""
    from xray_xai.models.films import films_dir as _dir

    return _dir()


def film_preprocessing(
    model: str | Path | Model | Preprocessing | None = None, image_size: int | None = None, letterbox: bool = False
) -> Preprocessing:
    """The preprocessing whose geometry films are prepared in, as ``train`` would give it to ``model``.

    ``model``: a registered model name (its recipe, as a fresh ``train --model NAME`` uses it), a trained model in the
    store or a checkpoint path (its sidecar's, as ``evaluate`` reads films for it), a Model or a Preprocessing; None:
    the default recipe (resize to 224 px). ``image_size`` and ``letterbox`` as ``train``'s options.
    """
    from xray_xai.sdk.interfaces import Model as ModelBase
    from xray_xai.sdk.interfaces import Preprocessing as Pre

    if model is None:
        pre = ModelBase.default_preprocessing
    elif isinstance(model, Pre):
        pre = model
    elif isinstance(model, ModelBase):
        pre = model.preprocessing
    else:
        pre = _named_preprocessing(model)
    pre = pre.resized(image_size)
    if letterbox:  # as training's letterbox option (models/training.py)
        pre = replace(pre, name=f"letterbox-{pre.input_size}", mode="letterbox", crop=None)
    return pre


def _named_preprocessing(spec: str | Path) -> Preprocessing:
    from xray_xai.models import store
    from xray_xai.sdk.interfaces import Preprocessing as Pre
    from xray_xai.sdk.registry import models

    if isinstance(spec, str) and spec in models.names() and not Path(spec).exists():
        return models.get(spec).default_preprocessing
    side = store.read_sidecar(store.resolve(spec))
    if not side.get("preprocessing"):
        from xray_xai.errors import CheckpointError

        raise CheckpointError(Path(spec), "its sidecar records no preprocessing")
    return Pre.from_dict(side["preprocessing"])


def open_films(
    model: str | Path | Model | Preprocessing | None = None,
    *,
    image_size: int | None = None,
    letterbox: bool = False,
    out: str | Path | None = None,
    verify: bool = False,
) -> FilmCache:
    """The films prepared for ``model``'s geometry (see :func:`film_preprocessing`) under ``out`` (default
    :func:`films_dir`): ``cache.locate_all(records)`` then ``cache.read(loc)`` (uint8) or ``cache.film(loc)``."""
    from xray_xai.data.film_cache import open_cache

    pre = film_preprocessing(model, image_size, letterbox)
    return open_cache(pre, Path(out) if out else films_dir(), verify=verify)


def prepare_films(
    data_root: str | Path,
    *,
    dataset: str | None = None,
    dataset_options: dict[str, Any] | None = None,
    splits: Sequence[str] | None = None,
    model: str | Path | Model | Preprocessing | None = None,
    image_size: int | None = None,
    letterbox: bool = False,
    out: str | Path | None = None,
    verify: bool = False,
    workers: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Decode the films of ``splits`` (default: every split) of a data set once, into the geometry of ``model``
    (:func:`film_preprocessing`), as 8-bit shards under ``out`` (default :func:`films_dir`): ``xray-xai prepare``.

    Films already prepared and unchanged are kept (``verify``: compared by SHA-256 too, not only by size and mtime);
    ``workers`` > 1 decodes in that many processes. Returns a JSON-ready summary: key, folder, geometry, films
    prepared now and reused, skipped (unreadable) and warned (kept despite damage) films, seconds, films per second.
    """
    from xray_xai.data.datasets import open_dataset
    from xray_xai.data.film_cache import prepare

    ds = open_dataset(data_root, dataset, **(dataset_options or {}))
    names = [ds.resolve_split(s) for s in splits] if splits else ["all"]
    records = [r for s in dict.fromkeys(names) for r in ds.records(s)]
    pre = film_preprocessing(model, image_size, letterbox)
    result = prepare(records, pre, Path(out) if out else films_dir(), verify=verify, workers=workers, progress=progress)
    return {
        "dataset": ds.name,
        "data": str(ds.root),
        "splits": list(dict.fromkeys(names)),
        "records": len(records),
        "preprocessing": pre.to_dict(),
        **result.to_dict(),
    }
