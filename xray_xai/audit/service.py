"""The audit service: score every (model, explanation method) pair on the same images, beside model-free controls.

For each pair the maps are computed once and every metric reads them:

* **faithfulness** - deletion/insertion AUC of P(abnormal) (lower deletion / higher insertion = more faithful), beside
  the same curves in random order (computed once per model and shared by its methods);
* **sanity** - cascading randomisation of the model from the output layer down; Spearman and SSIM between the maps
  on the trained and on the randomised model at each stage; pass when the mean Spearman at full randomisation is
  below ``sanity_threshold``;
* **localisation** (abnormal images with ground truth) - pointing game (exact and with a tolerance), IoU of the map
  thresholded by Otsu and by a threshold tuned by 2-fold cross-fitting (tuned on one half of the images, scored on
  the other), share of relevance in the mask; all with seeded bootstrap 95% intervals;
* **controls** - film brightness, Sobel edges, seeded noise (model-free, shared by a model's methods) and the same
  method on the fully randomised model, scored with the same metrics;
* **shortcuts** - share of relevance in a border band, in burned-in marker boxes and in collimated borders where
  the records mark them (``record.metadata["marker_box"]``, ``record.metadata["collimation"]``, see
  :func:`marker_mask` and :func:`collimation_mask`);
* **breakdowns** of each per-image score by region, correct vs wrong prediction and confidence bin;
* best- and worst-localised examples as overlay PNGs (when ``out_dir`` is given).

``audit(...)`` returns one JSON-ready dict and, with ``out_dir``, writes ``report.html`` and ``report.json`` there;
films that cannot be read are skipped and listed (``"skipped"`` in the dict and ``skipped.csv`` in ``out_dir``).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from xray_xai._util.fsutil import write_skipped_csv
from xray_xai._util.progress import Ticker
from xray_xai._util.slugs import slug
from xray_xai.audit import scores as am
from xray_xai.audit.inputs import AuditInputs, collimation_mask, marker_mask, prepare_inputs, select_records
from xray_xai.audit.scoring import (
    PER_IMAGE_SCORES,
    AuditSettings,
    ModelContext,
    breakdowns,
    control_scores,
    examples,
    explain_maps,
    model_context,
    per_image_rows,
    score_controls,
    score_maps,
    summarize_faithfulness,
)
from xray_xai.errors import DataError, XrayXaiError
from xray_xai.sdk.interfaces import DatasetPlugin, Model, Preprocessing, Problem, Record

__all__ = [
    "PER_IMAGE_SCORES",
    "AuditInputs",
    "AuditSettings",
    "audit",
    "audit_records",
    "collimation_mask",
    "marker_mask",
    "prepare_inputs",
    "select_records",
    "split_records",
]


def _model_label(model: Any, given: Any, taken: Collection[str]) -> str:
    """The name the report shows: a registered name as given, else the model's plugin name (a checkpoint path is
    too long for a table); ``#2``, ``#3``... when two audited models share it."""
    name = getattr(model, "name", "") or type(model).__name__
    label = given if isinstance(given, str) and not Path(given).exists() else name
    k = 2
    base = label
    while label in taken:
        label, k = f"{base}#{k}", k + 1
    return label


def _load(given: str | Model) -> Model:
    """A model as given, or loaded from the store (a registered name or a checkpoint path); in eval mode."""
    import torch

    if isinstance(given, str):
        from xray_xai.models.store import load_model

        model: Model = load_model(given)
    else:
        model = given
    if isinstance(model, torch.nn.Module):
        model.eval()
    return model


