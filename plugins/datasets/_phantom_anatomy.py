"""Phantom anatomy: the analytic solids (tubes, ellipsoids) of each upper-limb region in a canonical frame.

Part of the phantom generator (:mod:`._phantoms`); every value is drawn from the caller's generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xray_xai.sdk.interfaces import REGIONS

__all__ = ["VIEWS", "Anatomy", "Joint", "Part", "Vec", "anatomy"]

VIEWS: tuple[str, ...] = ("frontal", "lateral")

Vec = tuple[float, float]


# ---------------------------------------------------------------------------------------------------------------
# Solids
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Part:
    """One solid. ``kind="tube"``: segment ``p0``-``p1`` with radius ``r0``->``r1`` (plus end flares);
    ``kind="blob"``: ellipse centred at ``p0`` with semi-axes ``r0`` (along ``angle``) and ``r1``.

    ``profile``: ``"shell"`` (cortex + medulla, bones), ``"solid"`` (soft tissue, metal rods), ``"flat"`` (plates).
    ``layer``: ``"bone"``, ``"soft"`` (combined by maximum: one envelope), ``"metal"``.
    """

    name: str
    kind: str
    p0: Vec
    p1: Vec = (0.0, 0.0)
    r0: float = 0.05
    r1: float = 0.05
    angle: float = 0.0
    flare0: float = 0.0
    flare1: float = 0.0
    flare_len: float = 0.12
    cortex: float = 0.3
    marrow: float = 0.25
    density: float = 1.0
    profile: str = "shell"
    layer: str = "bone"
    long: bool = False
    finding: bool = False  #: the whole part is part of the finding (osteophytes, metal)
    cut: tuple[Vec, Vec, Vec, float, float] | None = None  #: fracture: point, unit normal, shift, width, contrast
    lesions: list[tuple[Vec, float, float, float, float]] = field(default_factory=list)  #: c, a, b, angle, +-contrast
    sclerosis: list[tuple[Vec, float, float]] = field(default_factory=list)  #: centre, radius, contrast

    def reach(self) -> float:
        r = max(self.r0, self.r1) + max(self.flare0, self.flare1)
        if self.cut is not None:
            r += math.hypot(*self.cut[2])
        return r

    def bbox(self) -> tuple[float, float, float, float]:
        """Canonical (umin, umax, vmin, vmax)."""
        r = self.reach()
        if self.kind == "blob":
            return self.p0[0] - r, self.p0[0] + r, self.p0[1] - r, self.p0[1] + r
        return (
            min(self.p0[0], self.p1[0]) - r,
            max(self.p0[0], self.p1[0]) + r,
            min(self.p0[1], self.p1[1]) - r,
            max(self.p0[1], self.p1[1]) + r,
        )

    def point(self, t: float) -> Vec:
        return (self.p0[0] + t * (self.p1[0] - self.p0[0]), self.p0[1] + t * (self.p1[1] - self.p0[1]))

    def axis(self) -> Vec:
        dx, dy = self.p1[0] - self.p0[0], self.p1[1] - self.p0[1]
        n = math.hypot(dx, dy) or 1.0
        return dx / n, dy / n

    def radius_at(self, t: float) -> float:
        if self.kind == "blob":
            return min(self.r0, self.r1)
        return self.r0 + (self.r1 - self.r0) * t

    def length(self) -> float:
        return math.hypot(self.p1[0] - self.p0[0], self.p1[1] - self.p0[1])


@dataclass
class Joint:
    """Where bone ``a`` (its end ``a_end``) meets bone ``b`` (its end ``b_end``); ``axis`` points from a to b."""

    name: str
    a: int
    a_end: str
    b: int
    b_end: str


@dataclass
class Anatomy:
    """The solids of one region in one view, in the canonical frame."""

    region: str
    view: str
    parts: list[Part]
    joints: list[Joint]
    soft: list[Part]
    metal: list[Part] = field(default_factory=list)

    def long_bones(self) -> list[int]:
        return [i for i, p in enumerate(self.parts) if p.long]


def _tube(name: str, p0: Vec, p1: Vec, r0: float, r1: float | None = None, **kw: Any) -> Part:
    return Part(name, "tube", p0, p1, r0, r0 if r1 is None else r1, **kw)


def _blob(name: str, c: Vec, a: float, b: float, angle: float = 0.0, **kw: Any) -> Part:
    kw.setdefault("cortex", 0.22)
    kw.setdefault("marrow", 0.6)
    return Part(name, "blob", c, c, a, b, angle=angle, **kw)


def _soft_tube(p0: Vec, p1: Vec, r0: float, r1: float | None = None) -> Part:
    return _tube("soft", p0, p1, r0, r1, profile="solid", layer="soft")


def _soft_blob(c: Vec, a: float, b: float, angle: float = 0.0) -> Part:
    return Part("soft", "blob", c, c, a, b, angle=angle, profile="solid", layer="soft")


# ---------------------------------------------------------------------------------------------------------------
# Region templates (canonical frame: v in [-1, 1] top to bottom, u across; the same parts in every view)
# ---------------------------------------------------------------------------------------------------------------
def _rot(v: Vec, ang: float) -> Vec:
    c, s = math.cos(ang), math.sin(ang)
    return c * v[0] - s * v[1], s * v[0] + c * v[1]


def _add(a: Vec, b: Vec, k: float = 1.0) -> Vec:
    return a[0] + k * b[0], a[1] + k * b[1]


def _chain(
    name: str,
    start: Vec,
    angle: float,
    lengths: list[float],
    radii: list[float],
    gap: float,
    bend: float = 0.0,
    first_long: bool = True,
) -> list[Part]:
    """A finger-like chain of tubes going *up* (angle 0 = -v), each bending ``bend`` radians more."""
    parts: list[Part] = []
    p = start
    ang = angle
    for k, (length, r) in enumerate(zip(lengths, radii, strict=True)):
        d = _rot((0.0, -1.0), ang)
        p1 = _add(p, d, length)
        last = k == len(lengths) - 1
        parts.append(
            _tube(
                f"{name}{k + 1}",
                p,
                p1,
                r * 1.05,
                r * (0.75 if last else 0.8),
                flare0=r * 0.4,
                flare1=r * (0.12 if last else 0.22),
                flare_len=length * 0.22,
                cortex=0.32,
                long=first_long or k > 0,
            )
        )
        p = _add(p1, d, gap)
        ang += bend
    return parts


def _chain_joints(name: str, first: int, n: int) -> list[Joint]:
    return [Joint(f"{name}-{k + 1}", first + k, "p1", first + k + 1, "p0") for k in range(n - 1)]


def _finger_soft(parts: list[Part], scale: float) -> list[Part]:
    return [_soft_tube(p.p0, p.p1, p.r0 * scale, p.r1 * scale) for p in parts]


def _hand_like(rng: np.random.Generator, view: str, region: str) -> Anatomy:
    """Hand (whole) or wrist (zoomed on the carpus): radius, ulna, carpals, metacarpals, phalanges."""
    s = rng.uniform(0.9, 1.1)
    spread = rng.uniform(0.8, 1.2)
    finger_len = rng.uniform(0.9, 1.1)
    carpal_jit = rng.uniform(-0.01, 0.01, size=(8, 2))
    carpal_ang = rng.uniform(-0.6, 0.6, size=8)
    bend = rng.uniform(0.05, 0.25)
    lat = view == "lateral"
    if region == "hand":
        k, base = 0.75 * s, (0.0, -0.1)
    else:
        k, base = 1.15 * s, (0.0, -0.62)

    def P(u: float, v: float) -> Vec:  # template units -> canonical
        return base[0] + k * u, base[1] + k * v

    squeeze = 0.25 if lat else 1.0
    parts: list[Part] = []
    joints: list[Joint] = []
    soft: list[Part] = []
    # forearm bones from below
    ru = -0.3 if not lat else -0.05
    uu = 0.3 if not lat else 0.06
    parts.append(
        _tube("radius", P(ru, 2.6), P(ru + 0.02, 1.3), 0.1 * k, 0.1 * k, flare1=0.045 * k, flare_len=0.3 * k, long=True)
    )
    parts.append(_tube("ulna", P(uu, 2.6), P(uu, 1.38), 0.08 * k, 0.075 * k, flare1=0.03 * k, long=True))
    # carpals: proximal row (scaphoid, lunate, triquetrum, pisiform), distal row (trapezium..hamate)
    rows = [
        (-0.25, 1.07, 0.14, 0.09),
        (-0.05, 1.1, 0.11, 0.1),
        (0.14, 1.06, 0.1, 0.09),
        (0.26, 0.98, 0.065, 0.06),
        (-0.35, 0.85, 0.1, 0.09),
        (-0.18, 0.84, 0.08, 0.09),
        (-0.01, 0.84, 0.095, 0.11),
        (0.18, 0.86, 0.1, 0.1),
    ]
    for i, (cu, cv, a, b) in enumerate(rows):
        cu = cu * squeeze + carpal_jit[i, 0]
        ang = float(carpal_ang[i])
        parts.append(_blob(f"carpal{i + 1}", P(cu, cv + carpal_jit[i, 1]), a * k, b * k, ang, density=0.9))
    joints.append(Joint("radiocarpal", 0, "p1", 2, "p0"))
    joints.append(Joint("midcarpal", 3, "p0", 8, "p0"))
    _hand_rays(P, k, lat, squeeze, spread, finger_len, bend, parts, joints, soft)
    # soft tissue: palm, wrist, forearm
    soft.append(_soft_blob(P(-0.03, 0.5), 0.46 * (0.55 if lat else 1.0) * k, 0.55 * k))
    soft.append(_soft_blob(P(0.0, 0.95), 0.42 * (0.6 if lat else 1.0) * k, 0.3 * k))
    soft.append(_soft_tube(P(0.0, 2.6), P(0.0, 1.0), 0.5 * (0.7 if lat else 1.0) * k, 0.44 * (0.7 if lat else 1.0) * k))
    return Anatomy(region, view, parts, joints, soft)


def _hand_rays(
    P: Callable[[float, float], Vec],
    k: float,
    lat: bool,
    squeeze: float,
    spread: float,
    finger_len: float,
    bend: float,
    parts: list[Part],
    joints: list[Joint],
    soft: list[Part],
) -> None:
    """Metacarpals and fingers 2-5, then the thumb, with their joints and soft tissue (no random draws)."""
    # metacarpals 2-5 and fingers
    mc_u = [-0.2, -0.03, 0.13, 0.27]
    fingers_len = [[0.62, 0.42, 0.26, 0.2], [0.64, 0.46, 0.29, 0.21], [0.6, 0.43, 0.27, 0.2], [0.52, 0.34, 0.22, 0.18]]
    fingers_r = [[0.05, 0.045, 0.038, 0.032], [0.052, 0.047, 0.04, 0.033]] + [[0.048, 0.043, 0.036, 0.03]] * 2
    for f in range(4):
        u0 = mc_u[f] * squeeze
        ang = (mc_u[f] * 0.35 * spread) if not lat else bend * 0.3 * (f - 1.5) * 0.3
        first = len(parts)
        ch = _chain(
            f"ray{f + 2}_",
            (u0, 0.74),
            ang,
            [x * finger_len for x in fingers_len[f]],
            fingers_r[f],
            0.035,
            bend=bend if lat else 0.0,
        )
        _to_canonical(ch, P, k)
        parts.extend(ch)
        joints.extend(_chain_joints(f"ray{f + 2}", first, len(ch)))
        soft.extend(_finger_soft(ch[1:], 2.1))
    # thumb
    first = len(parts)
    th = _chain(
        "ray1_", (-0.3 * squeeze, 0.86), -0.55 if not lat else -0.3, [0.42, 0.32, 0.24], [0.055, 0.05, 0.04], 0.035
    )
    _to_canonical(th, P, k)
    parts.extend(th)
    joints.extend(_chain_joints("ray1", first, len(th)))
    soft.extend(_finger_soft(th, 2.0))


def _to_canonical(chain: list[Part], P: Callable[[float, float], Vec], k: float) -> None:
    """Template units -> canonical coordinates, in place."""
    for p in chain:
        p.p0 = P(*p.p0)
        p.p1 = P(*p.p1)
        p.r0, p.r1, p.flare0, p.flare1 = p.r0 * k, p.r1 * k, p.flare0 * k, p.flare1 * k
        p.flare_len *= k


def _hand(rng: np.random.Generator, view: str) -> Anatomy:
    return _hand_like(rng, view, "hand")


def _wrist(rng: np.random.Generator, view: str) -> Anatomy:
    return _hand_like(rng, view, "wrist")


def _finger(rng: np.random.Generator, view: str) -> Anatomy:
    s = rng.uniform(0.9, 1.1)
    bend = rng.uniform(0.08, 0.25)
    tilt = rng.uniform(-0.15, 0.15)
    neighbour = rng.uniform(0.55, 0.75)
    lat = view == "lateral"
    lengths = [0.9 * s, 0.72 * s, 0.46 * s, 0.34 * s]
    radii = [0.1 * s, 0.09 * s, 0.075 * s, 0.062 * s]
    parts = _chain("phalanx", (0.0, 1.45), tilt, lengths, radii, 0.06 * s, bend=bend if lat else 0.0)
    parts[0].name = "metacarpal"
    joints = _chain_joints("finger", 0, len(parts))
    soft = _finger_soft(parts[1:], 2.0)
    soft.append(_soft_tube(parts[0].p0, parts[0].p1, 0.35, 0.3))
    for side in (-1.0, 1.0):  # neighbouring fingers, mostly out of the field (as in MURA finger films)
        if lat:
            break
        nb = _chain("nb", (side * neighbour, 1.45), tilt + side * 0.12, lengths, radii, 0.06 * s)
        for p in nb:
            p.name = "neighbour"
        parts.extend(nb)
        soft.extend(_finger_soft(nb, 2.0))
    return Anatomy("finger", view, parts, joints, soft)


def _forearm(rng: np.random.Generator, view: str) -> Anatomy:
    s = rng.uniform(0.9, 1.1)
    sep = rng.uniform(0.2, 0.26) * s
    lat = view == "lateral"
    d = 0.09 * s if lat else sep  # lateral: radius and ulna largely overlap
    parts = [
        _tube("humerus", (0.02, -1.5), (0.02, -0.86), 0.07 * s, 0.07 * s, flare1=0.1 * s),
        _tube("radius", (-d * 0.5, -0.76), (-d, 0.8), 0.04 * s, 0.06 * s, flare0=0.02 * s, flare1=0.06 * s, long=True),
        _tube("ulna", (d * 0.6, -0.87), (d * 0.9, 0.78), 0.065 * s, 0.04 * s, flare0=0.04 * s, flare1=0.015, long=True),
        _blob("carpal", (-d * 0.4, 0.95), 0.07 * s, 0.05 * s),
        _blob("carpal", (d * 0.4, 0.94), 0.06 * s, 0.05 * s),
    ]
    joints = [Joint("elbow", 0, "p1", 2, "p0"), Joint("radiocarpal", 1, "p1", 3, "p0")]
    soft = [_soft_tube((0.0, -1.6), (0.0, 1.2), (0.3 if not lat else 0.26) * s, 0.2 * s)]
    return Anatomy("forearm", view, parts, joints, soft)


def _humerus(rng: np.random.Generator, view: str) -> Anatomy:
    s = rng.uniform(0.9, 1.1)
    head_off = rng.uniform(0.08, 0.14)
    lat = view == "lateral"
    parts = [
        _tube("humerus", (0.0, -0.72), (0.0, 0.72), 0.075 * s, 0.06 * s, flare0=0.03 * s, flare1=0.07 * s, long=True),
        _blob("humeral_head", (head_off * (0.3 if lat else 1.0), -0.84), 0.17 * s, 0.15 * s, 0.4),
        _blob("condyles", (0.0, 0.8), (0.1 if lat else 0.17) * s, 0.07 * s),
        _tube("ulna", (0.04, 0.88), (0.45, 1.5) if lat else (0.07, 1.5), 0.06 * s, 0.045 * s, flare0=0.03 * s),
        _tube("radius", (-0.04, 0.92), (0.4, 1.55) if lat else (-0.1, 1.5), 0.04 * s, 0.045 * s, flare0=0.02 * s),
    ]
    joints = [Joint("head-neck", 1, "p0", 0, "p0"), Joint("elbow", 2, "p0", 3, "p0")]
    soft = [_soft_tube((0.0, -1.1), (0.0, 1.0), 0.36 * s, 0.26 * s), _soft_blob((0.05, -0.95), 0.4, 0.3)]
    return Anatomy("humerus", view, parts, joints, soft)


def _elbow(rng: np.random.Generator, view: str) -> Anatomy:
    s = rng.uniform(0.9, 1.1)
    flex = rng.uniform(1.2, 1.75)  # lateral view: elbow flexed ~70-100 degrees
    lat = view == "lateral"
    hj = (0.0, -0.12)
    if lat:
        fa = _rot((0.0, 1.0), -flex)
        radius = _tube("radius", _add(hj, (0.04, 0.06)), _add(hj, fa, 1.4), 0.06 * s, 0.05 * s, flare0=0.025 * s)
        ulna = _tube("ulna", _add(hj, (-0.1, 0.0)), _add(_add(hj, fa, 1.4), (0.0, 0.06)), 0.075 * s, 0.05 * s)
        ulna.flare0 = 0.05 * s
        condyles = _blob("condyles", _add(hj, (0.0, -0.04)), 0.11 * s, 0.1 * s)
        olecranon = _blob("olecranon", _add(hj, (-0.15, -0.03)), 0.07 * s, 0.06 * s)
    else:
        radius = _tube("radius", (-0.13, 0.04), (-0.18, 1.4), 0.06 * s, 0.045 * s, flare0=0.03 * s, long=True)
        ulna = _tube("ulna", (0.07, -0.02), (0.12, 1.4), 0.08 * s, 0.045 * s, flare0=0.03 * s, long=True)
        condyles = _blob("condyles", _add(hj, (0.0, -0.08)), 0.24 * s, 0.09 * s)
        olecranon = _blob("olecranon", (0.05, -0.16), 0.08 * s, 0.06 * s, density=0.7)
    radius.long = ulna.long = True
    parts = [
        _tube("humerus", (0.0, -1.4), _add(hj, (0.0, -0.15)), 0.085 * s, 0.09 * s, flare1=0.07 * s, long=True),
        condyles,
        radius,
        ulna,
        olecranon,
    ]
    joints = [Joint("humeroradial", 1, "p0", 2, "p0"), Joint("humeroulnar", 1, "p0", 3, "p0")]
    soft = [
        _soft_tube((0.0, -1.4), hj, 0.34 * s, 0.3 * s),
        _soft_tube(hj, radius.p1, 0.3 * s, 0.24 * s),
    ]
    return Anatomy("elbow", view, parts, joints, soft)


def _shoulder(rng: np.random.Generator, view: str) -> Anatomy:
    s = rng.uniform(0.9, 1.1)
    abd = rng.uniform(-0.1, 0.2)
    lat = view == "lateral"
    head_c = (0.18, -0.18) if not lat else (0.05, -0.1)
    shaft_dir = _rot((0.0, 1.0), abd)
    parts = [
        _blob("humeral_head", head_c, 0.27 * s, 0.25 * s, 0.5, cortex=0.12, marrow=0.65),
        _tube("humerus", _add(head_c, (0.05, 0.1)), _add(head_c, shaft_dir, 1.5), 0.14 * s, 0.11 * s, long=True),
    ]
    if not lat:
        parts += [
            _blob("glenoid", (-0.14, -0.16), 0.07 * s, 0.2 * s, 0.1, density=1.1),
            _blob("scapula", (-0.5, 0.3), 0.3 * s, 0.62 * s, 0.3, profile="solid", density=0.12),
            _tube("clavicle", (-1.2, -0.68), (0.05, -0.62), 0.06 * s, 0.055 * s, long=True),
            _tube("acromion", (-0.12, -0.58), (0.32, -0.5), 0.06 * s, 0.05 * s),
            _tube("coracoid", (-0.3, -0.45), (-0.08, -0.35), 0.045 * s, 0.035 * s),
        ]
    else:  # scapular Y view
        parts += [
            _blob("glenoid", (0.0, -0.1), 0.12 * s, 0.12 * s, density=0.8),
            _tube("scapula", (0.0, -0.05), (-0.1, 1.3), 0.09 * s, 0.05 * s, cortex=0.2, density=0.7),
            _tube("clavicle", (-0.9, -0.75), (0.0, -0.65), 0.055 * s, 0.05 * s, long=True),
            _tube("acromion", (0.0, -0.2), (0.4, -0.65), 0.06 * s, 0.05 * s),
            _tube("coracoid", (0.0, -0.2), (-0.45, -0.55), 0.05 * s, 0.04 * s),
        ]
    # lateral border of the scapula: the thick cortical ridge running down from the glenoid neck
    parts.append(_tube("scapula", (-0.2, -0.02), (-0.45, 0.95) if not lat else (0.05, 1.2), 0.05 * s, 0.035 * s))
    for i in range(4):  # ribs: faint arcs on the chest side
        v0 = -0.35 + i * 0.42
        pts = [(-1.4 + 0.32 * j, v0 + 0.05 * j * j - 0.04 * j) for j in range(5)]
        for j in range(4):
            parts.append(_tube("rib", pts[j], pts[j + 1], 0.04 * s, cortex=0.35, density=0.45))
    joints = [Joint("glenohumeral", 2, "p0", 0, "p0"), Joint("acromioclavicular", 4, "p1", 5, "p0")]
    soft = [_soft_blob((0.0, 0.1), 0.95, 1.2, 0.2), _soft_tube(head_c, _add(head_c, shaft_dir, 1.5), 0.5, 0.45)]
    return Anatomy("shoulder", view, parts, joints, soft)


TEMPLATES: dict[str, Callable[[np.random.Generator, str], Anatomy]] = {
    "elbow": _elbow,
    "finger": _finger,
    "forearm": _forearm,
    "hand": _hand,
    "humerus": _humerus,
    "shoulder": _shoulder,
    "wrist": _wrist,
}
assert tuple(TEMPLATES) == REGIONS


def anatomy(region: str, rng: np.random.Generator, view: str = "frontal") -> Anatomy:
    """The solids of ``region`` in ``view``. Draws a fixed number of values from ``rng`` whatever the view, so
    a study's views share one anatomy when each view gets a generator seeded alike."""
    if region not in TEMPLATES:
        raise ValueError(f"unknown region {region!r}; expected one of {', '.join(REGIONS)}")
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    return TEMPLATES[region](rng, view)
