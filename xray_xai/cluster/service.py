"""The cluster service: group the films a model calls abnormal by their deep features (or by where it looks).

The published recipe: take the films the model predicts abnormal (``p >= threshold``) from the splits named, reduce
their penultimate-layer features with PCA, cluster with k-means (K=4), and look at what each cluster holds. This
module adds the looking: an assignments table, a montage of the films nearest each centroid, a 2-D projection,
composition tables (region, view, label and every metadata column per cluster), the silhouette, NMI/ARI of the
clusters against every metadata column, and a sentence per cluster saying what dominates it. What each cluster holds
and how it agrees with the metadata is computed by :mod:`xray_xai.cluster.describe` (missing metadata: see there);
the pictures are drawn by :mod:`xray_xai.cluster.figures`.

Features come from :mod:`xray_xai.cluster.features` (cached), so changing K, the method, the threshold or the
region never recomputes them.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xray_xai.cluster.describe import (
    MISSING,
    MISSING_POLICY,
    PRIMARY_COLUMNS,
    agreement,
    composition,
    describe_clusters,
    metadata_columns,
)
from xray_xai.defaults import CLUSTER_EXPLAINER, DECISION_THRESHOLD
from xray_xai.errors import DataError, XrayXaiError
from xray_xai.sdk.interfaces import Model, Problem, Record
from xray_xai.sdk.provenance import provenance

__all__ = [
    "MISSING",
    "MISSING_POLICY",
    "PRIMARY_COLUMNS",
    "agreement",
    "cluster",
    "composition",
    "default_out_dir",
    "describe_clusters",
    "make_clusterer",
    "metadata_columns",
    "open_data",
    "select_k",
    "select_records",
]


# ------------------------------------------------------------------------------------------------------- K choice
def make_clusterer(method: str, k: int | None, seed: int, params: dict[str, Any] | None) -> Any:
    """The registered clusterer ``method`` built with ``params``; ``n_clusters`` set to ``k`` and ``random_state``
    to ``seed`` where the estimator has them and ``params`` does not name them (also used by the Ray backend)."""
    from xray_xai.sdk.registry import clusterers

    cls = clusterers.get(method)
    est: Any = cls(**(params or {}))
    names = est.get_params(deep=False) if hasattr(est, "get_params") else {}
    chosen: dict[str, Any] = {}
    if k is not None and "n_clusters" in names and "n_clusters" not in (params or {}):
        chosen["n_clusters"] = int(k)
    if "random_state" in names and "random_state" not in (params or {}):
        chosen["random_state"] = int(seed)
    if chosen:
        est.set_params(**chosen)
    return est


def _silhouette(Z: np.ndarray, labels: np.ndarray, seed: int, sample_size: int = 5_000) -> float | None:
    from sklearn.metrics import silhouette_score

    keep = labels >= 0
    n_found = np.unique(labels[keep]).size
    if n_found < 2 or n_found > keep.sum() - 1:
        return None
    size = min(int(keep.sum()), sample_size)
    return float(silhouette_score(Z[keep], labels[keep], sample_size=size, random_state=seed))


#: the smallest cluster worth describing, as a share of the films clustered (at least MIN_CLUSTER_FILMS films)
MIN_CLUSTER_SHARE = 0.05
MIN_CLUSTER_FILMS = 3


def default_min_cluster_size(n: int) -> int:
    """The default smallest cluster: 5% of the ``n`` films clustered, at least 3 films."""
    return max(MIN_CLUSTER_FILMS, math.ceil(MIN_CLUSTER_SHARE * n))


def select_k(
    X: np.ndarray,
    ks: Iterable[int] = range(2, 11),
    *,
    method: str = "pca-kmeans",
    params: dict[str, Any] | None = None,
    random_state: int = 0,
    plot: str | Path | None = None,
    sample_size: int = 10_000,
    min_cluster_size: int | None = None,
) -> dict[str, Any]:
    """Silhouette of ``method`` for each K in ``ks`` (PCA fitted once); the best K; a line plot if ``plot``.

    The best K is the one of highest silhouette among those whose smallest cluster holds at least
    ``min_cluster_size`` films (default :func:`default_min_cluster_size`): silhouette alone favours many tiny
    clusters on few films (K=7 for 24 films, clusters of 1-3). When no K gives clusters that large, the K whose
    smallest cluster is largest is kept (ties: the higher silhouette) and ``warning`` says so.

    Returns ``{"ks", "silhouette", "smallest" (the smallest cluster per K), "min_cluster_size", "best_k", "plot",
    "warning"}``. Ks that the number of rows cannot support (K >= n) are left out.
    """
    ks = sorted({int(k) for k in ks})
    X = np.asarray(X)
    n = X.shape[0]
    valid = [k for k in ks if 2 <= k <= n - 1]
    if not valid:
        raise XrayXaiError(f"no K in {ks} can be scored on {n} images (silhouette needs 2 <= K <= n - 1)")
    min_size = default_min_cluster_size(n) if min_cluster_size is None else int(min_cluster_size)
    base = make_clusterer(method, valid[0], random_state, params)
    if "n_clusters" not in base.get_params(deep=False):
        raise XrayXaiError(f"method {method!r} finds its own number of clusters; K selection needs one with n_clusters")
    base.fit(X)
    Z = base.reduce(X) if hasattr(base, "reduce") else X
    scores: list[float] = []
    smallest: list[int] = []
    for k in valid:
        extra = dict(params or {})
        if "n_components" in base.get_params(deep=False):
            extra["n_components"] = None  # already reduced
        est = make_clusterer(method, k, random_state, extra)
        labels = np.asarray(est.fit(Z).labels_)
        s = _silhouette(Z, labels, random_state, sample_size)
        scores.append(float("nan") if s is None else s)
        counts = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(1, dtype=np.int64)
        smallest.append(int(counts[counts > 0].min()) if (counts > 0).any() else 0)
    finite = [(s, k) for s, k, m in zip(scores, valid, smallest, strict=True) if not math.isnan(s) and m >= min_size]
    warning = None
    if finite:
        best = max(finite)[1]
    else:
        by_size = [(m, -1.0 if math.isnan(s) else s, k) for s, k, m in zip(scores, valid, smallest, strict=True)]
        best = max(by_size)[2]
        warning = (
            f"no K in {valid[0]}-{valid[-1]} gives clusters of at least {min_size} films on {n} films; "
            f"K={best} has the largest smallest cluster ({max(by_size)[0]})"
        )
    result: dict[str, Any] = {
        "ks": valid, "silhouette": scores, "smallest": smallest, "min_cluster_size": min_size, "best_k": int(best),
        "plot": None, "warning": warning,
    }  # fmt: skip
    if plot is not None:
        from xray_xai.cluster.figures import plot_k_selection

        result["plot"] = str(plot_k_selection(valid, scores, best, Path(plot), method))
    return result


def small_clusters_warning(k: int | None, sizes: dict[str, int], min_size: int) -> str | None:
    """A warning when the clusters found are too small to describe (``--k 4`` on 4 films: four single films)."""
    found = {c: n for c, n in sizes.items() if c != "-1"}
    if not found or min(found.values()) >= min_size:
        return None
    n = sum(sizes.values())
    told = f"k={k} for {n} films" if k is not None else f"{len(found)} clusters of {n} films"
    return (
        f"{told}: the smallest cluster holds {min(found.values())} film(s), under {min_size}; so few films say "
        "little about a group - choose a smaller --k, or --select-k"
    )


# ---------------------------------------------------------------------------------------------------- selection
def open_data(data_root: str | Path, dataset: str | None) -> Any:
    """The data set at ``data_root`` (plugin ``dataset``, or detected from the folder when None)."""
    from xray_xai.data.datasets import open_dataset

    return open_dataset(data_root, dataset) if dataset else open_dataset(data_root)


def _resolve_splits(ds: Any, splits: Sequence[str]) -> list[str]:
    """Map requested split names onto the data set's: MURA's "valid" is our "test" (both accepted)."""
    offered = tuple(getattr(ds, "splits", ("all",)))
    out: list[str] = []
    for s in splits:
        s = s.strip().lower()
        if not s:
            continue
        try:  # the data set's own names and aliases, leniently (DatasetPlugin.resolve_split)
            name = ds.resolve_split(s, lenient=True)
        except DataError:
            raise DataError(
                getattr(ds, "root", None),
                f"no split {s!r} in data set {getattr(ds, 'name', '?')!r} (it has: {', '.join(offered)})",
            ) from None
        if name not in out:
            out.append(name)
    if not out:
        raise XrayXaiError("no split named; give e.g. --splits train,test")
    return out


def select_records(ds: Any, splits: Sequence[str], region: str | None) -> list[Record]:
    """The films a clustering takes: the ``splits`` of ``ds`` pooled (each file once), of ``region`` when given;
    the same selection for the local service and the Ray backend."""
    seen: set[str] = set()
    records: list[Record] = []
    for s in _resolve_splits(ds, splits):
        for r in ds.records(None if s == "all" else s):
            key = os.path.abspath(r.path)
            if key not in seen:
                seen.add(key)
                records.append(r)
    if region:
        wanted = region.strip().lower()
        records = [r for r in records if (r.region or "").lower() == wanted]
        if not records:
            raise DataError(getattr(ds, "root", None), f"no images of region {region!r} in the splits asked for")
    if not records:
        raise DataError(getattr(ds, "root", None), "no images in the splits asked for")
    return records


# -------------------------------------------------------------------------------------------------- the service
def default_out_dir(model_name: str) -> Path:
    """Where a clustering goes when no folder is given: ``<store>/runs/cluster/<model>-<timestamp>``."""
    from xray_xai.models.store import home

    return home() / "runs" / "cluster" / f"{model_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def cluster(
    model: Model | str | Path,
    data_root: str | Path,
    *,
    dataset: str | None = None,
    k: int = 4,
    method: str = "pca-kmeans",
    splits: Sequence[str] = ("train", "test"),
    threshold: float | None = DECISION_THRESHOLD,
    region: str | None = None,
    per_region: bool = False,
    on: str = "features",
    explainer: str = CLUSTER_EXPLAINER,
    out_dir: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 32,
    json: bool = False,
    select_k_range: Sequence[int] | None = None,
    method_params: dict[str, Any] | None = None,
    grid: int = 16,
    montage_size: int = 16,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    min_cluster_size: int | None = None,
) -> dict[str, Any]:
    """Cluster the films ``model`` predicts abnormal and write the report files to ``out_dir``.

    ``model``: a model, a registered name (newest stored checkpoint) or a checkpoint path. ``splits`` are pooled;
    ``threshold`` None keeps every film. ``region`` keeps one region; ``per_region`` clusters each region
    separately (sub-folders). ``on="explanations"`` clusters ``explainer`` maps downsampled to ``grid x grid``
    instead of features. ``select_k_range`` scores K by silhouette over that range and uses the best whose clusters
    all hold at least ``min_cluster_size`` films (overriding ``k``; default 5% of the films, at least 3); a group
    whose clusters are smaller carries a ``warnings`` entry. ``method_params`` go to the clusterer (e.g.
    ``{"n_components": 0.95}``).

    Returns the JSON-ready summary (also written as ``summary.json``); unless ``json`` is true it also carries
    ``"labels"`` (``{group: np.ndarray}``) and ``"feature_set"`` (the :class:`~xray_xai.cluster.features.FeatureSet`).
    """
    _check_options(on, region, per_region, threshold)
    if isinstance(model, (str, Path)):
        from xray_xai.models.store import load_model

        model = load_model(model)
    model_name = getattr(model, "name", type(model).__name__)
    ds = open_data(data_root, dataset)
    records = select_records(ds, splits, region)
    films = _films_to_cluster(
        model, records, threshold, on=on, explainer=explainer, grid=grid, batch_size=batch_size,
        cache_dir=cache_dir, progress=progress,
    )  # fmt: skip
    if len(films.selected) == 0:
        raise DataError(data_root, _nothing_selected(len(records), len(films.read), threshold, on, films.skipped))
    out = Path(out_dir) if out_dir is not None else default_out_dir(model_name)
    out.mkdir(parents=True, exist_ok=True)
    options = {
        "region": region,
        "per_region": per_region,
        "threshold": threshold,
        "on": on,
        "explainer": explainer if on == "explanations" else None,
        "grid": grid if on == "explanations" else None,
        "method": method,
        "method_params": dict(method_params or {}),
        "seed": seed,
    }
    summary = _summary_head(model, out, data_root, ds, dataset, splits, options, len(records), films)
    fit = _GroupFit(
        k=k, method=method, params=method_params, seed=seed, select_ks=select_k_range, montage_size=montage_size,
        min_cluster_size=min_cluster_size,
    )  # fmt: skip
    summary["groups"], labels_by_group = _cluster_groups(films.selected, model, out, per_region, fit)
    _write_summary(out, summary, films, per_region)
    if json:
        return summary
    result = dict(summary)
    result["labels"] = labels_by_group
    result["feature_set"] = films.selected
    return result


#: the entries of :func:`cluster`'s in-memory result that are not part of its JSON summary
IN_MEMORY_KEYS = ("labels", "feature_set")


def _check_options(on: str, region: str | None, per_region: bool, threshold: float | None) -> None:
    if on not in ("features", "explanations"):
        raise XrayXaiError(f"on must be 'features' or 'explanations', got {on!r}")
    if region and per_region:
        raise XrayXaiError("give either a region or per_region, not both")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise XrayXaiError(f"threshold must be in [0, 1], got {threshold}")


@dataclass
class _Films:
    """The films of one clustering: all those read (features, probabilities), those selected for clustering (their
    features, or their explanation maps with ``on="explanations"``), and those skipped."""

    read: Any  #: FeatureSet of every film read
    selected: Any  #: FeatureSet of the films clustered
    skipped: list[Problem]
    warnings: list[Problem]  #: films read despite a stream that ends early (listed in warnings.csv)


def _films_to_cluster(
    model: Model,
    records: Sequence[Record],
    threshold: float | None,
    *,
    on: str,
    explainer: str,
    grid: int,
    batch_size: int,
    cache_dir: str | Path | None,
    progress: bool,
) -> _Films:
    """Embed ``records`` (cached), keep the films with p(abnormal) >= ``threshold`` (all when None) and, with
    ``on="explanations"``, replace their features by ``explainer`` maps on a ``grid x grid`` grid."""
    from xray_xai.cluster.features import extract_explanation_features, extract_features
    from xray_xai.models.calibration import calibrated

    fs = extract_features(model, records, batch_size=batch_size, cache_dir=cache_dir, progress=progress)
    # the probability shown and cut is the calibrated one (the cache keeps the model's own)
    fs.probabilities = calibrated(model, fs.probabilities).astype(np.float32)
    keep = np.ones(len(fs), dtype=bool) if threshold is None else fs.probabilities >= threshold
    selected = fs.subset(keep)
    skipped: list[Problem] = list(fs.skipped)
    if on == "explanations" and len(selected):
        efs = extract_explanation_features(
            model,
            selected.records,
            explainer,
            grid=grid,
            batch_size=max(1, min(batch_size, 16)),
            cache_dir=cache_dir,
            progress=progress,
        )
        skipped += [p for p in efs.skipped if p not in skipped]
        selected = efs
    return _Films(read=fs, selected=selected, skipped=skipped, warnings=list(fs.warnings))


def _summary_head(
    model: Model,
    out: Path,
    data_root: str | Path,
    ds: Any,
    dataset: str | None,
    splits: Sequence[str],
    options: dict[str, Any],
    n_images: int,
    films: _Films,
) -> dict[str, Any]:
    """The summary of a clustering before its groups are fitted: model, data, options and the films used."""
    from xray_xai.cluster.features import model_fingerprint

    fs, selected = films.read, films.selected
    return {
        "out_dir": str(out),
        "model": getattr(model, "name", type(model).__name__),
        "model_fingerprint": model_fingerprint(model),
        "provenance": provenance(model).to_dict(),  # name, training data, AUROC: the report shows it
        "checkpoint": str(getattr(model, "checkpoint_path", "") or "") or None,
        "data": str(data_root),
        "dataset": getattr(ds, "name", dataset),
        "splits": _resolve_splits(ds, splits),
        **options,
        "n_images": n_images,
        "n_read": len(fs),
        "n_selected": len(selected),
        "feature_dim": int(selected.features.shape[1]),
        # the cache of what was clustered: deep features, or the explanation maps with on="explanations" (the deep
        # features, read for the probabilities that select the films, are then deep_feature_cache)
        "feature_cache": str(selected.cache_path) if selected.cache_path else None,
        "features_from_cache": selected.from_cache,
        "deep_feature_cache": str(fs.cache_path) if fs.cache_path else None,
        "missing_values": MISSING_POLICY,
        "skipped": [{"path": p.path, "problem": p.problem} for p in films.skipped],
        "warnings": [{"path": p.path, "problem": p.problem} for p in films.warnings],
        "groups": {},
    }


@dataclass(frozen=True)
class _GroupFit:
    """How each group is clustered: K (or the range it is selected from), the method and its parameters."""

    k: int
    method: str
    params: dict[str, Any] | None
    seed: int
    select_ks: Sequence[int] | None
    montage_size: int
    min_cluster_size: int | None = None  #: None: :func:`default_min_cluster_size` of each group's films


def _cluster_groups(
    selected: Any, model: Model, out: Path, per_region: bool, fit: _GroupFit
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Cluster all selected films as one group (``all``, files in ``out``) or, with ``per_region``, each region in a
    sub-folder of ``out`` (a region that cannot be clustered is reported as skipped)."""
    groups: dict[str, np.ndarray] = {}
    if per_region:
        regions = sorted({r.region or MISSING for r in selected.records})
        for reg in regions:
            groups[reg] = np.array([(r.region or MISSING) == reg for r in selected.records])
    else:
        groups["all"] = np.ones(len(selected), dtype=bool)
    summaries: dict[str, Any] = {}
    labels_by_group: dict[str, np.ndarray] = {}
    for name, mask in groups.items():
        sub = selected.subset(mask)
        gdir = out if name == "all" else out / _safe(name)
        try:
            gsum, labels = _cluster_group(sub, model, gdir, fit)
        except XrayXaiError as exc:
            if not per_region:
                raise
            summaries[name] = {"n": len(sub), "skipped": str(exc)}
            continue
        summaries[name] = gsum
        labels_by_group[name] = labels
    return summaries, labels_by_group


