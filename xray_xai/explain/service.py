"""The ``explain`` service behind ``xray-xai explain`` and ``xray_xai.api.explain``: models x methods x images.

For every selected image, model and method it writes (``formats``) an overlay PNG (the film as the model saw it,
the heatmap and its colour bar, method, model and probability in the title), the raw map (``.npy``) and JSON
metadata, under ``out/<model>/<method>/<stem>.*`` where ``stem`` is the record's ``image_id`` with ``/`` replaced
by ``__`` (stable and unique). Several models or methods also give one comparison figure per image
(``out/compare/<stem>.png``: rows = models, columns = film + methods); the views of a study are drawn together
(``out/studies/...``); ensembles explained ``per_member`` also get one map per member and the disagreement map.
``index.html`` is a self-contained contact sheet; unreadable images are skipped and listed in ``skipped.csv``.
Every file is written atomically; with ``resume`` outputs that already exist are not recomputed.

This module reads the records and runs the batches; the models and explainers run in :mod:`.engine` (the same
engine as :func:`xray_xai.api.explain_films` and the web page), the files are :mod:`.outputs` and :mod:`.figures`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xray_xai._util.slugs import output_stem
from xray_xai.errors import DataError, PluginError, XrayXaiError, one_line
from xray_xai.explain.engine import (
    ModelFilms,
    PreparedFilm,
    check_pair,
    explain_prepared,
    make_explainer,
    method_list,
    model_labels,
    prepare_film,
    where,
)
from xray_xai.explain.outputs import FORMATS, Outputs
from xray_xai.sdk.interfaces import Explainer, Explanation, Model, Problem, Record

__all__ = ["FORMATS", "ExplainResult", "explain", "gather_records"]

Only = Literal["all", "predicted-abnormal"]


@dataclass
class ExplainResult:
    """What :func:`explain` did. ``items`` has one dict per (image, model, method) explained; with ``out=None``
    each item also carries its :class:`Explanation` under ``"explanation"`` and the film under ``"film"``."""

    out: Path | None
    models: list[str]
    methods: list[str]
    items: list[dict[str, Any]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  #: data set warnings (images still explained)
    resumed: int = 0
    index: Path | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays)."""
        items = [{k: v for k, v in it.items() if k not in ("explanation", "film")} for it in self.items]
        return {
            "out": str(self.out) if self.out else None,
            "models": self.models,
            "methods": self.methods,
            "n_explained": len(self.items),
            "n_resumed": self.resumed,
            "n_skipped": len(self.skipped),
            "items": items,
            "figures": self.figures,
            "skipped": [{"path": p.path, "problem": p.problem} for p in self.skipped],
            "warnings": [{"path": p.path, "problem": p.problem} for p in self.warnings],
            "index": str(self.index) if self.index else None,
            "seconds": round(self.seconds, 3),
        }


# -- naming ------------------------------------------------------------------------------------------------------
def _unique_stems(records: Sequence[Record]) -> list[str]:
    """Stems for the records; a repeated image id gets a numbered suffix in record order (still deterministic)."""
    seen: dict[str, int] = {}
    out = []
    for rec in records:
        stem = output_stem(rec.image_id)
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        out.append(stem if n == 0 else f"{stem}--{n + 1}")
    return out


# -- inputs ------------------------------------------------------------------------------------------------------
def _load_models(models: Sequence[str | Path | Model], checkpoint: str | Path | None) -> list[Model]:
    """Models from names (newest in the store), checkpoint paths or instances, with ``checkpoint`` read by the one
    rule of :func:`xray_xai.models.resolve.resolve_models` (a name and a checkpoint together name one model)."""
    from xray_xai.models.resolve import resolve_models

    if not models and checkpoint is None:
        raise PluginError("no model given: pass a model name, a checkpoint path or a Model")
    return resolve_models(list(models), checkpoint)


