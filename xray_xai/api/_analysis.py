"""Clustering, auditing, reports, the demo pipeline and the plugin list."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from xray_xai._util.params import split_names
from xray_xai.api._models import resolve_model
from xray_xai.api._process import _refuse_on_ray, _specs
from xray_xai.defaults import CLUSTER_EXPLAINER, DECISION_THRESHOLD
from xray_xai.errors import PluginError

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.cluster.features import FeatureSet
    from xray_xai.demo import DemoConfig
    from xray_xai.sdk.interfaces import DatasetPlugin, Model, Record
    from xray_xai.sdk.registry import PluginInfo

    ModelSpec = str | Path | Model


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
    min_cluster_size: int | None = None,
) -> dict[str, Any]:
    """Cluster the films a model predicts abnormal (p >= ``threshold``; None keeps all) by their features, or by
    where ``explainer`` looks (``on="explanations"``, maps at ``grid`` x ``grid``) (``xray-xai cluster``).

    ``model``/``checkpoint``: see :func:`resolve_model`. ``splits`` are pooled; ``region`` keeps one region,
    ``per_region`` clusters each separately; ``select_k_range`` picks K by silhouette among the Ks whose clusters
    all hold at least ``min_cluster_size`` films (default 5% of the films, at least 3; a group with smaller clusters
    gets a ``warnings`` entry). ``method_params`` go to the clusterer. Returns the JSON-ready summary written as
    ``summary.json`` (with ``json`` false also ``"labels"`` and ``"feature_set"``). ``backend="ray"`` embeds on a
    Ray cluster and writes ``assignments.parquet`` (no ``per_region``, ``select_k_range``, ``min_cluster_size`` or
    ``on="explanations"`` there).
    """
    params = dict(method_params or {})
    if backend == "ray":
        _refuse_on_ray("cluster", per_region=per_region, select_k_range=select_k_range, on=on)
        if min_cluster_size is not None:
            raise PluginError("min_cluster_size only works with backend='local'")
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
        montage_size=montage_size, cache_dir=cache_dir, progress=progress, min_cluster_size=min_cluster_size,
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
    strict: bool = False,
) -> dict[str, Any]:
    """Faithfulness, sanity, localisation, controls and shortcuts for every model x method on ``n`` films of
    ``split`` (``xray-xai audit``); with ``out_dir`` also ``report.html`` and ``report.json`` there.

    ``models``: names, checkpoint paths or model objects; ``methods``: names or a comma-separated list.
    ``steps``/``grid``: deletion/insertion steps and cell size in px; ``baseline``: what removed pixels become.
    Options left at None (``faithfulness_batch_size``, ``sanity_threshold``, ``tolerance_frac``, ``border_frac``)
    take the audit's defaults; ``strict`` skips films whose stream ends early however little is missing (else they
    are read and listed as warnings); see :func:`xray_xai.audit.service.audit` for every option.
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
        explainer_options=explainer_options, strict=strict, **{k: v for k, v in tuned.items() if v is not None},
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
    """One self-contained HTML report (and report.json) from evaluation, audit and clustering results;
    ``clustering`` may be :func:`cluster`'s in-memory result (its labels and feature set are left out)."""
    from xray_xai.cluster.service import IN_MEMORY_KEYS
    from xray_xai.report.html import write_report as _write

    if clustering is not None:
        clustering = {k: v for k, v in clustering.items() if k not in IN_MEMORY_KEYS}
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
    store: bool | None = None,
) -> dict[str, Any]:
    """The whole pipeline on built-in synthetic data (``xray-xai demo``): ``config`` (default the full
    :class:`~xray_xai.demo.DemoConfig`, or its reduced ``quick()`` run), ``seed`` overriding its seed. The trained
    models go to the model store, except a ``quick`` run's (``store`` None: not ``quick``), which stay in
    ``out/models`` so that they never become the newest model a later ``--model NAME`` loads."""
    from dataclasses import replace

    from xray_xai.demo import DemoConfig
    from xray_xai.demo import demo as _demo

    chosen = config if config is not None else DemoConfig.quick() if quick else DemoConfig()
    if seed is not None:
        chosen = replace(chosen, seed=seed)
    keep = (not quick) if store is None else store
    return _demo(out, config=chosen, progress=progress, log=log, store=keep)


def list_plugins(kind: Literal["model", "explainer", "clusterer", "dataset"] | None = None) -> list[PluginInfo]:
    """Every installed plugin (of ``kind``), loaded; one that fails to import is listed with its error."""
    from xray_xai.sdk.registry import all_plugins

    return [info for info in all_plugins() if kind is None or info.kind == kind]
