"""Evaluate a trained model on a split (MURA-style image and study metrics) and predict on any images.

``evaluate`` reports, at image level and at study level (a study's probability is the mean over its views, threshold
0.5), AUROC, accuracy, precision, recall/sensitivity, specificity, F1, Cohen's kappa and the confusion counts, overall
and per region, with percentile bootstrap 95% intervals (images resampled at image level, studies at study level).
On MURA-layout data (MURA itself or the synthetic phantoms) it adds our study-level kappa per region beside the
published radiologists and DenseNet-169 baseline (:data:`xray_xai.models.metrics.MURA_PUBLISHED_KAPPA`).

``predict`` needs no labels: files, folders (PNG, JPEG, DICOM) or a data set split; unreadable files are skipped
and listed, and only fatal when none at all can be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xray_xai._util.fsutil import atomic_path, atomic_write_json, write_skipped_csv
from xray_xai.defaults import DECISION_THRESHOLD
from xray_xai.errors import DataError, PluginError, XrayXaiError, one_line
from xray_xai.sdk.interfaces import Model, Problem, Record

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["MURA_LAYOUTS", "evaluate", "predict", "predict_records", "resolve_model"]

#: dataset names whose layout (studies, seven regions) makes the published MURA kappas a fair comparison
MURA_LAYOUTS: tuple[str, ...] = ("mura", "synthetic")


def resolve_model(model: str | Path | Model, checkpoint: str | Path | None = None) -> Model:
    """A Model instance from an instance, a store name (latest trained) or a checkpoint path: the one rule of
    :func:`xray_xai.models.resolve.resolve_model` (a name and a checkpoint together name one model)."""
    from xray_xai.models.resolve import resolve_model as _resolve

    return _resolve(model, checkpoint)


def predict_records(
    model: Model,
    records: Sequence[Record],
    *,
    batch_size: int = 32,
    device: str = "cpu",
    progress: bool = False,
    tta: bool = False,
    strict: bool = False,
    warnings: list[Problem] | None = None,
) -> tuple[list[Record], np.ndarray, list[Problem]]:
    """Probabilities for ``records`` (bad images skipped): ``(kept records, probabilities, skipped problems)``.

    Models that route by region (``needs_regions`` attribute, e.g. ``ensemble-calibrated``) get each image's region.
    ``tta``: the mean probability of the film and its horizontal and vertical flips (3 passes). A fracture is one
    under a flip while the model's errors are not all so; on FracAtlas it raised the AUROC of two EfficientNet-Lite0
    runs by 0.010-0.018 on val and 0.015-0.016 on test (docs/results.md).
    ``strict`` skips films whose stream ends early even when little is missing; otherwise they are kept and their
    warnings appended to ``warnings`` when a list is given (:func:`xray_xai.data.images.read_film`).
    """
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from xray_xai._util.progress import progress as progress_bar
    from xray_xai.data.geometry import FLIP_DIMS
    from xray_xai.data.loader import RecordDataset, collate_skip_bad

    recs = list(records)
    ds = RecordDataset(recs, model.preprocessing, augment=None, strict=strict)
    is_module = isinstance(model, torch.nn.Module)
    dev = torch.device(device)
    if is_module:
        model.to(dev)
        model.eval()
    elif hasattr(model, "to"):
        model.to(dev)
    needs_regions = bool(getattr(model, "needs_regions", False))
    probs: list[np.ndarray] = []
    kept: list[int] = []
    with torch.no_grad():
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate_skip_bad)
        for x, _, idx, problems in progress_bar(loader, "predicting", enabled=progress):
            ds.add_skipped(problems)
            if len(idx) == 0:
                continue
            ids = idx.tolist()
            x = x.to(dev)
            routing = {"regions": [recs[i].region for i in ids]} if needs_regions else {}
            try:
                outs = [
                    model.predict_proba(torch.flip(x, dims=dims) if dims else x, **routing)
                    for dims in (FLIP_DIMS if tta else FLIP_DIMS[:1])
                ]
                p = outs[0] if len(outs) == 1 else torch.stack([o.float() for o in outs]).mean(dim=0)
            except XrayXaiError:
                raise
            except Exception as exc:  # a model plugin's forward failed: one line naming it and the films
                where = (
                    str(recs[ids[0]].path) if len(ids) == 1 else f"a batch of {len(ids)} films from {recs[ids[0]].path}"
                )
                name = getattr(model, "name", type(model).__name__)
                raise PluginError(f"model {name!r} failed on {where}: {type(exc).__name__}: {one_line(exc)}") from exc
            probs.append(p.detach().float().cpu().numpy().reshape(-1))
            kept.extend(ids)
    out = np.concatenate(probs) if probs else np.zeros(0)
    if warnings is not None:
        warnings.extend(ds.warnings)
    return [recs[i] for i in kept], out, list(getattr(ds, "skipped", []))


def _level(y: Any, p: Any, regions: Sequence[str | None], bootstrap: int, seed: int) -> dict[str, Any]:
    from xray_xai.models.metrics import binary_metrics, bootstrap_metrics, per_region

    overall = binary_metrics(y, p)
    overall["ci95"] = bootstrap_metrics(y, p, n=bootstrap, seed=seed) if bootstrap else None
    return {"overall": overall, "per_region": per_region(y, p, regions, bootstrap=bootstrap, seed=seed)}


def evaluate(
    model_name_or_path: str | Path | Model,
    data_root: str | Path,
    *,
    dataset: str | None = None,
    split: str = "test",
    batch_size: int = 32,
    bootstrap: int = 1000,
    seed: int = 0,
    out_dir: str | Path | None = None,
    device: str = "cpu",
    checkpoint: str | Path | None = None,
    max_images: int | None = None,
    dataset_options: dict[str, Any] | None = None,
    progress: bool = False,
    tta: bool = False,
    strict: bool = False,
) -> dict[str, Any]:
    """Image- and study-level metrics of a model on ``split``, overall and per region, with 95% bootstrap CIs.

    ``tta``: score each film by the mean over it and its flips (:func:`predict_records`).

    With ``out_dir``: ``metrics.json``, ``roc.png``, ``confusion.png`` and ``skipped.csv`` (unreadable films, also
    under ``"skipped"``) are written there, and ``warnings.csv`` (films kept despite damage, also under
    ``"warnings"``; ``strict`` skips them instead).
    """
    import numpy as np

    from xray_xai.models.metrics import study_regions, study_scores

    model = resolve_model(model_name_or_path, checkpoint)
    ds_name, records = _labelled_records(data_root, dataset, dataset_options, split, max_images)
    warned: list[Problem] = []
    kept, probs, skipped = predict_records(
        model, records, batch_size=batch_size, device=device, progress=progress, tta=tta, strict=strict,
        warnings=warned,
    )  # fmt: skip
    if not kept:
        raise DataError(data_root, f"none of the {len(records)} images of split {split!r} could be read")
    y = np.array([int(r.label or 0) for r in kept])
    image = _level(y, probs, [r.region for r in kept], bootstrap, seed)
    s_ids, s_y, s_p = study_scores(kept, probs)
    s_region = study_regions(kept)
    study = _level(s_y, s_p, [s_region[s] for s in s_ids], bootstrap, seed)
    result: dict[str, Any] = {
        "model": getattr(model, "name", str(model_name_or_path)),
        "checkpoint": str(checkpoint or getattr(model, "checkpoint_path", None) or model_name_or_path),
        "dataset": ds_name,
        "data_root": str(data_root),
        "split": split,
        "threshold": DECISION_THRESHOLD,
        "tta": tta,
        "bootstrap": bootstrap,
        "seed": seed,
        "n_images": len(kept),
        "n_studies": len(s_ids),
        "image": image,
        "study": study,
        "skipped": [{"path": p.path, "problem": p.problem} for p in skipped],
        "warnings": [{"path": p.path, "problem": p.problem} for p in warned],
    }
    _add_mura_reference(result, ds_name, study)
    if out_dir is not None:
        curves = {"image": (y, probs), "study": (s_y, s_p)}
        result["files"] = _write_evaluation(Path(out_dir), result, curves, skipped, warned)
    return result


def _labelled_records(
    data_root: str | Path,
    dataset: str | None,
    dataset_options: dict[str, Any] | None,
    split: str,
    max_images: int | None,
) -> tuple[str, list[Record]]:
    """The data set's name and the labelled records of ``split`` (the first ``max_images``); none is an error."""
    from xray_xai.data.datasets import open_dataset

    ds = open_dataset(data_root, dataset, **(dataset_options or {}))
    records = [r for r in ds.records(split) if r.label is not None]
    if max_images is not None:
        records = records[:max_images]
    if not records:
        raise DataError(data_root, f"no labelled images in split {split!r}")
    return getattr(ds, "name", "") or (dataset or ""), records


