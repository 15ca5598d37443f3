"""The pictures a clustering writes: the K-selection curve, the 2-D projection and a montage per cluster.

Rendered with :class:`matplotlib.figure.Figure` on an Agg canvas of its own: the process's matplotlib backend is
neither chosen nor changed (no ``matplotlib.use``, no pyplot state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xray_xai.cluster.describe import MISSING
from xray_xai.errors import XrayXaiError
from xray_xai.sdk.interfaces import Model, Record

__all__ = ["montage", "plot_k_selection", "plot_projection"]


def _figure(size: tuple[float, float]) -> Any:
    """A figure of ``size`` inches at 110 dpi on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically."""
    from xray_xai._util.fsutil import atomic_path

    with atomic_path(path, suffix=".png.tmp") as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_k_selection(ks: list[int], scores: list[float], best: int, path: Path, method: str) -> Path:
    """The silhouette of each K as a line plot, the best K marked; written to ``path`` (PNG)."""

    fig = _figure((5, 3.2))
    ax = fig.subplots()
    ax.plot(ks, scores, marker="o")
    ax.axvline(best, color="tab:red", linestyle="--", linewidth=1, label=f"best K = {best}")
    ax.set_xlabel("K (number of clusters)")
    ax.set_ylabel("silhouette")
    ax.set_title(f"K selection ({method})")
    ax.legend(loc="best")
    fig.tight_layout()
    return _save(fig, path)


def plot_projection(
    path: Path,
    est: Any,
    X: np.ndarray,
    Z: np.ndarray,
    labels: np.ndarray,
    regions: list[str | None] | None,
    title: str = "",
) -> Path:
    """Two panels on the first two principal components: coloured by cluster, and by region; ``title`` above them
    (the model's provenance: name, training data, AUROC)."""
    if Z.shape[1] >= 2 and getattr(est, "components_", None) is not None:
        P = est.transform_2d(X)
    else:
        P = Z[:, :2] if Z.shape[1] >= 2 else np.column_stack([Z[:, 0], np.zeros(len(Z))])
    n = len(P)
    rng = np.random.default_rng(0)
    idx = rng.choice(n, 20_000, replace=False) if n > 20_000 else np.arange(n)
    fig = _figure((10, 4.4))
    axes = fig.subplots(1, 2)
    for c in sorted(set(labels[idx].tolist())):
        m = idx[labels[idx] == c]
        axes[0].scatter(P[m, 0], P[m, 1], s=8, alpha=0.7, label="noise" if c < 0 else f"cluster {c}")
    axes[0].set_title("by cluster")
    region_values = [r or MISSING for r in regions] if regions else [MISSING] * n
    for reg in sorted(set(region_values[i] for i in idx)):
        m = np.array([i for i in idx if region_values[i] == reg], dtype=np.int64)
        axes[1].scatter(P[m, 0], P[m, 1], s=8, alpha=0.7, label=reg)
    axes[1].set_title("by region")
    for ax in axes:
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend(loc="best", fontsize=7, markerscale=1.5)
    if title:
        fig.suptitle(title, fontsize=8.5)
    fig.tight_layout()
    return _save(fig, path)


def montage(
    path: Path,
    records: Sequence[Record],
    labels: np.ndarray,
    dist: np.ndarray,
    c: int,
    model: Model,
    size: int,
    tile: int = 128,
) -> Path:
    """The films nearest the centroid of cluster ``c``, as the model sees them (preprocessed geometry), in a grid
    under a title line (which cluster, how many of its films)."""
    from PIL import Image, ImageDraw

    from xray_xai.data.geometry import geometry
    from xray_xai.data.images import read_image, write_png

    idx = np.flatnonzero(labels == c)
    idx = idx[np.argsort(dist[idx], kind="stable")][: max(1, size)]
    tiles: list[np.ndarray] = []
    for i in idx:
        try:
            film = geometry(read_image(records[int(i)].path), model.preprocessing)
        except (XrayXaiError, OSError, ValueError):
            film = np.zeros((tile, tile), dtype=np.float32)
        img = Image.fromarray(np.clip(film * 255.0, 0, 255).astype(np.uint8)).resize(
            (tile, tile), Image.Resampling.BILINEAR
        )
        tiles.append(np.asarray(img, dtype=np.float32) / 255.0)
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    gap = 2
    canvas = np.ones((rows * (tile + gap) - gap, cols * (tile + gap) - gap), dtype=np.float32)
    for j, t in enumerate(tiles):
        r, q = divmod(j, cols)
        canvas[r * (tile + gap) : r * (tile + gap) + tile, q * (tile + gap) : q * (tile + gap) + tile] = t
    band = Image.new("L", (canvas.shape[1], 14), 255)
    title = f"cluster {c}: {len(idx)} nearest its centre of {int((labels == c).sum())}"
    ImageDraw.Draw(band).text((2, 1), title, fill=0)
    return write_png(path, np.vstack([np.asarray(band, dtype=np.float32) / 255.0, canvas]))
