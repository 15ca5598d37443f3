"""Rendering explanations for people: overlay PNGs, side-by-side comparisons, study figures, an HTML contact sheet.

The film is always shown in gray as the model saw it (crop/resize/letterbox, no normalisation) and the heatmap on
top with an opacity that grows with the map value, so that regions without evidence leave the film untouched; a
colour bar gives the scale. :func:`blend` is the one rule for that (opacity ``DEFAULT_ALPHA * value``, ``jet``
colours): the figures of ``xray-xai explain``, the overlays of the web page and the report's overlays all draw
their heatmaps with it, so one map over one film looks the same everywhere. Figures are drawn with matplotlib's
object API (``Figure`` + ``FigureCanvasAgg``, no pyplot global state, no backend switch) and written atomically.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xray_xai._util.fsutil import atomic_path, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "Panel",
    "blend",
    "contact_sheet",
    "heatmap_rgba",
    "render_grid",
    "render_overlay",
    "render_study",
    "superpixel_film",
    "to_png",
]

DEFAULT_CMAP = "jet"
DEFAULT_ALPHA = 0.6


def heatmap_rgba(heat: np.ndarray, cmap: str = DEFAULT_CMAP, alpha_max: float = DEFAULT_ALPHA) -> np.ndarray:
    """``(H, W, 4)`` RGBA of a [0, 1] map whose alpha is proportional to the value (0 where there is no evidence)."""
    from matplotlib import colormaps

    h = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, 1.0)
    rgba = colormaps[cmap](h)
    rgba[..., 3] = alpha_max * h
    return rgba.astype(np.float32)


def blend(film: np.ndarray, heat: np.ndarray, cmap: str = DEFAULT_CMAP, alpha_max: float = DEFAULT_ALPHA) -> np.ndarray:
    """The heatmap over the film, RGB ``(H, W, 3)`` float in [0, 1]: ``film * (1 - a) + colour * a`` with
    ``a = alpha_max * value`` (:func:`heatmap_rgba`). ``film`` is gray ``(H, W)`` or already RGB ``(H, W, 3)``
    (the superpixel view). The one blending rule of xray-xai: explain's figures, the web page, the report."""
    base = np.clip(np.nan_to_num(np.asarray(film, dtype=np.float32)), 0.0, 1.0)
    if base.ndim == 2:
        base = np.repeat(base[..., None], 3, axis=2)
    rgba = heatmap_rgba(heat, cmap, alpha_max)
    a = rgba[..., 3:4]
    return np.clip(base * (1 - a) + rgba[..., :3] * a, 0.0, 1.0)