def _add_mura_reference(result: dict[str, Any], ds_name: str, study: dict[str, Any]) -> None:
    """On MURA-layout data: the per-region study kappa beside the published radiologists and DenseNet-169."""
    from xray_xai.models.metrics import MURA_REFERENCE, kappa_table

    if ds_name not in MURA_LAYOUTS:
        return
    ours = {region: m["kappa"] for region, m in study["per_region"].items()}
    ours["overall"] = study["overall"]["kappa"]
    result["kappa_table"] = kappa_table(ours)
    result["kappa_reference"] = MURA_REFERENCE


def _write_evaluation(
    out: Path,
    result: dict[str, Any],
    curves: dict[str, tuple[Any, Any]],
    skipped: list[Problem],
    warned: list[Problem],
) -> dict[str, str]:
    """``roc.png``, ``confusion.png``, ``skipped.csv``/``warnings.csv`` and ``metrics.json`` under ``out``."""
    files = {
        "roc": str(_plot_roc(out / "roc.png", curves)),
        "confusion": str(
            _plot_confusion(out / "confusion.png", result["image"]["overall"], result["study"]["overall"])
        ),
        "skipped": str(write_skipped_csv(out / "skipped.csv", skipped, warnings=warned)),
        "warnings": str(out / "warnings.csv"),
        "metrics": str(out / "metrics.json"),
    }
    atomic_write_json(out / "metrics.json", {**result, "files": files})
    return files


