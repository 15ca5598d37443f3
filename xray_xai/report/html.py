"""One self-contained HTML report (and the same numbers as JSON) for evaluation, audit and clustering results.

The HTML embeds its images as base64 ``data:`` URIs and its CSS inline, so it can be mailed or archived as one
file and opened offline; every piece of text taken from results is escaped. Both files are written atomically.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from xray_xai.report.origins import models_section
from xray_xai.report.sections import (
    AUDIT_COLUMNS,
    CONTROL_COLUMNS,
    audit_section,
    clustering_section,
    evaluation_section,
    format_stat,
)

__all__ = ["AUDIT_COLUMNS", "CONTROL_COLUMNS", "format_stat", "overlay_png", "render_html", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1400px;
color:#1d232a;padding:0 1em;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.86em}
th,td{border:1px solid #d0d7de;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{color:#6a737d;font-size:.85em;display:block}.wide{overflow-x:auto}.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
.muted{color:#6a737d}.examples{display:flex;flex-wrap:wrap;gap:.8em}
figure{margin:0;border:1px solid #d0d7de;padding:.3em;background:#fafbfc}
figure img{width:200px;height:200px;display:block}.plots{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.plots>img{max-width:560px}
.plots figure img{width:auto;height:auto;max-width:420px}figcaption{font-size:.8em;max-width:200px;word-wrap:break-word}
"""


# -- images --------------------------------------------------------------------------------------------------------
def overlay_png(
    film: np.ndarray, heatmap: np.ndarray, *, mask: np.ndarray | None = None, alpha: float | None = None
) -> bytes:
    """PNG bytes of the film with the map blended on top by :func:`xray_xai.explain.overlays.blend` (the one rule
    that explain and the web page use too; ``alpha`` None is its default opacity) and the mask outline (if any) in
    green."""
    from xray_xai.explain.overlays import blend, to_png

    out = blend(film, heatmap) if alpha is None else blend(film, heatmap, alpha_max=alpha)
    if mask is not None and np.any(mask):
        from skimage.segmentation import find_boundaries

        edge = find_boundaries(np.asarray(mask, dtype=bool), mode="thick")
        out[edge] = (0.1, 1.0, 0.2)
    return to_png(out)


def render_html(
    *,
    audit: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    clustering: Mapping[str, Any] | None = None,
    title: str = "xray-xai report",
    base: str | Path = ".",
    strata: Mapping[str, Any] | None = None,
) -> str:
    """The report as one HTML string; ``base`` is where relative PNG paths in the results are resolved."""
    from xray_xai import __version__

    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>{_e(title)}</h1><p class='muted'>xray-xai {_e(__version__)}, {_e(created)}</p>"]
    body.append(models_section(evaluation, audit, clustering))
    if evaluation:
        body.append(evaluation_section(evaluation))
    if audit:
        body.append(audit_section(audit, Path(base)))
    if clustering:
        body.append(clustering_section(clustering))
    if strata:
        from xray_xai.report.strata import strata_section

        body.append(strata_section(strata))
    if not (evaluation or audit or clustering or strata):
        body.append("<p class='muted'>Nothing to report.</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _e(x: Any) -> str:
    return html.escape(str(x))


def _jsonable(obj: Any) -> Any:
    """Numpy values to Python, non-finite floats to None (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return obj


def write_report(
    out_dir: str | Path,
    *,
    audit: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    clustering: Mapping[str, Any] | None = None,
    title: str = "xray-xai report",
    strata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` (self-contained) and ``out_dir/report.json`` (the same numbers); return the
    HTML path. Relative PNG paths in the results (audit examples) are read from ``out_dir`` and embedded."""
    from xray_xai._util.fsutil import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = _jsonable({"title": title, "evaluation": evaluation, "audit": audit, "clustering": clustering})
    if strata:
        payload["strata"] = _jsonable(strata)
    atomic_write_text(out / "report.json", json.dumps(payload, indent=2, allow_nan=False) + "\n")
    page = render_html(audit=audit, evaluation=evaluation, clustering=clustering, title=title, base=out, strata=strata)
    return atomic_write_text(out / "report.html", page)
