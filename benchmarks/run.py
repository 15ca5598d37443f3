"""Run every benchmark in one go and print ratios against baselines measured in the same run.

Usage::

    python benchmarks/run.py [--quick] [--only NAME,...] [--json OUT] [--threads N]

Benchmarks (``--only`` takes these names): explainers, training, clustering, faithfulness, growth. Each case runs
in a fresh Python process (peak memory is that process's VmHWM); inside a case ours and the baseline alternate so
that load from other processes hits both alike, and the fastest run counts. ``--quick`` shrinks batches, sizes and
repeats (minutes instead of tens of minutes). See docs/performance.md for the numbers and the machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from _util import Row  # noqa: E402

BENCHMARKS: dict[str, str] = {
    "explainers": "bench_explainers",
    "training": "bench_training",
    "clustering": "bench_clustering",
    "faithfulness": "bench_faithfulness",
    "growth": "bench_growth",
}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
        with open("/proc/meminfo", encoding="ascii") as fh:
            info["memory_gib"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def table(rows: list[Row]) -> str:
    """A Markdown table of the rows (also what docs/performance.md shows)."""
    out = [
        "| benchmark | case | ours | baseline | ratio | target | ok | notes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio = f"{r.ratio:.2f} ({r.ratio_means})" if r.ratio is not None else ""
        ok = "" if r.passed is None else ("yes" if r.passed else "**no**")
        out.append(f"| {r.benchmark} | {r.case} | {r.ours} | {r.baseline} | {ratio} | {r.target} | {ok} | {r.note} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller batches and sizes, fewer repeats")
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    ap.add_argument("--json", dest="json_out", default=None, help="write rows and machine info to this JSON file")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per case (default: every core)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; expected some of {', '.join(BENCHMARKS)}")
    if args.threads:
        os.environ["XRAY_BENCH_THREADS"] = str(args.threads)

    info = machine()
    print(f"# xray-xai benchmarks ({'quick' if args.quick else 'full'}): {info}", flush=True)
    rows: list[Row] = []
    failures: dict[str, str] = {}
    started = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        print(f"## {name} ...", flush=True)
        try:
            mod = importlib.import_module(BENCHMARKS[name])
            got = mod.run(args.quick)
        except Exception as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            rows.append(Row(name, "FAILED", "", note=failures[name].splitlines()[0]))
            continue
        rows.extend(got)
        for r in got:
            ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
            print(f"   {r.case}: ours {r.ours} | baseline {r.baseline} | ratio {ratio} | target {r.target}", flush=True)
        print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    info["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    info["seconds"] = round(time.perf_counter() - started, 1)
    info["command"] = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print()
    print(table(rows))
    print(f"\nmachine: {info}")
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({"machine": info, "rows": [r.to_dict() for r in rows], "failures": failures}, indent=2,
                       default=float) + "\n",
            encoding="utf-8",
        )  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
