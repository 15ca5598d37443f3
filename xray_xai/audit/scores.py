"""Scores for saliency maps: faithfulness, sanity, localisation, shortcut shares, and bootstrap intervals.

Pure functions on arrays, batched and vectorised, so that the audit service (:mod:`xray_xai.audit.service`) can compute
maps once per (model, method) pair and hand the same arrays to every metric. Conventions:

* ``maps``: ``(B, H, W)`` float in [0, 1], high = evidence for the target, at the model's input resolution;
* ``masks``: ``(B, H, W)`` bool, the ground-truth region (or any region: border band, marker box) on the same grid;
* ``images``: ``(B, C, H, W)`` torch tensors, preprocessed exactly as the model expects them;
* per-image scores come back as ``(B,)`` float arrays (NaN where a score is undefined, e.g. an empty mask), and
  :func:`summarize` turns them into ``{"mean", "ci", "n"}`` with a seeded bootstrap 95% interval.

Faithfulness follows the deletion/insertion protocol (Petsiuk et al., RISE, 2018): cells are removed (deletion) or
revealed (insertion) in order of importance, the model's probability of "abnormal" is read after each step and the
area under that curve is integrated by the trapezoid rule over the fraction of cells changed. Removed pixels take a
baseline suited to single-channel films: a Gaussian blur of the input (``"blur"``) or its mean intensity (``"mean"``);
black would itself look like an abnormal, collimated film. All perturbed inputs are built with one vectorised gather
per chunk and evaluated in batches of :data:`FAITHFULNESS_BATCH_SIZE` under ``torch.inference_mode``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "DEFAULT_BORDER_FRAC",
    "DEFAULT_TOLERANCE_FRAC",
    "FAITHFULNESS_BATCH_SIZE",
    "SANITY_THRESHOLD",
    "FaithfulnessCurves",
    "bootstrap_ci",
    "border_band_mask",
    "confidence_bin",
    "curve_auc",
    "curve_error",
    "faithfulness_curves",
    "gaussian_blur",
    "iou",
    "mass_in_mask",
    "otsu_thresholds",
    "pointing_game",
    "random_orders",
    "sanity_passed",
    "spearman_maps",
    "ssim_maps",
    "summarize",
    "tolerance_px",
    "tune_threshold",
]

#: a method passes the sanity check when the mean Spearman correlation between its maps on the trained model and
#: on the fully randomised model is below this value (Adebayo et al., 2018: maps must depend on the weights)
SANITY_THRESHOLD = 0.5
#: pointing-game tolerance as a fraction of the image side (3.5% of 224 px is about 8 px)
DEFAULT_TOLERANCE_FRAC = 0.035
#: width of the border band (shortcut check) as a fraction of the image side
DEFAULT_BORDER_FRAC = 0.08
#: perturbed inputs per forward pass of the deletion/insertion curves. Small batches are faster on CPU: for
#: efficientnet-lite0 on 64 images (1 thread) the curves took 15.0 s at batch 64, 6.4 s at 16 and 4.2 s at 4, and
#: batch 8 was 2.4x faster than 64. On a GPU larger batches may pay off:
#: pass ``batch_size`` / ``faithfulness_batch_size`` explicitly.
FAITHFULNESS_BATCH_SIZE = 8

Predict = Callable[["torch.Tensor"], "torch.Tensor"]


# -- faithfulness -------------------------------------------------------------------------------------------------
def gaussian_blur(images: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur per channel (reflect padding); ``sigma`` defaults to 4% of the image side."""
    import torch
    import torch.nn.functional as F

    _, c, h, w = images.shape
    if sigma is None:
        sigma = 0.04 * max(h, w)
    sigma = max(float(sigma), 1e-3)
    radius = max(1, min(int(3 * sigma), min(h, w) - 1))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    out = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out


def _baseline(images: torch.Tensor, baseline: str | float, sigma: float | None) -> torch.Tensor:
    import torch

    if baseline == "blur":
        return gaussian_blur(images, sigma)
    if baseline == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).contiguous()
    if isinstance(baseline, (int, float)):
        return torch.full_like(images, float(baseline))
    raise ValueError(f"unknown baseline {baseline!r}; expected 'blur', 'mean' or a number")


