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

from xray_xai._util.fsutil import atomic_write_json, atomic_write_text, write_skipped_csv
from xray_xai.defaults import DECISION_THRESHOLD, DEFAULT_LEVELS
from xray_xai.errors import DataError, PluginError, XrayXaiError, one_line
from xray_xai.sdk.interfaces import Model, Problem, Record
from xray_xai.sdk.provenance import provenance

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
    films: Any = None,
) -> tuple[list[Record], np.ndarray, list[Problem]]:
    """Probabilities for ``records`` (bad images skipped): ``(kept records, probabilities, skipped problems)``.

    Models that route by region (``needs_regions`` attribute, e.g. ``ensemble-calibrated``) get each image's region.
    ``tta``: the mean probability of the film and its horizontal and vertical flips (3 passes). A fracture is one
    under a flip while the model's errors are not all so; on FracAtlas it raised the AUROC of two EfficientNet-Lite0
    runs by 0.010-0.018 on val and 0.015-0.016 on test (docs/results.md).
    ``strict`` skips films whose stream ends early even when little is missing; otherwise they are kept and their
    warnings appended to ``warnings`` when a list is given (:func:`xray_xai.data.images.read_film`). ``films``
    (a :class:`~xray_xai.data.film_cache.FilmCache`): prepared films read instead of decoded.
    """
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from xray_xai._util.progress import progress as progress_bar
    from xray_xai.data.geometry import FLIP_DIMS
    from xray_xai.data.loader import RecordDataset, collate_skip_bad

    recs = list(records)
    ds = RecordDataset(recs, model.preprocessing, augment=None, strict=strict, films=films)
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


