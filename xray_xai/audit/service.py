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

import re
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xray_xai._util.fsutil import write_skipped_csv
from xray_xai.audit import scores as am
from xray_xai.errors import DataError, XrayXaiError
from xray_xai.sdk.interfaces import DatasetPlugin, Model, Preprocessing, Problem, Record

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "PER_IMAGE_SCORES",
    "AuditInputs",
    "audit",
    "audit_records",
    "collimation_mask",
    "marker_mask",
    "prepare_inputs",
    "select_records",
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


# -- inputs ------------------------------------------------------------------------------------------------------
@dataclass
class AuditInputs:
    """The audited images as one model sees them (one instance per distinct preprocessing)."""

    records: list[Record]
    images: torch.Tensor  #: (N, C, S, S) preprocessed
    films: np.ndarray  #: (N, S, S) in [0, 1], the geometry the model sees (overlays, controls)
    gt: list[np.ndarray | None]  #: (S, S) bool ground truth per image, None where there is none
    markers: list[np.ndarray | None] = field(default_factory=list)  #: burned-in marker boxes, (S, S) bool
    collimation: list[np.ndarray | None] = field(default_factory=list)  #: collimated borders, (S, S) bool
    problems: list[str] = field(default_factory=list)  #: files skipped, one line each
    skipped: list[Problem] = field(default_factory=list)  #: the same files as (path, problem), for skipped.csv


def _numbers(value: Any, n: int) -> list[float] | None:
    if isinstance(value, Mapping):
        return None
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _fractional(nums: Sequence[float]) -> bool:
    """Coordinates given as fractions of the film: all within [0, 1] and at least one not a whole number."""
    return all(0.0 <= v <= 1.0 for v in nums) and any(v != int(v) for v in nums)


def marker_mask(record: Record, shape: tuple[int, int]) -> np.ndarray | None:
    """The burned-in marker box of ``record`` as a bool mask of the original film ``shape``, or None.

    Expected: ``metadata["marker_box"] = [x0, y0, x1, y1]`` in original film pixels (x1, y1 exclusive); a dict with
    those keys, or a list of such boxes, is accepted too; coordinates all in [0, 1] are read as fractions of the
    film (at least one of them not a whole number). Anything else is ignored (no mask).
    """
    raw = record.metadata.get("marker_box") if record.metadata else None
    if raw is None:
        return None
    boxes: list[Any] = raw if isinstance(raw, list) and raw and isinstance(raw[0], (list, tuple, Mapping)) else [raw]
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        vals = [box.get(k) for k in ("x0", "y0", "x1", "y1")] if isinstance(box, Mapping) else box
        nums = _numbers(vals, 4)
        if nums is None:
            continue
        x0, y0, x1, y1 = nums
        if _fractional(nums):
            x0, x1, y0, y1 = x0 * w, x1 * w, y0 * h, y1 * h
        c0, c1 = sorted((int(np.floor(x0)), int(np.ceil(x1))))
        r0, r1 = sorted((int(np.floor(y0)), int(np.ceil(y1))))
        mask[max(r0, 0) : min(r1, h), max(c0, 0) : min(c1, w)] = True
    return mask if mask.any() else None


def collimation_mask(record: Record, shape: tuple[int, int]) -> np.ndarray | None:
    """The collimated (shuttered) border of ``record`` as a bool mask of the original film ``shape``, or None.

    Expected ``metadata["collimation"]``: a dict of border widths in original film pixels with any of the keys
    ``top``, ``bottom``, ``left``, ``right``; or a list/tuple of four widths in the order (left, top, right, bottom);
    or ``{"box": [x0, y0, x1, y1]}`` giving the exposed field (everything outside it is collimated). Widths or box
    coordinates all in [0, 1], one at least not whole, are read as fractions of the film. Anything else is ignored.
    """
    raw = record.metadata.get("collimation") if record.metadata else None
    if raw is None or raw is False:
        return None
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    if isinstance(raw, Mapping) and "box" in raw:
        nums = _numbers(raw["box"], 4)
        if nums is None:
            return None
        x0, y0, x1, y1 = nums
        if _fractional(nums):
            x0, x1, y0, y1 = x0 * w, x1 * w, y0 * h, y1 * h
        mask[:] = True
        mask[max(int(y0), 0) : min(int(np.ceil(y1)), h), max(int(x0), 0) : min(int(np.ceil(x1)), w)] = False
        return mask if mask.any() else None
    widths = [raw.get(k, 0) or 0 for k in ("left", "top", "right", "bottom")] if isinstance(raw, Mapping) else raw
    nums = _numbers(widths, 4)
    if nums is None:
        return None
    left, top, right, bottom = nums
    if _fractional(nums):
        left, right, top, bottom = left * w, right * w, top * h, bottom * h
    lft, tp, rt, bt = (max(0, round(v)) for v in (left, top, right, bottom))
    mask[:tp, :] = True
    mask[h - bt :, :] = bt > 0
    mask[:, :lft] = True
    if rt > 0:
        mask[:, w - rt :] = True
    return mask if mask.any() else None


