"""Describing clusters: what each cluster holds, and how far the clusters agree with the films' metadata.

* :func:`metadata_columns` - every column a cluster can be compared with (region, view, label, split, scalar
  metadata);
* :func:`composition` - per cluster, the share of each value of each column;
* :func:`agreement` - NMI and ARI of the clusters against each column;
* :func:`describe_clusters` - one sentence per cluster naming what dominates it;
* the files a clustering writes from these: ``assignments.csv``, ``composition.csv``, ``agreement.csv`` and
  ``summary.md``.

Continuous metadata (a numeric column with more than :data:`CONTINUOUS_MIN_VALUES` distinct values, e.g. a
contrast or an image width) is binned into :data:`QUANTILE_BINS` quantile bins over the films described, named like
``Q4 [1.71, 2.30]`` (the bin and its range), before composition, descriptions and NMI/ARI: each value would
otherwise be a category of its own ("100% contrast=1.7909" of a cluster of one film).

Missing metadata: a film without a value in a column is left out of that column's NMI/ARI (the number used is
reported) and counted as ``"(missing)"`` in the composition tables; a column is skipped for NMI/ARI when more than
half of the films lack it or when it has a single value (nothing to agree with), and identifier-like columns (a
distinct value per film) are left out entirely.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xray_xai.sdk.interfaces import Record

__all__ = [
    "CONTINUOUS_MIN_VALUES",
    "MAX_COMPOSITION_VALUES",
    "MISSING",
    "MISSING_POLICY",
    "PRIMARY_COLUMNS",
    "QUANTILE_BINS",
    "agreement",
    "bin_continuous",
    "composition",
    "describe_clusters",
    "metadata_columns",
    "summary_markdown",
    "write_agreement",
    "write_assignments",
    "write_composition",
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
#: a numeric column with more distinct values than this is continuous: binned into quantiles, not a category per value
CONTINUOUS_MIN_VALUES = 10
#: how many quantile bins a continuous column gets (quartiles; fewer when values tie at the edges)
QUANTILE_BINS = 4


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
        cols[key] = bin_continuous(
            [_clean(v) if (v := r.metadata.get(key)) is None or isinstance(v, (str, int, float, bool)) else None
             for r in records]
        )  # fmt: skip
    return {k: v for k, v in cols.items() if any(x is not None for x in v)}


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _edge(x: float) -> str:
    return f"{x:.4g}"


def bin_continuous(values: list[str | None], bins: int = QUANTILE_BINS) -> list[str | None]:
    """``values`` unchanged unless they are continuous (all numbers, more than :data:`CONTINUOUS_MIN_VALUES`
    distinct): then each becomes its quantile bin, ``"Q<i> [low, high]"`` (``"true"``/``"false"`` are not numbers).

    Edges are the quantiles of the values present; tied edges merge bins, so a column with a few very common values
    may get fewer than ``bins`` bins. Missing values stay missing.
    """
    present = [v for v in values if v is not None]
    numbers = [_number(v) for v in present]
    if not present or any(x is None for x in numbers) or len(set(numbers)) <= CONTINUOUS_MIN_VALUES:
        return values
    arr = np.array(numbers, dtype=np.float64)
    edges = np.unique(np.quantile(arr, np.linspace(0.0, 1.0, bins + 1)))
    inner = edges[1:-1]
    index = np.searchsorted(inner, arr, side="right")  # bin i holds [edges[i], edges[i + 1]), the last one closed
    names = [f"Q{i + 1} [{_edge(edges[i])}, {_edge(edges[i + 1])}]" for i in range(len(edges) - 1)]
    it = iter(index.tolist())
    return [None if v is None else names[next(it)] for v in values]


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


# ------------------------------------------------------------------------------------------------------- files
def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def write_assignments(path: Path, fs: Any, labels: np.ndarray, dist: np.ndarray) -> Path:
    """``assignments.csv``: one row per film clustered (its cluster, distance to the centroid, probability)."""
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


def write_composition(path: Path, comp: dict[str, dict[str, dict[str, Any]]]) -> Path:
    """``composition.csv``: the :func:`composition` tables, one row per (cluster, column, value)."""
    from xray_xai._util.fsutil import atomic_write_text

    rows = [
        [c, col, value, stats["count"], stats["share"]]
        for c, table in comp.items()
        for col, values in table.items()
        for value, stats in values.items()
    ]
    return atomic_write_text(path, _csv_text(["cluster", "column", "value", "count", "share"], rows))


def write_agreement(path: Path, agree: dict[str, dict[str, Any]]) -> Path:
    """``agreement.csv``: the :func:`agreement` of the clusters with each metadata column (NMI, ARI)."""
    from xray_xai._util.fsutil import atomic_write_text

    rows = [
        [col, e.get("nmi", ""), e.get("ari", ""), e["n_used"], e["n_missing"], e["n_values"], e.get("skipped", "")]
        for col, e in agree.items()
    ]
    header = ["column", "nmi", "ari", "n_used", "n_missing", "n_values", "skipped"]
    return atomic_write_text(path, _csv_text(header, rows))


def summary_markdown(summary: dict[str, Any]) -> str:
    """``summary.md``: the descriptions and the NMI/ARI table of each clustered group, in Markdown."""
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
