"""Hidden stratification and shortcuts (``xray-xai strata``): subgroups, cluster strata, shortcut and concept tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xray_xai.api._models import resolve_model
from xray_xai.defaults import DECISION_THRESHOLD

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.sdk.interfaces import Model

__all__ = ["STRATA_CORRECTIONS", "strata"]

#: the multiple-comparison corrections ``strata`` offers (Holm: family-wise error; BH: false discovery rate)
STRATA_CORRECTIONS: tuple[str, ...] = ("holm", "bh", "none")


def strata(
    model: str | Path | Model | None,
    data_root: str | Path,
    *,
    checkpoint: str | Path | None = None,
    dataset: str | None = None,
    dataset_options: dict[str, Any] | None = None,
    split: str = "test",
    predictions: str | Path | None = None,
    threshold: float = DECISION_THRESHOLD,
    columns: Sequence[str] | None = None,
    shortcuts: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    correction: str = "holm",
    alpha: float = 0.05,
    min_size: int = 10,
    max_levels: int = 8,
    bins: int = 4,
    clusters: int = 0,
    cluster_on: str = "features",
    cluster_method: str = "pca-kmeans",
    tcav: bool = True,
    tcav_concept_size: int = 30,
    tcav_runs: int = 5,
    tcav_inputs: int = 30,
    tcav_layer: str | None = None,
    out_dir: str | Path | None = None,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Which subgroups ``model`` fails on ``split`` of ``data_root``, which clusters, and what it leans on.

    Every metadata column of the films (or ``columns``) is cut into subgroups; each subgroup's n, positives, AUROC,
    sensitivity and specificity at ``threshold`` get seeded bootstrap 95% intervals (``n_boot``, ``seed``) and a
    test against the rest (DeLong; Fisher), corrected by ``correction`` (holm, bh or none); a subgroup is flagged
    when it is significantly (``alpha``) below the rest. ``clusters`` K > 0 adds the clusters of ``xray-xai
    cluster`` (``cluster_on`` features or explanations) as strata. ``shortcuts`` (``"hardware"`` or
    ``"COLUMN=VALUE"``; None: hardware and a planted shortcut_marker where present) get the with/without metrics,
    the prediction's dependence on them and, with ``tcav``, a TCAV concept test (``tcav_runs`` random concepts of
    ``tcav_concept_size`` films, ``tcav_inputs`` abnormal films, ``tcav_layer``, default a late intermediate stage).

    ``predictions``: a CSV of ``xray-xai predict`` (path, probability) to use instead of running the model; the
    model (optional then) is still needed for clusters and concept tests. ``model``/``checkpoint``: see
    :func:`resolve_model`. Writes strata.json, predictions.csv, forest.png and report.html to ``out_dir``.
    """
    from xray_xai.audit.strata.service import ClusterOptions
    from xray_xai.audit.strata.service import strata as _strata
    from xray_xai.audit.strata.subgroups import StrataOptions
    from xray_xai.audit.strata.tcav import TcavOptions
    from xray_xai.errors import XrayXaiError

    if correction not in STRATA_CORRECTIONS:
        raise XrayXaiError(f"unknown correction {correction!r}; expected one of {', '.join(STRATA_CORRECTIONS)}")
    if not 0.0 <= threshold <= 1.0:
        raise XrayXaiError(f"threshold must be in [0, 1], got {threshold}")
    if cluster_on not in ("features", "explanations"):
        raise XrayXaiError(f"cluster_on must be 'features' or 'explanations', got {cluster_on!r}")
    resolved = None if model is None and checkpoint is None else resolve_model(model, checkpoint)
    opts = StrataOptions(
        threshold=threshold, n_boot=n_boot, seed=seed, correction=correction, alpha=alpha, min_size=min_size,
        max_levels=max_levels, bins=bins,
    )  # fmt: skip
    concept = None
    if tcav and resolved is not None:
        concept = TcavOptions(
            concept_size=tcav_concept_size, n_runs=tcav_runs, n_inputs=tcav_inputs, layer=tcav_layer, seed=seed,
            alpha=alpha,
        )  # fmt: skip
    return _strata(
        resolved, data_root, dataset=dataset, dataset_options=dataset_options, split=split, predictions=predictions,
        options=opts, columns=columns, shortcuts=shortcuts,
        clusters=ClusterOptions(k=clusters or None, on=cluster_on, method=cluster_method), tcav=concept,
        out_dir=out_dir, batch_size=batch_size, cache_dir=cache_dir, progress=progress,
    )  # fmt: skip