def _cell_scores(maps: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean importance per ``grid`` x ``grid`` cell ``(B, n_cells)`` and the cell index of each pixel ``(H*W,)``."""
    b, h, w = maps.shape
    g = max(1, int(grid))
    gh, gw = -(-h // g), -(-w // g)
    pixel_cell = ((np.arange(h) // g)[:, None] * gw + (np.arange(w) // g)[None, :]).ravel()
    if g == 1:
        return maps.reshape(b, -1).astype(np.float64), pixel_cell
    padded = np.zeros((b, gh * g, gw * g))
    padded[:, :h, :w] = maps
    sums = padded.reshape(b, gh, g, gw, g).sum(axis=(2, 4)).reshape(b, -1)
    counts = np.bincount(pixel_cell, minlength=gh * gw)
    return sums / counts, pixel_cell


def random_orders(n_images: int, n_cells: int, seed: int) -> np.ndarray:
    """Seeded random removal orders: the rank of each cell ``(B, n_cells)`` (0 = removed first)."""
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((n_images, n_cells)), axis=1).argsort(axis=1)


@dataclass
class FaithfulnessCurves:
    """Deletion/insertion curves of a batch: ``fractions`` ``(S+1,)``, curves ``(B, S+1)`` of P(abnormal)."""

    fractions: np.ndarray
    curves: dict[str, np.ndarray] = field(default_factory=dict)

    def auc(self, kind: str) -> np.ndarray:
        """Area under the ``kind`` curve per image, ``(B,)``."""
        return curve_auc(self.curves[kind], self.fractions)


def curve_auc(curves: np.ndarray, fractions: np.ndarray | None = None) -> np.ndarray:
    """Trapezoid area under each curve (last axis) over ``fractions`` (default: evenly spaced on [0, 1])."""
    curves = np.asarray(curves, dtype=np.float64)
    x = np.linspace(0.0, 1.0, curves.shape[-1]) if fractions is None else np.asarray(fractions, dtype=np.float64)
    return np.asarray(np.trapezoid(curves, x, axis=-1))


def faithfulness_curves(
    predict: Predict,
    images: torch.Tensor,
    maps: np.ndarray | None,
    *,
    steps: int = 32,
    grid: int = 1,
    baseline: str | float = "blur",
    blur_sigma: float | None = None,
    kinds: Sequence[Literal["deletion", "insertion"]] = ("deletion", "insertion"),
    batch_size: int = FAITHFULNESS_BATCH_SIZE,
    orders: np.ndarray | None = None,
    seed: int = 0,
) -> FaithfulnessCurves:
    """Deletion and insertion curves of P(abnormal) for each image.

    ``predict`` maps a batch ``(N, C, H, W)`` to probabilities ``(N,)`` (e.g. ``model.predict_proba``). Cells of
    ``grid`` x ``grid`` pixels are ranked by their mean importance in ``maps``; with ``maps=None`` (or explicit
    ``orders``, the rank of each cell) the order is random, seeded by ``seed`` - the random-order baseline.
    Step ``k`` of ``steps`` changes ``round(k / steps * n_cells)`` cells. The unperturbed and fully perturbed inputs
    are shared by both curves and evaluated once; everything else is built per chunk of ``batch_size`` inputs with
    one gather (no per-step Python loop over pixels).
    """
    import torch

    if steps < 1:
        raise ValueError("steps must be >= 1")
    bad = [k for k in kinds if k not in ("deletion", "insertion")]
    if bad:
        raise ValueError(f"unknown curve kind(s) {bad}; expected 'deletion' and/or 'insertion'")
    b, _, h, w = images.shape
    g = max(1, int(grid))
    gh, gw = -(-h // g), -(-w // g)
    n_cells = gh * gw
    ranks = _cell_ranks(maps, orders, (b, h, w), g, n_cells, seed)
    pixel_cell = ((np.arange(h) // g)[:, None] * gw + (np.arange(w) // g)[None, :]).ravel()
    counts = np.round(np.arange(steps + 1) / steps * n_cells).astype(np.int64)
    fractions = counts / n_cells

    with torch.inference_mode():
        images = images.detach()
        base = _baseline(images, baseline, blur_sigma)
        # rank of the cell under each pixel: (B, H*W); a pixel is changed at step k when its rank < counts[k]
        pix_rank = torch.from_numpy(ranks[:, pixel_cell].astype(np.int32)).to(images.device).view(b, 1, h, w)
        thresholds = torch.from_numpy(counts.astype(np.int32)).to(images.device)

        def run(batch: torch.Tensor) -> np.ndarray:
            out = predict(batch)
            return np.asarray(out.detach().float().cpu().numpy(), dtype=np.float64).reshape(-1)

        ends = np.concatenate([run(images[i : i + batch_size]) for i in range(0, b, batch_size)])
        starts = np.concatenate([run(base[i : i + batch_size]) for i in range(0, b, batch_size)])
        result = FaithfulnessCurves(fractions=fractions)
        # every (image, interior step) pair, image-major, evaluated in chunks of batch_size
        jobs = np.stack(np.meshgrid(np.arange(b), np.arange(1, steps), indexing="ij"), axis=-1).reshape(-1, 2)
        buf = torch.empty(
            (min(batch_size, max(len(jobs), 1)), *images.shape[1:]), dtype=images.dtype, device=images.device
        )
        for kind in kinds:
            curve = np.empty((b, steps + 1))
            if kind == "deletion":
                curve[:, 0], curve[:, -1] = ends, starts
                on, off = base, images  # changed pixels take the baseline
            else:
                curve[:, 0], curve[:, -1] = starts, ends
                on, off = images, base  # changed pixels are revealed
            _fill_curve(curve, run, jobs, (on, off), pix_rank, thresholds, buf, batch_size)
            result.curves[kind] = curve
    return result


def _cell_ranks(
    maps: np.ndarray | None,
    orders: np.ndarray | None,
    shape: tuple[int, int, int],
    g: int,
    n_cells: int,
    seed: int,
) -> np.ndarray:
    """The rank of each cell ``(B, n_cells)`` (0 = changed first): by decreasing mean importance in ``maps``, as
    given in ``orders``, or seeded random when both are None."""
    b, h, w = shape
    if orders is not None:
        ranks = np.asarray(orders)
        if ranks.shape != (b, n_cells):
            raise ValueError(f"orders have shape {ranks.shape}, expected {(b, n_cells)}")
        return ranks
    if maps is None:
        return random_orders(b, n_cells, seed)
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape != (b, h, w):
        raise ValueError(f"maps have shape {maps.shape}, expected {(b, h, w)}")
    scores, _ = _cell_scores(maps, g)
    # stable sort on the negated score: ties keep raster order, so equal maps give equal curves
    return np.argsort(-scores, axis=1, kind="stable").argsort(axis=1)


def _fill_curve(
    curve: np.ndarray,
    run: Callable[[torch.Tensor], np.ndarray],
    jobs: np.ndarray,
    on_off: tuple[torch.Tensor, torch.Tensor],
    pix_rank: torch.Tensor,
    thresholds: torch.Tensor,
    buf: torch.Tensor,
    batch_size: int,
) -> None:
    """Fill the interior steps of ``curve`` (``(B, S+1)``): for every (image, step) job, pixels whose cell rank is
    below the step's count take ``on``, the others ``off``; evaluated in chunks of ``batch_size`` through ``buf``."""
    import torch

    on, off = on_off
    for j in range(0, len(jobs), batch_size):
        chunk = jobs[j : j + batch_size]
        # one broadcast per image in the chunk (rows are image-major): no gather of whole images
        starts_at = np.flatnonzero(np.r_[True, chunk[1:, 0] != chunk[:-1, 0]])
        for a, z in zip(starts_at, np.r_[starts_at[1:], len(chunk)], strict=True):
            i = int(chunk[a, 0])
            changed = pix_rank[i : i + 1] < thresholds[torch.from_numpy(chunk[a:z, 1])].view(-1, 1, 1, 1)
            torch.where(changed, on[i : i + 1], off[i : i + 1], out=buf[a:z])
        curve[chunk[:, 0], chunk[:, 1]] = run(buf[: len(chunk)])


def curve_error(
    fine_curve: np.ndarray,
    coarse_curve: np.ndarray,
    fine_fractions: np.ndarray | None = None,
    coarse_fractions: np.ndarray | None = None,
) -> dict[str, float]:
    """How far a cheaper curve (fewer steps, coarser grid) is from a fine reference.

    The coarse curve is linearly interpolated onto the fine curve's fractions. Returns the mean and max absolute
    difference of the curves and the mean absolute difference of their AUCs (all in probability units).
    """
    fine = np.atleast_2d(np.asarray(fine_curve, dtype=np.float64))
    coarse = np.atleast_2d(np.asarray(coarse_curve, dtype=np.float64))
    if fine.shape[0] != coarse.shape[0]:
        raise ValueError("fine and coarse curves must hold the same number of images")
    xf = np.linspace(0, 1, fine.shape[1]) if fine_fractions is None else np.asarray(fine_fractions, dtype=np.float64)
    xc = (
        np.linspace(0, 1, coarse.shape[1])
        if coarse_fractions is None
        else np.asarray(coarse_fractions, dtype=np.float64)
    )
    interp = np.stack([np.interp(xf, xc, row) for row in coarse])
    diff = np.abs(interp - fine)
    auc_diff = np.abs(curve_auc(fine, xf) - curve_auc(coarse, xc))
    return {"mean_abs": float(diff.mean()), "max_abs": float(diff.max()), "auc_abs": float(auc_diff.mean())}


# -- sanity --------------------------------------------------------------------------------------------------------
def spearman_maps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between paired maps, ``(B,)``; ties get average ranks.

    Identical maps score 1 even when constant; a constant map against a varying one scores 0.
    """
    from scipy.stats import rankdata

    a2 = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b2 = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a2.shape != b2.shape:
        raise ValueError(f"map shapes differ: {np.shape(a)} vs {np.shape(b)}")
    ra = rankdata(a2, axis=1)
    rb = rankdata(b2, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / den
    same = np.all(a2 == b2, axis=1)
    return np.where(same, 1.0, np.where(den > 0, rho, 0.0))


def ssim_maps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Structural similarity of paired maps in [0, 1] (``data_range=1``), ``(B,)``."""
    from skimage.metrics import structural_similarity

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"map shapes differ: {a.shape} vs {b.shape}")
    win = min(7, *a.shape[1:])
    win -= 1 - win % 2  # odd window no larger than the map
    return np.array([structural_similarity(x, y, data_range=1.0, win_size=win) for x, y in zip(a, b, strict=True)])


