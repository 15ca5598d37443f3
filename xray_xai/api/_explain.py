"""Explanations: every model x method over files or a data set, and in memory for decoded films."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from xray_xai._util.params import ParamError, split_names
from xray_xai.api._models import resolve_specs
from xray_xai.api._process import _refuse_on_ray, _specs
from xray_xai.defaults import DEFAULT_METHOD
from xray_xai.errors import PluginError, XrayXaiError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from xray_xai.explain.engine import ModelFilms
    from xray_xai.explain.service import ExplainResult
    from xray_xai.sdk.interfaces import Model, Record

    ModelSpec = str | Path | Model


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
    threshold: float | None = None,
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
    threshold: float | None = None,
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
