"""The figures of ``xray-xai explain``: one overlay per image, model and method; the side-by-side comparison (rows =
models, columns = film + methods); all views of a study together; an ensemble's members and their disagreement.
Drawn by :mod:`xray_xai.explain.overlays` (one blending rule), written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xray_xai.explain.overlays import Panel, render_grid, render_overlay, render_study

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.explain.engine import ModelFilms
    from xray_xai.sdk.interfaces import Explanation, Record

__all__ = ["title", "write_comparison", "write_members", "write_overlay", "write_study"]


def title(method: str, model: str, prob: float, target: str = "abnormal") -> str:
    """``method - model - p(abnormal) = ...`` (and which class the evidence is for, when not abnormal)."""
    evidence = "" if target == "abnormal" else f"  (evidence for {target})"
    return f"{method} - {model} - p(abnormal) = {prob:.3f}{evidence}"


def write_overlay(path: Path, film: np.ndarray, exp: Explanation, j: int, footer: str = "", model: str = "") -> Path:
    """Film and film + map of image ``j``, with the method, model and probability in the title and the model's
    provenance (``footer``) under it; superpixel methods also outline the kept superpixels. ``model``: the name in
    the title, the one the footer gives (a shipped model's own name, ``fracatlas-lite0``, not its architecture's);
    default the explanation's."""
    kept = exp.extras.get("kept_superpixels")
    seg = exp.extras.get("superpixels")
    return render_overlay(
        film,
        exp.maps[j],
        path,
        title=title(exp.method, model or exp.model, float(exp.probabilities[j]), exp.target),
        kept=kept[j] if isinstance(kept, np.ndarray) else None,
        labels=seg[j] if isinstance(seg, np.ndarray) else None,
        footer=footer,
    )


def write_members(path: Path, film: np.ndarray, exp: Explanation, j: int, footer: str = "", model: str = "") -> Path:
    """The fused map, each member's map and the disagreement map (std across members) of an ensemble, one row."""
    names = list(exp.extras.get("member_names", []))
    maps = exp.extras["member_maps"][:, j]
    probs = exp.extras["member_probabilities"][:, j]
    dis = exp.extras["disagreement"][j]
    panels = [Panel(film, caption="film"), Panel(film, exp.maps[j], caption=f"fused p={exp.probabilities[j]:.3f}")]
    panels += [Panel(film, m, caption=f"{n} p={p:.3f}") for n, m, p in zip(names, maps, probs, strict=True)]
    peak = float(dis.max())
    panels.append(Panel(film, dis / peak if peak > 0 else dis, caption=f"disagreement (std, max {peak:.2f})"))
    head = title(exp.method, model or exp.model, float(exp.probabilities[j]), exp.target)
    return render_grid([panels], path, title=head, footer=footer)


def write_comparison(
    path: Path, rec: Record, runs: Sequence[ModelFilms], methods: Sequence[str], j: int, target: str
) -> Path:
    """Rows = models, columns = film + methods (the layout of the published DenseNet fine-tune comparison)."""
    rows = []
    row_labels = []
    for run in runs:
        film = run.films[j]
        prob = float(run.explanation(methods[0]).probabilities[j])
        rows.append(
            [Panel(film, caption="film")] + [Panel(film, run.explanation(m).maps[j], caption=m) for m in methods]
        )
        row_labels.append(f"{run.label}\np(abnormal)={prob:.3f}")
    head = rec.image_id + ("" if target == "abnormal" else f"  (evidence for {target})")
    footer = "\n".join(dict.fromkeys(run.provenance for run in runs if run.provenance))
    return render_grid(rows, path, row_labels=row_labels, title=head, footer=footer)


def write_study(
    path: Path, run: ModelFilms, method: str, views: Sequence[int], view_labels: Sequence[str], head: str
) -> Path:
    """The ``views`` (positions in the batch) of one study under one model and method, in one figure."""
    exp = run.explanation(method)
    return render_study(
        [run.films[j] for j in views],
        [exp.maps[j] for j in views],
        [float(exp.probabilities[j]) for j in views],
        path,
        view_labels=view_labels,
        title=head,
        footer=run.provenance,
    )
