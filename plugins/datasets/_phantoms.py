"""Drawing of synthetic upper-limb radiographs ("phantoms") with planted findings whose pixels are known exactly.

Why: explainers and audits need images where the truth is known to the pixel. Each film is an X-ray projection
of simple analytic solids: a bone is a tapered hollow tube (bright cortex, darker medulla, bulbous epiphyses) or an
ellipsoid (carpals, humeral head), the soft tissue is a solid envelope, metal is nearly opaque. For every pixel the
path length through each solid is computed in closed form on a coordinate grid (numpy, no per-pixel Python), summed
into an attenuation map and turned into film brightness (``1 - exp(-A)``), then blurred, given quantum noise, a
background gradient, collimation bands and a burned-in L/R marker.

Anatomy is drawn in a *canonical* frame (image height spans ``v`` in [-1, 1], the limb's long axis roughly
vertical); the view's rotation, flip, zoom and shift are applied by evaluating the solids on a transformed grid,
so the findings' masks follow the anatomy exactly. Everything is driven by a :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from xray_xai.sdk.interfaces import REGIONS

__all__ = [
    "ABNORMALITIES",
    "SUBTYPES",
    "VIEWS",
    "Anatomy",
    "Finding",
    "Part",
    "ViewParams",
    "anatomy",
    "draw_finding",
    "draw_view_params",
    "phantom",
    "render",
    "render_visible",
]

#: MURA's four kinds of abnormality (``"none"`` for normal studies)
ABNORMALITIES: tuple[str, ...] = ("fracture", "hardware", "degenerative", "lesion")
#: the variants drawn for each kind
SUBTYPES: dict[str, tuple[str, ...]] = {
    "fracture": ("transverse", "oblique", "displaced"),
    "hardware": ("plate", "nail", "wires", "arthroplasty"),
    "degenerative": ("osteoarthritis",),
    "lesion": ("lytic", "sclerotic"),
}
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
        for p in ch:  # template -> canonical coordinates
            p.p0 = P(*p.p0)
            p.p1 = P(*p.p1)
            p.r0, p.r1, p.flare0, p.flare1 = p.r0 * k, p.r1 * k, p.flare0 * k, p.flare1 * k
            p.flare_len *= k
        parts.extend(ch)
        joints.extend(_chain_joints(f"ray{f + 2}", first, len(ch)))
        soft.extend(_finger_soft(ch[1:], 2.1))
    # thumb
    first = len(parts)
    th = _chain(
        "ray1_", (-0.3 * squeeze, 0.86), -0.55 if not lat else -0.3, [0.42, 0.32, 0.24], [0.055, 0.05, 0.04], 0.035
    )
    for p in th:
        p.p0, p.p1 = P(*p.p0), P(*p.p1)
        p.r0, p.r1, p.flare0, p.flare1 = p.r0 * k, p.r1 * k, p.flare0 * k, p.flare1 * k
        p.flare_len *= k
    parts.extend(th)
    joints.extend(_chain_joints("ray1", first, len(th)))
    soft.extend(_finger_soft(th, 2.0))
    # soft tissue: palm, wrist, forearm
    soft.append(_soft_blob(P(-0.03, 0.5), 0.46 * (0.55 if lat else 1.0) * k, 0.55 * k))
    soft.append(_soft_blob(P(0.0, 0.95), 0.42 * (0.6 if lat else 1.0) * k, 0.3 * k))
    soft.append(_soft_tube(P(0.0, 2.6), P(0.0, 1.0), 0.5 * (0.7 if lat else 1.0) * k, 0.44 * (0.7 if lat else 1.0) * k))
    return Anatomy(region, view, parts, joints, soft)


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
    if kind == "lesion":
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
    if kind == "degenerative":
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
    # hardware
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
    for m in anat.metal:
        m.density = metal
        m.finding = True
    return Finding(kind, subtype, bone.name if subtype != "arthroplasty" else "humeral_head", contrast)


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