@dataclass
class _Job:
    """One run's fixed parts: the records, the models and explainers, the options, what is written and found."""

    recs: list[Record]
    stems: list[str]
    models: list[Model]
    labels: list[str]
    explainers: dict[str, Explainer]
    target: str
    threshold: float | None  #: None: each model's recorded operating point (else 0.5)
    only: Only
    result: ExplainResult
    outputs: Outputs | None
    strict: bool = False  #: refuse films whose stream ends early, however little is missing
    unreadable: list[Problem] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return list(self.explainers)


# -- the service -------------------------------------------------------------------------------------------------
def explain(
    models: str | Path | Model | Sequence[str | Path | Model] = (),
    methods: str | Sequence[str] | None = None,
    *,
    inputs: Sequence[str | Path] = (),
    data: str | Path | None = None,
    split: str | None = None,
    dataset: str | None = None,
    records: Sequence[Record] | None = None,
    checkpoint: str | Path | None = None,
    only: Only = "all",
    threshold: float | None = None,
    out: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
    per_member: bool = False,
    batch_size: int = 8,
    target: str = "abnormal",
    seed: int | None = 0,
    resume: bool = False,
    params: dict[str, dict[str, Any]] | None = None,
    limit: int | None = None,
    show_progress: bool = True,
    strict: bool = False,
) -> ExplainResult:
    """Explain images with every model and method; write figures, maps and metadata under ``out``.

    ``methods``: names or comma-separated lists; None is :data:`xray_xai.defaults.DEFAULT_METHOD` (``layercam``,
    as for the CLI, the API and the web page). Images come from
    ``records``, or ``inputs`` (files/folders), or the data set at ``data`` (``split``, ``dataset`` plugin name;
    auto-detected by default). ``only="predicted-abnormal"`` keeps the images that at least one model predicts
    abnormal (probability >= ``threshold``; None: each model's recorded operating point, else 0.5). ``params`` maps
    a method name to its options. With ``out=None`` nothing is written and the explanations are returned in
    memory. Films whose stream ends early are explained with a warning (``warnings``, ``warnings.csv``) when little
    is missing, skipped when ``strict`` (:func:`xray_xai.data.images.read_film`).
    """
    from xray_xai._util.progress import ticker

    start = time.perf_counter()
    names, fmt = _check_options(methods, formats, only, batch_size, target)
    loaded = _load_models([models] if isinstance(models, str | Path | Model) else list(models), checkpoint)
    explainers = {m: make_explainer(m, seed=seed, params=(params or {}).get(m)) for m in names}
    for model in loaded:  # refuse incompatible pairs before reading a single image
        for explainer_obj in explainers.values():
            check_pair(explainer_obj, model)
    recs, skipped, warnings = gather_records(records, inputs, data, split, dataset, limit)
    labels = model_labels(loaded)
    out_dir = Path(out) if out is not None else None
    job = _Job(
        recs=recs,
        stems=_unique_stems(recs),
        models=loaded,
        labels=labels,
        explainers=explainers,
        target=target,
        threshold=threshold,
        only=only,
        result=ExplainResult(out=out_dir, models=labels, methods=names, skipped=skipped, warnings=warnings),
        outputs=None if out_dir is None else Outputs(out_dir, labels, names, fmt, per_member, target),
        strict=strict,
    )
    todo = _resumed(job) if resume else list(range(len(recs)))
    with ticker(len(todo), "explaining", enabled=show_progress, unit="images") as bar:  # per image, not per batch
        for batch in _batches(recs, todo, batch_size):
            _explain_batch(job, batch)
            bar.advance(len(batch))
    return _finish(job, start)


