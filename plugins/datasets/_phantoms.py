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

The generator lives in three modules: :mod:`._phantom_anatomy` (solids per region), :mod:`._phantom_findings`
(planted findings) and :mod:`._phantom_render` (views, projection, film); this module gathers their public names.
"""

from __future__ import annotations

from ._phantom_anatomy import VIEWS, Anatomy, Part, anatomy
from ._phantom_findings import ABNORMALITIES, SUBTYPES, Finding, draw_finding
from ._phantom_render import ViewParams, burn_token, draw_view_params, phantom, render, render_visible

__all__ = [
    "ABNORMALITIES",
    "SUBTYPES",
    "VIEWS",
    "Anatomy",
    "Finding",
    "Part",
    "ViewParams",
    "anatomy",
    "burn_token",
    "draw_finding",
    "draw_view_params",
    "phantom",
    "render",
    "render_visible",
]
