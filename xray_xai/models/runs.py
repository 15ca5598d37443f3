"""The run folder of a training run and what :func:`~xray_xai.models.training.train` returns.

A run folder holds ``history.csv`` and ``curves.png`` (rewritten atomically after each epoch), ``skipped.csv`` (bad
images), ``result.json``, and ``last.pt`` + ``last.json``: the resumable state of the last finished epoch (model,
optimizer, scheduler, RNG states, history, best weights; tensors and plain values only, loaded with
``weights_only=True``). :func:`epoch_line` is the one-line log of an epoch that ``xray-xai train`` prints.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xray_xai._util.fsutil import atomic_path, atomic_write_json, atomic_write_text
from xray_xai.sdk.interfaces import Problem

__all__ = [
    "HISTORY_FIELDS",
    "EpochCallback",
    "SaveTarget",
    "TrainResult",
    "default_run_dir",
    "epoch_line",
    "load_last",
    "open_run_dir",
    "save_last",
    "save_to_store",
    "write_history",
]

#: called with each history row as soon as its epoch is saved (``xray-xai train`` prints it)
EpochCallback = Callable[[dict[str, Any]], None]

HISTORY_FIELDS: tuple[str, ...] = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_auroc",
    "val_kappa",
    "val_study_kappa",
    "lr",
    "seconds",
    "img_per_s",
)


@dataclass
class TrainResult:
    """What :func:`train` returns: where the best weights went, the per-epoch history and the best epoch's metrics."""

    model: str
    checkpoint: Path
    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_metrics: dict[str, Any] = field(default_factory=dict)
    skipped: list[Problem] = field(default_factory=list)
    stopped_early: bool = False
    warnings: list[Problem] = field(default_factory=list)  #: films kept despite damage (also in warnings.csv)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "checkpoint": str(self.checkpoint),
            "run_dir": str(self.run_dir),
            "best_epoch": self.best_epoch,
            "best_metrics": self.best_metrics,
            "stopped_early": self.stopped_early,
            "history": self.history,
            "skipped": [{"path": p.path, "problem": p.problem} for p in self.skipped],
            "warnings": [{"path": p.path, "problem": p.problem} for p in self.warnings],
        }


def default_run_dir(model_name: str, fingerprint: str, seed: int) -> Path:
    """``$XRAY_XAI_HOME/runs/<model>/<split fingerprint>-seed<seed>``: the stem of the runs of one model on one data
    split with one seed; each run gets a folder of its own named ``<stem>-<UTC timestamp>`` (:func:`open_run_dir`)."""
    from xray_xai.models.store import home

    return home() / "runs" / model_name / f"{fingerprint}-seed{seed}"


#: files that mark a folder as holding a run (a new run never writes into such a folder unless resuming)
RUN_MARKERS: tuple[str, ...] = ("history.csv", "last.pt", "last.json", "result.json")


def _holds_run(folder: Path) -> str | None:
    return next((m for m in RUN_MARKERS if (folder / m).exists()), None)


def _newest_resumable(stem: Path) -> Path | None:
    """The run of ``stem`` whose ``last.pt`` was written last: the stem itself (runs made before each run had a
    folder of its own) or one of its ``<stem>-<timestamp>`` siblings."""
    candidates = [stem, *stem.parent.glob(f"{stem.name}-*")] if stem.parent.is_dir() else []
    resumable = [c for c in candidates if (c / "last.pt").is_file()]
    return max(resumable, key=lambda c: (c / "last.pt").stat().st_mtime_ns) if resumable else None


