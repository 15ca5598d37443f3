"""Subgroups from the films' metadata, and the performance of each against the rest of the films.

Columns (:func:`subgroup_columns`): ``region`` and ``view`` of every record, every scalar metadata key a data set
reader sets (FracAtlas: ``hand``/``leg``/``hip``/``shoulder``/``mixed``, ``frontal``/``lateral``/``oblique``,
``hardware``, ``multiscan``, ``fracture_count``; MURA: ``study_type``; synthetic: ``abnormality``, ``marker``,
``collimation_style``, ``rotation``...) and, when films belong to studies, ``n_views`` (films in the film's study).
Left out: the label and its copies (``csv_fractured``), the split, identifiers (a distinct value per film) and
columns with a single value. A numeric column with more than ``max_levels`` distinct values is cut into ``bins``
quantile bins (``[a, b]`` levels); any other column has one level per value. A film without a value in a column is
left out of that column (its "rest" is the other films that have a value).

Per level (:func:`subgroup_table`): n, positives, AUROC, sensitivity and specificity at the threshold, each with a
seeded percentile bootstrap 95% interval (:func:`xray_xai.models.metrics.bootstrap_metrics`), the same metrics on
the rest, and a test of the subgroup against the rest: DeLong for AUROC, Fisher's exact test for sensitivity and
specificity (:mod:`.stats`). The p-values of one family of tests are adjusted together (Holm by default); a
subgroup is *flagged* on a metric when its adjusted p-value is below ``alpha`` and it is below the rest. A column
with two levels is one comparison, not two: its test is counted once in the correction.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xray_xai.audit.strata.stats import adjust, auroc_difference_test, fisher_test
from xray_xai.defaults import DECISION_THRESHOLD
from xray_xai.sdk.interfaces import Record

__all__ = ["EXCLUDED_COLUMNS", "METRICS", "StrataOptions", "flag_rows", "subgroup_columns", "subgroup_table"]

#: the metrics compared per subgroup: name in the output -> key in :func:`~xray_xai.models.metrics.binary_metrics`
METRICS: dict[str, str] = {"auroc": "auroc", "sensitivity": "recall", "specificity": "specificity"}
#: metadata keys that are the label, the split or an identifier, never a subgroup
EXCLUDED_COLUMNS: frozenset[str] = frozenset(
    {"label", "split", "csv_fractured", "fractured", "official_split", "mura_split", "patient", "study", "path"}
)


@dataclass(frozen=True)
class StrataOptions:
    """How subgroups are compared: decision ``threshold``, bootstrap resamples and ``seed``, the ``correction``
    (holm, bh, none), the significance level ``alpha``, the smallest subgroup tested (``min_size``), and how numeric
    columns are cut (more than ``max_levels`` values -> ``bins`` quantile bins)."""

    threshold: float = DECISION_THRESHOLD
    n_boot: int = 1000
    seed: int = 0
    correction: str = "holm"
    alpha: float = 0.05
    min_size: int = 10
    max_levels: int = 8
    bins: int = 4


# ------------------------------------------------------------------------------------------------------- columns
def _scalar(value: Any) -> Any:
    """The value when it can name a subgroup (text, number, flag), else None (lists, dicts, NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value if isinstance(value, (bool, int, float, str)) else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip() or None


def _raw_columns(records: Sequence[Record]) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {"region": [r.region for r in records], "view": [r.view for r in records]}
    for r in records:
        for key in r.metadata:
            if key not in cols and key not in EXCLUDED_COLUMNS:
                cols[key] = [_scalar(rec.metadata.get(key)) for rec in records]
    if any(r.study for r in records):
        views = Counter(r.study for r in records if r.study)
        cols["n_views"] = [views[r.study] if r.study else 1 for r in records]
    return cols


def _quantile_levels(values: list[Any], bins: int) -> list[str | None]:
    present = np.array([float(v) for v in values if v is not None])
    edges = np.unique(np.quantile(present, np.linspace(0.0, 1.0, bins + 1)))
    names = [f"[{_fmt(edges[i])}, {_fmt(edges[i + 1])}]" for i in range(len(edges) - 1)]
    out: list[str | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        i = int(np.searchsorted(edges, float(v), side="right")) - 1
        out.append(names[min(max(i, 0), len(names) - 1)])
    return out


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def subgroup_columns(
    records: Sequence[Record],
    *,
    columns: Sequence[str] | None = None,
    max_levels: int = 8,
    bins: int = 4,
) -> dict[str, list[str | None]]:
    """``{column: level per record}`` (None where a record has no value); see the module docstring for which
    columns and how numeric ones are binned. ``columns`` keeps only those named (an unknown name is an error)."""
    raw = _raw_columns(records)
    if columns is not None:
        unknown = [c for c in columns if c not in raw]
        if unknown:
            raise KeyError(f"no column {', '.join(map(repr, unknown))}; the films have: {', '.join(sorted(raw))}")
        raw = {c: raw[c] for c in columns}
    out: dict[str, list[str | None]] = {}
    for name, values in raw.items():
        present = [v for v in values if v is not None]
        distinct = set(present)
        if len(distinct) < 2 or (len(distinct) == len(values) and len(values) > 2 and not _numeric(present)):
            continue  # nothing to compare, or an identifier
        if _numeric(present) and len(distinct) > max_levels:
            out[name] = _quantile_levels(values, bins)
        else:
            out[name] = [_text(v) for v in values]
    return out


def _numeric(values: list[Any]) -> bool:
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


# ------------------------------------------------------------------------------------------------------- metrics
def _group_metrics(y: np.ndarray, p: np.ndarray, opts: StrataOptions, with_ci: bool) -> dict[str, Any]:
    from xray_xai.models.metrics import binary_metrics, bootstrap_metrics

    m = binary_metrics(y, p, opts.threshold)
    ci = bootstrap_metrics(y, p, opts.threshold, n=opts.n_boot, seed=opts.seed) if with_ci and opts.n_boot else {}
    out: dict[str, Any] = {
        "n": m["n"],
        "n_positive": m["n_positive"],
        "n_negative": m["n_negative"],
        "tp": m["tp"],
        "fn": m["fn"],
        "tn": m["tn"],
        "fp": m["fp"],
    }
    for name, key in METRICS.items():
        out[name] = m[key]
        if with_ci:
            out[f"{name}_ci95"] = ci.get(key) if ci else None
    return out


def _tests(sub: dict[str, Any], rest: dict[str, Any], ys: np.ndarray, ps: np.ndarray, yr: np.ndarray,
           pr: np.ndarray) -> dict[str, dict[str, Any] | None]:  # fmt: skip
    return {
        "auroc": auroc_difference_test(ys, ps, yr, pr),
        "sensitivity": fisher_test(sub["tp"], sub["n_positive"], rest["tp"], rest["n_positive"]),
        "specificity": fisher_test(sub["tn"], sub["n_negative"], rest["tn"], rest["n_negative"]),
    }


def subgroup_table(
    y: Any,
    p: Any,
    columns: Mapping[str, Sequence[str | None]],
    opts: StrataOptions | None = None,
) -> dict[str, Any]:
    """Every level of every column against the rest, tested and flagged (module docstring):
    ``{"overall", "rows", "n_tests", "correction", "alpha"}``; each row has ``column``, ``level``, the metrics with
    ``*_ci95``, ``rest`` (the rest's metrics), ``tests`` (``{metric: {"difference", "p", "p_adjusted",
    "flagged"}}``) and ``flagged`` (the metrics on which it falls significantly below the rest)."""
    opts = opts or StrataOptions()
    ya = np.asarray(y, dtype=np.int64).ravel()
    pa = np.asarray(p, dtype=np.float64).ravel()
    rows: list[dict[str, Any]] = []
    for column, levels in columns.items():
        names = np.array([lv if lv is not None else "" for lv in levels], dtype=object)
        has = names != ""
        counts = Counter(names[has].tolist())
        two_levels = len(counts) == 2
        for level in sorted(counts, key=_level_key):
            sub_mask = names == level
            rest_mask = has & ~sub_mask
            row: dict[str, Any] = {"column": column, "level": level}
            row.update(_group_metrics(ya[sub_mask], pa[sub_mask], opts, with_ci=True))
            rest = _group_metrics(ya[rest_mask], pa[rest_mask], opts, with_ci=False)
            row["rest"] = rest
            tested = counts[level] >= opts.min_size and rest["n"] >= opts.min_size
            tests = _tests(row, rest, ya[sub_mask], pa[sub_mask], ya[rest_mask], pa[rest_mask]) if tested else {}
            row["tests"] = {k: v for k, v in tests.items() if v is not None}
            if two_levels:  # one comparison shared by both levels: counted once in the correction
                row["_keys"] = {k: f"{column}\0{k}" for k in row["tests"]}
            else:
                row["_keys"] = {k: f"{column}\0{level}\0{k}" for k in row["tests"]}
            if not tested:
                row["note"] = f"not tested: fewer than {opts.min_size} films in the subgroup or the rest"
            rows.append(row)
    n_tests = flag_rows(rows, opts.correction, opts.alpha)
    overall = _group_metrics(ya, pa, opts, with_ci=True)
    return {
        "overall": overall,
        "rows": rows,
        "n_tests": n_tests,
        "correction": opts.correction,
        "alpha": opts.alpha,
        "threshold": opts.threshold,
        "n_boot": opts.n_boot,
        "seed": opts.seed,
        "min_size": opts.min_size,
    }


def _level_key(level: str) -> tuple[Any, ...]:
    """Numeric levels and bins in numeric order, text after them alphabetically."""
    head = level[1:].split(",")[0] if level.startswith("[") else level
    try:
        return (0, float(head), level)
    except ValueError:
        return (1, 0.0, level)


def flag_rows(rows: list[dict[str, Any]], correction: str, alpha: float) -> int:
    """Adjust the p-values of ``rows`` (one family; tests sharing a key counted once), set ``p_adjusted`` and
    ``flagged`` on each test and the row's ``flagged`` list (metrics significantly *below* the rest); returns the
    number of tests in the family."""
    unique: dict[str, float] = {}
    for row in rows:
        for metric, key in row.get("_keys", {}).items():
            unique.setdefault(key, float(row["tests"][metric]["p"]))
    keys = list(unique)
    adjusted = dict(zip(keys, adjust([unique[k] for k in keys], correction), strict=True))
    for row in rows:
        flagged: list[str] = []
        for metric, key in row.pop("_keys", {}).items():
            test = row["tests"][metric]
            test["p_adjusted"] = adjusted[key]
            below = row.get(metric) is not None and test["difference"] < 0
            test["flagged"] = bool(below and adjusted[key] < alpha)
            if test["flagged"]:
                flagged.append(metric)
        row["flagged"] = flagged
    return len(keys)
