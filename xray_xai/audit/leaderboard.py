"""The leaderboard: every explanation method scored on one model's fractured films, beside model-free controls.

For each method the films are explained one at a time (so each film has its own seconds and its own count of
forward and backward passes, counted by hooks on the model), then scored with the audit's own functions
(:mod:`xray_xai.audit.scoring`, :mod:`xray_xai.audit.scores`, :mod:`xray_xai.audit.sanity`):

* localisation on every explained film: pointing game exact and within the tolerance (3.5% of the side), IoU of
  the Otsu-thresholded map, mass in the box;
* faithfulness (deletion and insertion AUC of P(abnormal)) on the first ``faithfulness_films`` of them: each curve
  costs ``2 * (steps + 1)`` forward passes per film, the dearest part on a CPU;
* randomisation sanity on the first ``sanity_films``: Spearman between the maps on the trained and on the fully
  randomised model (pass below the audit's threshold);
* cost: seconds per film, forward and backward passes per film;

each with a seeded 95% bootstrap interval over films. The controls (film brightness, Sobel edges, noise; the noise
control's faithfulness is the random deletion order) get the same localisation and faithfulness scores.

**Budget.** Methods differ in cost by three orders of magnitude (a Grad-CAM is one forward and a partial backward,
ScoreCAM one forward per channel of the target layer). With ``budget_minutes`` every method is first explained on
``probe`` films; the remaining time is then shared out so that cheap methods get up to ``films`` films and costly
ones fewer (never fewer than the probe): cheapest first, each gets an equal share of what is left and returns what
it cannot use. Without a probe smaller than ``films`` every method gets ``films``. Either way the budget is also a
hard stop: a method not started when it is spent is listed as skipped, and ``on_row`` sees the result after every
scored method (the API saves it there), so an interrupted run keeps its rows. The films each method got are in
the result (``n_films``) and in the tables; ``films_per_method`` pins them (``{"grad-cam:ScoreCAM": 5}``) for a
reproducible rerun. A method that fails is skipped and listed with
its one-line reason; the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xray_xai.audit import scores as am
from xray_xai.audit.inputs import AuditInputs, prepare_inputs
from xray_xai.audit.scoring import AuditSettings, ModelContext, localisation, model_context, summarize_faithfulness
from xray_xai.errors import DataError, XrayXaiError
from xray_xai.sdk.interfaces import Model, Record

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "LOCALISATION",
    "MethodRun",
    "PassCounter",
    "allocate_films",
    "chance_levels",
    "fractured_records",
    "leaderboard",
    "write_outputs",
]

#: the localisation scores of the table, in order
LOCALISATION = ("pointing", "pointing_tol", "iou_otsu", "mass_in_mask")


class PassCounter:
    """Counts the images that go through ``model``'s forward pass, and through a backward pass from its output,
    while the ``with counting()`` block runs (forward hook on the root module; a tensor hook on each output that
    requires grad counts the backward)."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0

    @contextmanager
    def counting(self, model: Any) -> Iterator[PassCounter]:
        def on_output(_m: Any, _args: Any, out: Any) -> None:
            if not hasattr(out, "shape"):
                return
            n = int(out.shape[0]) if out.ndim else 1
            self.forward += n
            if getattr(out, "requires_grad", False):
                out.register_hook(lambda g: self._backward(n))

        handle = model.register_forward_hook(on_output)
        try:
            yield self
        finally:
            handle.remove()

    def _backward(self, n: int) -> None:
        self.backward += n


@dataclass
class MethodRun:
    """One method's maps and per-film costs as they accumulate (the probe, then the rest of its films)."""

    method: str
    explainer: Any
    maps: list[np.ndarray] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    forward: list[float] = field(default_factory=list)
    backward: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def sec_per_film(self) -> float:
        return float(np.mean(self.seconds)) if self.seconds else float("inf")

    def explain(
        self, model: Model, images: torch.Tensor, upto: int, log: Callable[[str], None], batch_size: int = 1
    ) -> None:
        """Explain films ``len(self.maps) .. upto - 1`` in batches of ``batch_size``, timing and counting each batch;
        a batch's seconds and passes are shared equally among its films (batches are cheaper per film on a CPU)."""
        for i in range(len(self.maps), upto, batch_size):
            j = min(i + batch_size, upto)
            counter = PassCounter()
            t0 = time.perf_counter()
            with counter.counting(model):
                exp = self.explainer.explain(model, images[i:j], target="abnormal")
            k = j - i
            self.seconds += [(time.perf_counter() - t0) / k] * k
            self.maps += list(np.clip(np.nan_to_num(np.asarray(exp.maps, np.float32)), 0.0, 1.0))
            self.forward += [counter.forward / k] * k
            self.backward += [counter.backward / k] * k
            log(f"  {self.method}: films {i + 1}-{j}/{upto} {self.seconds[-1]:.2f}s/film, {counter.forward / k:g} "
                f"forward + {counter.backward / k:g} backward per film")  # fmt: skip


