"""Scoring maps for one audited model: the settings, the model's context, the controls and one (model, method) pair.

The audit service (:mod:`xray_xai.audit.service`) runs, for each model, :func:`model_context` (predictions, ground
truth folds, border band, the deletion/insertion runner) and :func:`score_controls` (random-order curves and the
model-free control maps, shared by the model's methods); then, for each method, :func:`explain_maps`,
:func:`score_maps` (faithfulness, localisation, shortcuts, per-image scores) and the sanity cascade of
:mod:`xray_xai.audit.sanity`. Every score is computed by :mod:`xray_xai.audit.scores`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xray_xai.audit import scores as am
from xray_xai.audit.inputs import AuditInputs
from xray_xai.defaults import DECISION_THRESHOLD
from xray_xai.sdk.interfaces import Model

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "PER_IMAGE_SCORES",
    "AuditSettings",
    "Faithfulness",
    "ModelContext",
    "PairScores",
    "explain_maps",
    "localisation",
    "model_context",
    "predict_fn",
    "score_controls",
    "score_maps",
    "summarize_faithfulness",
]

#: per-image scores kept for the breakdowns and the per-image table (name -> what it measures)
PER_IMAGE_SCORES: dict[str, str] = {
    "deletion_auc": "area under the deletion curve (lower = more faithful)",
    "insertion_auc": "area under the insertion curve (higher = more faithful)",
    "pointing": "maximum of the map inside the ground truth",
    "pointing_tol": "maximum within the tolerance of the ground truth",
    "iou_otsu": "IoU of the Otsu-thresholded map with the ground truth",
    "mass_in_mask": "share of relevance inside the ground truth",
    "border_share": "share of relevance in the border band",
}


@dataclass(frozen=True)
class AuditSettings:
    """Every option of one audit (see :func:`xray_xai.audit.service.audit` for their meaning)."""

    seed: int = 0
    steps: int = 32
    grid: int = 8
    baseline: str = "blur"
    batch_size: int = 16
    faithfulness_batch_size: int = am.FAITHFULNESS_BATCH_SIZE
    sanity_stages: int = 4
    sanity_n: int = 16
    sanity_threshold: float = am.SANITY_THRESHOLD
    tolerance_frac: float = am.DEFAULT_TOLERANCE_FRAC
    border_frac: float = am.DEFAULT_BORDER_FRAC
    n_boot: int = 1000
    n_examples: int = 3
    control_faithfulness: bool = True
    channels_last: bool = True
    curve_check_n: int = 0


# -- calling the model and the explainer ----------------------------------------------------------------------------
def predict_fn(model: Model, channels_last: bool = False) -> Any:
    """P(abnormal) under ``inference_mode``. With ``channels_last`` a torch model is deep-copied into that memory
    format (the caller's model is left as it is): oneDNN convolutions on CPU run markedly faster in it, which
    matters for the thousands of perturbed inputs of the deletion/insertion curves."""
    import copy

    import torch

    net: Any = model
    if channels_last and isinstance(model, torch.nn.Module):
        net = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if net is not model:
                x = x.contiguous(memory_format=torch.channels_last)
            return net.predict_proba(x).reshape(-1)

    return predict


def _predict(model: Model, images: torch.Tensor, batch_size: int) -> np.ndarray:
    fn = predict_fn(model)
    out = [fn(images[i : i + batch_size]).float().cpu().numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float64)


def explain_maps(
    explainer: Any, model: Model, images: torch.Tensor, batch_size: int, tick: Callable[[int], None] | None = None
) -> np.ndarray:
    """Maps ``(N, S, S)`` in [0, 1], resized to the input when an explainer returns another size; ``tick`` is
    called with the number of images of each batch explained (progress)."""
    import torch
    import torch.nn.functional as F

    size = tuple(images.shape[-2:])
    parts = []
    for i in range(0, len(images), batch_size):
        maps = np.asarray(explainer.explain(model, images[i : i + batch_size]).maps, dtype=np.float32)
        if maps.shape[-2:] != size:
            maps = F.interpolate(torch.from_numpy(maps)[:, None], size=size, mode="bilinear")[:, 0].numpy()
        parts.append(np.clip(np.nan_to_num(maps), 0.0, 1.0))
        if tick is not None:
            tick(len(maps))
    return np.concatenate(parts) if parts else np.zeros((0, *size), np.float32)


@dataclass
class Faithfulness:
    """Deletion/insertion curves of one model on its audited images (the same settings for every map)."""

    predict: Any
    images: torch.Tensor
    seed: int
    kwargs: dict[str, Any]  #: steps, grid, baseline, batch_size of :func:`~xray_xai.audit.scores.faithfulness_curves`

    def __call__(self, maps: np.ndarray | None) -> dict[str, Any]:
        """Per-image AUCs ``{"deletion", "insertion"}`` and the curves (``"_curves"``); ``None``: random order."""
        curves = am.faithfulness_curves(self.predict, self.images, maps, seed=self.seed, **self.kwargs)
        return {"deletion": curves.auc("deletion"), "insertion": curves.auc("insertion"), "_curves": curves}

    def check(self, maps: np.ndarray, used: am.FaithfulnessCurves, k: int) -> dict[str, Any]:
        """How far the audit's curves (its steps and grid) are from fine ones (112 steps, pixel grid) on ``k``
        images."""
        k = min(k, len(self.images))
        fine_kw = {**self.kwargs, "steps": 112, "grid": 1}
        fine = am.faithfulness_curves(self.predict, self.images[:k], maps[:k], **fine_kw)
        out: dict[str, Any] = {"n_images": k, "reference": {"steps": 112, "grid": 1}}
        for kind in ("deletion", "insertion"):
            out[kind] = am.curve_error(fine.curves[kind], used.curves[kind][:k], fine.fractions, used.fractions)
        return out


@dataclass
class ModelContext:
    """Everything fixed for one model: inputs, predictions, ground truth subsets, shared baselines."""

    inputs: AuditInputs
    probs: np.ndarray
    gt_idx: list[int]
    folds: tuple[list[int], list[int]]
    border: np.ndarray
    tolerance: float
    n_boot: int
    seed: int
    faith: Faithfulness
    #: the model's threshold (:func:`xray_xai.models.operating.resolve_threshold`); ``probs`` are calibrated
    threshold: float = DECISION_THRESHOLD


def model_context(model: Model, inputs: AuditInputs, settings: AuditSettings) -> ModelContext:
    """Predict the audited images once and fix what every method of ``model`` is scored against: the abnormal
    images with ground truth (split in two seeded folds for the tuned threshold), the border band, the tolerance."""
    s = settings
    from xray_xai.models.calibration import calibrated
    from xray_xai.models.operating import resolve_threshold

    probs = calibrated(model, _predict(model, inputs.images, s.batch_size))  # the probability shown for the model
    side = int(inputs.images.shape[-1])
    gt_idx = [i for i, r in enumerate(inputs.records) if r.label == 1 and inputs.gt[i] is not None]
    perm = [gt_idx[j] for j in np.random.default_rng(s.seed).permutation(len(gt_idx))]
    fkw = {"steps": s.steps, "grid": s.grid, "baseline": s.baseline, "batch_size": s.faithfulness_batch_size}
    return ModelContext(
        inputs=inputs,
        probs=probs,
        threshold=resolve_threshold(model)[0],
        gt_idx=gt_idx,
        folds=(sorted(perm[: len(perm) // 2]), sorted(perm[len(perm) // 2 :])),
        border=am.border_band_mask((side, side), s.border_frac),
        tolerance=am.tolerance_px(side, s.tolerance_frac),
        n_boot=s.n_boot,
        seed=s.seed,
        faith=Faithfulness(predict_fn(model, channels_last=s.channels_last), inputs.images, s.seed, fkw),
    )


# -- scores of one set of maps --------------------------------------------------------------------------------------
def _stack_masks(masks: Sequence[np.ndarray | None], idx: Sequence[int]) -> np.ndarray:
    return np.stack([np.asarray(masks[i], dtype=bool) for i in idx])


def _share(maps: np.ndarray, masks: Sequence[np.ndarray | None]) -> np.ndarray:
    """Mass in each image's region, NaN where the image has none."""
    out = np.full(len(maps), np.nan)
    idx = [i for i, m in enumerate(masks) if m is not None]
    if idx:
        out[idx] = am.mass_in_mask(maps[idx], _stack_masks(masks, idx))
    return out


def _tuned_iou(ctx: ModelContext, maps: np.ndarray, per: dict[str, np.ndarray]) -> list[float]:
    """IoU at a threshold tuned by 2-fold cross-fitting (into ``per["iou_tuned"]``); the thresholds chosen."""
    idx, gt_all = ctx.gt_idx, ctx.inputs.gt
    thresholds: list[float] = []
    fa, fb = ctx.folds
    if fa and fb:
        for tune, score in ((fa, fb), (fb, fa)):
            t = am.tune_threshold(maps[tune], _stack_masks(gt_all, tune))
            per["iou_tuned"][score] = am.iou(maps[score], _stack_masks(gt_all, score), t)
            thresholds.append(t)
    else:  # a single image: tuned and scored on itself (flagged in the note)
        m, gt = maps[idx], _stack_masks(gt_all, idx)
        t = am.tune_threshold(m, gt)
        per["iou_tuned"][idx] = am.iou(m, gt, t)
        thresholds.append(t)
    return thresholds


def _localisation(ctx: ModelContext, maps: np.ndarray) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Localisation summary and per-image scores (NaN outside the ground-truth subset)."""
    n = len(maps)
    per: dict[str, np.ndarray] = {k: np.full(n, np.nan) for k in ("pointing", "pointing_tol", "iou_otsu", "iou_tuned")}
    per["mass_in_mask"] = np.full(n, np.nan)
    idx = ctx.gt_idx
    if not idx:
        return {"n": 0, "note": "no abnormal image with ground truth among the audited images"}, per
    m, gt = maps[idx], _stack_masks(ctx.inputs.gt, idx)
    per["pointing"][idx] = am.pointing_game(m, gt)
    per["pointing_tol"][idx] = am.pointing_game(m, gt, ctx.tolerance)
    per["iou_otsu"][idx] = am.iou(m, gt, am.otsu_thresholds(m))
    per["mass_in_mask"][idx] = am.mass_in_mask(m, gt)
    thresholds = _tuned_iou(ctx, maps, per)
    area = float(np.mean([ctx.inputs.gt[i].mean() for i in idx]))  # type: ignore[union-attr]
    out: dict[str, Any] = {
        name: am.summarize(per[name][idx], n_boot=ctx.n_boot, seed=ctx.seed)
        for name in ("pointing", "pointing_tol", "iou_otsu", "iou_tuned", "mass_in_mask")
    }
    out["n"] = len(idx)
    out["tuned_thresholds"] = thresholds
    out["mask_area_fraction"] = round(area, 6)
    if not all(ctx.folds):
        out["note"] = "one image only: the tuned threshold was chosen on the image it scores"
    return out, per


#: the localisation scores of ``maps`` (one per image of ``ctx``) and their per-image values (the leaderboard's too)
localisation = _localisation


def _shortcuts(ctx: ModelContext, maps: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    border = am.mass_in_mask(maps, np.broadcast_to(ctx.border, maps.shape))
    out: dict[str, Any] = {
        "border_share": am.summarize(border, n_boot=ctx.n_boot, seed=ctx.seed),
        "border_area_fraction": round(float(ctx.border.mean()), 6),
    }
    for key, masks in (("marker", ctx.inputs.markers), ("collimation", ctx.inputs.collimation)):
        present = [m for m in masks if m is not None]
        if present:
            out[f"{key}_share"] = am.summarize(_share(maps, masks), n_boot=ctx.n_boot, seed=ctx.seed)
            out[f"{key}_area_fraction"] = round(float(np.mean([m.mean() for m in present])), 6)
    return out, border


def summarize_faithfulness(aucs: Mapping[str, Any], ctx: ModelContext) -> dict[str, Any]:
    """``{"deletion_auc", "insertion_auc"}`` as bootstrap summaries of the per-image AUCs of :class:`Faithfulness`."""
    return {
        f"{k}_auc": am.summarize(v, n_boot=ctx.n_boot, seed=ctx.seed) for k, v in aucs.items() if not k.startswith("_")
    }


def control_scores(ctx: ModelContext, maps: np.ndarray, faith: Mapping[str, Any] | None) -> dict[str, Any]:
    """The scores a control map gets: localisation, shortcuts and (when computed) faithfulness."""
    loc, _ = _localisation(ctx, maps)
    sc, _ = _shortcuts(ctx, maps)
    block: dict[str, Any] = {"localisation": loc, "shortcuts": sc}
    if faith is not None:
        block["faithfulness"] = summarize_faithfulness(faith, ctx)
    return block


def score_controls(ctx: ModelContext, control_faithfulness: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model-free controls of one model (film brightness, Sobel edges, seeded noise), scored like a method.

    Returns the random-order faithfulness (the curves with cells removed in random order, also the faithfulness of
    the noise control) and ``{control: scores}``; the curves of the other controls only with
    ``control_faithfulness``.
    """
    from xray_xai.audit.controls import control_maps

    random_faith = ctx.faith(None)
    controls: dict[str, Any] = {}
    for cname, cmaps in control_maps(ctx.inputs.films, ctx.seed).items():
        cf = random_faith if cname == "random" else (ctx.faith(cmaps) if control_faithfulness else None)
        controls[cname] = control_scores(ctx, cmaps, cf)
    return random_faith, controls


@dataclass
class PairScores:
    """The scores of one method's maps on one model (before the sanity cascade and the controls)."""

    faithfulness: dict[str, Any]  #: per-image AUCs and curves, as :class:`Faithfulness` returns them
    curve_error: dict[str, Any] | None  #: the curve check, when asked for
    localisation: dict[str, Any]
    shortcuts: dict[str, Any]
    per_image: dict[str, np.ndarray]  #: :data:`PER_IMAGE_SCORES` (and ``iou_tuned``), NaN where undefined


def score_maps(ctx: ModelContext, maps: np.ndarray, curve_check_n: int = 0) -> PairScores:
    """Faithfulness, localisation and shortcut scores of one method's ``maps`` on the model of ``ctx``."""
    f = ctx.faith(maps)
    check = ctx.faith.check(maps, f["_curves"], curve_check_n) if curve_check_n else None
    loc, per = _localisation(ctx, maps)
    sc, border = _shortcuts(ctx, maps)
    per = {"deletion_auc": f["deletion"], "insertion_auc": f["insertion"], **per, "border_share": border}
    return PairScores(faithfulness=f, curve_error=check, localisation=loc, shortcuts=sc, per_image=per)


# -- what the report shows of a pair ---------------------------------------------------------------------------------
def breakdowns(ctx: ModelContext, per: dict[str, np.ndarray]) -> dict[str, Any]:
    """Each per-image score summarised by region, by correct vs wrong prediction and by confidence bin."""
    recs = ctx.inputs.records
    preds = ctx.probs >= ctx.threshold
    groups: dict[str, list[str]] = {
        "region": [r.region or "unknown" for r in recs],
        "prediction": [
            "unlabelled" if r.label is None else ("correct" if bool(p) == bool(r.label) else "wrong")
            for r, p in zip(recs, preds, strict=True)
        ],
        "confidence": am.confidence_bin(ctx.probs),
    }
    out: dict[str, Any] = {}
    for by, labels in groups.items():
        table: dict[str, Any] = {}
        for value in sorted(set(labels)):
            sel = np.array([lab == value for lab in labels])
            table[value] = {"n_images": int(sel.sum())} | {
                name: am.summarize(scores[sel], n_boot=min(ctx.n_boot, 200), seed=ctx.seed)
                for name, scores in per.items()
            }
        out[by] = table
    return out


def per_image_rows(ctx: ModelContext, per: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per audited image: its id, label, region, probability and per-image scores (None where undefined)."""
    return [
        {"image_id": r.image_id, "label": r.label, "region": r.region, "probability": round(float(p), 6)}
        | {k: (None if not np.isfinite(v[i]) else round(float(v[i]), 6)) for k, v in per.items()}
        for i, (r, p) in enumerate(zip(ctx.inputs.records, ctx.probs, strict=True))
    ]


def examples(
    ctx: ModelContext, maps: np.ndarray, per: dict[str, np.ndarray], k: int, out_dir: Path | None, stem: str
) -> dict[str, list[dict[str, Any]]]:
    """Best- and worst-localised images (by mass in mask, then IoU); overlay PNGs written when ``out_dir`` is set."""
    idx = [i for i in ctx.gt_idx if np.isfinite(per["mass_in_mask"][i])]
    if not idx or k <= 0:
        return {"best": [], "worst": []}
    key = np.array([per["mass_in_mask"][i] + 1e-3 * np.nan_to_num(per["iou_otsu"][i]) for i in idx])
    order = [idx[j] for j in np.argsort(-key, kind="stable")]
    k_best = min(k, (len(order) + 1) // 2)  # with few images, best and worst never show the same one
    picks = {"best": order[:k_best], "worst": order[k_best:][::-1][:k]}
    out: dict[str, list[dict[str, Any]]] = {}
    for which, chosen in picks.items():
        out[which] = [
            _example(ctx, maps, per, i, out_dir, f"examples/{stem}__{which}-{rank}.png")
            for rank, i in enumerate(chosen, 1)
        ]
    return out


def _example(
    ctx: ModelContext, maps: np.ndarray, per: dict[str, np.ndarray], i: int, out_dir: Path | None, rel: str
) -> dict[str, Any]:
    rec = ctx.inputs.records[i]
    item: dict[str, Any] = {
        "image_id": rec.image_id,
        "probability": round(float(ctx.probs[i]), 6),
        "label": rec.label,
        "mass_in_mask": round(float(per["mass_in_mask"][i]), 6),
        "iou_otsu": None if not np.isfinite(per["iou_otsu"][i]) else round(float(per["iou_otsu"][i]), 6),
    }
    if out_dir is not None:
        from xray_xai._util.fsutil import atomic_write_bytes
        from xray_xai.report.html import overlay_png

        png = overlay_png(ctx.inputs.films[i], maps[i], mask=ctx.inputs.gt[i])
        atomic_write_bytes(out_dir / rel, png)
        item["png"] = rel
    return item