def _write_summary(out: Path, summary: dict[str, Any], films: _Films, per_region: bool) -> None:
    """Lift the single group's results to the top of ``summary`` (without ``per_region``) and write
    ``summary.json``, ``summary.md``, ``skipped.csv`` and ``warnings.csv``."""
    from xray_xai._util.fsutil import atomic_write_json, atomic_write_text, write_skipped_csv
    from xray_xai.cluster.describe import summary_markdown

    if not per_region:
        summary.update({k_: v for k_, v in summary["groups"]["all"].items() if k_ != "files"})
        summary["files"] = summary["groups"]["all"]["files"]
    summary["files_summary"] = {
        "json": str(out / "summary.json"),
        "markdown": str(out / "summary.md"),
        "skipped": str(out / "skipped.csv"),
        "warnings": str(out / "warnings.csv"),
    }
    write_skipped_csv(out / "skipped.csv", films.skipped, warnings=films.warnings)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", summary_markdown(summary))


def _nothing_selected(n_films: int, n_read: int, threshold: float | None, on: str, skipped: Sequence[Problem]) -> str:
    """Why nothing is left to cluster, in words a user can act on."""
    first = f" (first: {skipped[0]})" if skipped else ""
    if n_read == 0:
        return f"none of the {n_films} films could be read{first}"
    if threshold is None:  # every read film was kept, so the explanations must have failed
        return f"none of the {n_read} films read could be explained for clustering on {on}{first}"
    return (
        f"no film has p(abnormal) >= {threshold} among {n_read} read; lower --threshold, add splits or cluster "
        "every film with --all-images"
    )


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"