def to_png(image: np.ndarray) -> bytes:
    """A gray ``(H, W)`` or RGB ``(H, W, 3)`` float array in [0, 1] as 8-bit PNG bytes (values rounded)."""
    import io

    from PIL import Image

    arr = np.rint(np.clip(np.nan_to_num(np.asarray(image, dtype=np.float32)), 0.0, 1.0) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def superpixel_film(film: np.ndarray, kept: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """RGB film with the kept superpixels at full brightness, the discarded ones dimmed, kept outlines in yellow."""
    f = np.clip(np.asarray(film, dtype=np.float32), 0, 1)
    shown = np.where(kept, 0.15 + 0.85 * f, 0.45 * f)
    rgb = np.repeat(shown[..., None], 3, axis=2)
    if labels is not None:
        from skimage.segmentation import find_boundaries

        edges = find_boundaries(np.where(kept, labels, -1), mode="inner") & kept
        rgb[edges] = (1.0, 0.85, 0.1)
    return rgb


@dataclass
class Panel:
    """One image cell of a figure: the film, an optional map, a caption; ``kept``/``labels`` for superpixels."""

    film: np.ndarray
    heat: np.ndarray | None = None
    caption: str = ""
    kept: np.ndarray | None = None
    labels: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _draw(ax: Axes, panel: Panel, cmap: str, alpha_max: float) -> None:
    base = panel.film if panel.kept is None else superpixel_film(panel.film, panel.kept, panel.labels)
    if panel.heat is not None:
        ax.imshow(blend(base, panel.heat, cmap, alpha_max), interpolation="bilinear")
    elif base.ndim == 3:
        ax.imshow(base, interpolation="bilinear")
    else:
        ax.imshow(base, cmap="gray", vmin=0.0, vmax=1.0, interpolation="bilinear")
    if panel.heat is not None and not np.any(np.asarray(panel.heat) > 0):
        ax.text(  # an empty overlay must not look like a rendering failure
            0.5,
            0.04,
            "no positive evidence",
            transform=ax.transAxes,
            ha="center",
            va="bottom",
            fontsize=8,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none"},
        )
    ax.set_xticks([])
    ax.set_yticks([])
    if panel.caption:
        ax.set_title(panel.caption, fontsize=9)


def _colorbar(fig: Figure, axes: Any, cmap: str, label: str = "evidence (scaled per image)") -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap)
    cbar = fig.colorbar(mappable, ax=axes, fraction=0.046, pad=0.02, shrink=0.9)
    cbar.set_label(label, fontsize=8)
    cbar.ax.tick_params(labelsize=7)


def _save(fig: Figure, path: str | Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", facecolor="white")
    return target


def render_overlay(
    film: np.ndarray,
    heat: np.ndarray,
    path: str | Path,
    *,
    title: str = "",
    cmap: str = DEFAULT_CMAP,
    alpha_max: float = DEFAULT_ALPHA,
    kept: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    show_film: bool = True,
    footer: str = "",
) -> Path:
    """Film (left) and film + heatmap with a colour bar (right), ``title`` above (method, model, probability),
    ``footer`` below (the model's provenance: training data, AUROC).

    With ``kept`` (a superpixel mask) the right panel brightens the kept superpixels and outlines them.
    """
    panels = [Panel(film, caption="film")] if show_film else []
    panels.append(Panel(film, heat, caption="explanation", kept=kept, labels=labels))
    fig = _figure(3.2 * len(panels) + 0.8, 3.7)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        _draw(ax, panel, cmap, alpha_max)
    _colorbar(fig, axes[-1], cmap)
    if title:
        fig.suptitle(title, fontsize=10)
    _footer(fig, footer)
    return _save(fig, path)


def _footer(fig: Figure, text: str) -> None:
    """A small grey line under the panels (the model's provenance), or nothing."""
    if text:
        fig.supxlabel(text, fontsize=7.5, color="0.35")


def render_grid(
    rows: Sequence[Sequence[Panel]],
    path: str | Path,
    *,
    row_labels: Sequence[str] = (),
    title: str = "",
    cmap: str = DEFAULT_CMAP,
    alpha_max: float = DEFAULT_ALPHA,
    footer: str = "",
) -> Path:
    """A grid of panels (rows = models or members, columns = film + methods) with one shared colour bar;
    ``footer``: the models' provenance, under the panels."""
    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=0)
    if not n_rows or not n_cols:
        raise ValueError("render_grid needs at least one panel")
    fig = _figure(2.6 * n_cols + 1.0, 2.8 * n_rows + 0.5)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            if c < len(row):
                _draw(ax, row[c], cmap, alpha_max)
            else:
                ax.axis("off")
        if r < len(row_labels):
            axes[r][0].set_ylabel(row_labels[r], fontsize=9)
    _colorbar(fig, axes[:, -1].tolist(), cmap)
    if title:
        fig.suptitle(title, fontsize=10)
    _footer(fig, footer)
    return _save(fig, path)


def render_study(
    films: Sequence[np.ndarray],
    heats: Sequence[np.ndarray],
    probabilities: Sequence[float],
    path: str | Path,
    *,
    view_labels: Sequence[str] = (),
    title: str = "",
    cmap: str = DEFAULT_CMAP,
    alpha_max: float = DEFAULT_ALPHA,
    footer: str = "",
) -> Path:
    """All views of a study in one figure; each caption gives the view's probability and its share of the study
    score (study probability = mean over views; share = p_i / sum_j p_j)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    total = probs.sum()
    shares = probs / total if total > 0 else np.full_like(probs, 1.0 / max(len(probs), 1))
    panels = []
    for i, (film, heat) in enumerate(zip(films, heats, strict=True)):
        label = view_labels[i] if i < len(view_labels) else f"view {i + 1}"
        panels.append(Panel(film, heat, caption=f"{label}\np={probs[i]:.3f}, share {shares[i]:.0%}"))
    study_p = float(probs.mean()) if len(probs) else float("nan")
    head = f"{title}  study p={study_p:.3f}" if title else f"study p={study_p:.3f}"
    return render_grid([panels], path, title=head, cmap=cmap, alpha_max=alpha_max, footer=footer)


_SHEET_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em} .meta{color:#555;font-size:.9em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
figure img{width:100%;height:auto;display:block} figcaption{font-size:.82em;margin-top:6px;word-break:break-all}
.p{font-weight:600} table{border-collapse:collapse;font-size:.85em;margin-top:1em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
"""


def contact_sheet(
    entries: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    title: str = "xray-xai explanations",
    subtitle: str = "",
    skipped: Sequence[tuple[str, str]] = (),
) -> Path:
    """A self-contained ``index.html`` (inline CSS, no scripts or remote assets) linking to the figures.

    Each entry has ``png`` (path), ``caption`` and optionally ``probability`` and ``links`` (name -> path); paths
    are written relative to the sheet's folder so the output folder can be moved or zipped as a whole.
    """
    out = Path(path)
    base = out.parent

    def rel(p: str | Path) -> str:
        return html.escape(Path(os.path.relpath(Path(p), base)).as_posix(), quote=True)

    cells = []
    for e in entries:
        png = rel(e["png"])
        cap = html.escape(str(e.get("caption", "")))
        prob = e.get("probability")
        prob_html = f' <span class="p">p={float(prob):.3f}</span>' if prob is not None else ""
        links = " ".join(f'<a href="{rel(v)}">{html.escape(k)}</a>' for k, v in (e.get("links") or {}).items())
        cells.append(
            f'<figure><a href="{png}"><img src="{png}" alt="{cap}" loading="lazy"></a>'
            f"<figcaption>{cap}{prob_html}<br>{links}</figcaption></figure>"
        )
    skipped_html = ""
    if skipped:
        rows = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>" for a, b in skipped)
        skipped_html = f"<h2>Skipped ({len(skipped)})</h2><table><tr><th>file</th><th>problem</th></tr>{rows}</table>"
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_SHEET_CSS}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="meta">{html.escape(subtitle)}</p>'
        f'<div class="grid">{"".join(cells)}</div>{skipped_html}</body></html>\n'
    )
    return atomic_write_text(out, doc)
