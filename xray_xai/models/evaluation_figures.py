"""The figures ``evaluate --out`` writes: ROC and precision-recall curves with the operating points marked, the
confusion matrices, and the reliability diagram (before and after calibration).

Every figure is a matplotlib ``Figure`` on an Agg canvas of its own (pyplot's global state and the process's
backend are left alone) saved atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xray_xai._util.fsutil import atomic_path

__all__ = ["plot_confusion", "plot_pr", "plot_reliability", "plot_roc"]

#: one curve: a label, its labels and probabilities, and its operating points ``(name, threshold)``
Curve = tuple[str, Any, Any, Sequence[tuple[str, float]]]
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _figure(figsize: tuple[float, float]) -> Any:
    """A figure on an Agg canvas of its own: pyplot and the process's matplotlib backend are left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path, footer: str = "") -> Path:
    """Lay out and write atomically; ``footer``: the model's provenance in small grey type under the plot."""
    fig.tight_layout()
    if footer:
        fig.text(0.5, 0.01, footer, ha="center", va="bottom", fontsize=6.5, color="0.35", wrap=True)
        fig.subplots_adjust(bottom=0.2)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return path


def _at(y: Any, p: Any, threshold: float) -> tuple[float, float, float | None]:
    """``(sensitivity, 1 - specificity, precision)`` of calling ``p >= threshold`` positive."""
    import numpy as np

    ya = np.asarray(y).astype(bool)
    called = np.asarray(p, dtype=np.float64) >= threshold
    sens = float(np.mean(called[ya])) if ya.any() else float("nan")
    fpr = float(np.mean(called[~ya])) if (~ya).any() else float("nan")
    prec = float(np.mean(ya[called])) if called.any() else None
    return sens, fpr, prec


def plot_roc(path: Path, curves: Sequence[Curve], footer: str = "") -> Path:
    """ROC curve of each level, its operating points marked (and named in the legend)."""
    from sklearn.metrics import roc_curve

    from xray_xai.models.metrics import auroc

    fig = _figure((5.0, 5.0))
    ax = fig.subplots()
    for i, (label, y, p, points) in enumerate(curves):
        auc = auroc(y, p)
        if auc is None:
            continue
        fpr, tpr, _ = roc_curve(y, p)
        (line,) = ax.plot(fpr, tpr, label=f"{label} (AUROC {auc:.3f})")
        for (name, t), marker in zip(points, _MARKERS, strict=False):
            sens, x, _ = _at(y, p, t)
            named = f"{name} (p >= {t:.3g})" if i == 0 else "_nolegend_"  # each operating point named once
            ax.plot([x], [sens], marker, color=line.get_color(), mfc="none", ms=8, label=named)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title("ROC: " + " and ".join(c[0] for c in curves) + " level")
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path, footer)


def plot_pr(path: Path, curves: Sequence[Curve], footer: str = "") -> Path:
    """Precision-recall curve of each level with its prevalence line and operating points."""
    import numpy as np
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig = _figure((5.0, 5.0))
    ax = fig.subplots()
    for i, (label, y, p, points) in enumerate(curves):
        ya = np.asarray(y)
        if ya.min() == ya.max():
            continue
        precision, recall, _ = precision_recall_curve(ya, p)
        ap = average_precision_score(ya, p)
        (line,) = ax.plot(recall, precision, label=f"{label} (AP {ap:.3f})")
        ax.axhline(float(ya.mean()), color=line.get_color(), ls=":", lw=0.8)
        for (name, t), marker in zip(points, _MARKERS, strict=False):
            sens, _, prec = _at(y, p, t)
            if prec is not None:
                named = f"{name} (p >= {t:.3g})" if i == 0 else "_nolegend_"
                ax.plot([sens], [prec], marker, color=line.get_color(), mfc="none", ms=8, label=named)
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (PPV)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper right", fontsize=7)
    return _save(fig, path, footer)


def plot_reliability(
    path: Path, panels: Sequence[tuple[str, Sequence[tuple[str, dict[str, Any]]]]], footer: str = ""
) -> Path:
    """One panel per level; in each, one reliability curve per probability (e.g. raw and calibrated): observed share
    of positives against mean probability per bin, marker area by the bin's films, the diagonal for reference."""
    fig = _figure((4.6 * len(panels), 4.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, series) in zip(axes, panels, strict=True):
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        for name, metrics in series:
            rows = metrics.get("reliability") or []
            xs = [r["mean_probability"] for r in rows]
            ys = [r["observed"] for r in rows]
            sizes = [8 + 120 * r["n"] / max(1, metrics["n"]) for r in rows]
            ece = metrics.get("ece")
            (line,) = ax.plot(xs, ys, "-", lw=1, label=f"{name} (ECE {ece:.3f})" if ece is not None else name)
            ax.scatter(xs, ys, s=sizes, color=line.get_color(), zorder=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("mean predicted probability")
        ax.set_ylabel("observed share abnormal")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path, footer)


def plot_confusion(path: Path, image: dict[str, Any], study: dict[str, Any], footer: str = "") -> Path:
    import numpy as np

    fig = _figure((7, 3.5))
    axes = fig.subplots(1, 2)
    for ax, (title, m) in zip(axes, (("image", image), ("study", study)), strict=True):
        mat = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        ax.imshow(mat, cmap="Blues")
        for (i, j), v in np.ndenumerate(mat):
            ax.text(j, i, str(v), ha="center", va="center")
        ax.set_xticks([0, 1], ["normal", "abnormal"])
        ax.set_yticks([0, 1], ["normal", "abnormal"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title} level")
    return _save(fig, path, footer)