def _figure(figsize: tuple[float, float]) -> Any:
    """A figure on an Agg canvas of its own: pyplot and the process's matplotlib backend are left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _plot_roc(path: Path, curves: dict[str, tuple[Any, Any]]) -> Path:
    from sklearn.metrics import roc_curve

    from xray_xai.models.metrics import auroc

    fig = _figure((4.5, 4.5))
    ax = fig.subplots()
    for label, (y, p) in curves.items():
        auc = auroc(y, p)
        if auc is None:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{label} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("ROC: " + " and ".join(curves) + " level")
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return path


def _plot_confusion(path: Path, image: dict[str, Any], study: dict[str, Any]) -> Path:
    import numpy as np

    fig = _figure((7, 3.5))
    axes = fig.subplots(1, 2)
    for ax, (title, m) in zip(axes, (("image", image), ("study", study)), strict=True):
        mat = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        ax.imshow(mat, cmap="Blues")
        for (i, j), v in np.ndenumerate(mat):
            ax.text(j, i, str(v), ha="center", va="center")
        ax.set_xticks([0, 1], ["normal", "abnormal"])
        ax.set_yticks([0, 1], ["normal", "abnormal"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} level")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return path


def predict(
    model: str | Path | Model,
    inputs: Sequence[str | Path] | None = None,
    *,
    data_root: str | Path | None = None,
    split: str | None = None,
    dataset: str | None = None,
    checkpoint: str | Path | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    threshold: float = DECISION_THRESHOLD,
    dataset_options: dict[str, Any] | None = None,
    progress: bool = False,
    tta: bool = False,
    strict: bool = False,
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Per-image rows ``{path, study, region, label, probability, prediction, study_probability}``, and skipped files.

    ``inputs`` are image files or folders (study rule: :mod:`xray_xai.data.records`; a loose film is its own study,
    a sub-folder's films one study, a MURA-layout path names its study and label), or give
    ``data_root`` (and ``split``) to predict a data set's records. ``study_probability`` is the mean over the
    study's views, ``None`` for a lone image. The problems list ends with the warnings (severity "warning") of
    films kept despite damage; ``strict`` skips those films instead.
    """
    from xray_xai.data.records import records_from_paths
    from xray_xai.models.metrics import study_scores

    m = resolve_model(model, checkpoint)
    if inputs:
        records, problems = records_from_paths(inputs)
    elif data_root is not None:
        from xray_xai.data.datasets import open_dataset

        records, problems = open_dataset(data_root, dataset, **(dataset_options or {})).records(split), []
    else:
        raise DataError(None, "predict needs input files/folders or a data set folder")
    warned: list[Problem] = []
    kept, probs, skipped = predict_records(
        m, records, batch_size=batch_size, device=device, progress=progress, tta=tta, strict=strict, warnings=warned
    )
    if not kept:  # nothing could be read: an error, not an empty table
        _raise_nothing_read(problems + skipped, len(records), data_root)
    s_ids, _, s_p = study_scores(kept, probs)
    per_study = dict(zip(s_ids, s_p.tolist(), strict=True))
    rows = []
    for rec, p in zip(kept, probs.tolist(), strict=True):
        rows.append(
            {
                "path": str(rec.path),
                "study": rec.study,
                "region": rec.region,
                "label": rec.label,
                "probability": float(p),
                "prediction": "abnormal" if p >= threshold else "normal",
                "study_probability": per_study[rec.study] if rec.study else None,
            }
        )
    return rows, problems + skipped + warned


def _raise_nothing_read(problems: Sequence[Problem], n_records: int, where: str | Path | None) -> None:
    """One error line naming the (first) unreadable input, so a script never gets a header-only table."""
    if not problems:
        raise DataError(where, "no images to predict")
    first = problems[0]
    if len(problems) == 1:
        raise DataError(first.path, first.problem)
    raise DataError(first.path, f"{first.problem}; none of the {max(n_records, len(problems))} inputs could be read")
