"""Shared helpers of the benchmark suite: one subprocess per case, timers, peak memory, result rows.

Why a subprocess per case: torch's allocator is invisible to ``tracemalloc``, and ``ru_maxrss`` only ever grows, so
the peak resident memory of a case is only meaningful in a fresh process. Each case is a function
``bench_<x>.case_<y>(**kwargs) -> dict`` run by ``python benchmarks/_util.py MODULE FUNC JSON``; the child prints its
result (plus ``peak_rss_mb``, from ``/proc/self/status`` VmHWM) as the last line of its standard output.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULT_PREFIX = "BENCH-RESULT "


# -- memory ---------------------------------------------------------------------------------------------------------
def _status_kb(key: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (VmHWM; ``ru_maxrss`` where /proc is missing)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        kb = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return kb / 1024.0


def rss_mb() -> float:
    """Current resident set size in MiB (VmRSS)."""
    kb = _status_kb("VmRSS")
    return (kb or 0.0) / 1024.0


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, writing 5 to clear_refs); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# -- timing ---------------------------------------------------------------------------------------------------------
def interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, clock: Callable[[], float] = time.perf_counter
) -> dict[str, list[float]]:
    """Seconds of each function, run round-robin (A B C A B C ...) so load changes hit all alike.

    ``clock``: wall-clock time by default; ``time.process_time`` gives this process's CPU seconds, which other
    processes' load changes far less than wall time (for single-threaded torch, where CPU time is the work done).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return times


def best(times: list[float]) -> float:
    """The fastest run: on a shared machine other processes only ever add time, so the minimum is the estimate."""
    return min(times)


def median(times: list[float]) -> float:
    return float(statistics.median(times))


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x): 1 = linear growth, 2 = quadratic."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(max(y, 1e-12)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / den if den else float("nan")


def set_threads() -> int:
    """Torch threads for this case: ``XRAY_BENCH_THREADS`` (set by ``run.py --threads``), else every core.

    The same number serves our code and each baseline. On a shared, loaded machine one thread gives steadier
    ratios: a multi-threaded kernel waits for its slowest thread, and a descheduled thread stalls all of them.
    """
    import torch

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = int(os.environ.get("XRAY_BENCH_THREADS", "0") or 0) or n
    torch.set_num_threads(n)
    return n


# -- rows -----------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the results table. ``ratio`` is ours relative to ``baseline`` as stated in ``ratio_means``."""

    benchmark: str
    case: str
    ours: str
    baseline: str = ""
    ratio: float | None = None
    ratio_means: str = ""
    target: str = ""
    passed: bool | None = None
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fmt_rate(n: float, seconds: float) -> str:
    return f"{n / seconds:.2f} img/s" if seconds > 0 else "n/a"


# -- subprocess runner ----------------------------------------------------------------------------------------------
def run_case(module: str, func: str, timeout: float = 1800, **kwargs: Any) -> dict[str, Any]:
    """Run ``module.func(**kwargs)`` in a fresh Python process; its dict result with ``peak_rss_mb`` added."""
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), str(REPO), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(BENCH_DIR / "_util.py"), module, func, json.dumps(kwargs)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise RuntimeError(f"{module}.{func} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["case_wall_s"] = round(wall, 2)
    return result


def _child(module: str, func: str, kwargs_json: str) -> None:
    import importlib

    sys.path[:0] = [str(BENCH_DIR), str(REPO)]
    mod = importlib.import_module(module)
    result = getattr(mod, func)(**json.loads(kwargs_json))
    result = dict(result)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(RESULT_PREFIX + json.dumps(result, default=float), flush=True)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3])