def open_run_dir(
    model_name: str, fingerprint: str, seed: int, out_dir: str | Path | None = None, resume: bool = False
) -> Path:
    """The folder of this run, created: never one holding an earlier run, unless ``resume``.

    ``out_dir`` given: that folder; one that already holds a run is refused unless ``resume``. Otherwise, resuming:
    the newest resumable run of this model, split and seed (a new folder when there is none); not resuming: a new
    folder ``<default_run_dir>-<UTC timestamp>`` (``-2``, ``-3``... when two runs start in the same second), made
    with an exclusive ``mkdir`` so that two runs started together never share it.
    """
    import datetime as _dt

    from xray_xai.errors import XrayXaiError

    if out_dir is not None:
        run_dir = Path(out_dir)
        marker = None if resume else _holds_run(run_dir)
        if marker is not None:
            raise XrayXaiError(
                f"{run_dir}: already holds a run ({marker}); continue it with --resume, or choose another --out"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    stem = default_run_dir(model_name, fingerprint, seed)
    if resume:
        found = _newest_resumable(stem)
        if found is not None:
            return found
    stem.parent.mkdir(parents=True, exist_ok=True)
    base = f"{stem.name}-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    for n in range(1, 10_000):
        run_dir = stem.parent / (base if n == 1 else f"{base}-{n}")
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir
    raise XrayXaiError(f"{stem.parent}: no free run folder for {base}")  # pragma: no cover


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if key == "lr":  # 5e-4 is not 0.000
            return f"{value:.2e}"
        return f"{value:.3f}" if math.isfinite(value) else str(value)
    return str(value)


def epoch_line(row: dict[str, Any]) -> str:
    """One history row as ``key=value`` pairs: metrics to 3 decimals, the learning rate as ``lr=5.00e-04``."""
    return "  ".join(f"{k}={_fmt(k, v)}" for k, v in row.items())


#: where a run's best weights go: ``True`` the model store, a folder that folder (``demo --quick``), ``False`` nowhere
SaveTarget = bool | str | Path


def save_to_store(model: Any, metadata: dict[str, Any], where: SaveTarget = True) -> Path:
    """The run's weights into the model store (``where`` True) or into the folder ``where``, with ``metadata`` in
    the sidecar; the checkpoint folder."""
    from xray_xai.models.store import save_model

    folder = None if where is True else Path(where)  # type: ignore[arg-type]
    return Path(save_model(model, folder, metadata=metadata))


# -- checkpoint of the last epoch ---------------------------------------------------------------------------------
def save_last(run_dir: Path, state: dict[str, Any], summary: dict[str, Any]) -> None:
    import torch

    with atomic_path(run_dir / "last.pt") as tmp:
        torch.save(state, tmp)
    atomic_write_json(run_dir / "last.json", summary)


def load_last(run_dir: Path) -> dict[str, Any] | None:
    import torch

    path = run_dir / "last.pt"
    if not path.exists():
        return None
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        from xray_xai.errors import CheckpointError

        raise CheckpointError(path, f"cannot resume from it ({type(exc).__name__}: {exc})".splitlines()[0]) from exc
    return state


# -- history ------------------------------------------------------------------------------------------------------
def write_history(run_dir: Path, history: list[dict[str, Any]], plot: bool = True) -> None:
    buf = io.StringIO()
    # a box-guided run also logs its guidance term (part of train_loss)
    fields = list(HISTORY_FIELDS) + (["train_guide"] if any("train_guide" in row for row in history) else [])
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fields})
    atomic_write_text(run_dir / "history.csv", buf.getvalue())
    if plot:
        plot_history(run_dir / "curves.png", history)


def plot_history(path: Path, history: list[dict[str, Any]]) -> None:
    """Loss and validation metrics per epoch, drawn on an Agg canvas of its own (pyplot and the process's
    matplotlib backend untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="val loss")
    ax1.set_xlabel("epoch")
    ax1.legend()
    for key in ("val_accuracy", "val_auroc", "val_kappa"):
        ax2.plot(epochs, [float("nan") if h.get(key) is None else h[key] for h in history], "o-", label=key)
    ax2.set_xlabel("epoch")
    ax2.set_ylim(-0.05, 1.05)
    ax2.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
