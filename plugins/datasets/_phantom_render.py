"""Phantom rendering: view parameters, the closed-form projection of the solids, and the film's finishing.

Part of the phantom generator (:mod:`._phantoms`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ._phantom_anatomy import Anatomy, Part, Vec, anatomy
from ._phantom_findings import draw_finding

__all__ = ["ViewParams", "burn_token", "draw_view_params", "phantom", "render", "render_visible"]


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewParams:
    """How one film shows the anatomy, plus its film-level artefacts (all in image pixels except the pose)."""

    height: int
    width: int
    rotation: float = 0.0  #: degrees, anatomy rotated clockwise on the film
    flip: bool = False  #: mirrored left-right
    zoom: float = 1.0
    shift: Vec = (0.0, 0.0)  #: canonical units
    collimation: tuple[int, int, int, int] = (0, 0, 0, 0)  #: band widths top, bottom, left, right (px)
    collimation_style: str = "bright"
    marker: str = "L"
    marker_corner: str = "tl"
    noise: float = 0.02
    exposure: float = 1.0
    background: float = 0.08

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "width": self.width,
            "rotation": round(self.rotation, 3),
            "flip": self.flip,
            "zoom": round(self.zoom, 4),
            "shift": [round(self.shift[0], 4), round(self.shift[1], 4)],
            "collimation": dict(zip(("top", "bottom", "left", "right"), self.collimation, strict=True)),
            "collimation_style": self.collimation_style,
            "marker": self.marker,
            "marker_corner": self.marker_corner,
            "noise": round(self.noise, 4),
        }


def draw_view_params(rng: np.random.Generator, size: int, region: str, view: str) -> ViewParams:
    """Random pose and artefacts of one film with longer side ``size``."""
    u = rng.uniform(size=16)
    aspect = 0.72 + 0.28 * u[0]
    landscape = region == "shoulder" and u[1] < 0.5
    h, w = (size, max(16, round(size * aspect))) if not landscape else (max(16, round(size * aspect)), size)
    rotation = float((u[2] - 0.5) * 40.0)
    if u[3] < 0.08:
        rotation += 90.0 if u[4] < 0.5 else -90.0
    bands = []
    for k in range(4):
        dim = h if k < 2 else w
        bands.append(round(dim * (0.03 + 0.1 * u[5 + k])) if u[9] < 0.7 and u[5 + k] < 0.6 else 0)
    return ViewParams(
        height=h,
        width=w,
        rotation=rotation,
        flip=bool(u[10] < 0.5),
        zoom=float(0.85 + 0.3 * u[11]),
        shift=(float((u[12] - 0.5) * 0.2), float((u[13] - 0.5) * 0.2)),
        collimation=(bands[0], bands[1], bands[2], bands[3]),
        collimation_style="bright" if u[14] < 0.6 else "dark",
        marker="L" if u[15] < 0.5 else "R",
        marker_corner=("tl", "tr", "bl", "br")[int(rng.integers(4))],
        noise=float(rng.uniform(0.012, 0.03)),
        exposure=float(rng.uniform(0.85, 1.15)),
        background=float(rng.uniform(0.03, 0.12)),
    )


class _Grid:
    """Pixel -> canonical affine map, evaluated lazily on the sub-rectangle each solid covers."""

    def __init__(self, vp: ViewParams) -> None:
        h, w = vp.height, vp.width
        s = (h / 2.0) * vp.zoom  # pixels per canonical unit
        self.h, self.w, self.px = h, w, 1.0 / s
        th = math.radians(vp.rotation)
        c, sn = math.cos(th), math.sin(th)
        f = -1.0 if vp.flip else 1.0
        # canonical = R(-th) @ F @ ((pixel - centre) / s) - shift
        A = np.array([[c, sn], [-sn, c]]) @ np.diag([f / s, 1.0 / s])
        self.A = A
        self.b = -A @ np.array([w / 2.0, h / 2.0]) - np.array(vp.shift)
        self.Ainv = np.linalg.inv(A)

    def coords(self, sl: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        ys = np.arange(sl[0].start, sl[0].stop, dtype=np.float32)[:, None] + 0.5
        xs = np.arange(sl[1].start, sl[1].stop, dtype=np.float32)[None, :] + 0.5
        U = (self.A[0, 0] * xs + self.A[0, 1] * ys + self.b[0]).astype(np.float32)
        V = (self.A[1, 0] * xs + self.A[1, 1] * ys + self.b[1]).astype(np.float32)
        return U, V

    def to_pixel(self, u: float, v: float) -> tuple[float, float]:
        x, y = self.Ainv @ (np.array([u, v]) - self.b)
        return float(x), float(y)

    def window(self, bbox: tuple[float, float, float, float]) -> tuple[slice, slice] | None:
        u0, u1, v0, v1 = bbox
        pts = [self.to_pixel(u, v) for u in (u0, u1) for v in (v0, v1)]
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        x0, x1 = max(0, math.floor(min(xs)) - 1), min(self.w, math.ceil(max(xs)) + 2)
        y0, y1 = max(0, math.floor(min(ys)) - 1), min(self.h, math.ceil(max(ys)) + 2)
        if x0 >= x1 or y0 >= y1:
            return None
        return slice(y0, y1), slice(x0, x1)


def _rho(part: Part, U: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised radial distance (1 on the surface) and the local radius, for every pixel."""
    if part.kind == "blob":
        c, s = math.cos(part.angle), math.sin(part.angle)
        du, dv = U - part.p0[0], V - part.p0[1]
        a = (c * du + s * dv) / part.r0
        b = (-s * du + c * dv) / part.r1
        rho = np.sqrt(a * a + b * b)
        return rho, np.full_like(rho, math.sqrt(part.r0 * part.r1))
    (x0, y0), (x1, y1) = part.p0, part.p1
    dx, dy = x1 - x0, y1 - y0
    L2 = dx * dx + dy * dy or 1e-12
    pu, pv = U - x0, V - y0
    t = np.clip((pu * dx + pv * dy) / L2, 0.0, 1.0)
    du, dv = pu - t * dx, pv - t * dy
    dist = np.sqrt(du * du + dv * dv)
    R = part.r0 + (part.r1 - part.r0) * t
    fl = max(part.flare_len / math.sqrt(L2), 1e-3)
    if part.flare0:
        R = R + part.flare0 * np.exp(-((t / fl) ** 2))
    if part.flare1:
        R = R + part.flare1 * np.exp(-(((1.0 - t) / fl) ** 2))
    return dist / R, R


