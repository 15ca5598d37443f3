"""Phantom findings: fractures, lesions, degenerative joints and hardware planted in an anatomy.

Part of the phantom generator (:mod:`._phantoms`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._phantom_anatomy import Anatomy, Part, Vec, _add, _blob, _rot, _tube

__all__ = ["ABNORMALITIES", "SUBTYPES", "Finding", "draw_finding"]

#: MURA's four kinds of abnormality (``"none"`` for normal studies)
ABNORMALITIES: tuple[str, ...] = ("fracture", "hardware", "degenerative", "lesion")
#: the variants drawn for each kind
SUBTYPES: dict[str, tuple[str, ...]] = {
    "fracture": ("transverse", "oblique", "displaced"),
    "hardware": ("plate", "nail", "wires", "arthroplasty"),
    "degenerative": ("osteoarthritis",),
    "lesion": ("lytic", "sclerotic"),
}


# ---------------------------------------------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """What was planted: kind, variant, the bone or joint it sits on, and its contrast (1 = default)."""

    kind: str
    subtype: str
    site: str
    contrast: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "subtype": self.subtype, "site": self.site, "contrast": round(self.contrast, 4)}


def _pick(rng: np.random.Generator, items: list[int]) -> int:
    return items[int(rng.integers(len(items)))]


def _end_point(p: Part, end: str) -> Vec:
    return p.p0 if end == "p0" else p.p1


def _visible_t(part: Part, lo: float, hi: float, box: float = 0.72) -> tuple[float, float]:
    """The share of ``[lo, hi]`` along a tube whose points lie inside the canonical box ``|u|, |v| < box``
    (findings go where the film shows them); the whole range if none does."""
    ts = np.linspace(lo, hi, 41)
    ok = [t for t in ts if abs(part.point(t)[0]) < box and abs(part.point(t)[1]) < box]
    return (float(min(ok)), float(max(ok))) if ok else (lo, hi)


def _visible(anat: Anatomy, idx: list[int], lo: float, hi: float, box: float = 0.72) -> list[int]:
    """The parts of ``idx`` with some of ``[lo, hi]`` of their length inside the box (all of ``idx`` if none),
    keeping the thicker half: a finding on a bone one pixel wide would not show."""
    keep = []
    for i in idx:
        p = anat.parts[i]
        pts = [p.point(t) for t in np.linspace(lo, hi, 21)]
        if any(abs(u) < box and abs(v) < box for u, v in pts):
            keep.append(i)
    keep = keep or idx
    radii = sorted(anat.parts[i].radius_at(0.5) for i in keep)
    return [i for i in keep if anat.parts[i].radius_at(0.5) >= radii[(len(radii) - 1) // 2]]


def draw_finding(anat: Anatomy, kind: str, rng: np.random.Generator, contrast: float = 1.0) -> Finding:
    """Plant a finding of ``kind`` in ``anat`` (modifies it). Draws the same number of values from ``rng``
    for every view, so the finding sits on the same bone/joint in all views of a study."""
    if kind not in SUBTYPES:
        raise ValueError(f"unknown abnormality {kind!r}; expected one of {', '.join(ABNORMALITIES)}")
    u = rng.uniform(size=12)
    long_bones = [i for i in anat.long_bones() if anat.parts[i].name not in ("neighbour", "rib")]
    bones = [i for i, p in enumerate(anat.parts) if p.name not in ("neighbour", "rib")]
    if kind == "fracture":
        return _fracture(anat, u, long_bones, contrast)
    if kind == "lesion":
        return _lesion(anat, u, bones, long_bones, contrast)
    if kind == "degenerative":
        return _degenerative(anat, u, contrast)
    return _hardware(anat, u, long_bones, contrast)


def _fracture(anat: Anatomy, u: np.ndarray, long_bones: list[int], contrast: float) -> Finding:
    """A cut across a long bone (transverse, oblique or displaced), from the draws ``u``."""
    kind = "fracture"
    subtype = SUBTYPES[kind][int(u[0] * 3)]
    long_bones = _visible(anat, long_bones, 0.25, 0.75)
    bi = long_bones[int(u[1] * len(long_bones))]
    bone = anat.parts[bi]
    ta, tb = _visible_t(bone, 0.25, 0.75)
    t = ta + (tb - ta) * u[2]
    c = bone.point(t)
    r = bone.radius_at(t)
    ax = bone.axis()
    tilt = 0.0 if subtype == "transverse" else (0.45 + 0.35 * u[3]) * (1 if u[4] < 0.5 else -1)
    normal = _rot(ax, tilt)
    perp = (-ax[1], ax[0])
    shift = (0.0, 0.0)
    if subtype == "displaced":
        k = (0.3 + 0.35 * u[5]) * r * (1 if u[6] < 0.5 else -1)
        shift = (perp[0] * k + ax[0] * 0.1 * r, perp[1] * k + ax[1] * 0.1 * r)
    width = r * (0.12 + 0.06 * u[7])
    bone.cut = (c, normal, shift, width, min(1.0, 0.9 * contrast))
    return Finding(kind, subtype, bone.name, contrast)


def _lesion(anat: Anatomy, u: np.ndarray, bones: list[int], long_bones: list[int], contrast: float) -> Finding:
    """A lytic (dark) or sclerotic (bright) ellipse inside a bone, from the draws ``u``."""
    kind = "lesion"
    subtype = SUBTYPES[kind][int(u[0] * 2)]
    pool = _visible(anat, bones if u[8] < 0.3 or not long_bones else long_bones, 0.2, 0.8)
    bi = pool[int(u[1] * len(pool))]
    bone = anat.parts[bi]
    ta, tb = _visible_t(bone, 0.2, 0.8)
    t = ta + (tb - ta) * u[2] if bone.kind == "tube" else 0.0
    c = bone.point(t)
    r = bone.radius_at(t)
    ax = bone.axis() if bone.kind == "tube" else (1.0, 0.0)
    off = (u[3] - 0.5) * 0.5 * r
    c = (c[0] - ax[1] * off, c[1] + ax[0] * off)
    a = r * (0.55 + 0.35 * u[4])
    b = a * (1.0 + 0.8 * u[5])
    ang = math.atan2(ax[1], ax[0])
    sign = -1.0 if subtype == "lytic" else 1.0
    bone.lesions.append((c, b, a, ang, sign * min(1.0, 0.7 * contrast)))
    return Finding(kind, subtype, bone.name, contrast)


def _degenerative(anat: Anatomy, u: np.ndarray, contrast: float) -> Finding:
    """Osteoarthritis of a joint: narrowed space, sclerosis and osteophytes, from the draws ``u``."""
    kind = "degenerative"
    joints = [
        j
        for j in anat.joints
        if all(abs(x) < 0.85 for x in _end_point(anat.parts[j.a], j.a_end) + _end_point(anat.parts[j.b], j.b_end))
    ] or anat.joints
    j = joints[int(u[1] * len(joints))]
    pa, pb = anat.parts[j.a], anat.parts[j.b]
    ca, cb = _end_point(pa, j.a_end), _end_point(pb, j.b_end)
    d = (cb[0] - ca[0], cb[1] - ca[1])
    dist = math.hypot(*d) or 1e-6
    axis = (d[0] / dist, d[1] / dist)
    perp = (-axis[1], axis[0])
    ra = pa.radius_at(1.0 if j.a_end == "p1" else 0.0) + (pa.flare1 if j.a_end == "p1" else pa.flare0)
    rb = pb.radius_at(1.0 if j.b_end == "p1" else 0.0) + (pb.flare1 if j.b_end == "p1" else pb.flare0)
    # narrow the joint space: move both ends towards each other by a share of the cartilage gap
    gap = max(dist - ra - rb, 0.0) if pa.kind == "tube" and pb.kind == "tube" else 0.02
    k = (0.3 + 0.15 * u[2]) * gap
    for part, end, sgn in ((pa, j.a_end, 1.0), (pb, j.b_end, -1.0)):
        e = _end_point(part, end)
        moved = _add(e, axis, sgn * k)
        if part.kind == "blob":
            part.p0 = part.p1 = moved
        elif end == "p0":
            part.p0 = moved
        else:
            part.p1 = moved
    mid = ((ca[0] + cb[0]) / 2, (ca[1] + cb[1]) / 2)
    rj = max(min(ra, rb), 0.02)
    for part, side in ((pa, -1.0), (pb, 1.0)):
        part.sclerosis.append((_add(mid, axis, side * rj * 0.5), rj * 0.9, min(1.5, 0.8 * contrast)))
    n_ost = 2 + int(u[3] * 3)
    for i in range(n_ost):
        lat_side = 1.0 if i % 2 == 0 else -1.0
        along = (-1.0 if i < 2 else 1.0) * (0.25 + 0.3 * u[4 + i])
        c = _add(_add(mid, perp, lat_side * rj * (1.0 + 0.1 * u[8])), axis, along * rj)
        size = rj * (0.22 + 0.15 * u[9])
        anat.parts.append(
            _blob(
                "osteophyte",
                c,
                size * 1.4,
                size * 0.8,
                math.atan2(axis[1], axis[0]),
                density=1.0 + 0.5 * contrast,
                cortex=0.5,
                finding=True,
            )
        )
    return Finding(kind, "osteoarthritis", j.name, contrast)


def _hardware(anat: Anatomy, u: np.ndarray, long_bones: list[int], contrast: float) -> Finding:
    """Orthopaedic metal on a long bone (plate, nail, wires or a shoulder arthroplasty), from the draws ``u``."""
    kind = "hardware"
    long_bones = _visible(anat, long_bones, 0.2, 0.8)
    bi = long_bones[int(u[1] * len(long_bones))]
    bone = anat.parts[bi]
    options = ["plate", "nail"]
    if anat.region in ("finger", "hand", "wrist"):
        options = ["plate", "wires"]
    if anat.region == "shoulder":
        options = ["plate", "arthroplasty"]
    subtype = options[int(u[0] * len(options))]
    ax = bone.axis()
    perp = (-ax[1], ax[0])
    metal = 4.0 * min(1.5, max(0.15, contrast))
    bone = _place_metal(anat, bone, subtype, u, ax, perp)
    for m in anat.metal:
        m.density = metal
        m.finding = True
    return Finding(kind, subtype, bone.name if subtype != "arthroplasty" else "humeral_head", contrast)


def _place_metal(anat: Anatomy, bone: Part, subtype: str, u: np.ndarray, ax: Vec, perp: Vec) -> Part:
    """Add the metal parts of ``subtype`` to ``anat.metal``; returns the bone they sit on (the humerus for an
    arthroplasty)."""
    if subtype == "arthroplasty":
        head, bone = anat.parts[0], anat.parts[1]
        head.density *= 0.2
        hc = head.p0
        anat.metal.append(_blob("prosthesis_head", hc, head.r0 * 0.95, head.r1 * 0.95, profile="solid", layer="metal"))
        anat.metal.append(_tube("stem", hc, bone.point(0.45), bone.r0 * 0.45, bone.r0 * 0.25, profile="solid"))
        anat.metal[-1].layer = "metal"
    elif subtype == "nail":
        t0, t1 = 0.05 + 0.1 * u[2], 0.75 + 0.2 * u[3]
        rr = bone.radius_at(0.5) * 0.35
        anat.metal.append(_tube("nail", bone.point(t0), bone.point(t1), rr, rr * 0.9, profile="solid", layer="metal"))
        for t in (t0 + 0.05, t1 - 0.05):
            c = bone.point(t)
            rb = bone.radius_at(t) * 1.3
            anat.metal.append(
                _tube("screw", _add(c, perp, -rb), _add(c, perp, rb), rr * 0.5, profile="solid", layer="metal")
            )
    elif subtype == "wires":
        t = 0.2 + 0.6 * u[2]
        for i in range(2):
            c = bone.point(t + (i - 0.5) * 0.15)
            ang = (0.5 + 0.3 * u[4 + i]) * (1 if i else -1)
            d = _rot(ax, ang)
            L = bone.length() * 0.35
            rw = max(bone.radius_at(t) * 0.12, 0.004)
            anat.metal.append(_tube("wire", _add(c, d, -L), _add(c, d, L), rw, profile="solid", layer="metal"))
    else:  # plate and screws on one side of the shaft
        t0 = 0.15 + 0.25 * u[2]
        t1 = min(0.95, t0 + 0.35 + 0.2 * u[3])
        side = 1.0 if u[4] < 0.5 else -1.0
        rr = bone.radius_at((t0 + t1) / 2)
        off = side * rr * 1.05
        p0 = _add(bone.point(t0), perp, off)
        p1 = _add(bone.point(t1), perp, off)
        anat.metal.append(_tube("plate", p0, p1, rr * 0.28, profile="flat", layer="metal"))
        n_screws = 3 + int(u[5] * 4)
        for i in range(n_screws):
            t = t0 + (t1 - t0) * (i + 0.5) / n_screws
            c = _add(bone.point(t), perp, off)
            anat.metal.append(
                _tube("screw", c, _add(c, perp, -side * rr * 2.3), rr * 0.13, profile="solid", layer="metal")
            )
            anat.metal.append(_blob("screw_head", c, rr * 0.3, rr * 0.22, profile="solid", layer="metal"))
    return bone