def _cluster_group(fs: Any, model: Model, out: Path, fit: _GroupFit) -> tuple[dict[str, Any], np.ndarray]:
    """Fit one clustering and write its files; returns its summary and labels."""
    out.mkdir(parents=True, exist_ok=True)
    X = fs.features
    files: dict[str, Any] = {}
    ksel = None
    k = fit.k
    if fit.select_ks:
        ksel = select_k(
            X, fit.select_ks, method=fit.method, params=fit.params, random_state=fit.seed,
            plot=out / "k_selection.png", min_cluster_size=fit.min_cluster_size,
        )  # fmt: skip
        k = int(ksel["best_k"])
        files["k_selection"] = ksel["plot"]
    est = make_clusterer(fit.method, k, fit.seed, fit.params)
    t0 = time.perf_counter()
    est.fit(X)
    fit_seconds = time.perf_counter() - t0
    labels = np.asarray(est.labels_, dtype=np.int64)
    Z = np.asarray(est.reduce(X) if hasattr(est, "reduce") else X, dtype=np.float64)
    ids = sorted(int(c) for c in np.unique(labels) if c >= 0)
    dist = _centroid_distances(Z, labels, ids)
    columns = metadata_columns(fs.records)
    comp = composition(labels, columns)
    sizes = {str(c): int((labels == c).sum()) for c in sorted(int(x) for x in np.unique(labels))}
    descriptions = describe_clusters(comp, sizes, columns)
    agree = agreement(labels, columns)
    sil = _silhouette(Z, labels, fit.seed)
    files |= _write_group_files(out, fs, model, est, X, Z, labels, dist, ids, comp, agree, columns, fit.montage_size)
    mean_p = {str(c): round(float(fs.probabilities[labels == c].mean()), 4) for c in sorted(set(labels.tolist()))}
    k_used = int(k) if "n_clusters" in est.get_params(deep=False) else None
    min_size = default_min_cluster_size(len(labels)) if fit.min_cluster_size is None else fit.min_cluster_size
    warned = [w for w in ((ksel or {}).get("warning"), small_clusters_warning(k_used, sizes, min_size)) if w]
    gsum: dict[str, Any] = {
        "n": len(labels),
        "k": k_used,
        "min_cluster_size": min_size,
        "warnings": warned,
        "n_clusters_found": len(ids),
        "n_noise": int((labels < 0).sum()),
        "params": {key: v for key, v in est.get_params(deep=False).items() if _jsonable(v)},
        "fit_seconds": round(fit_seconds, 4),
        "silhouette": sil,
        "sizes": sizes,
        "mean_probability": mean_p,
        "descriptions": descriptions,
        "agreement": agree,
        "composition": comp,
        "k_selection": ksel,
        "files": files,
    }
    return gsum, labels