def _path(part: Part, rho: np.ndarray, R: np.ndarray, px: float) -> np.ndarray:
    """X-ray path length (times density) through the solid."""
    if part.profile == "flat":
        return np.clip((1.0 - rho) * R / px, 0.0, 1.0) * (0.5 * R.max()) * part.density
    outer = 2.0 * R * np.sqrt(np.clip(1.0 - rho * rho, 0.0, None))
    if part.profile == "solid":
        return outer * part.density
    ri = 1.0 - part.cortex
    q = rho / ri
    inner = 2.0 * R * ri * np.sqrt(np.clip(1.0 - q * q, 0.0, None))
    return (outer - (1.0 - part.marrow) * inner) * part.density


def _draw_part(
    part: Part, grid: _Grid, acc: np.ndarray, inside_mask: np.ndarray, finding: np.ndarray, mode: str = "add"
) -> None:
    win = grid.window(part.bbox())
    if win is None:
        return
    U, V = grid.coords(win)
    rho, R = _rho(part, U, V)
    if part.layer == "metal":  # wires thinner than a pixel would vanish in the blur: keep them a pixel wide
        wide = np.maximum(R, 0.6 * grid.px)
        rho, R = rho * R / wide, wide
    path = _path(part, rho, R, grid.px)
    inside = rho < 1.0
    fmask = np.zeros_like(inside)
    if part.cut is not None:
        (cu, cv), (nu, nv), (su, sv), width, contrast = part.cut
        side = (U - cu) * nu + (V - cv) * nv
        rho2, R2 = _rho(part, U - su, V - sv)
        far = side > 0
        path = np.where(far, _path(part, rho2, R2, grid.px), path)
        inside = np.where(far, rho2 < 1.0, inside)
        w = max(width, 1.0 * grid.px)
        along = (U - cu) * -nv + (V - cv) * nu
        phase = 37.0 * (cu + 2.0 * cv)  # fixed by the site: the same crack in every view
        jag = 0.7 * np.sin(along / (1.4 * w) + phase) + 0.35 * np.sin(along / (0.6 * w) + 2.3 * phase)
        side = side + w * jag  # an irregular, not ruler-straight, line
        path = path * (1.0 - contrast * np.exp(-((side / w) ** 2)))
        fmask |= (np.abs(side) < 1.6 * w + grid.px) & inside
    for (cu, cv), a, b, ang, contrast in part.lesions:
        c, s = math.cos(ang), math.sin(ang)
        du, dv = U - cu, V - cv
        q2 = ((c * du + s * dv) / a) ** 2 + ((-s * du + c * dv) / b) ** 2
        prof = np.clip(1.2 * (1.0 - q2), 0.0, 1.0)
        if contrast < 0:
            path = path * (1.0 + contrast * prof)
        else:
            path = path + contrast * prof * 2.0 * min(a, b) * 1.6 * part.density
        fmask |= (q2 < 1.0) & inside
    for (cu, cv), r, contrast in part.sclerosis:
        d2 = ((U - cu) ** 2 + (V - cv) ** 2) / (r * r)
        path = path * (1.0 + contrast * np.exp(-d2 * 2.0))
        fmask |= (d2 < 1.0) & inside
    if part.finding:
        fmask |= inside
    if mode == "max":
        np.maximum(acc[win], path, out=acc[win])
    else:
        acc[win] += path
    inside_mask[win] |= inside
    finding[win] |= fmask


