"""The audited images: which records an audit takes, and what it reads from each film once.

* :func:`select_records` - ``n`` records chosen reproducibly (up to half abnormal films with ground truth);
* :func:`prepare_inputs` - each film read once and brought to one model's input geometry (tensor, film, ground
  truth, burned-in marker boxes, collimated borders), as :class:`AuditInputs`; unreadable films are skipped and
  listed;
* :func:`marker_mask`, :func:`collimation_mask` - the record metadata the shortcut scores read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from xray_xai.errors import DataError, XrayXaiError, one_line
from xray_xai.sdk.interfaces import Preprocessing, Problem, Record

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["AuditInputs", "collimation_mask", "marker_mask", "prepare_inputs", "select_records"]


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
    warnings: list[Problem] = field(default_factory=list)  #: films kept despite damage, for warnings.csv


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


def prepare_inputs(records: Sequence[Record], pre: Preprocessing, *, strict: bool = False) -> AuditInputs:
    """Read each film once and derive what the audit needs at the model's input geometry; unreadable files are
    skipped and listed in ``problems``, films kept despite a stream that ends early in ``warnings`` (``strict``
    skips them instead; :func:`xray_xai.data.images.read_film`)."""
    import torch

    from xray_xai.data.geometry import geometry, geometry_mask, to_tensor
    from xray_xai.data.images import read_film
    from xray_xai.data.masks import ground_truth_mask

    kept: list[Record] = []
    skipped: list[Problem] = []
    warned: list[Problem] = []
    tensors, films, gts, markers, colls = [], [], [], [], []
    for rec in records:
        try:
            image, warning = read_film(rec.path, strict=strict)
            tensor = to_tensor(image, pre)
            film = geometry(image, pre)
            gt = geometry_mask(ground_truth_mask(rec, image.shape), pre) if rec.has_ground_truth else None
        except (XrayXaiError, ValueError) as exc:  # ValueError: e.g. ground truth not rasterisable on this film
            skipped.append(Problem(str(rec.path), exc.problem if isinstance(exc, DataError) else one_line(exc)))
            continue
        if warning is not None:
            warned.append(warning)
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
        warnings=warned,
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