def _check_options(
    methods: str | Sequence[str] | None, formats: Sequence[str], only: str, batch_size: int, target: str
) -> tuple[list[str], list[str]]:
    """The method names and output formats, every option checked before anything heavy happens."""
    from xray_xai.sdk.explainer import score_sign

    score_sign(target)
    names = method_list(methods)
    if not names:
        raise PluginError("no explanation method given")
    fmt = [f.strip().lower() for f in formats if f.strip()]
    bad = [f for f in fmt if f not in FORMATS]
    if bad:
        raise PluginError(f"unknown output format(s) {', '.join(bad)}; expected some of {', '.join(FORMATS)}")
    if only not in ("all", "predicted-abnormal"):
        raise PluginError(f"unknown selection {only!r}; expected 'all' or 'predicted-abnormal'")
    if batch_size < 1:
        raise PluginError(f"batch size must be positive, got {batch_size}")
    return names, fmt


def gather_records(
    records: Sequence[Record] | None,
    inputs: Sequence[str | Path],
    data: str | Path | None,
    split: str | None,
    dataset: str | None,
    limit: int | None,
) -> tuple[list[Record], list[Problem], list[Problem]]:
    """The records to explain (at most ``limit``), the paths skipped and the data set's warnings: the one image
    selection of ``explain``, local or on Ray (:func:`xray_xai.scale.ray.explain_command`)."""
    skipped: list[Problem] = []
    warnings: list[Problem] = []
    if records is not None:
        recs = list(records)
    elif inputs:
        from xray_xai.data.records import records_from_paths

        recs, problems = records_from_paths(inputs)
        skipped.extend(problems)
    elif data is not None:
        from xray_xai.data.datasets import open_dataset

        ds = open_dataset(data, dataset)
        recs = ds.records(split)
        skipped.extend(p for p in ds.problems if p.severity == "error")
        warnings.extend(p for p in ds.problems if p.severity != "error")
    else:
        raise DataError(None, "nothing to explain: give input images (--input) or a data set (--data)")
    if limit is not None:
        recs = recs[: max(0, int(limit))]
    return recs, skipped, warnings


def _resumed(job: _Job) -> list[int]:
    """The records still to explain; those whose outputs all exist count as resumed (and stay on the sheet)."""
    todo = []
    for i, (rec, stem) in enumerate(zip(job.recs, job.stems, strict=True)):
        if job.outputs is not None and job.outputs.done(stem):
            job.result.resumed += 1
            job.outputs.add_to_sheet(rec, stem, None)
        else:
            todo.append(i)
    return todo


def _explain_batch(job: _Job, batch: Sequence[int]) -> None:
    """Read, select and explain one batch; keep (or write) one item per image, model and method."""
    prepared = _prepare(job, batch)
    if prepared and job.only == "predicted-abnormal":
        prepared = _select_abnormal(job, prepared)
    if not prepared:
        return
    indices = [i for i, _ in prepared]
    at = where([str(job.recs[i].path) for i in indices])
    runs = explain_prepared(
        [p for _, p in prepared], job.models, job.labels, job.explainers, target=job.target, where=at,
        threshold=job.threshold,
    )  # fmt: skip
    for j, i in enumerate(indices):
        rec, stem = job.recs[i], job.stems[i]
        for run in runs:
            for method in job.methods:
                exp = run.explanation(method)
                item = _item(rec, stem, run.label, method, exp, j, run.threshold)
                if job.outputs is None:
                    item["explanation"] = _slice(exp, j)
                    item["film"] = run.films[j]
                else:
                    item["provenance"] = run.provenance
                    item["files"] = job.outputs.write_item(
                        stem, run.label, method, run.films[j], exp, j, item, run.provenance, run.provenance_name
                    )
                job.result.items.append(item)
        if job.outputs is not None:
            job.result.figures.extend(job.outputs.write_image_figures(rec, stem, runs, j))
    if job.outputs is not None:
        job.result.figures.extend(job.outputs.write_studies(job.recs, indices, runs))


