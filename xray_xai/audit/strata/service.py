"""``xray-xai strata``: which subgroups a model fails, which clusters, and what it leans on.

The predictions are made once: by the feature cache of :mod:`xray_xai.cluster.features` (one forward pass per set
of weights and films, reused by the clustering and by later runs), or read from a CSV of ``xray-xai predict``
(``predictions=``; rows matched to the data set's films by path) so an auditor can bring their own. Labels and
metadata always come from the data set. Then:

1. :func:`.subgroups.subgroup_table` on every metadata column (one family of tests);
2. :func:`.clusters.cluster_strata` when ``clusters`` is a K (its own family), needs the model;
3. :func:`.shortcuts.shortcut_check` for each binary shortcut column (``hardware``, a planted ``shortcut_marker``,
   or those named), with the concept test when the model is there and ``tcav`` is on.

Files in ``out_dir``: ``strata.json`` (everything returned), ``predictions.csv`` (the probabilities used),
``forest.png`` (subgroup AUROCs with intervals, flagged rows in colour), ``report.html`` (self-contained) with
``report.json``, and with clusters a ``clusters/`` folder as ``xray-xai cluster`` writes it.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xray_xai.audit.strata.subgroups import StrataOptions, subgroup_columns, subgroup_table
from xray_xai.audit.strata.tcav import TcavOptions
from xray_xai.errors import DataError, XrayXaiError
from xray_xai.sdk.interfaces import Model, Problem, Record

__all__ = ["ClusterOptions", "default_out_dir", "read_predictions", "strata"]


@dataclass(frozen=True)
class ClusterOptions:
    """Cluster strata: K (None: no clustering), what is clustered (``features`` or ``explanations``), the method."""

    k: int | None = None
    on: str = "features"
    method: str = "pca-kmeans"


@dataclass
class _Inputs:
    records: list[Record]
    y: np.ndarray
    p: np.ndarray
    source: str
    skipped: list[Problem] = field(default_factory=list)
    unmatched: int = 0


def default_out_dir(model_name: str) -> Path:
    """``<store>/runs/strata/<model>-<timestamp>`` when no folder is given."""
    from xray_xai.models.store import home

    return home() / "runs" / "strata" / f"{model_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_predictions(path: str | Path) -> dict[str, float]:
    """``{absolute path: probability}`` from a CSV with ``path`` and ``probability`` columns (``xray-xai predict
    --csv``); a missing file, column or a probability outside [0, 1] is a DataError naming the file."""
    src = Path(path)
    try:
        with src.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("path", "probability") if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(src, f"no column {', '.join(missing)} (expected a CSV of xray-xai predict)")
            out: dict[str, float] = {}
            for i, row in enumerate(reader, start=2):
                try:
                    prob = float(row["probability"])
                except (TypeError, ValueError):
                    raise DataError(src, f"line {i}: probability {row['probability']!r} is not a number") from None
                if not 0.0 <= prob <= 1.0:
                    raise DataError(src, f"line {i}: probability {prob} is outside [0, 1]")
                out[os.path.abspath(row["path"])] = prob
    except FileNotFoundError:
        raise DataError(src, "no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(src, f"unreadable predictions CSV ({exc})") from None
    if not out:
        raise DataError(src, "no predictions in the file")
    return out


def _inputs(
    model: Model | None, records: list[Record], predictions: str | Path | None, batch_size: int,
    cache_dir: str | Path | None, progress: bool,
) -> _Inputs:  # fmt: skip
    """Labelled films with their probabilities, from the CSV or from one (cached) forward pass."""
    if predictions is not None:
        probs = read_predictions(predictions)
        kept = [r for r in records if os.path.abspath(r.path) in probs]
        if not kept:
            raise DataError(predictions, f"none of its paths is one of the {len(records)} films of the split")
        p = np.array([probs[os.path.abspath(r.path)] for r in kept])
        return _Inputs(kept, _labels(kept), p, str(predictions), unmatched=len(records) - len(kept))
    if model is None:
        raise XrayXaiError("strata needs a model or a predictions CSV")
    from xray_xai.cluster.features import extract_features

    fs = extract_features(model, records, batch_size=batch_size, cache_dir=cache_dir, progress=progress)
    if len(fs) == 0:
        raise DataError(None, f"none of the {len(records)} films could be read")
    source = f"feature cache {fs.cache_path}" if fs.cache_path else "forward pass"
    return _Inputs(list(fs.records), _labels(fs.records), np.asarray(fs.probabilities, dtype=np.float64),
                   source + (" (reused)" if fs.from_cache else ""), skipped=list(fs.skipped))  # fmt: skip


def _labels(records: Sequence[Record]) -> np.ndarray:
    return np.array([int(r.label or 0) for r in records], dtype=np.int64)


def _write_predictions(path: Path, data: _Inputs, threshold: float) -> Path:
    from xray_xai._util.fsutil import atomic_write_text

    lines = ["path,region,label,probability,prediction"]
    for r, yy, pp in zip(data.records, data.y.tolist(), data.p.tolist(), strict=True):
        pred = "abnormal" if pp >= threshold else "normal"
        lines.append(f'"{r.path}",{r.region or ""},{yy},{pp!r},{pred}')
    return atomic_write_text(path, "\n".join(lines) + "\n")


def strata(
    model: Model | None,
    data_root: str | Path,
    *,
    dataset: str | None = None,
    dataset_options: dict[str, Any] | None = None,
    split: str = "test",
    predictions: str | Path | None = None,
    options: StrataOptions | None = None,
    columns: Sequence[str] | None = None,
    shortcuts: Sequence[str] | None = None,
    clusters: ClusterOptions | None = None,
    tcav: TcavOptions | None = None,
    out_dir: str | Path | None = None,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Subgroups, cluster strata and shortcut checks of ``model`` on ``split`` (module docstring); returns the
    JSON-ready result, also written to ``out_dir``. ``tcav`` None skips the concept tests; ``shortcuts`` None checks
    the :data:`~.shortcuts.DEFAULT_SHORTCUT_COLUMNS` the films have, ``[]`` none."""
    from xray_xai.data.datasets import open_dataset

    opts = options or StrataOptions()
    ds = open_dataset(data_root, dataset, **(dataset_options or {}))
    records = [r for r in ds.records(split) if r.label is not None]
    if not records:
        raise DataError(data_root, f"no labelled films in split {split!r}")
    data = _inputs(model, records, predictions, batch_size, cache_dir, progress)
    model_name = getattr(model, "name", None) or Path(str(predictions)).stem
    out = Path(out_dir) if out_dir is not None else default_out_dir(model_name)
    out.mkdir(parents=True, exist_ok=True)
    try:
        levels = subgroup_columns(data.records, columns=columns, max_levels=opts.max_levels, bins=opts.bins)
    except KeyError as exc:
        raise XrayXaiError(str(exc.args[0])) from None
    result: dict[str, Any] = {
        "model": model_name,
        "checkpoint": str(getattr(model, "checkpoint_path", "") or "") or None,
        "dataset": getattr(ds, "name", dataset),
        "data": str(data_root),
        "split": split,
        "predictions": data.source,
        "n_films": len(data.records),
        "n_unmatched": data.unmatched,
        "skipped": [{"path": p.path, "problem": p.problem} for p in data.skipped],
        "columns": sorted(levels),
        "subgroups": subgroup_table(data.y, data.p, levels, opts),
    }
    result["flagged"] = _flagged(result["subgroups"]["rows"])
    result["shortcuts"] = _shortcuts(model, ds, data, levels, result["subgroups"]["rows"], shortcuts, opts, tcav)
    if clusters is not None and clusters.k:
        result["clusters"] = _clusters(model, data_root, dataset, split, data, opts, clusters, out, cache_dir, progress)
    _write(out, result, data, opts.threshold)
    return result


