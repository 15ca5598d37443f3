"""The cluster service: group the films a model calls abnormal by their deep features (or by where it looks).

The published recipe: take the films the model predicts abnormal (``p >= threshold``) from the splits named, reduce
their penultimate-layer features with PCA, cluster with k-means (K=4), and look at what each cluster holds. This
module adds the looking: an assignments table, a montage of the films nearest each centroid, a 2-D projection,
composition tables (region, view, label and every metadata column per cluster), the silhouette, NMI/ARI of the
clusters against every metadata column, and a sentence per cluster saying what dominates it.

Missing metadata: a film without a value in a column is left out of that column's NMI/ARI (the number used is
reported) and counted as ``"(missing)"`` in the composition tables; a column is skipped for NMI/ARI when more than
half of the films lack it or when it has a single value (nothing to agree with), and identifier-like columns (a
distinct value per film) are left out entirely.

Features come from :mod:`xray_xai.cluster.features` (cached), so changing K, the method, the threshold or the
region never recomputes them.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xray_xai.errors import DataError, XrayXaiError
from xray_xai.sdk.interfaces import Model, Problem, Record

__all__ = [
    "MISSING",
    "MISSING_POLICY",
    "PRIMARY_COLUMNS",
    "agreement",
    "cluster",
    "composition",
    "describe_clusters",
    "metadata_columns",
    "select_k",
]

#: how a missing metadata value is shown in composition tables
MISSING = "(missing)"
MISSING_POLICY = (
    "films without a value in a column are left out of that column's NMI/ARI (n_used says how many remain) and are "
    f"counted as {MISSING!r} in the composition tables; columns missing for more than half the films, with a single "
    "value, or with a distinct value per film (identifiers) get no NMI/ARI"
)
#: columns with more distinct values than this are left out of composition tables (they would not fit on a page)
MAX_COMPOSITION_VALUES = 30


# --------------------------------------------------------------------------------------------------- metadata
def _clean(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def metadata_columns(records: Sequence[Record]) -> dict[str, list[str | None]]:
    """Every column a cluster could be compared with: region, view, label, split and scalar metadata keys.

    Values become strings (None where missing); patient, study and path are identifiers and not included.
    """
    cols: dict[str, list[str | None]] = {
        "region": [_clean(r.region) for r in records],
        "view": [_clean(r.view) for r in records],
        "label": [None if r.label is None else ("abnormal" if r.label else "normal") for r in records],
        "split": [_clean(r.split) for r in records],
    }
    keys: list[str] = []
    for r in records:
        for key, value in r.metadata.items():
            if key not in cols and key not in keys and (value is None or isinstance(value, (str, int, float, bool))):
                keys.append(key)
    for key in keys:
        cols[key] = [
            _clean(v) if (v := r.metadata.get(key)) is None or isinstance(v, (str, int, float, bool)) else None
            for r in records
        ]
    return {k: v for k, v in cols.items() if any(x is not None for x in v)}


def agreement(labels: np.ndarray, columns: dict[str, list[str | None]]) -> dict[str, dict[str, Any]]:
    """NMI and ARI of the clusters against each column (see the module docstring for missing values)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = np.asarray(labels)
    n = labels.size
    out: dict[str, dict[str, Any]] = {}
    for name, values in columns.items():
        present = np.array([v is not None for v in values], dtype=bool)
        used = int(present.sum())
        distinct = {v for v in values if v is not None}
        entry: dict[str, Any] = {"n_used": used, "n_missing": n - used, "n_values": len(distinct)}
        if used < 0.5 * n or used == 0:
            entry["skipped"] = "mostly missing"
        elif len(distinct) < 2:
            entry["skipped"] = "single value"
        elif len(distinct) == used and used > 2:
            entry["skipped"] = "a distinct value per film (identifier)"
        else:
            truth = [v for v in values if v is not None]
            pred = labels[present]
            entry["nmi"] = float(normalized_mutual_info_score(truth, pred))
            entry["ari"] = float(adjusted_rand_score(truth, pred))
        out[name] = entry
    return out