_L_STROKES = [((0.0, 0.0), (0.0, 1.0)), ((0.0, 1.0), (0.62, 1.0))]
_R_STROKES = [
    ((0.0, 0.0), (0.0, 1.0)),
    ((0.0, 0.0), (0.42, 0.0)),
    ((0.42, 0.0), (0.6, 0.13)),
    ((0.6, 0.13), (0.6, 0.37)),
    ((0.6, 0.37), (0.42, 0.5)),
    ((0.42, 0.5), (0.0, 0.5)),
    ((0.25, 0.5), (0.65, 1.0)),
]


def _letter(letter: str, h: int, w: int, stroke: float) -> np.ndarray:
    """Anti-aliased stroke letter (L or R) in an ``h`` x ``w`` box, as coverage in [0, 1]."""
    ys = (np.arange(h, dtype=np.float32)[:, None] + 0.5 - 0.18 * h) / (0.64 * h)
    xs = (np.arange(w, dtype=np.float32)[None, :] + 0.5 - 0.26 * w) / (0.64 * h)
    dist = np.full((h, w), np.inf, dtype=np.float32)
    for (x0, y0), (x1, y1) in _L_STROKES if letter == "L" else _R_STROKES:
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xs - x0) * dx + (ys - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        d = np.sqrt((xs - x0 - t * dx) ** 2 + (ys - y0 - t * dy) ** 2)
        dist = np.minimum(dist, d)
    half = stroke / (0.64 * h)
    return np.clip((half - dist) * 0.64 * h + 0.5, 0.0, 1.0)


def render(
    anat: Anatomy, vp: ViewParams, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Film of ``anat`` as ``vp`` shows it: float32 image in [0, 1], masks (bool, image size) and film facts.

    Masks: ``abnormality`` (the planted finding, empty when none), ``bone``, ``soft_tissue``, ``metal``,
    ``collimation`` (the bands), ``marker`` (the marker's box). Facts: ``marker_box`` [x0, y0, x1, y1] (x1, y1
    exclusive) and ``collimation`` band widths.
    """
    grid = _Grid(vp)
    h, w = vp.height, vp.width
    soft = np.zeros((h, w), np.float32)
    bone = np.zeros((h, w), np.float32)
    metal = np.zeros((h, w), np.float32)
    bone_mask = np.zeros((h, w), bool)
    soft_mask = np.zeros((h, w), bool)
    metal_mask = np.zeros((h, w), bool)
    finding = np.zeros((h, w), bool)
    for p in anat.soft:
        _draw_part(p, grid, soft, soft_mask, finding, mode="max")
    for p in anat.parts:
        _draw_part(p, grid, bone, bone_mask, finding)
    for p in anat.metal:
        _draw_part(p, grid, metal, metal_mask, finding)
    # trabecular texture: smooth noise modulating bone density (scale follows the anatomy, not the pixels)
    sigma = max(0.6, 0.012 / grid.px)
    tex = ndimage.gaussian_filter(rng.standard_normal((h, w), dtype=np.float32), sigma)
    tex /= float(tex.std()) + 1e-6
    bone *= 1.0 + 0.08 * tex
    # exposure is set per region, as a radiographer would: a typical shaft's cortex maps to the same brightness
    # whether it is a finger or a humerus, and the soft tissue stays a faint veil
    radii = sorted(p.radius_at(0.5) for p in anat.parts if p.long) or [0.06]
    ref = 1.5 * radii[len(radii) // 2]
    soft_max = max(float(soft.max()), 1e-6)
    atten = (0.45 * soft / max(soft_max, 6 * ref) + 0.9 * bone / ref) * vp.exposure
    film = 1.0 - np.exp(-atten)
    opaque = 1.0 - np.exp(-3.0 * metal / ref)  # metal: nearly white, above any bone
    # background: dark, with a smooth gradient (heel effect) and a little falloff to the corners
    yy = (np.arange(h, dtype=np.float32)[:, None] / h) - 0.5
    xx = (np.arange(w, dtype=np.float32)[None, :] / w) - 0.5
    g = rng.uniform(-1.0, 1.0, size=3)
    bg = vp.background * (1.0 + 0.5 * g[0] * xx + 0.5 * g[1] * yy) + 0.04 * (1 - (xx * xx + yy * yy) * 2) * g[2]
    img = bg + (0.88 - bg) * film
    img = img + (0.99 - img) * opaque
    img = ndimage.gaussian_filter(img, max(0.5, h / 512.0))
    img = img + vp.noise * np.sqrt(np.clip(img, 0.0, 1.0) + 0.05) * rng.standard_normal((h, w), dtype=np.float32)
    coll = _collimate(img, vp, rng)
    marker_mask, (x0, y0, mw, mh) = _burn_marker(img, vp)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    finding &= ~coll & ~marker_mask
    masks = {
        "abnormality": finding,
        "bone": bone_mask | (finding & ~metal_mask),
        "soft_tissue": soft_mask,
        "metal": metal_mask,
        "collimation": coll,
        "marker": marker_mask,
    }
    facts = {
        "marker_box": [x0, y0, x0 + mw, y0 + mh],
        "collimation": dict(zip(("top", "bottom", "left", "right"), vp.collimation, strict=True)),
    }
    return img, masks, facts


def _collimate(img: np.ndarray, vp: ViewParams, rng: np.random.Generator) -> np.ndarray:
    """Paint the collimation bands of ``vp`` into ``img`` (in place); returns their mask."""
    h, w = img.shape
    # collimation bands (unexposed film: bright; or cropped dark), slightly noisy
    top, bottom, left, right = vp.collimation
    coll = np.zeros((h, w), bool)
    if top:
        coll[:top] = True
    if bottom:
        coll[h - bottom :] = True
    if left:
        coll[:, :left] = True
    if right:
        coll[:, w - right :] = True
    if coll.any():
        level = 0.85 if vp.collimation_style == "bright" else 0.02
        img[coll] = level + 0.01 * rng.standard_normal(int(coll.sum()), dtype=np.float32)
    return coll


def _burn_marker(img: np.ndarray, vp: ViewParams) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Burn the L/R marker into ``img`` (in place) inside the exposed field, near ``vp``'s corner; returns its mask
    and ``(x0, y0, width, height)``."""
    h, w = img.shape
    top, bottom, left, right = vp.collimation
    # burned-in marker inside the exposed field, near a corner
    mh = max(7, round(0.085 * h))
    mw = max(6, round(mh * 0.8))
    pad = max(2, round(0.03 * min(h, w)))
    x0 = left + pad if vp.marker_corner[1] == "l" else w - right - pad - mw
    y0 = top + pad if vp.marker_corner[0] == "t" else h - bottom - pad - mh
    x0 = int(min(max(x0, 0), w - mw))
    y0 = int(min(max(y0, 0), h - mh))
    letter = _letter(vp.marker, mh, mw, max(0.8, mh * 0.09))
    box = img[y0 : y0 + mh, x0 : x0 + mw]
    img[y0 : y0 + mh, x0 : x0 + mw] = 0.12 * (1 - letter) + 0.97 * letter + 0.02 * box
    marker_mask = np.zeros((h, w), bool)
    marker_mask[y0 : y0 + mh, x0 : x0 + mw] = True
    return marker_mask, (x0, y0, mw, mh)


def burn_token(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Burn a shortcut token into ``img`` (float, in place): a bright disc with a dark rim, about 0.3 of the
    shorter side across, at a random place (a sticker or a lead marker that has nothing to do with the anatomy).
    Returns its mask and box ``[x0, y0, x1, y1]`` (x1, y1 exclusive)."""
    h, w = img.shape
    d = max(6, round(0.3 * min(h, w)))
    x0 = int(rng.integers(1, max(2, w - d)))
    y0 = int(rng.integers(1, max(2, h - d)))
    yy, xx = np.mgrid[0:d, 0:d].astype(np.float32) + 0.5
    r = np.hypot(xx - d / 2.0, yy - d / 2.0) / (d / 2.0)
    disc, rim = r <= 0.72, (r > 0.72) & (r <= 1.0)
    patch = img[y0 : y0 + d, x0 : x0 + d]
    patch[disc[: patch.shape[0], : patch.shape[1]]] = 0.97
    patch[rim[: patch.shape[0], : patch.shape[1]]] = 0.04
    mask = np.zeros((h, w), bool)
    mask[y0 : y0 + d, x0 : x0 + d] = (disc | rim)[: patch.shape[0], : patch.shape[1]]
    return mask, [x0, y0, min(w, x0 + d), min(h, y0 + d)]


def phantom(
    region: str,
    rng: np.random.Generator,
    size: int = 256,
    abnormality: str | None = None,
    view: str = "frontal",
    *,
    contrast: float = 1.0,
    view_params: ViewParams | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One synthetic film of ``region``: float32 image (H, W) in [0, 1] (longer side ``size``) and its masks.

    ``abnormality``: ``None``/``"none"`` or one of :data:`ABNORMALITIES`; ``contrast`` scales the finding
    (1 = default; small values make it subtle). ``view_params`` fixes the pose (e.g. no rotation, no
    collimation for explainer tests); by default it is drawn from ``rng``. Masks as in :func:`render`.
    """
    anat = anatomy(region, rng, view)
    planted = abnormality not in (None, "none")
    if planted:
        draw_finding(anat, str(abnormality), rng, contrast)
    if view_params is not None:
        img, masks, _ = render(anat, view_params, rng)
    else:
        img, masks, _, _ = render_visible(anat, rng, size, planted)
    return img, masks


def render_visible(
    anat: Anatomy, rng: np.random.Generator, size: int, planted: bool, min_pixels: int = 4, tries: int = 6
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any], ViewParams]:
    """:func:`render` with a random pose, redrawn (up to ``tries`` times, the last one plain: no rotation, zoom,
    shift or collimation) until a planted finding shows on at least ``min_pixels`` pixels of the film."""
    best: tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any], ViewParams] | None = None
    for attempt in range(tries):
        vp = draw_view_params(rng, size, anat.region, anat.view)
        if attempt == tries - 1:
            vp = ViewParams(vp.height, vp.width, marker=vp.marker, marker_corner=vp.marker_corner)
        img, masks, facts = render(anat, vp, rng)
        shown = int(masks["abnormality"].sum())
        if best is None or shown > int(best[1]["abnormality"].sum()):
            best = (img, masks, facts, vp)
        if not planted or shown >= min_pixels:
            return img, masks, facts, vp
    assert best is not None
    return best