def _centroid_distances(Z: np.ndarray, labels: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """Distance of each film to the centroid of its cluster in the reduced space (NaN for noise)."""
    dist = np.full(len(labels), np.nan)
    for c in ids:
        idx = labels == c
        centre = Z[idx].mean(axis=0)
        dist[idx] = np.linalg.norm(Z[idx] - centre, axis=1)
    return dist


def _write_group_files(
    out: Path,
    fs: Any,
    model: Model,
    est: Any,
    X: np.ndarray,
    Z: np.ndarray,
    labels: np.ndarray,
    dist: np.ndarray,
    ids: Sequence[int],
    comp: dict[str, Any],
    agree: dict[str, Any],
    columns: dict[str, list[str | None]],
    montage_size: int,
) -> dict[str, Any]:
    """The tables and pictures of one clustered group, written to ``out``; ``{kind: path}``."""
    from xray_xai.cluster.describe import write_agreement, write_assignments, write_composition
    from xray_xai.cluster.figures import montage, plot_projection

    return {
        "assignments": str(write_assignments(out / "assignments.csv", fs, labels, dist)),
        "composition": str(write_composition(out / "composition.csv", comp)),
        "agreement": str(write_agreement(out / "agreement.csv", agree)),
        "projection": str(
            plot_projection(
                out / "projection.png", est, X, Z, labels, columns.get("region"), title=provenance(model).short
            )
        ),
        "montages": {
            str(c): str(montage(out / f"montage_cluster_{c}.png", fs.records, labels, dist, c, model, montage_size))
            for c in ids
        },
    }


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))