def composition(labels: np.ndarray, columns: dict[str, list[str | None]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{cluster: {column: {value: {"count", "share"}}}}``, values by decreasing count, missing as ``(missing)``."""
    labels = np.asarray(labels)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    usable = {k: v for k, v in columns.items() if len({x for x in v if x is not None}) <= MAX_COMPOSITION_VALUES}
    for c in sorted(int(x) for x in np.unique(labels)):
        idx = np.flatnonzero(labels == c)
        table: dict[str, dict[str, Any]] = {}
        for name, values in usable.items():
            counts = Counter(values[i] if values[i] is not None else MISSING for i in idx)
            table[name] = {
                str(v): {"count": int(n), "share": round(n / idx.size, 4)}
                for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
            }
        out[str(c)] = table
    return out


#: columns always described when a value holds the majority of a cluster; others only when over-represented
PRIMARY_COLUMNS = ("region", "view", "label")


def describe_clusters(
    comp: dict[str, dict[str, dict[str, Any]]],
    sizes: dict[str, int],
    columns: dict[str, list[str | None]],
    *,
    min_share: float = 0.5,
    min_lift: float = 0.15,
    max_parts: int = 5,
) -> dict[str, str]:
    """One sentence per cluster naming what dominates it, e.g. ``"cluster 2 (n=31): 81% wrist, 64% lateral"``.

    Region, view and label are named when one value holds at least ``min_share`` of the cluster; any other column
    only when its majority value is also over-represented (share at least ``min_lift`` above its share in all the
    films clustered, shown in brackets), so that "98% hardware=0" in a set without hardware is not news.
    """
    n_all = max(len(next(iter(columns.values()))) if columns else 0, 1)
    overall = {name: Counter(v for v in values if v is not None) for name, values in columns.items()}
    varying = {k for k, v in overall.items() if len(v) >= 2}
    out: dict[str, str] = {}
    for c, table in comp.items():
        parts: list[tuple[int, float, str]] = []
        for name, values in table.items():
            if name not in varying or not values:
                continue
            value, stats = next(iter(values.items()))
            share = float(stats["share"])
            if value == MISSING or share < min_share:
                continue
            base = overall[name][value] / n_all
            if name in PRIMARY_COLUMNS:
                parts.append((0, -share, f"{round(100 * share)}% {value}"))
            elif share - base >= min_lift:
                parts.append((1, base - share, f"{round(100 * share)}% {name}={value} ({round(100 * base)}% overall)"))
        parts.sort()
        what = "noise (no cluster)" if c == "-1" else f"cluster {c}"
        body = ", ".join(p for _, _, p in parts[:max_parts]) or "no column has a distinctive majority value"
        out[c] = f"{what} (n={sizes.get(c, 0)}): {body}"
    return out


# ------------------------------------------------------------------------------------------------------- K choice
def _make_clusterer(method: str, k: int | None, seed: int, params: dict[str, Any] | None) -> Any:
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


def select_k(
    X: np.ndarray,
    ks: Iterable[int] = range(2, 11),
    *,
    method: str = "pca-kmeans",
    params: dict[str, Any] | None = None,
    random_state: int = 0,
    plot: str | Path | None = None,
    sample_size: int = 10_000,
) -> dict[str, Any]:
    """Silhouette of ``method`` for each K in ``ks`` (PCA fitted once); the best K; a line plot if ``plot``.

    Returns ``{"ks": [...], "silhouette": [...], "best_k": k, "plot": path or None}``. Ks that the number of rows
    cannot support (K >= n) are left out.
    """
    ks = sorted({int(k) for k in ks})
    X = np.asarray(X)
    n = X.shape[0]
    valid = [k for k in ks if 2 <= k <= n - 1]
    if not valid:
        raise XrayXaiError(f"no K in {ks} can be scored on {n} images (silhouette needs 2 <= K <= n - 1)")
    base = _make_clusterer(method, valid[0], random_state, params)
    if "n_clusters" not in base.get_params(deep=False):
        raise XrayXaiError(f"method {method!r} finds its own number of clusters; K selection needs one with n_clusters")
    base.fit(X)
    Z = base.reduce(X) if hasattr(base, "reduce") else X
    scores: list[float] = []
    for k in valid:
        extra = dict(params or {})
        if "n_components" in base.get_params(deep=False):
            extra["n_components"] = None  # already reduced
        est = _make_clusterer(method, k, random_state, extra)
        labels = np.asarray(est.fit(Z).labels_)
        s = _silhouette(Z, labels, random_state, sample_size)
        scores.append(float("nan") if s is None else s)
    finite = [(s, k) for s, k in zip(scores, valid, strict=True) if not math.isnan(s)]
    best = max(finite)[1] if finite else valid[0]
    result: dict[str, Any] = {"ks": valid, "silhouette": scores, "best_k": int(best), "plot": None}
    if plot is not None:
        result["plot"] = str(_plot_k(valid, scores, best, Path(plot), method))
    return result


def _plot_k(ks: list[int], scores: list[float], best: int, path: Path, method: str) -> Path:
    from xray_xai._util.fsutil import atomic_path

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    ax.plot(ks, scores, marker="o")
    ax.axvline(best, color="tab:red", linestyle="--", linewidth=1, label=f"best K = {best}")
    ax.set_xlabel("K (number of clusters)")
    ax.set_ylabel("silhouette")
    ax.set_title(f"K selection ({method})")
    ax.legend(loc="best")
    fig.tight_layout()
    with atomic_path(path, suffix=".png.tmp") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------------------------- selection
def _open(data_root: str | Path, dataset: str | None) -> Any:
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
        try:  # the data set's own names and aliases (DatasetPlugin.resolve_split)
            name = ds.resolve_split(s)
        except DataError:  # fallbacks for layouts that declare no alias
            if s in ("valid", "validation") and "test" in offered:
                name = "test"
            elif s == "test" and "valid" in offered:
                name = "valid"
            elif offered == ("all",):
                name = "all"  # a plain folder has one split: use it whatever was asked
            else:
                raise DataError(
                    getattr(ds, "root", None),
                    f"no split {s!r} in data set {getattr(ds, 'name', '?')!r} (it has: {', '.join(offered)})",
                ) from None
        if name not in out:
            out.append(name)
    if not out:
        raise XrayXaiError("no split named; give e.g. --splits train,test")
    return out


def _select_records(ds: Any, splits: Sequence[str], region: str | None) -> list[Record]:
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
def _default_out(model_name: str) -> Path:
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
    threshold: float | None = 0.5,
    region: str | None = None,
    per_region: bool = False,
    on: str = "features",
    explainer: str = "gradcam",
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
) -> dict[str, Any]:
    """Cluster the films ``model`` predicts abnormal and write the report files to ``out_dir``.

    ``model``: a model, a registered name (newest stored checkpoint) or a checkpoint path. ``splits`` are pooled;
    ``threshold`` None keeps every film. ``region`` keeps one region; ``per_region`` clusters each region
    separately (sub-folders). ``on="explanations"`` clusters ``explainer`` maps downsampled to ``grid x grid``
    instead of features. ``select_k_range`` scores K by silhouette over that range and uses the best (overriding
    ``k``). ``method_params`` go to the clusterer (e.g. ``{"n_components": 0.95}``).

    Returns the JSON-ready summary (also written as ``summary.json``); unless ``json`` is true it also carries
    ``"labels"`` (``{group: np.ndarray}``) and ``"feature_set"`` (the :class:`~xray_xai.cluster.features.FeatureSet`).
    """
    from xray_xai._util.fsutil import atomic_write_json, atomic_write_text, write_skipped_csv
    from xray_xai.cluster.features import extract_explanation_features, extract_features, model_fingerprint

    if on not in ("features", "explanations"):
        raise XrayXaiError(f"on must be 'features' or 'explanations', got {on!r}")
    if region and per_region:
        raise XrayXaiError("give either a region or per_region, not both")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise XrayXaiError(f"threshold must be in [0, 1], got {threshold}")
    if isinstance(model, (str, Path)):
        from xray_xai.models.store import load_model

        model = load_model(model)
    model_name = getattr(model, "name", type(model).__name__)
    ds = _open(data_root, dataset)
    records = _select_records(ds, splits, region)

    fs = extract_features(model, records, batch_size=batch_size, cache_dir=cache_dir, progress=progress)
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
    if len(selected) == 0:
        raise DataError(data_root, _nothing_selected(len(records), len(fs), threshold, on, skipped))

    out = Path(out_dir) if out_dir is not None else _default_out(model_name)
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, np.ndarray] = {}
    if per_region:
        regions = sorted({r.region or MISSING for r in selected.records})
        for reg in regions:
            groups[reg] = np.array([(r.region or MISSING) == reg for r in selected.records])
    else:
        groups["all"] = np.ones(len(selected), dtype=bool)

    summary: dict[str, Any] = {
        "out_dir": str(out),
        "model": model_name,
        "model_fingerprint": model_fingerprint(model),
        "checkpoint": str(getattr(model, "checkpoint_path", "") or "") or None,
        "data": str(data_root),
        "dataset": getattr(ds, "name", dataset),
        "splits": _resolve_splits(ds, splits),
        "region": region,
        "per_region": per_region,
        "threshold": threshold,
        "on": on,
        "explainer": explainer if on == "explanations" else None,
        "grid": grid if on == "explanations" else None,
        "method": method,
        "method_params": dict(method_params or {}),
        "seed": seed,
        "n_images": len(records),
        "n_read": len(fs),
        "n_selected": len(selected),
        "feature_dim": int(selected.features.shape[1]),
        "feature_cache": str(fs.cache_path) if fs.cache_path else None,
        "features_from_cache": fs.from_cache,
        "missing_values": MISSING_POLICY,
        "skipped": [{"path": p.path, "problem": p.problem} for p in skipped],
        "groups": {},
    }
    labels_by_group: dict[str, np.ndarray] = {}
    for name, mask in groups.items():
        sub = selected.subset(mask)
        gdir = out if name == "all" else out / _safe(name)
        try:
            gsum, labels = _cluster_group(
                sub, model, gdir, k=k, method=method, params=method_params, seed=seed,
                select_ks=select_k_range, montage_size=montage_size,
            )  # fmt: skip
        except XrayXaiError as exc:
            if not per_region:
                raise
            summary["groups"][name] = {"n": len(sub), "skipped": str(exc)}
            continue
        summary["groups"][name] = gsum
        labels_by_group[name] = labels
    if not per_region:
        summary.update({k_: v for k_, v in summary["groups"]["all"].items() if k_ != "files"})
        summary["files"] = summary["groups"]["all"]["files"]
    summary["files_summary"] = {
        "json": str(out / "summary.json"),
        "markdown": str(out / "summary.md"),
        "skipped": str(out / "skipped.csv"),
    }
    write_skipped_csv(out / "skipped.csv", skipped)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", _markdown(summary))
    if json:
        return summary
    result = dict(summary)
    result["labels"] = labels_by_group
    result["feature_set"] = selected
    return result


def _nothing_selected(n_films: int, n_read: int, threshold: float | None, on: str, skipped: Sequence[Problem]) -> str:
    """Why nothing is left to cluster, in words a user can act on."""
    first = f" (first: {skipped[0]})" if skipped else ""
    if n_read == 0:
        return f"none of the {n_films} films could be read{first}"
    if threshold is None:  # every read film was kept, so the explanations must have failed
        return f"none of the {n_read} films read could be explained for clustering on {on}{first}"
    return f"no film has p(abnormal) >= {threshold} among {n_read} read; lower --threshold or add splits"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "_"


def _cluster_group(
    fs: Any,
    model: Model,
    out: Path,
    *,
    k: int,
    method: str,
    params: dict[str, Any] | None,
    seed: int,
    select_ks: Sequence[int] | None,
    montage_size: int,
) -> tuple[dict[str, Any], np.ndarray]:
    """Fit one clustering and write its files; returns its summary and labels."""
    out.mkdir(parents=True, exist_ok=True)
    X = fs.features
    files: dict[str, Any] = {}
    ksel = None
    if select_ks:
        ksel = select_k(X, select_ks, method=method, params=params, random_state=seed, plot=out / "k_selection.png")
        k = int(ksel["best_k"])
        files["k_selection"] = ksel["plot"]
    est = _make_clusterer(method, k, seed, params)
    t0 = time.perf_counter()
    est.fit(X)
    fit_seconds = time.perf_counter() - t0
    labels = np.asarray(est.labels_, dtype=np.int64)
    Z = np.asarray(est.reduce(X) if hasattr(est, "reduce") else X, dtype=np.float64)
    ids = sorted(int(c) for c in np.unique(labels) if c >= 0)
    centroids = {c: Z[labels == c].mean(axis=0) for c in ids}
    dist = np.full(len(labels), np.nan)
    for c, centre in centroids.items():
        idx = labels == c
        dist[idx] = np.linalg.norm(Z[idx] - centre, axis=1)

    columns = metadata_columns(fs.records)
    comp = composition(labels, columns)
    sizes = {str(c): int((labels == c).sum()) for c in sorted(int(x) for x in np.unique(labels))}
    descriptions = describe_clusters(comp, sizes, columns)
    agree = agreement(labels, columns)
    sil = _silhouette(Z, labels, seed)

    files["assignments"] = str(_write_assignments(out / "assignments.csv", fs, labels, dist))
    files["composition"] = str(_write_composition(out / "composition.csv", comp))
    files["agreement"] = str(_write_agreement(out / "agreement.csv", agree))
    files["projection"] = str(_plot_projection(out / "projection.png", est, X, Z, labels, columns.get("region")))
    files["montages"] = {
        str(c): str(_montage(out / f"montage_cluster_{c}.png", fs.records, labels, dist, c, model, montage_size))
        for c in ids
    }
    mean_p = {str(c): round(float(fs.probabilities[labels == c].mean()), 4) for c in sorted(set(labels.tolist()))}
    gsum: dict[str, Any] = {
        "n": len(labels),
        "k": int(k) if "n_clusters" in est.get_params(deep=False) else None,
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


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


# ------------------------------------------------------------------------------------------------------- writers
def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _write_assignments(path: Path, fs: Any, labels: np.ndarray, dist: np.ndarray) -> Path:
    from xray_xai._util.fsutil import atomic_write_text

    rows = []
    for rec, c, d, p in zip(fs.records, labels, dist, fs.probabilities, strict=True):
        rows.append(
            [
                rec.image_id,
                str(rec.path),
                rec.study or "",
                rec.region or "",
                rec.view or "",
                rec.split,
                "" if rec.label is None else int(rec.label),
                int(c),
                "" if math.isnan(d) else f"{d:.6g}",
                f"{float(p):.6f}",
            ]
        )
    header = ["image", "path", "study", "region", "view", "split", "label", "cluster", "distance", "probability"]
    return atomic_write_text(path, _csv_text(header, rows))


def _write_composition(path: Path, comp: dict[str, dict[str, dict[str, Any]]]) -> Path:
    from xray_xai._util.fsutil import atomic_write_text

    rows = [
        [c, col, value, stats["count"], stats["share"]]
        for c, table in comp.items()
        for col, values in table.items()
        for value, stats in values.items()
    ]
    return atomic_write_text(path, _csv_text(["cluster", "column", "value", "count", "share"], rows))


def _write_agreement(path: Path, agree: dict[str, dict[str, Any]]) -> Path:
    from xray_xai._util.fsutil import atomic_write_text

    rows = [
        [col, e.get("nmi", ""), e.get("ari", ""), e["n_used"], e["n_missing"], e["n_values"], e.get("skipped", "")]
        for col, e in agree.items()
    ]
    header = ["column", "nmi", "ari", "n_used", "n_missing", "n_values", "skipped"]
    return atomic_write_text(path, _csv_text(header, rows))


def _plot_projection(
    path: Path, est: Any, X: np.ndarray, Z: np.ndarray, labels: np.ndarray, regions: list[str | None] | None
) -> Path:
    """Two panels on the first two principal components: coloured by cluster, and by region."""
    from xray_xai._util.fsutil import atomic_path

    if Z.shape[1] >= 2 and getattr(est, "components_", None) is not None:
        P = est.transform_2d(X)
    else:
        P = Z[:, :2] if Z.shape[1] >= 2 else np.column_stack([Z[:, 0], np.zeros(len(Z))])
    n = len(P)
    rng = np.random.default_rng(0)
    idx = rng.choice(n, 20_000, replace=False) if n > 20_000 else np.arange(n)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), dpi=110)
    for c in sorted(set(labels[idx].tolist())):
        m = idx[labels[idx] == c]
        axes[0].scatter(P[m, 0], P[m, 1], s=8, alpha=0.7, label="noise" if c < 0 else f"cluster {c}")
    axes[0].set_title("by cluster")
    region_values = [r or MISSING for r in regions] if regions else [MISSING] * n
    for reg in sorted(set(region_values[i] for i in idx)):
        m = np.array([i for i in idx if region_values[i] == reg], dtype=np.int64)
        axes[1].scatter(P[m, 0], P[m, 1], s=8, alpha=0.7, label=reg)
    axes[1].set_title("by region")
    for ax in axes:
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(loc="best", fontsize=7, markerscale=1.5)
    fig.tight_layout()
    with atomic_path(path, suffix=".png.tmp") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _montage(
    path: Path,
    records: Sequence[Record],
    labels: np.ndarray,
    dist: np.ndarray,
    c: int,
    model: Model,
    size: int,
    tile: int = 128,
) -> Path:
    """The films nearest the centroid of cluster ``c``, as the model sees them (preprocessed geometry), in a grid."""
    from PIL import Image

    from xray_xai.data.images import read_image, write_png
    from xray_xai.data.preprocessing import geometry

    idx = np.flatnonzero(labels == c)
    idx = idx[np.argsort(dist[idx], kind="stable")][: max(1, size)]
    tiles: list[np.ndarray] = []
    for i in idx:
        try:
            film = geometry(read_image(records[int(i)].path), model.preprocessing)
        except (XrayXaiError, OSError, ValueError):
            film = np.zeros((tile, tile), dtype=np.float32)
        img = Image.fromarray(np.clip(film * 255.0, 0, 255).astype(np.uint8)).resize(
            (tile, tile), Image.Resampling.BILINEAR
        )
        tiles.append(np.asarray(img, dtype=np.float32) / 255.0)
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    gap = 2
    canvas = np.ones((rows * (tile + gap) - gap, cols * (tile + gap) - gap), dtype=np.float32)
    for j, t in enumerate(tiles):
        r, q = divmod(j, cols)
        canvas[r * (tile + gap) : r * (tile + gap) + tile, q * (tile + gap) : q * (tile + gap) + tile] = t
    return write_png(path, canvas)


def _markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Clusters of {summary['n_selected']} films "
        + ("(all films read)" if summary["threshold"] is None else f"predicted abnormal (p >= {summary['threshold']})"),
        "",
        f"Model `{summary['model']}` (fingerprint `{summary['model_fingerprint']}`), data `{summary['data']}`, "
        f"splits {', '.join(summary['splits'])}, threshold {summary['threshold']}, clustering `{summary['method']}` "
        f"on {summary['on']}" + (f" ({summary['explainer']} maps)" if summary["on"] == "explanations" else "") + ".",
        "",
    ]
    for name, g in summary["groups"].items():
        if name != "all":
            lines += [f"## Region {name}", ""]
        if "skipped" in g and "descriptions" not in g:
            lines += [f"Not clustered: {g['skipped']}", ""]
            continue
        sil = g["silhouette"]
        lines.append(f"Silhouette: {sil:.3f}." if sil is not None else "Silhouette: not defined (one cluster).")
        lines.append("")
        for text in g["descriptions"].values():
            lines.append(f"- {text}")
        scored = [(c, e) for c, e in g["agreement"].items() if "nmi" in e]
        if scored:
            lines += ["", "| column | NMI | ARI | films used |", "|---|---|---|---|"]
            lines += [f"| {c} | {e['nmi']:.3f} | {e['ari']:.3f} | {e['n_used']} |" for c, e in scored]
        lines.append("")
    if summary["skipped"]:
        lines += [f"{len(summary['skipped'])} unreadable films were skipped (listed in skipped.csv).", ""]
    lines += [f"Missing values: {summary['missing_values']}.", ""]
    return "\n".join(lines)