def _config(settings: AuditSettings, methods: Sequence[str], options: dict[str, Any]) -> dict[str, Any]:
    """The ``"config"`` block of the result: every setting the numbers depend on."""
    s = settings
    return {
        "methods": list(methods),
        "seed": s.seed,
        "steps": s.steps,
        "grid": s.grid,
        "baseline": s.baseline,
        "sanity_stages": s.sanity_stages,
        "sanity_n": s.sanity_n,
        "sanity_threshold": s.sanity_threshold,
        "sanity_rule": f"pass if mean Spearman at full randomisation (all images) < {s.sanity_threshold:g}",
        "tolerance_frac": s.tolerance_frac,
        "border_frac": s.border_frac,
        "n_boot": s.n_boot,
        "curve_check_n": s.curve_check_n,
        "ci_level": 0.95,
        "threshold_tuning": "2-fold cross-fitting on the audited images",
        "explainer_options": options,
    }


def _model_block(model: Model, label: str, ctx: ModelContext, settings: AuditSettings) -> dict[str, Any]:
    """The ``"models"`` entry of one model: its accuracy, random-order curves and model-free controls (the step
    shared by all its methods)."""
    import numpy as np

    from xray_xai.sdk.provenance import provenance

    t0 = time.perf_counter()
    random_faith, controls = score_controls(ctx, settings.control_faithfulness)
    labels = np.array([np.nan if r.label is None else r.label for r in ctx.inputs.records], dtype=float)
    known = np.isfinite(labels)
    hits = (ctx.probs >= ctx.threshold) == labels
    return {
        "name": getattr(model, "name", label),
        "fingerprint": model.fingerprint() if hasattr(model, "fingerprint") else "",
        "provenance": provenance(model).to_dict(),  # name, training data, AUROC: the report shows it
        "input_size": int(ctx.inputs.images.shape[-1]),
        "n_images": len(ctx.inputs.records),
        "n_localisation": len(ctx.gt_idx),
        "accuracy": None if not known.any() else round(float(hits[known].mean()), 6),
        "random_order": summarize_faithfulness(random_faith, ctx),
        "controls": controls,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _audit_pair(
    ctx: ModelContext,
    model: Model,
    label: str,
    method: str,
    options: Mapping[str, Any],
    model_block: Mapping[str, Any],
    settings: AuditSettings,
    out_dir: Path | None,
    shown: _PairProgress | None = None,
) -> dict[str, Any]:
    """One (model, method) pair: the maps, their scores, the sanity cascade, the randomised-model control, the
    breakdowns and the example overlays; ``"status": "skipped"`` when the method cannot serve the model. ``shown``
    follows the progress image by image (it does not change what is computed)."""
    from xray_xai import get_explainer
    from xray_xai.audit.sanity import sanity_cascade

    s = settings
    t0 = time.perf_counter()
    pair: dict[str, Any] = {"model": label, "method": method}
    try:
        explainer = get_explainer(method)(**options)
        explainer.check_model(model)
        maps = explain_maps(explainer, model, ctx.inputs.images, s.batch_size, shown.maps if shown else None)
    except XrayXaiError as exc:  # a method the model cannot serve (PluginError) or bad options
        return pair | {"status": "skipped", "reason": str(exc)}
    scored = score_maps(shown.counting(ctx) if shown else ctx, maps, s.curve_check_n)
    if shown is not None:
        shown.phase("sanity cascade")
    sanity = sanity_cascade(explainer, model, ctx.inputs.images, maps, s, shown.sanity if shown else None)
    pair["sanity"] = sanity.summary
    controls = dict(model_block["controls"])
    if sanity.randomized_maps is not None:
        rmaps = sanity.randomized_maps
        cf = ctx.faith(rmaps) if s.control_faithfulness else None
        controls["randomized-model"] = control_scores(ctx, rmaps, cf)
    random_order = model_block["random_order"]
    per = scored.per_image
    return pair | {
        "status": "ok",
        "faithfulness": summarize_faithfulness(scored.faithfulness, ctx)
        | {"random_deletion_auc": random_order["deletion_auc"]}
        | {"random_insertion_auc": random_order["insertion_auc"]}
        | ({"curve_error": scored.curve_error} if scored.curve_error else {}),
        "localisation": scored.localisation,
        "shortcuts": scored.shortcuts,
        "controls": controls,
        "breakdowns": breakdowns(ctx, per),
        "examples": examples(ctx, maps, per, s.n_examples, out_dir, f"{slug(label)}__{slug(method)}"),
        "per_image": per_image_rows(ctx, per),
        "seconds": round(time.perf_counter() - t0, 3),
    }


class _PairProgress:
    """The progress of one (model, method) pair, in images: a third as its maps are explained (per batch), a third
    as the faithfulness curves are evaluated (counted from the model inputs they predict: ``2 * steps`` per image),
    a third as the sanity cascade explains the randomised models. Only counts: the same calls in the same order."""

    def __init__(self, bar: Ticker, name: str, n_images: int, settings: AuditSettings) -> None:
        self.bar, self.name, self.n = bar, name, n_images
        self.base = bar.done
        self.per_image_inputs = 2 * max(1, settings.steps)
        sub = min(settings.sanity_n, n_images)
        self.sanity_images = max(1, settings.sanity_stages * sub + n_images - sub)
        self.done = {"maps": 0.0, "faithfulness": 0.0, "sanity": 0.0}
        self.phase("maps")

    def phase(self, what: str) -> None:
        self.bar.describe(f"{self.name}: {what}")

    def _add(self, part: str, share: float) -> None:
        self.done[part] = min(self.done[part] + share, 1.0)
        self.bar.update(self.base + self.n * sum(self.done.values()) / 3)

    def maps(self, k: int) -> None:
        self._add("maps", k / max(1, self.n))

    def sanity(self, k: int) -> None:
        self._add("sanity", k / self.sanity_images)

    def counting(self, ctx: ModelContext) -> ModelContext:
        """``ctx`` whose faithfulness predictions are counted as they are made."""
        from dataclasses import replace

        predict = ctx.faith.predict

        def counted(x: Any) -> Any:
            out = predict(x)
            self._add("faithfulness", len(x) / (self.per_image_inputs * max(1, self.n)))
            return out

        self.phase("faithfulness curves")
        return replace(ctx, faith=replace(ctx.faith, predict=counted))

    def finish(self) -> None:
        self.bar.update(self.base + self.n)


def _note_skipped(inputs: AuditInputs, skipped: list[Problem], warned: list[Problem], result: dict[str, Any]) -> None:
    """Add the films ``inputs`` could not read, and those kept despite damage, to the result (once each, whichever
    model met them first)."""
    for prob in inputs.skipped:
        if prob not in skipped:
            skipped.append(prob)
            result["problems"].append(str(prob))
            result["skipped"].append({"path": prob.path, "problem": prob.problem})
    for prob in inputs.warnings:
        if prob not in warned:
            warned.append(prob)
            result["warnings"].append({"path": prob.path, "problem": prob.problem})


# -- the service ---------------------------------------------------------------------------------------------------
def audit_records(
    models: Sequence[str | Model],
    methods: Sequence[str],
    records: Sequence[Record],
    *,
    seed: int = 0,
    steps: int = 32,
    grid: int = 8,
    baseline: str = "blur",
    batch_size: int = 16,
    faithfulness_batch_size: int = am.FAITHFULNESS_BATCH_SIZE,
    sanity_stages: int = 4,
    sanity_n: int = 16,
    sanity_threshold: float = am.SANITY_THRESHOLD,
    tolerance_frac: float = am.DEFAULT_TOLERANCE_FRAC,
    border_frac: float = am.DEFAULT_BORDER_FRAC,
    n_boot: int = 1000,
    n_examples: int = 3,
    control_faithfulness: bool = True,
    channels_last: bool = True,
    curve_check_n: int = 0,
    explainer_options: Mapping[str, Mapping[str, Any]] | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    strict: bool = False,
) -> dict[str, Any]:
    """Audit already selected ``records`` (see :func:`audit` for the meaning of every option).

    For each model: read the films at its input geometry (once per distinct preprocessing), predict them, score the
    model-free controls (:func:`~xray_xai.audit.scoring.score_controls`); then for each method score its maps
    (:func:`~xray_xai.audit.scoring.score_maps`) and run the sanity cascade
    (:func:`~xray_xai.audit.sanity.sanity_cascade`).
    """
    from xray_xai._util.progress import ticker

    if not records:
        raise DataError(None, "no images to audit")
    if not models or not methods:
        raise XrayXaiError("audit needs at least one model and one method")
    s = AuditSettings(
        seed=seed, steps=steps, grid=grid, baseline=baseline, batch_size=batch_size,
        faithfulness_batch_size=faithfulness_batch_size, sanity_stages=sanity_stages, sanity_n=sanity_n,
        sanity_threshold=sanity_threshold, tolerance_frac=tolerance_frac, border_frac=border_frac, n_boot=n_boot,
        n_examples=n_examples, control_faithfulness=control_faithfulness, channels_last=channels_last,
        curve_check_n=curve_check_n,
    )  # fmt: skip
    out_path = Path(out_dir) if out_dir is not None else None
    options = {k: dict(v) for k, v in (explainer_options or {}).items()}
    cache: dict[Preprocessing, AuditInputs] = {}
    result: dict[str, Any] = {
        "config": _config(s, methods, options),
        "models": {},
        "pairs": [],
        "problems": [],  #: skipped files, one line each (the HTML report and stderr list them)
        "skipped": [],  #: the same as [{"path", "problem"}], also written to out_dir/skipped.csv
        "warnings": [],  #: films kept despite damage, also written to out_dir/warnings.csv
    }
    skipped: list[Problem] = []
    warned: list[Problem] = []
    with ticker(len(models) * len(methods) * len(records), "auditing", enabled=progress, unit="images") as bar:
        for m_index, given in enumerate(models):
            model = _load(given)
            label = _model_label(model, given, result["models"])
            ctx = _context(model, label, records, cache, s, strict, bar)
            _note_skipped(ctx.inputs, skipped, warned, result)
            block = result["models"][label] = _model_block(model, label, ctx, s)
            # the films this model reads (unreadable ones skipped), for the pairs left
            bar.set_total(bar.done + (len(models) - m_index) * len(methods) * len(ctx.inputs.images))
            for method in methods:
                shown = _PairProgress(bar, f"{label} x {method}", len(ctx.inputs.images), s)
                result["pairs"].append(
                    _audit_pair(ctx, model, label, method, options.get(method, {}), block, s, out_path, shown)
                )
                shown.finish()
    if out_path is not None:
        result["skipped_csv"] = str(write_skipped_csv(out_path / "skipped.csv", skipped, warnings=warned))
    return result


def _context(
    model: Model,
    label: str,
    records: Sequence[Record],
    cache: dict[Preprocessing, AuditInputs],
    s: AuditSettings,
    strict: bool,
    bar: Ticker,
) -> ModelContext:
    """The films at ``model``'s geometry (read once per distinct preprocessing) and its predictions on them."""
    pre = model.preprocessing
    if pre not in cache:
        bar.describe(f"{label}: reading films")
        cache[pre] = prepare_inputs(records, pre, strict=strict)
    bar.describe(f"{label}: predicting, controls")
    return model_context(model, cache[pre], s)


def _split_records(
    data_root: str | Path | None, dataset: str | DatasetPlugin | None, split: str
) -> tuple[DatasetPlugin, list[Record]]:
    """The data set (opened unless given open) and the records of ``split`` (``"all"``: every split)."""
    if isinstance(dataset, DatasetPlugin):
        ds = dataset
    else:
        if data_root is None:
            raise DataError(None, "audit needs a data folder (data_root) or an opened dataset")
        from xray_xai.data.datasets import open_dataset

        ds = open_dataset(data_root, name=dataset)
    split_arg = None if split == "all" else split
    if split_arg is not None and split_arg not in ds.splits:
        raise DataError(ds.root, f"dataset {ds.name!r} has no split {split!r} (splits: {', '.join(ds.splits)}, all)")
    records = ds.records(split_arg)
    if not records:
        raise DataError(ds.root, f"split {split!r} holds no images")
    return ds, records


#: the data set and the records of a split (the leaderboard reads its films the same way)
split_records = _split_records


def audit(
    models: Sequence[str | Model],
    methods: Sequence[str],
    data_root: str | Path | None,
    *,
    dataset: str | DatasetPlugin | None = None,
    split: str = "test",
    n: int = 100,
    seed: int = 0,
    steps: int = 32,
    grid: int = 8,
    batch_size: int = 16,
    out_dir: str | Path | None = None,
    progress: bool = True,
    title: str = "xray-xai audit",
    **options: Any,
) -> dict[str, Any]:
    """Score every (model, method) pair on ``n`` images of ``split`` and return the grid as a JSON-ready dict.

    ``models``: registered names (the latest trained checkpoint in the store), checkpoint paths, or Model objects.
    ``methods``: explainer names. ``dataset``: a dataset plugin name (auto-detected from ``data_root`` when None)
    or an opened DatasetPlugin. ``steps``/``grid``: deletion/insertion steps and cell size in pixels (1 = pixel by
    pixel). ``batch_size``: images per explainer/model call. With ``out_dir``, overlays go to
    ``out_dir/examples`` and ``report.html`` / ``report.json`` are written there (paths under
    ``result["report"]``).

    Further keyword options go to :func:`audit_records`:

    * ``baseline`` ("blur" | "mean"): what removed pixels become;
    * ``faithfulness_batch_size`` (8, :data:`xray_xai.audit.scores.FAITHFULNESS_BATCH_SIZE`): perturbed inputs per
      forward pass (small batches are faster on CPU; try larger ones on a GPU);
    * ``channels_last`` (True): evaluate the curves on a channels-last copy of a torch model (faster on CPU);
    * ``sanity_stages`` (4), ``sanity_n`` (16), ``sanity_threshold`` (0.5): randomisation stages, images explained
      at each stage, and the pass rule (mean Spearman at full randomisation below the threshold);
    * ``tolerance_frac`` (0.035), ``border_frac`` (0.08): pointing tolerance and border band, fractions of the side;
    * ``n_boot`` (1000): bootstrap resamples; ``n_examples`` (3): best/worst overlays per pair;
    * ``control_faithfulness`` (True): also run the curves for the control maps (the costliest part);
    * ``curve_check_n`` (0): on that many images, also compute fine curves (112 steps, pixel grid) and report the
      error of the audit's cheaper curves against them (``faithfulness.curve_error``);
    * ``explainer_options``: ``{method: {param: value}}`` passed to each explainer;
    * ``strict`` (False): skip films whose stream ends early however little is missing (by default they are read
      and listed in ``"warnings"`` and ``warnings.csv``).
    """
    ds, records = _split_records(data_root, dataset, split)
    chosen = select_records(records, n, seed)
    result = audit_records(
        models,
        methods,
        chosen,
        seed=seed,
        steps=steps,
        grid=grid,
        batch_size=batch_size,
        out_dir=out_dir,
        progress=progress,
        **options,
    )
    result["data"] = {
        "dataset": ds.name,
        "root": str(ds.root),
        "split": split,
        "n_requested": n,
        "n_selected": len(chosen),
        "selection": "seeded; up to half abnormal images with ground truth, the rest at random",
        "dataset_problems": [str(p) for p in ds.problems[:50]],
        "n_dataset_problems": len(ds.problems),
    }
    if out_dir is not None:
        from xray_xai.report.html import write_report

        html = write_report(out_dir, audit=result, title=title)
        result["report"] = {"html": str(html), "json": str(Path(out_dir) / "report.json")}
    return result
