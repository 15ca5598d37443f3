"""Clusters as strata: the clusters of ``xray-xai cluster`` (features or explanations), each against the rest.

The published MURA clustering looked at its clusters by eye; here every cluster is a subgroup of
:func:`.subgroups.subgroup_table` (its own family of tests, corrected together), and each cluster that falls
significantly below the rest is shown with its montage (the films nearest its centroid) and its dominant metadata
(the cluster service's sentence and the most common value of every column). The clustering takes *every* film of
the split (no threshold), since a cluster of films called abnormal has no specificity to compare. Features come from
the cluster service's cache, so the clustering costs no second pass when the predictions were computed there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xray_xai.audit.strata.subgroups import StrataOptions, subgroup_table
from xray_xai.sdk.interfaces import Record

__all__ = ["cluster_strata"]


def cluster_strata(
    model: Any,
    data_root: str | Path,
    records: Sequence[Record],
    y: Any,
    p: Any,
    opts: StrataOptions,
    *,
    dataset: str | None,
    split: str,
    k: int,
    on: str,
    method: str,
    out_dir: Path,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Cluster the films of ``split`` (all of them) with the cluster service into ``out_dir`` and compare each
    cluster with the rest on the films of ``records`` (aligned with ``y`` and ``p``)."""
    from xray_xai.cluster.service import cluster

    result = cluster(
        model, data_root, dataset=dataset, k=k, method=method, splits=(split,), threshold=None, on=on,
        out_dir=out_dir, seed=opts.seed, json=False, cache_dir=cache_dir, progress=progress,
    )  # fmt: skip
    labels = np.asarray(result["labels"]["all"])
    clustered = result["feature_set"].records
    by_path = {os.path.abspath(r.path): int(c) for r, c in zip(clustered, labels.tolist(), strict=True)}
    levels = [_name(by_path.get(os.path.abspath(r.path))) for r in records]
    table = subgroup_table(y, p, {"cluster": levels}, opts)
    montages = (result.get("files") or {}).get("montages") or {}
    descriptions = result.get("descriptions") or {}
    composition = result.get("composition") or {}
    for row in table["rows"]:
        c = row["level"].removeprefix("cluster ")
        row["montage"] = montages.get(c)
        row["description"] = descriptions.get(c)
        row["dominant"] = _dominant(composition.get(c) or {})
    return {
        "on": on,
        "k": k,
        "method": method,
        "out_dir": str(out_dir),
        "silhouette": result.get("silhouette"),
        "agreement": {
            col: {key: a.get(key) for key in ("nmi", "ari")} for col, a in (result.get("agreement") or {}).items()
        },
        "n_unclustered": sum(lv is None for lv in levels),
        **table,
    }


def _name(c: int | None) -> str | None:
    return None if c is None else f"cluster {c}"


def _dominant(comp: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The most common value of each column in one cluster, with its share."""
    out: dict[str, dict[str, Any]] = {}
    for column, values in comp.items():
        if not values:
            continue
        value, stats = next(iter(values.items()))  # composition lists values by decreasing count
        out[column] = {"value": value, "share": stats.get("share")}
    return out