def sanity_passed(spearman_full: float, threshold: float = SANITY_THRESHOLD) -> bool:
    """Whether maps changed enough once the model was fully randomised (mean Spearman below ``threshold``)."""
    return bool(np.isfinite(spearman_full) and spearman_full < threshold)


# -- localisation --------------------------------------------------------------------------------------------------
def tolerance_px(side: int, frac: float = DEFAULT_TOLERANCE_FRAC) -> float:
    """Pointing-game tolerance in pixels for an image ``side`` px wide."""
    return float(frac * side)


def _check_pair(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    if maps.ndim == 2:
        maps = maps[None]
    if masks.ndim == 2:
        masks = np.broadcast_to(masks, maps.shape)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape")
    return maps, masks


def pointing_game(maps: np.ndarray, masks: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """Pointing-game hit per image, ``(B,)`` in [0, 1]; NaN where the mask is empty.

    A hit is the map's maximum lying in the mask or within ``tolerance`` px of it (Euclidean distance transform of
    the mask's complement). When several pixels share the maximum, the score is the share of them that hit, so a
    constant map scores the chance level (the area of the mask) instead of the luck of raster order.
    """
    from scipy.ndimage import distance_transform_edt

    maps, masks = _check_pair(maps, masks)
    out = np.full(len(maps), np.nan)
    top = maps >= maps.reshape(len(maps), -1).max(axis=1)[:, None, None] - 1e-12
    for i, (m, t) in enumerate(zip(masks, top, strict=True)):
        if not m.any():
            continue
        near = m if tolerance <= 0 else distance_transform_edt(~m) <= tolerance
        out[i] = (t & near).sum() / t.sum()
    return out


def otsu_thresholds(maps: np.ndarray) -> np.ndarray:
    """Otsu's threshold of each map, ``(B,)`` (a constant map gets its own value, so nothing is above it)."""
    from skimage.filters import threshold_otsu

    maps = np.asarray(maps, dtype=np.float64)
    out = np.empty(len(maps))
    for i, m in enumerate(maps):
        out[i] = m.flat[0] if np.ptp(m) == 0 else threshold_otsu(m)
    return out


def iou(maps: np.ndarray, masks: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """Intersection over union of ``maps > threshold`` with the masks, ``(B,)``; NaN where both are empty.

    ``threshold``: one value, or one per map (e.g. :func:`otsu_thresholds`).
    """
    maps, masks = _check_pair(maps, masks)
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(maps),))[:, None, None]
    pred = maps > thr
    inter = (pred & masks).sum(axis=(1, 2))
    union = (pred | masks).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def tune_threshold(maps: np.ndarray, masks: np.ndarray, candidates: Sequence[float] | None = None) -> float:
    """The threshold (from ``candidates``, default 0.05..0.95 by 0.05) with the highest mean IoU on these maps.

    Tune on a validation split (or one fold) and score elsewhere; tuning and scoring on the same images is
    optimistic.
    """
    maps, masks = _check_pair(maps, masks)
    cands = np.round(np.arange(0.05, 0.951, 0.05), 2) if candidates is None else np.asarray(candidates, dtype=float)
    if len(maps) == 0 or len(cands) == 0:
        return 0.5
    means = []
    for t in cands:
        scores = iou(maps, masks, t)
        means.append(float(np.nanmean(scores)) if np.isfinite(scores).any() else -1.0)
    return float(cands[int(np.argmax(means))])


def mass_in_mask(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of the total relevance that falls inside the mask, ``(B,)``; NaN for an all-zero map or empty mask.

    Also the shortcut score: pass a border band or a marker box as the mask.
    """
    maps, masks = _check_pair(maps, masks)
    total = maps.sum(axis=(1, 2))
    inside = (maps * masks).sum(axis=(1, 2))
    has_mask = masks.any(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((total > 0) & has_mask, inside / np.where(total > 0, total, 1.0), np.nan)


def border_band_mask(shape: tuple[int, int], frac: float = DEFAULT_BORDER_FRAC) -> np.ndarray:
    """A bool ``(H, W)`` mask of the band within ``frac`` of the side from any edge (where labels and markers sit)."""
    h, w = shape
    bh, bw = max(1, round(frac * h)), max(1, round(frac * w))
    band = np.ones((h, w), dtype=bool)
    band[bh : h - bh, bw : w - bw] = False
    return band


# -- statistics ----------------------------------------------------------------------------------------------------
def bootstrap_ci(
    values: np.ndarray, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval ``(mean, low, high)``, NaNs ignored; all NaN when nothing is left."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (float("nan"), float("nan"), float("nan"))
    mean = float(v.mean())
    if v.size == 1:
        return (mean, mean, mean)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    boots = v[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return (mean, float(lo), float(hi))


def summarize(values: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``{"mean", "ci": [low, high], "n"}`` of the finite values (JSON-ready; NaN becomes None)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    mean, lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=seed)

    def clean(x: float) -> float | None:
        return None if not np.isfinite(x) else round(float(x), 6)

    return {"mean": clean(mean), "ci": [clean(lo), clean(hi)], "n": int(np.isfinite(v).sum())}


def confidence_bin(probabilities: np.ndarray, edges: Sequence[float] = (0.5, 0.7, 0.9, 1.0)) -> list[str]:
    """Label each prediction with the bin of its confidence ``max(p, 1 - p)`` (e.g. ``"0.7-0.9"``)."""
    p = np.asarray(probabilities, dtype=np.float64)
    conf = np.maximum(p, 1 - p)
    labels = [f"{lo:g}-{hi:g}" for lo, hi in itertools.pairwise(edges)]
    idx = np.clip(np.searchsorted(np.asarray(edges[1:-1]), conf, side="right"), 0, len(labels) - 1)
    return [labels[i] for i in idx]