def prepare_inputs(records: Sequence[Record], pre: Preprocessing) -> AuditInputs:
    """Read each film once and derive what the audit needs at the model's input geometry; unreadable files are
    skipped and listed in ``problems``."""
    import torch

    from xray_xai.data.images import read_image
    from xray_xai.data.masks import ground_truth_mask
    from xray_xai.data.preprocessing import geometry, geometry_mask, to_tensor

    kept: list[Record] = []
    skipped: list[Problem] = []
    tensors, films, gts, markers, colls = [], [], [], [], []
    for rec in records:
        try:
            image = read_image(rec.path)
            tensor = to_tensor(image, pre)
            film = geometry(image, pre)
            gt = geometry_mask(ground_truth_mask(rec, image.shape), pre) if rec.has_ground_truth else None
        except (XrayXaiError, ValueError) as exc:  # ValueError: e.g. ground truth not rasterisable on this film
            problem = exc.problem if isinstance(exc, DataError) else str(exc)
            skipped.append(Problem(str(rec.path), (problem.strip().splitlines() or [type(exc).__name__])[0]))
            continue
        mk = marker_mask(rec, image.shape)
        cl = collimation_mask(rec, image.shape)
        kept.append(rec)
        tensors.append(tensor)
        films.append(np.asarray(film, dtype=np.float32))
        gts.append(None if gt is None or not np.any(gt) else np.asarray(gt, dtype=bool))
        markers.append(None if mk is None else np.asarray(geometry_mask(mk, pre), dtype=bool))
        colls.append(None if cl is None else np.asarray(geometry_mask(cl, pre), dtype=bool))
    problems = [str(p) for p in skipped]
    if not kept:
        raise DataError(None, f"none of the {len(records)} selected images could be read: {'; '.join(problems[:3])}")
    return AuditInputs(
        records=kept,
        images=torch.stack(tensors),
        films=np.stack(films),
        gt=gts,
        markers=markers,
        collimation=colls,
        problems=problems,
        skipped=skipped,
    )