def fractured_records(records: Sequence[Record]) -> list[Record]:
    """The abnormal records with ground truth (boxes or masks), in the data set's order."""
    return [r for r in records if r.label == 1 and r.has_ground_truth]


def allocate_films(
    costs: Mapping[str, float], fixed: Mapping[str, float], budget_s: float, probe: int, most: int
) -> dict[str, int]:
    """Films per method within ``budget_s`` seconds: ``costs`` are seconds per film, ``fixed`` seconds a method
    costs whatever its films (faithfulness, sanity). Cheapest first, each method gets an equal share of what is
    left, at least ``probe`` and at most ``most`` films; what it cannot use goes to the costlier ones."""
    order = sorted(costs, key=lambda m: costs[m])
    left = float(budget_s)
    out: dict[str, int] = {}
    for k, method in enumerate(order):
        share = left / (len(order) - k)
        per = max(costs[method], 1e-6)
        n = int((share - fixed.get(method, 0.0)) // per)
        out[method] = int(min(most, max(probe, n)))
        left -= out[method] * per + fixed.get(method, 0.0)
    return out


def _subset(inputs: AuditInputs, k: int) -> AuditInputs:
    """The first ``k`` films of ``inputs``."""
    return replace(
        inputs,
        records=inputs.records[:k],
        images=inputs.images[:k],
        films=inputs.films[:k],
        gt=inputs.gt[:k],
        markers=inputs.markers[:k],
        collimation=inputs.collimation[:k],
    )


@dataclass
class _Board:
    """What every method of one leaderboard run shares."""

    model: Model
    inputs: AuditInputs
    settings: AuditSettings
    faithfulness_films: int
    sanity_films: int
    log: Callable[[str], None]
    batch_size: int = 1
    contexts: dict[int, ModelContext] = field(default_factory=dict)

    def context(self, k: int) -> ModelContext:
        """The audit's scoring context on the first ``k`` films (built once per ``k``)."""
        k = min(k, len(self.inputs.records))
        if k not in self.contexts:
            self.contexts[k] = model_context(self.model, _subset(self.inputs, k), self.settings)
        return self.contexts[k]


def _stat(values: Sequence[float], s: AuditSettings) -> dict[str, Any]:
    return am.summarize(np.asarray(values, dtype=np.float64), n_boot=s.n_boot, seed=s.seed)


def _controls(board: _Board) -> tuple[dict[str, Any], float]:
    """Localisation of the model-free controls on every film, faithfulness on the faithfulness films; and the
    seconds one film's deletion + insertion curves take (for the budget)."""
    from xray_xai.audit.controls import control_maps

    ctx_all, ctx_f = board.context(len(board.inputs.records)), board.context(board.faithfulness_films)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    random_faith = ctx_f.faith(None)
    per_film = (time.perf_counter() - t0) / max(1, len(ctx_f.inputs.records))
    for name, maps in control_maps(board.inputs.films, board.settings.seed).items():
        loc, _ = localisation(ctx_all, maps)
        faith = random_faith if name == "random" else ctx_f.faith(maps[: len(ctx_f.inputs.records)])
        out[name] = {"localisation": loc, "faithfulness": summarize_faithfulness(faith, ctx_f)}
        board.log(f"control {name}: {_line(out[name])}")
    return out, per_film


def _score(board: _Board, run: MethodRun) -> dict[str, Any]:
    """The leaderboard row of one method from its maps and costs."""
    from xray_xai.audit.sanity import sanity_cascade

    s = board.settings
    maps = np.stack(run.maps)
    n = len(maps)
    loc, _ = localisation(board.context(n), maps)
    ctx_f = board.context(min(n, board.faithfulness_films))
    k_f = len(ctx_f.inputs.records)
    faith = summarize_faithfulness(ctx_f.faith(maps[:k_f]), ctx_f)
    k_s = min(n, board.sanity_films)
    sanity_settings = replace(s, sanity_stages=1, sanity_n=k_s, batch_size=board.batch_size)
    sanity = sanity_cascade(run.explainer, board.model, board.inputs.images[:k_s], maps[:k_s], sanity_settings)
    return {
        "method": run.method,
        "status": "ok",
        "params": dict(getattr(run.explainer, "params", {})),
        "n_films": n,
        "n_faithfulness": k_f,
        "n_sanity": k_s,
        "localisation": {k: loc[k] for k in LOCALISATION if k in loc},
        "faithfulness": faith,
        "sanity": {k: sanity.summary.get(k) for k in ("status", "spearman_full", "ssim_full", "threshold")}
        | {"spearman": (sanity.summary.get("stages") or [{}])[-1].get("spearman")},
        "cost": {
            "seconds_per_film": _stat(run.seconds, s),
            "forward_per_film": _stat(run.forward, s),
            "backward_per_film": _stat(run.backward, s),
        },
    }


def _line(row: Mapping[str, Any]) -> str:
    loc, faith = row.get("localisation", {}), row.get("faithfulness", {})
    parts = [f"{k}={loc[k]['mean']:.3f}" for k in LOCALISATION if k in loc and loc[k].get("mean") is not None]
    parts += [f"{k}={v['mean']:.3f}" for k, v in faith.items() if isinstance(v, dict) and v.get("mean") is not None]
    return " ".join(parts)


def _start(methods: Sequence[str], options: Mapping[str, Mapping[str, Any]], model: Model) -> tuple[list, list]:
    """Instantiate and check every method; those that cannot serve the model are skipped with their reason."""
    from xray_xai import get_explainer

    runs, skipped = [], []
    for method in methods:
        try:
            explainer = get_explainer(method)(**dict(options.get(method, {})))
            explainer.check_model(model)
        except XrayXaiError as exc:
            skipped.append({"method": method, "status": "skipped", "reason": str(exc).splitlines()[0]})
            continue
        runs.append(MethodRun(method, explainer))
    return runs, skipped


def _reason(exc: BaseException) -> str:
    """One line: our own errors as the user sees them, others with their type and first line."""
    from xray_xai.errors import one_line

    if isinstance(exc, XrayXaiError):
        return one_line(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    return one_line(RuntimeError(f"{type(exc).__name__}: {first}" if first else type(exc).__name__))


def _explain_or_skip(run: MethodRun, board: _Board, upto: int, skipped: list[dict[str, Any]]) -> bool:
    """Explain up to ``upto`` films; False (and the method listed as skipped) when the method fails."""
    try:
        run.explain(board.model, board.inputs.images, upto, board.log, board.batch_size)
    except Exception as exc:  # a library method failing on this model must not stop the others
        run.error = _reason(exc)
        skipped.append({"method": run.method, "status": "skipped", "reason": run.error})
        board.log(f"{run.method}: skipped ({run.error})")
        return False
    return True


def leaderboard(
    model: Model,
    methods: Sequence[str],
    records: Sequence[Record],
    *,
    films: int | None = None,
    probe: int = 3,
    budget_minutes: float | None = None,
    films_per_method: Mapping[str, int] | None = None,
    faithfulness_films: int = 8,
    sanity_films: int = 4,
    steps: int = 8,
    grid: int = 8,
    baseline: str = "blur",
    batch_size: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    explainer_options: Mapping[str, Mapping[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """Score ``methods`` on ``model`` over the fractured films among ``records`` (see the module doc); returns a
    JSON-ready dict with ``rows`` (one per scored method), ``skipped``, ``controls``, ``chance`` and ``config``."""
    say = log or (lambda _msg: None)
    chosen = fractured_records(records)[: films if films else None]
    if not chosen:
        raise DataError(None, "no fractured film with ground truth among the records")
    if not methods:
        raise XrayXaiError("leaderboard needs at least one method")
    t_start = time.perf_counter()
    inputs = prepare_inputs(chosen, model.preprocessing, strict=strict)
    settings = AuditSettings(seed=seed, steps=steps, grid=grid, baseline=baseline, n_boot=n_boot, batch_size=1)
    board = _Board(model, inputs, settings, faithfulness_films, sanity_films, say, batch_size=batch_size)
    n_max = len(inputs.records)
    say(f"{n_max} fractured films; {len(methods)} methods")
    controls, faith_per_film = _controls(board)
    runs, skipped = _start(methods, explainer_options or {}, model)
    pinned = dict(films_per_method or {})
    deadline = t_start + budget_minutes * 60 if budget_minutes else float("inf")
    plan = {r.method: min(pinned.get(r.method, n_max), n_max) for r in runs}
    planning = bool(budget_minutes) and probe < n_max
    if planning:  # every method on the probe films, then the time left shared out by their cost
        first = max(probe, 1)
        runs = [r for r in runs if _explain_or_skip(r, board, min(pinned.get(r.method, first), n_max), skipped)]
        free = [r for r in runs if r.method not in pinned]
        fixed = {r.method: faith_per_film * min(faithfulness_films, n_max) + r.sec_per_film * sanity_films
                 for r in free}  # fmt: skip
        left = deadline - time.perf_counter()
        plan |= allocate_films({r.method: r.sec_per_film for r in free}, fixed, left, first, n_max)
    config = {"probe": probe if planning else None, "budget_minutes": budget_minutes, "films": films,
              "faithfulness_films": faithfulness_films, "sanity_films": sanity_films, "steps": steps, "grid": grid,
              "baseline": baseline, "batch_size": batch_size, "n_boot": n_boot, "seed": seed}  # fmt: skip
    rows: list[dict[str, Any]] = []
    for run in runs:
        if time.perf_counter() > deadline:
            skipped.append({"method": run.method, "status": "skipped", "reason": "not run: the time budget was spent"})
            continue
        if not _explain_or_skip(run, board, plan[run.method], skipped):
            continue
        try:
            rows.append(_score(board, run))
        except Exception as exc:
            skipped.append({"method": run.method, "status": "skipped", "reason": _reason(exc)})
            continue
        say(f"{run.method}: {_line(rows[-1])} ({run.sec_per_film:.2f}s/film, {len(run.maps)} films)")
        if on_row is not None:  # the result so far, e.g. to save it: a long run interrupted keeps its rows
            on_row(_result(board, rows, skipped, controls, dict(config), time.perf_counter() - t_start))
    return _result(board, rows, skipped, controls, config, time.perf_counter() - t_start)


def _result(
    board: _Board, rows: list[Any], skipped: list[Any], controls: dict[str, Any], config: dict[str, Any], secs: float
) -> dict[str, Any]:
    """The JSON-ready result of a run."""
    inputs, model, s = board.inputs, board.model, board.settings
    masks = [g for g in inputs.gt if g is not None]
    side = int(inputs.images.shape[-1])
    fingerprint = model.fingerprint() if hasattr(model, "fingerprint") else ""
    config |= {"films_per_method": {r["method"]: r["n_films"] for r in rows}, "tolerance_frac": s.tolerance_frac,
               "sanity_threshold": s.sanity_threshold}  # fmt: skip
    return {
        "model": {"name": model.name, "fingerprint": fingerprint, "input_size": side},
        "n_films": len(inputs.records),
        "rows": rows,
        "skipped": skipped,
        "controls": controls,
        "chance": chance_levels(np.stack(masks), side, s.tolerance_frac) if masks else {},
        "problems": inputs.problems,
        "config": config,
        "seconds": round(secs, 1),
    }


def chance_levels(masks: np.ndarray, side: int, tolerance_frac: float = am.DEFAULT_TOLERANCE_FRAC) -> dict[str, float]:
    """What a uniformly random maximum scores: the box area share and the share within the tolerance (also the
    localisation benchmark's chance line, ``benchmarks/localisation.py``)."""
    from scipy.ndimage import distance_transform_edt

    tol = am.tolerance_px(side, tolerance_frac)
    near = np.stack([distance_transform_edt(~m) <= tol for m in masks])
    return {"pointing": float(masks.mean()), "pointing_tol": float(near.mean()), "box_area": float(masks.mean())}


def write_outputs(result: Mapping[str, Any], out_dir: str | Path) -> dict[str, str]:
    """``leaderboard.json``, ``leaderboard.md`` and ``leaderboard.html`` in ``out_dir`` (each written atomically)."""
    from xray_xai._util.fsutil import atomic_write_json, atomic_write_text
    from xray_xai.audit.leaderboard_tables import html_table, markdown_table

    out = Path(out_dir)
    paths = {"json": out / "leaderboard.json", "markdown": out / "leaderboard.md", "html": out / "leaderboard.html"}
    atomic_write_json(paths["json"], dict(result))
    atomic_write_text(paths["markdown"], markdown_table(result))
    atomic_write_text(paths["html"], html_table(result))
    return {k: str(v) for k, v in paths.items()}