def _flagged(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"column": r["column"], "level": r["level"], "metrics": r["flagged"]} for r in rows if r["flagged"]]


def _shortcuts(
    model: Model | None, ds: Any, data: _Inputs, levels: dict[str, list[str | None]], rows: list[dict[str, Any]],
    names: Sequence[str] | None, opts: StrataOptions, tcav: TcavOptions | None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Shortcut checks of the named columns (or the default ones the films have)."""
    from xray_xai.audit.strata.shortcuts import DEFAULT_SHORTCUT_COLUMNS, parse_shortcut, shortcut_check

    specs = list(names) if names is not None else [c for c in DEFAULT_SHORTCUT_COLUMNS if c in levels]
    if not specs:
        return []
    pool_records = [r for r in ds.records("all") if r.label is not None]
    out = []
    for spec in specs:
        column = spec.partition("=")[0].strip()
        col_levels = levels.get(column)
        if col_levels is None:  # named but not among the analysed columns (or filtered by --column)
            col_levels = subgroup_columns(data.records, columns=[column]).get(column) if column else None
        if col_levels is None:
            raise XrayXaiError(f"shortcut column {column!r} is not a column of these films with two values or more")
        try:
            column, present = parse_shortcut(spec, col_levels)
        except ValueError as exc:
            raise XrayXaiError(str(exc)) from None
        pool_levels = subgroup_columns(pool_records, columns=[column]).get(column, [None] * len(pool_records))
        col_rows = [r for r in rows if r["column"] == column] or _rows_for(column, col_levels, data, opts)
        out.append(
            shortcut_check(
                column, present, col_levels, data.y, data.p, col_rows,
                model=model, records=data.records, concept_pool=list(zip(pool_records, pool_levels, strict=True)),
                tcav=tcav, n_boot=opts.n_boot, seed=opts.seed,
            )
        )  # fmt: skip
    return out


def _rows_for(column: str, col_levels: list[str | None], data: _Inputs, opts: StrataOptions) -> list[dict[str, Any]]:
    """The with/without rows of one column (tested as a family of its own)."""
    return list(subgroup_table(data.y, data.p, {column: col_levels}, opts)["rows"])


def _clusters(
    model: Model | None, data_root: str | Path, dataset: str | None, split: str, data: _Inputs, opts: StrataOptions,
    clusters: ClusterOptions, out: Path, cache_dir: str | Path | None, progress: bool,
) -> dict[str, Any]:  # fmt: skip
    if model is None:
        return {"skipped": "clusters need the model (not only a predictions CSV)"}
    from xray_xai.audit.strata.clusters import cluster_strata

    return cluster_strata(
        model, data_root, data.records, data.y, data.p, opts, dataset=dataset, split=split, k=int(clusters.k or 0),
        on=clusters.on, method=clusters.method, out_dir=out / "clusters", cache_dir=cache_dir, progress=progress,
    )  # fmt: skip


def _write(out: Path, result: dict[str, Any], data: _Inputs, threshold: float) -> None:
    from xray_xai._util.fsutil import atomic_write_json
    from xray_xai.audit.strata.figures import forest_plot
    from xray_xai.report.html import write_report

    files = {
        "json": str(out / "strata.json"),
        "predictions": str(_write_predictions(out / "predictions.csv", data, threshold)),
        "forest": str(forest_plot(out / "forest.png", result["subgroups"])),
    }
    result["files"] = files
    files["report"] = str(write_report(out, strata=result, title=f"xray-xai strata: {result['model']}"))
    atomic_write_json(out / "strata.json", result)
