"""The forest plot of subgroup AUROCs: one line per subgroup (point and 95% interval), the overall AUROC as a dashed
line; subgroups flagged on AUROC in red, flagged on sensitivity or specificity only in orange. Drawn on an Agg
canvas of its own (pyplot is left alone)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["forest_plot"]


def forest_plot(path: Path, table: Mapping[str, Any], metric: str = "auroc") -> Path:
    """Draw ``table`` (a :func:`~xray_xai.audit.strata.subgroups.subgroup_table`) to ``path`` (PNG, atomic)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from xray_xai._util.fsutil import atomic_path

    rows = [r for r in table.get("rows", []) if r.get(metric) is not None]
    height = max(2.0, 0.26 * len(rows) + 1.0)
    fig = Figure(figsize=(7.0, height))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        flags = row.get("flagged") or []
        colour = "#cf222e" if metric in flags else "#bc4c00" if flags else "#1d232a"
        ci = row.get(f"{metric}_ci95")
        if ci:
            ax.plot(ci, [y, y], color=colour, lw=1.4)
        ax.plot([row[metric]], [y], "s", color=colour, ms=5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(
        [f"{'* ' if r.get('flagged') else ''}{r['column']}={r['level']} (n={r['n']})" for r in reversed(rows)],
        fontsize=7,
    )
    overall = (table.get("overall") or {}).get(metric)
    if overall is not None:
        ax.axvline(overall, color="#6a737d", ls="--", lw=0.9, label=f"all films ({overall:.3f})")
        ax.legend(loc="lower left", fontsize=7)
    ax.axvline(0.5, color="#d0d7de", lw=0.8)
    ax.set_xlim(0.0, 1.0)
    name = metric.upper() if metric == "auroc" else metric
    ax.set_xlabel(f"{name}, 95% bootstrap interval (* flagged: red on {name}, orange on another metric)")
    if not rows:
        ax.text(0.5, 0.5, "no subgroup with a defined value", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
