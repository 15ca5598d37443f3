"""Training an ensemble: ``ensemble-mean`` stores its member list, ``ensemble-calibrated`` fine-tunes a member per
region (no new architecture; the members are trained models or checkpoint paths), and a preset (``ensemble200``: a
plugin with ``preset_members``) trains its member architectures with the run's recipe first, unless trained members
are given."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xray_xai._util.fsutil import atomic_write_json, write_skipped_csv
from xray_xai.errors import PluginError
from xray_xai.models.config import TrainConfig
from xray_xai.models.runs import EpochCallback, SaveTarget, TrainResult, open_run_dir, save_to_store
from xray_xai.models.splits import open_splits, split_fingerprint
from xray_xai.sdk.interfaces import Problem, Record

__all__ = ["ENSEMBLES", "train_ensemble"]

ENSEMBLES = ("ensemble-mean", "ensemble-calibrated", "ensemble200")


def _member_list(members: Any) -> list[str]:
    if members is None:
        raise PluginError("an ensemble needs members: --members name1,name2 (trained models or checkpoint paths)")
    if isinstance(members, str):
        members = [m.strip() for m in members.split(",") if m.strip()]
    out = [str(m) for m in members]
    if len(out) < 2:
        raise PluginError(f"an ensemble needs at least two members, got {out}")
    return out


def _check_preset(preset: tuple[str, ...], cfg: TrainConfig) -> None:
    """Refuse, before any data is read, a recipe a preset's member cannot take: ``--pretrained`` for a member
    architecture without ImageNet weights."""
    from xray_xai.sdk.registry import models

    if cfg.pretrained:
        lacking = [name for name in preset if not models.get(name).tags.pretrained_available]
        if lacking:
            raise PluginError(
                f"--pretrained: member {', '.join(lacking)} has no pretrained weights; train without it, or train "
                "the members yourself and pass them with --members"
            )


def _train_preset(
    preset: tuple[str, ...],
    data_root: str | Path,
    cfg: TrainConfig,
    run_dir: Path,
    run_options: dict[str, Any],
    on_epoch: EpochCallback | None,
) -> list[str]:
    """Train each architecture of a preset ensemble with the run's recipe (its own run folder under
    ``<run>/member-<name>``, saved to the store); their checkpoints, in order. A recipe a member cannot take
    (``--pretrained`` for a model without ImageNet weights) is refused before any training starts."""
    from xray_xai.models.training import train

    member_options = {k: v for k, v in cfg.model_options.items() if k != "members"}
    checkpoints = []
    for name in preset:

        def tagged(row: dict[str, Any], member: str = name) -> None:
            if on_epoch is not None:
                on_epoch({"member": member, **row})

        res = train(
            name, data_root, cfg.replace(model_options=member_options), out_dir=run_dir / f"member-{name}",
            save=True, on_epoch=tagged, **run_options,
        )  # fmt: skip
        checkpoints.append(str(res.checkpoint))
    return checkpoints


def _calibrate(
    cls: Any,
    names: list[str],
    loaded: list[Any],
    val_recs: list[Record],
    data_root: str | Path,
    cfg: TrainConfig,
    run_dir: Path,
    run_options: dict[str, Any],
) -> tuple[dict[str, str], list[dict[str, Any]], list[Problem]]:
    """Each region's best member on val (the plugin's ``select`` rule), fine-tuned on that region's training films
    from its overall weights: the routing table, one history row per region, the films skipped."""
    import numpy as np

    from xray_xai.models.evaluation import predict_records
    from xray_xai.models.metrics import per_region
    from xray_xai.models.training import train

    skipped: list[Problem] = []
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    for member_name, member in zip(names, loaded, strict=True):
        kept, probs, bad = predict_records(member, val_recs, batch_size=cfg.batch_size, device=cfg.device)
        skipped += bad
        y = np.array([int(r.label or 0) for r in kept])
        scores[member_name] = per_region(y, probs, [r.region for r in kept])
    choice: dict[str, str] = cls.select(scores)
    routes: dict[str, str] = {}
    history: list[dict[str, Any]] = []
    member_options = {k: v for k, v in cfg.model_options.items() if k != "members"}
    for region, member_name in sorted(choice.items()):
        res = train(
            member_name,
            data_root,
            cfg.replace(regions=(region,), model_options=member_options),
            init_from=names[names.index(member_name)],
            out_dir=run_dir / f"region-{region}",
            save=True,
            **run_options,
        )
        routes[region] = str(res.checkpoint)
        history.append({"region": region, "member": member_name, **res.best_metrics})
    return routes, history, skipped


def train_ensemble(
    model_name: str,
    data_root: str | Path,
    cfg: TrainConfig,
    *,
    dataset: str | None = None,
    dataset_options: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    save: SaveTarget = True,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    on_run_dir: Callable[[Path], None] | None = None,
) -> TrainResult:
    """``ensemble-mean``: resolve and check the members, score on val, save the member list (no new weights).

    ``ensemble-calibrated``: pick each region's best member on val (the plugin's ``select`` rule), fine-tune it on
    that region's training images starting from its overall weights, and save the routing table.

    A preset (``ensemble200``) without ``members``: train each of its ``preset_members`` with ``cfg`` (each saved
    to the store even when ``save`` is False: the ensemble is their list), then as ``ensemble-mean``.
    """
    from xray_xai.models.evaluation import predict_records
    from xray_xai.models.metrics import binary_metrics
    from xray_xai.models.store import load_model
    from xray_xai.sdk.registry import models

    cls: Any = models.get(model_name)
    preset = tuple(getattr(cls, "preset_members", ()))
    trains_preset = bool(preset) and cfg.model_options.get("members") is None
    if trains_preset:
        _check_preset(preset, cfg)
    else:  # members are checked and loaded before any data is read
        names = _member_list(cfg.model_options.get("members"))
        loaded = [load_model(m) for m in names]
    ds_name, train_recs, val_recs = open_splits(data_root, dataset, None, cfg.max_images, cfg.seed, dataset_options)
    fingerprint = split_fingerprint(train_recs, val_recs)
    run_dir = open_run_dir(model_name, fingerprint, cfg.seed, out_dir)
    if on_run_dir is not None:
        on_run_dir(run_dir)
    run_options = {"dataset": dataset, "dataset_options": dataset_options, "progress": progress}
    if trains_preset:
        names = _train_preset(preset, data_root, cfg, run_dir, run_options, on_epoch)
        loaded = [load_model(m) for m in names]

    t0 = time.perf_counter()
    history: list[dict[str, Any]] = []
    skipped: list[Problem] = []
    if model_name == "ensemble-calibrated":
        routes, history, skipped = _calibrate(cls, names, loaded, val_recs, data_root, cfg, run_dir, run_options)
        ensemble = cls(members=loaded, member_names=names, routes=routes, load_member=load_model)
    elif preset:  # members named by architecture (their checkpoints are in the sidecar's member list)
        ensemble = cls(members=loaded)
    else:
        ensemble = cls(members=loaded, member_names=names)
    kept, probs, bad = predict_records(ensemble, val_recs, batch_size=cfg.batch_size, device=cfg.device)
    skipped += bad
    m = binary_metrics([int(r.label or 0) for r in kept], probs)
    row = {"epoch": 0, "val_accuracy": m["accuracy"], "val_auroc": m["auroc"], "val_kappa": m["kappa"]}
    row["seconds"] = round(time.perf_counter() - t0, 3)
    history.append(row)
    if on_epoch is not None:  # per region (calibrated), then the ensemble on val
        for entry in history:
            on_epoch(dict(entry))
    write_skipped_csv(run_dir / "skipped.csv", skipped)
    metadata = {
        "dataset": ds_name,
        "split_fingerprint": fingerprint,
        "n_val": len(val_recs),
        "metrics": row,
        "seed": cfg.seed,
        "members": names,
        "hyperparameters": {"members": names},
        "run_dir": str(run_dir),
    }
    checkpoint = save_to_store(ensemble, metadata, save) if save else run_dir
    atomic_write_json(run_dir / "result.json", {"checkpoint": str(checkpoint), **metadata})
    return TrainResult(model_name, checkpoint, run_dir, history, 0, row, skipped)