def _level(
    y: Any, p: Any, regions: Sequence[str | None], bootstrap: int, seed: int, threshold: float = DECISION_THRESHOLD
) -> dict[str, Any]:
    from xray_xai.models.metrics import binary_metrics, bootstrap_metrics, per_region

    overall = binary_metrics(y, p, threshold)
    overall["ci95"] = bootstrap_metrics(y, p, threshold, n=bootstrap, seed=seed) if bootstrap else None
    return {
        "overall": overall,
        "per_region": per_region(y, p, regions, threshold, bootstrap=bootstrap, seed=seed),
    }


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
    threshold: float | None = None,
    uncalibrated: bool = False,
    study_aggregation: str = "mean",
    calibration_bins: int = 10,
    adaptive_bins: bool = False,
    specificities: Sequence[float] = DEFAULT_LEVELS,
    sensitivities: Sequence[float] = DEFAULT_LEVELS,
    film_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Image- and study-level metrics of a model on ``split``, overall and per region, with 95% bootstrap CIs.

    ``tta``: score each film by the mean over it and its flips; ``film_cache``: see :func:`_predict_split`. The
    probability is the calibrated one (``uncalibrated``: raw) and the threshold ``threshold``, else the sidecar's
    operating point, else 0.5 (:func:`xray_xai.models.operating.resolve_threshold`). Calibration and operating points:
    :func:`xray_xai.models.clinical.clinical_section`. With ``out_dir``: ``metrics.json``, ``predictions.csv``,
    ``roc.png``, ``pr.png``, ``reliability.png``, ``confusion.png``, ``skipped.csv`` (unreadable films, also under
    ``"skipped"``) and ``warnings.csv`` (films kept despite damage, ``"warnings"``; ``strict`` skips them instead).
    """
    from xray_xai.models.calibration import calibrator_of
    from xray_xai.models.clinical import clinical_section

    model = resolve_model(model_name_or_path, checkpoint)
    ds_name, records = _labelled_records(data_root, dataset, dataset_options, split, max_images)
    warned: list[Problem] = []
    kept, raw, skipped = _predict_split(
        model, records, (data_root, split), film_cache, batch_size=batch_size, device=device, progress=progress,
        tta=tta, strict=strict, warnings=warned,
    )  # fmt: skip
    scored = _scored(model, kept, raw, threshold, uncalibrated, study_aggregation, bootstrap, seed)
    cal = None if uncalibrated else calibrator_of(model)
    result: dict[str, Any] = {
        "model": getattr(model, "name", str(model_name_or_path)),
        "provenance": provenance(model).to_dict(),  # name, training data, AUROC: shown on every figure
        "checkpoint": str(checkpoint or getattr(model, "checkpoint_path", None) or model_name_or_path),
        "dataset": ds_name,
        "data_root": str(data_root),
        "split": split,
        "threshold": scored["threshold"],
        "threshold_source": scored["threshold_source"],
        "probability": f"calibrated ({cal.method})" if cal is not None else "uncalibrated",
        "study_aggregation": study_aggregation,
        "tta": tta,
        **({"films": "prepared, 8-bit"} if str(film_cache or "off") != "off" else {}),
        "bootstrap": bootstrap,
        "seed": seed,
        "n_images": len(kept),
        "n_studies": scored["study"]["overall"]["n"],
        "image": scored["image"],
        "study": scored["study"],
        "skipped": [{"path": p.path, "problem": p.problem} for p in skipped],
        "warnings": [{"path": p.path, "problem": p.problem} for p in warned],
    }
    _add_mura_reference(result, ds_name, scored["study"])
    options = {"bins": calibration_bins, "adaptive": adaptive_bins, "specificities": tuple(specificities),
               "sensitivities": tuple(sensitivities), "bootstrap": bootstrap, "seed": seed}  # fmt: skip
    in_use = (scored["threshold"], scored["threshold_source"])
    section, curves = clinical_section(model, kept, scored["y"], raw, scored["probs"], study_aggregation, in_use,
                                       uncalibrated, options)  # fmt: skip
    result.update(section)
    if out_dir is not None:
        curves["predictions"] = _prediction_rows(kept, scored["y"], scored["probs"], raw, scored["threshold"])
        result["files"] = _write_evaluation(Path(out_dir), result, curves, skipped, warned)
    return result


def _predict_split(
    model: Model, records: list[Record], where: tuple[str | Path, str], film_cache: str | Path | None, **options: Any
) -> tuple[list[Record], np.ndarray, list[Problem]]:
    """:func:`predict_records` of a split (``where``: data root, split), :class:`DataError` if no film could be
    read. ``film_cache`` "auto" or a folder: prepared 8-bit films are read (:mod:`xray_xai.models.films`)."""
    from xray_xai.models.films import prepared_films

    films = prepared_films(film_cache, records, model.preprocessing, progress=bool(options.get("progress")))
    kept, raw, skipped = predict_records(model, records, films=films, **options)
    if not kept:
        raise DataError(where[0], f"none of the {len(records)} images of split {where[1]!r} could be read")
    return kept, raw, skipped


def _scored(
    model: Model,
    kept: Sequence[Record],
    raw: np.ndarray,
    threshold: float | None,
    uncalibrated: bool,
    aggregation: str,
    bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    """The probabilities shown (:func:`~xray_xai.models.calibration.calibrated`), the threshold in use
    (:func:`~xray_xai.models.operating.resolve_threshold`) and the image- and study-level metrics at it."""
    import numpy as np

    from xray_xai.models.calibration import calibrated
    from xray_xai.models.metrics import study_regions, study_scores
    from xray_xai.models.operating import resolve_threshold

    probs = calibrated(model, raw, raw=uncalibrated)
    cut, source = resolve_threshold(model, threshold, raw=uncalibrated)
    y = np.array([int(r.label or 0) for r in kept])
    s_ids, s_y, s_p = study_scores(kept, probs, aggregation)
    s_region = study_regions(kept)
    return {
        "probs": probs, "y": y, "threshold": cut, "threshold_source": source,
        "image": _level(y, probs, [r.region for r in kept], bootstrap, seed, cut),
        "study": _level(s_y, s_p, [s_region[s] for s in s_ids], bootstrap, seed, cut),
    }  # fmt: skip


def _prediction_rows(
    kept: Sequence[Record], y: np.ndarray, probs: np.ndarray, raw: np.ndarray, cut: float
) -> list[dict[str, Any]]:
    return [
        {"path": str(r.path), "study": r.study, "region": r.region, "label": int(lab), "probability": float(q),
         "prediction": "abnormal" if q >= cut else "normal", "probability_raw": float(q_raw), "threshold": cut}
        for r, lab, q, q_raw in zip(kept, y, probs, raw, strict=True)
    ]  # fmt: skip


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
    curves: dict[str, Any],
    skipped: list[Problem],
    warned: list[Problem],
) -> dict[str, str]:
    """``roc.png``, ``pr.png``, ``reliability.png``, ``confusion.png``, ``skipped.csv``/``warnings.csv`` and
    ``metrics.json`` under ``out``."""
    from xray_xai.models.evaluation_figures import plot_confusion, plot_pr, plot_reliability, plot_roc

    footer = str(result.get("provenance", {}).get("short", ""))  # the model's name, training data and AUROC
    image, study = result["image"]["overall"], result["study"]["overall"]
    files = {
        "roc": str(plot_roc(out / "roc.png", curves["curves"], footer)),
        "pr": str(plot_pr(out / "pr.png", curves["curves"], footer)),
        "reliability": str(plot_reliability(out / "reliability.png", curves["reliability"], footer)),
        "confusion": str(plot_confusion(out / "confusion.png", image, study, footer)),
        "skipped": str(write_skipped_csv(out / "skipped.csv", skipped, warnings=warned)),
        "warnings": str(out / "warnings.csv"),
        "predictions": str(_write_rows(out / "predictions.csv", curves["predictions"])),
        "metrics": str(out / "metrics.json"),
    }
    atomic_write_json(out / "metrics.json", {**result, "files": files})
    return files


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """The per-film predictions ``evaluate`` scored (label, probability shown, raw probability) as CSV."""
    import csv
    import io

    buf = io.StringIO()
    fields = ["path", "study", "region", "label", "probability", "prediction", "probability_raw", "threshold"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
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
    threshold: float | None = None,
    dataset_options: dict[str, Any] | None = None,
    progress: bool = False,
    tta: bool = False,
    strict: bool = False,
    uncalibrated: bool = False,
    study_aggregation: str = "mean",
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Per-image rows ``{path, study, region, label, probability, prediction, study_probability, probability_raw,
    threshold}``, and skipped files.

    ``probability`` is calibrated when the sidecar holds a calibration (``uncalibrated``: raw), ``probability_raw``
    is the model's own; ``threshold`` None: the sidecar's operating point, else 0.5
    (:func:`xray_xai.models.operating.resolve_threshold`); ``study_probability`` aggregates the study's views by
    ``study_aggregation`` (mean, max, noisy-or).

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
    from xray_xai.models.calibration import calibrated
    from xray_xai.models.operating import resolve_threshold

    raw = probs
    probs = calibrated(m, raw, raw=uncalibrated)
    threshold, _ = resolve_threshold(m, threshold, raw=uncalibrated)
    s_ids, _, s_p = study_scores(kept, probs, study_aggregation)
    per_study = dict(zip(s_ids, s_p.tolist(), strict=True))
    rows = []
    for rec, p, p_raw in zip(kept, probs.tolist(), raw.tolist(), strict=True):
        rows.append(
            {
                "path": str(rec.path),
                "study": rec.study,
                "region": rec.region,
                "label": rec.label,
                "probability": float(p),
                "prediction": "abnormal" if p >= threshold else "normal",
                "study_probability": per_study[rec.study] if rec.study else None,
                "probability_raw": float(p_raw),
                "threshold": threshold,
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