def select_records(records: Sequence[Record], n: int, seed: int = 0) -> list[Record]:
    """``n`` records chosen reproducibly: up to half of them abnormal images with ground truth (so localisation
    has material even where such images are rare), the rest at random from the others."""
    rng = np.random.default_rng(seed)
    with_gt = [r for r in records if r.label == 1 and r.has_ground_truth]
    others = [r for r in records if not (r.label == 1 and r.has_ground_truth)]
    n = min(n, len(records))
    k = min(len(with_gt), max(n // 2, n - len(others)))
    take_gt = [with_gt[i] for i in sorted(rng.permutation(len(with_gt))[:k])]
    take_other = [others[i] for i in sorted(rng.permutation(len(others))[: n - k])]
    chosen = {id(r) for r in take_gt + take_other}
    return [r for r in records if id(r) in chosen]


# -- helpers -----------------------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "x"


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


def _predict_fn(model: Model, channels_last: bool = False) -> Any:
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
    fn = _predict_fn(model)
    out = [fn(images[i : i + batch_size]).float().cpu().numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float64)


def _explain(explainer: Any, model: Model, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """Maps ``(N, S, S)`` in [0, 1], resized to the input when an explainer returns another size."""
    import torch
    import torch.nn.functional as F

    size = tuple(images.shape[-2:])
    parts = []
    for i in range(0, len(images), batch_size):
        maps = np.asarray(explainer.explain(model, images[i : i + batch_size]).maps, dtype=np.float32)
        if maps.shape[-2:] != size:
            maps = F.interpolate(torch.from_numpy(maps)[:, None], size=size, mode="bilinear")[:, 0].numpy()
        parts.append(np.clip(np.nan_to_num(maps), 0.0, 1.0))
    return np.concatenate(parts) if parts else np.zeros((0, *size), np.float32)


def _stack_masks(masks: Sequence[np.ndarray | None], idx: Sequence[int]) -> np.ndarray:
    return np.stack([np.asarray(masks[i], dtype=bool) for i in idx])


def _share(maps: np.ndarray, masks: Sequence[np.ndarray | None]) -> np.ndarray:
    """Mass in each image's region, NaN where the image has none."""
    out = np.full(len(maps), np.nan)
    idx = [i for i, m in enumerate(masks) if m is not None]
    if idx:
        out[idx] = am.mass_in_mask(maps[idx], _stack_masks(masks, idx))
    return out


@dataclass
class _Ctx:
    """Everything fixed for one model: inputs, predictions, ground truth subsets, shared baselines."""

    inputs: AuditInputs
    probs: np.ndarray
    gt_idx: list[int]
    folds: tuple[list[int], list[int]]
    border: np.ndarray
    tolerance: float
    n_boot: int
    seed: int


def _localisation(ctx: _Ctx, maps: np.ndarray) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
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
    thresholds: list[float] = []
    fa, fb = ctx.folds
    if fa and fb:
        for tune, score in ((fa, fb), (fb, fa)):
            t = am.tune_threshold(maps[tune], _stack_masks(ctx.inputs.gt, tune))
            per["iou_tuned"][score] = am.iou(maps[score], _stack_masks(ctx.inputs.gt, score), t)
            thresholds.append(t)
    else:  # a single image: tuned and scored on itself (flagged in the note)
        t = am.tune_threshold(m, gt)
        per["iou_tuned"][idx] = am.iou(m, gt, t)
        thresholds.append(t)
    area = float(np.mean([ctx.inputs.gt[i].mean() for i in idx]))  # type: ignore[union-attr]
    out: dict[str, Any] = {
        name: am.summarize(per[name][idx], n_boot=ctx.n_boot, seed=ctx.seed)
        for name in ("pointing", "pointing_tol", "iou_otsu", "iou_tuned", "mass_in_mask")
    }
    out["n"] = len(idx)
    out["tuned_thresholds"] = thresholds
    out["mask_area_fraction"] = round(area, 6)
    if not (fa and fb):
        out["note"] = "one image only: the tuned threshold was chosen on the image it scores"
    return out, per


def _shortcuts(ctx: _Ctx, maps: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
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


def _faithfulness_summary(aucs: Mapping[str, Any], ctx: _Ctx) -> dict[str, Any]:
    return {
        f"{k}_auc": am.summarize(v, n_boot=ctx.n_boot, seed=ctx.seed) for k, v in aucs.items() if not k.startswith("_")
    }


def _curve_check(
    predict: Any, images: torch.Tensor, maps: np.ndarray, used: am.FaithfulnessCurves, k: int, fkw: Mapping[str, Any]
) -> dict[str, Any]:
    """How far the audit's curves (its steps and grid) are from fine ones (112 steps, pixel grid) on ``k`` images."""
    k = min(k, len(images))
    fine_kw = {**fkw, "steps": 112, "grid": 1}
    fine = am.faithfulness_curves(predict, images[:k], maps[:k], **fine_kw)
    out: dict[str, Any] = {"n_images": k, "reference": {"steps": 112, "grid": 1}}
    for kind in ("deletion", "insertion"):
        out[kind] = am.curve_error(fine.curves[kind], used.curves[kind][:k], fine.fractions, used.fractions)
    return out


def _breakdowns(ctx: _Ctx, per: dict[str, np.ndarray]) -> dict[str, Any]:
    recs = ctx.inputs.records
    preds = ctx.probs >= 0.5
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


def _examples(
    ctx: _Ctx, maps: np.ndarray, per: dict[str, np.ndarray], k: int, out_dir: Path | None, stem: str
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
        items = []
        for rank, i in enumerate(chosen, 1):
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

                rel = f"examples/{stem}__{which}-{rank}.png"
                png = overlay_png(ctx.inputs.films[i], maps[i], mask=ctx.inputs.gt[i])
                atomic_write_bytes(out_dir / rel, png)
                item["png"] = rel
            items.append(item)
        out[which] = items
    return out


def _control_scores(
    ctx: _Ctx, maps: np.ndarray, faith: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    loc, per = _localisation(ctx, maps)
    sc, border = _shortcuts(ctx, maps)
    per["border_share"] = border
    block: dict[str, Any] = {"localisation": loc, "shortcuts": sc}
    if faith is not None:
        block["faithfulness"] = _faithfulness_summary(faith, ctx)
    return block, per


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
) -> dict[str, Any]:
    """Audit already selected ``records`` (see :func:`audit` for the meaning of every option)."""
    import torch

    from xray_xai import get_explainer
    from xray_xai._util.progress import progress as bar
    from xray_xai.audit.controls import control_maps
    from xray_xai.audit.randomization import cascading_randomization

    if not records:
        raise DataError(None, "no images to audit")
    if not models or not methods:
        raise XrayXaiError("audit needs at least one model and one method")
    out_path = Path(out_dir) if out_dir is not None else None
    options = {k: dict(v) for k, v in (explainer_options or {}).items()}
    cache: dict[Preprocessing, AuditInputs] = {}
    result: dict[str, Any] = {
        "config": {
            "methods": list(methods),
            "seed": seed,
            "steps": steps,
            "grid": grid,
            "baseline": baseline,
            "sanity_stages": sanity_stages,
            "sanity_n": sanity_n,
            "sanity_threshold": sanity_threshold,
            "sanity_rule": f"pass if mean Spearman at full randomisation (all images) < {sanity_threshold:g}",
            "tolerance_frac": tolerance_frac,
            "border_frac": border_frac,
            "n_boot": n_boot,
            "curve_check_n": curve_check_n,
            "ci_level": 0.95,
            "threshold_tuning": "2-fold cross-fitting on the audited images",
            "explainer_options": options,
        },
        "models": {},
        "pairs": [],
        "problems": [],  #: skipped files, one line each (the HTML report and stderr list them)
        "skipped": [],  #: the same as [{"path", "problem"}], also written to out_dir/skipped.csv
    }
    skipped: list[Problem] = []
    pairs = [(mi, m) for mi in range(len(models)) for m in methods]
    it = iter(bar(pairs, "auditing", total=len(pairs), enabled=progress))
    for given in models:
        if isinstance(given, str):
            from xray_xai.models.store import load_model

            model: Model = load_model(given)
        else:
            model = given
        label = _model_label(model, given, result["models"])
        if isinstance(model, torch.nn.Module):
            model.eval()
        pre = model.preprocessing
        if pre not in cache:
            cache[pre] = prepare_inputs(records, pre)
        inputs = cache[pre]
        for prob in inputs.skipped:
            if prob not in skipped:
                skipped.append(prob)
                result["problems"].append(str(prob))
                result["skipped"].append({"path": prob.path, "problem": prob.problem})
        probs = _predict(model, inputs.images, batch_size)
        n_img, side = len(inputs.records), int(inputs.images.shape[-1])
        gt_idx = [i for i, r in enumerate(inputs.records) if r.label == 1 and inputs.gt[i] is not None]
        perm = [gt_idx[j] for j in np.random.default_rng(seed).permutation(len(gt_idx))]
        ctx = _Ctx(
            inputs=inputs,
            probs=probs,
            gt_idx=gt_idx,
            folds=(sorted(perm[: len(perm) // 2]), sorted(perm[len(perm) // 2 :])),
            border=am.border_band_mask((side, side), border_frac),
            tolerance=am.tolerance_px(side, tolerance_frac),
            n_boot=n_boot,
            seed=seed,
        )
        fkw: dict[str, Any] = {
            "steps": steps,
            "grid": grid,
            "baseline": baseline,
            "batch_size": faithfulness_batch_size,
        }
        predict = _predict_fn(model, channels_last=channels_last)

        def faith(
            maps: np.ndarray | None, fkw: dict[str, Any] = fkw, predict: Any = predict, images: Any = inputs.images
        ) -> dict[str, Any]:
            curves = am.faithfulness_curves(predict, images, maps, seed=seed, **fkw)
            return {"deletion": curves.auc("deletion"), "insertion": curves.auc("insertion"), "_curves": curves}

        t0 = time.perf_counter()
        random_faith = faith(None)
        controls_model: dict[str, Any] = {}
        for cname, cmaps in control_maps(inputs.films, seed).items():
            cf = random_faith if cname == "random" else (faith(cmaps) if control_faithfulness else None)
            controls_model[cname], _ = _control_scores(ctx, cmaps, cf)
        labels = np.array([np.nan if r.label is None else r.label for r in inputs.records], dtype=float)
        known = np.isfinite(labels)
        result["models"][label] = {
            "name": getattr(model, "name", label),
            "fingerprint": model.fingerprint() if hasattr(model, "fingerprint") else "",
            "input_size": side,
            "n_images": n_img,
            "n_localisation": len(gt_idx),
            "accuracy": None if not known.any() else round(float(((probs >= 0.5) == labels)[known].mean()), 6),
            "random_order": _faithfulness_summary(random_faith, ctx),
            "controls": controls_model,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        for method in methods:
            next(it, None)
            t0 = time.perf_counter()
            pair: dict[str, Any] = {"model": label, "method": method}
            try:
                explainer = get_explainer(method)(**options.get(method, {}))
                explainer.check_model(model)
                maps = _explain(explainer, model, inputs.images, batch_size)
            except XrayXaiError as exc:  # a method the model cannot serve (PluginError) or bad options
                pair |= {"status": "skipped", "reason": str(exc)}
                result["pairs"].append(pair)
                continue
            f = faith(maps)
            check = (
                _curve_check(predict, inputs.images, maps, f["_curves"], curve_check_n, fkw) if curve_check_n else None
            )
            loc, per = _localisation(ctx, maps)
            sc, border = _shortcuts(ctx, maps)
            per = {"deletion_auc": f["deletion"], "insertion_auc": f["insertion"], **per, "border_share": border}
            # sanity: cascading randomisation, maps on the first sanity_n images at each stage; the fully
            # randomised model then explains every image (the "randomized-model" control, and the final stage)
            sub = list(range(min(sanity_n, n_img)))
            stages: list[dict[str, Any]] = []
            rand_model: Any = None
            for layer, rmodel in cascading_randomization(model, seed, n_stages=sanity_stages):
                rmaps = _explain(explainer, rmodel, inputs.images[sub], batch_size)
                rho, ssim = am.spearman_maps(maps[sub], rmaps), am.ssim_maps(maps[sub], rmaps)
                stages.append(
                    {
                        "layer": layer,
                        "spearman": am.summarize(rho, n_boot=n_boot, seed=seed),
                        "ssim": am.summarize(ssim, n_boot=n_boot, seed=seed),
                    }
                )
                rand_model = rmodel
            if rand_model is None:
                pair["sanity"] = {"status": "not applicable", "reason": "the model has no torch parameters"}
                controls_pair = dict(controls_model)
            else:
                rest = list(range(len(sub), n_img))
                rmaps_all = np.concatenate(
                    [rmaps, _explain(explainer, rand_model, inputs.images[rest], batch_size)] if rest else [rmaps]
                )
                # the last stage (fully randomised) is scored on every image, since they were all explained
                rho, ssim = am.spearman_maps(maps, rmaps_all), am.ssim_maps(maps, rmaps_all)
                stages[-1] |= {
                    "spearman": am.summarize(rho, n_boot=n_boot, seed=seed),
                    "ssim": am.summarize(ssim, n_boot=n_boot, seed=seed),
                }
                full = stages[-1]["spearman"]["mean"]
                passed = am.sanity_passed(np.nan if full is None else full, sanity_threshold)
                pair["sanity"] = {
                    "status": "pass" if passed else "fail",
                    "spearman_full": full,
                    "ssim_full": stages[-1]["ssim"]["mean"],
                    "threshold": sanity_threshold,
                    "n_images": len(sub),
                    "n_images_full": n_img,
                    "stages": stages,
                }
                cf = faith(rmaps_all) if control_faithfulness else None
                block, _ = _control_scores(ctx, rmaps_all, cf)
                controls_pair = {**controls_model, "randomized-model": block}
                del rand_model
            pair |= {
                "status": "ok",
                "faithfulness": _faithfulness_summary(f, ctx)
                | {"random_deletion_auc": result["models"][label]["random_order"]["deletion_auc"]}
                | {"random_insertion_auc": result["models"][label]["random_order"]["insertion_auc"]}
                | ({"curve_error": check} if check else {}),
                "localisation": loc,
                "shortcuts": sc,
                "controls": controls_pair,
                "breakdowns": _breakdowns(ctx, per),
                "examples": _examples(ctx, maps, per, n_examples, out_path, f"{_slug(label)}__{_slug(method)}"),
                "per_image": [
                    {"image_id": r.image_id, "label": r.label, "region": r.region, "probability": round(float(p), 6)}
                    | {k: (None if not np.isfinite(v[i]) else round(float(v[i]), 6)) for k, v in per.items()}
                    for i, (r, p) in enumerate(zip(inputs.records, probs, strict=True))
                ],
                "seconds": round(time.perf_counter() - t0, 3),
            }
            result["pairs"].append(pair)
    for _ in it:  # drain the progress bar
        pass
    if out_path is not None:
        result["skipped_csv"] = str(write_skipped_csv(out_path / "skipped.csv", skipped))
    return result


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
    * ``explainer_options``: ``{method: {param: value}}`` passed to each explainer.
    """
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