def _finish(job: _Job, start: float) -> ExplainResult:
    """Add the unreadable films to the skipped ones, write the reports; nothing readable at all is an error."""
    result, recs, unreadable = job.result, job.recs, job.unreadable
    result.skipped.extend(unreadable)
    result.seconds = time.perf_counter() - start
    if job.outputs is not None:
        job.outputs.write_reports(result)
    if recs and unreadable and len(unreadable) == len(recs):  # nothing at all could be read: that is an error
        more = f" (and {len(recs) - 1} more, listed in skipped.csv)" if len(recs) > 1 else ""
        raise DataError(unreadable[0].path, f"{unreadable[0].problem}; no image could be read{more}")
    if not recs and result.skipped:  # every input path missing or empty
        raise DataError(result.skipped[0].path, result.skipped[0].problem)
    return result


def _batches(recs: Sequence[Record], todo: Sequence[int], size: int) -> Iterable[list[int]]:
    """Batches of record indices that never split a study (its views are drawn together), in record order."""
    groups: dict[str, list[int]] = {}
    for i in todo:
        groups.setdefault(recs[i].study or f"\0{i}", []).append(i)
    batch: list[int] = []
    for group in groups.values():
        if batch and len(batch) + len(group) > size:
            yield batch
            batch = []
        batch.extend(group)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _prepare(job: _Job, batch: Sequence[int]) -> list[tuple[int, PreparedFilm]]:
    """Read each film once and preprocess it for every model; unreadable files are listed, not fatal (films kept
    despite damage are listed among the result's warnings)."""
    from xray_xai.data.images import read_film

    out = []
    for i in batch:
        rec = job.recs[i]
        try:
            image, warning = read_film(rec.path, strict=job.strict)
            if warning is not None:
                job.result.warnings.append(warning)
            out.append((i, prepare_film(image, job.models, job.labels)))
        except (XrayXaiError, ValueError, OSError) as exc:
            problem = exc.problem if isinstance(exc, DataError) else one_line(exc)
            job.unreadable.append(Problem(str(rec.path), problem.splitlines()[0]))
    return out


def _select_abnormal(job: _Job, prepared: list[tuple[int, PreparedFilm]]) -> list[tuple[int, PreparedFilm]]:
    """Keep images that at least one model predicts abnormal (so comparison figures stay complete)."""
    at = where([str(job.recs[i].path) for i, _ in prepared])
    runs: list[ModelFilms] = explain_prepared(
        [p for _, p in prepared], job.models, job.labels, {}, predict=True, where=at, threshold=job.threshold
    )
    keep = np.zeros(len(prepared), dtype=bool)
    for run in runs:
        keep |= run.probabilities >= run.threshold
    return [q for q, k in zip(prepared, keep, strict=True) if k]


def _slice(exp: Explanation, j: int) -> Explanation:
    extras = {
        k: (v[:, j] if k in ("member_maps", "member_probabilities") else v[j]) if isinstance(v, np.ndarray) else v
        for k, v in exp.extras.items()
    }
    return Explanation(
        maps=exp.maps[j : j + 1],
        raw=exp.raw[j : j + 1],
        probabilities=exp.probabilities[j : j + 1],
        method=exp.method,
        target=exp.target,
        params=exp.params,
        model=exp.model,
        model_fingerprint=exp.model_fingerprint,
        seed=exp.seed,
        extras=extras,
    )


def _item(
    rec: Record, stem: str, label: str, method: str, exp: Explanation, j: int, threshold: float
) -> dict[str, Any]:
    meta = exp.metadata(j)
    prob = float(exp.probabilities[j])
    raw = exp.extras.get("probabilities_raw")
    return {
        "image_id": rec.image_id,
        "stem": stem,
        "path": str(rec.path),
        "study": rec.study,
        "view": rec.view,
        "region": rec.region,
        "label": rec.label,
        "model_label": label,
        **meta,
        "probability": prob,
        "probability_raw": float(raw[j]) if raw is not None else prob,
        "predicted": "abnormal" if prob >= threshold else "normal",
        "threshold": threshold,
    }
