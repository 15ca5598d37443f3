"""MURA-scale dry run: the whole pipeline on synthetic films, time and peak memory at growing sizes.

For each size N (films), in a temporary folder:

1. ``generate``: the synthetic generator (``SyntheticDataset.generate``, what ``xray-xai synth`` runs) writes about
   N films (whole studies, 2.45 views each on average) at ``--image-size`` px in MURA's layout;
2. ``train``: one epoch of ``cnn-small`` at that size (``xray_xai.models.training.train``: the MURA recipe with
   ``epochs=1``, ``batch_size=--batch``; its validation pass included, weights not stored);
3. ``explain``: ``gradcam`` over every film (``xray_xai.explain.service.explain``, writing ``--formats``: npy and json
   per film by default; the CLI's default adds a png figure per film, which costs far more than the rest) with a
   fresh ``cnn-small`` (seed 0; the cost does not depend on the weights);
4. ``cluster``: ``xray_xai.cluster.service.cluster`` over every split (features, PCA + k-means, k=4, every report
   file), ``threshold=None`` so that every film is clustered.

Each stage of each size runs in a fresh Python process (``_util.run_case``), so its peak RSS (VmHWM, reset before
the stage) is that stage's alone; "memory" is that peak minus the RSS before the stage (imports excluded). Time is
wall-clock and CPU (user + system of the stage's process): on a shared machine the CPU time is the steadier measure
of the work. The growth exponent of each stage is the least-squares slope of log(time) and log(memory) on
log(films): 1 is linear.
bench_growth.py measures explain and cluster on random films up to 10,000 inside ``run.py``; this script adds the
generator and training, uses the generator's films, and goes to MURA's size (40,005 films).

Usage::

    nice -n 10 python benchmarks/bench_scale.py --sizes 2500,5000,10000,20000,40000 --json scale.json
    python benchmarks/bench_scale.py --smoke          # two tiny sizes, seconds (the test suite runs this)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from _util import loglog_slope, peak_rss_mb, reset_peak_rss, rss_mb, run_case, set_threads  # noqa: E402

STAGES: tuple[str, ...] = ("generate", "train", "explain", "cluster")
#: mean number of views per synthetic study (the generator draws 1-4 with probabilities 0.1, 0.45, 0.35, 0.1)
VIEWS_PER_STUDY = 2.45
DEFAULT_SIZES = (2500, 5000, 10_000, 20_000, 40_000)
SMOKE_SIZES = (20, 40)
MODEL = "cnn-small"


def studies_for(films: int) -> int:
    """Studies to draw for about ``films`` films."""
    return max(2, math.ceil(films / VIEWS_PER_STUDY))


def _films(root: Path) -> int:
    from xray_xai.data.datasets import open_dataset

    return len(open_dataset(root).records(None))


def _model(image_size: int) -> Any:
    import torch

    from xray_xai.sdk.registry import models

    torch.manual_seed(0)
    return models.get(MODEL)(image_size=image_size).eval()


def _run_stage(
    stage: str, root: Path, work: Path, n_studies: int, image_size: int, batch: int, formats: list[str]
) -> dict[str, Any]:
    """Do one stage; what it reports besides time and memory."""
    if stage == "generate":
        from xray_xai_plugins.datasets.synthetic import SyntheticDataset

        SyntheticDataset.generate(root, n_studies=n_studies, image_size=image_size, seed=0, progress=False)
        return {}
    if stage == "train":
        from xray_xai.models.training import train

        res = train(MODEL, root, epochs=1, batch_size=batch, image_size=image_size, save=False, progress=False,
                    out_dir=work / "train", seed=0)  # fmt: skip
        row = res.history[0]
        return {"train_img_per_s": row.get("img_per_s"), "val_accuracy": row.get("val_accuracy")}
    model = _model(image_size)
    if stage == "explain":
        from xray_xai.data.datasets import open_dataset
        from xray_xai.explain.service import explain

        recs = open_dataset(root).records(None)
        done = explain(model, "gradcam", records=recs, out=work / "explain", formats=formats, batch_size=batch,
                       show_progress=False)  # fmt: skip
        return {"explained": len(done.items)}
    from xray_xai.cluster.service import cluster

    summary = cluster(model, root, splits=("train", "val", "test"), threshold=None, k=4, out_dir=work / "cluster",
                      cache_dir=work / "cache", progress=False, json=True, batch_size=batch)  # fmt: skip
    return {"clustered": summary["n_selected"]}


def case_stage(
    stage: str, root: str, work: str, n_studies: int, image_size: int, batch: int, formats: list[str]
) -> dict[str, Any]:
    """One stage in this (fresh) process: seconds, RSS before, peak RSS during, films in the data set."""
    set_threads()
    import xray_xai.cluster.service  # heavy imports (sklearn, matplotlib, torch) before the measurement
    import xray_xai.explain.service
    import xray_xai.models.training  # noqa: F401

    reset_peak_rss()
    before = rss_mb()
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    extra = _run_stage(stage, Path(root), Path(work), n_studies, image_size, batch, formats)
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    peak = peak_rss_mb()
    return {"seconds": seconds, "cpu_seconds": cpu, "rss_before_mb": before, "peak_during_mb": peak,
            "films": _films(Path(root)), **extra}  # fmt: skip


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children: on a shared machine the wall clock
    also counts the time other jobs held the cores, the CPU time does not."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_size(
    films: int, image_size: int, batch: int, formats: list[str], tmp_dir: str | None = None, inline: bool = False
) -> dict[str, Any]:
    """Every stage at one size, each in its own process (``inline``: in this one, for the tests: the peak is then
    the process's so far); the temporary data set is removed afterwards."""
    n_studies = studies_for(films)
    out: dict[str, Any] = {"asked_films": films, "studies": n_studies, "stages": {}}
    with tempfile.TemporaryDirectory(prefix="xray-scale-", dir=tmp_dir) as tmp:
        root, work = Path(tmp) / "data", Path(tmp) / "work"
        work.mkdir()
        for stage in STAGES:
            kwargs: dict[str, Any] = {"stage": stage, "root": str(root), "work": str(work), "n_studies": n_studies,
                      "image_size": image_size, "batch": batch, "formats": formats}  # fmt: skip
            r = case_stage(**kwargs) if inline else run_case("bench_scale", "case_stage", timeout=7200, **kwargs)
            r["memory_mb"] = max(r["peak_during_mb"] - r["rss_before_mb"], 1.0)
            out["films"] = r["films"]
            out["stages"][stage] = r
            print(f"  N={r['films']:>6,} {stage:<8} {r['seconds']:8.1f} s wall {r['cpu_seconds']:8.1f} s CPU "
                  f"{1000 * r['cpu_seconds'] / r['films']:7.2f} ms CPU/film  peak +{r['memory_mb']:6.0f} MiB "
                  f"(RSS before {r['rss_before_mb']:.0f} MiB)", flush=True)  # fmt: skip
    return out


def exponents(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage: the log-log slope of wall time, CPU time and memory against the number of films."""
    n = [float(r["films"]) for r in results]
    out = {}
    for stage in STAGES:
        got = {key: [r["stages"][stage][key] for r in results] for key in ("seconds", "cpu_seconds", "memory_mb")}
        out[stage] = {"time": loglog_slope(n, got["seconds"]), "cpu": loglog_slope(n, got["cpu_seconds"]),
                      "memory": loglog_slope(n, got["memory_mb"])}  # fmt: skip
    return out


def table(results: list[dict[str, Any]], slopes: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per size and stage, then the exponents."""
    lines = [
        "| films | stage | wall s | CPU s | CPU ms / film | peak RSS above start (MiB) | KiB / film |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        for stage in STAGES:
            s = r["stages"][stage]
            lines.append(
                f"| {r['films']:,} | {stage} | {s['seconds']:.1f} | {s['cpu_seconds']:.1f} "
                f"| {1000 * s['cpu_seconds'] / r['films']:.2f} | {s['memory_mb']:.0f} "
                f"| {1024 * s['memory_mb'] / r['films']:.1f} |"
            )
    lines += [
        "",
        "| stage | wall-time exponent | CPU-time exponent | memory exponent |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {st} | {v['time']:.2f} | {v['cpu']:.2f} | {v['memory']:.2f} |" for st, v in slopes.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: nice -n 10 python benchmarks/bench_scale.py --sizes 2500,5000,10000 --json scale.json",
    )
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="films per run, comma-separated")
    ap.add_argument("--image-size", type=int, default=64, help="film and model input size in px (default 64)")
    ap.add_argument("--batch", type=int, default=64, help="batch size of every stage (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per stage (default 1)")
    ap.add_argument("--tmp-dir", default=None, help="where the temporary data sets go (default: the system's)")
    ap.add_argument("--json", dest="json_out", default=None, help="write the results to this JSON file")
    ap.add_argument(
        "--formats", default="npy,json", help="explain's outputs (default npy,json; the CLI's: png,npy,json)"
    )
    ap.add_argument("--inline", action="store_true", help="run the stages in this process (peak RSS then cumulative)")
    ap.add_argument("--smoke", action="store_true", help=f"sizes {SMOKE_SIZES} at 64 px, inline: for the tests")
    args = ap.parse_args(argv)
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        ap.error(f"--sizes: expected comma-separated whole numbers, got {args.sizes!r}")
    if args.smoke:
        sizes, args.image_size, args.batch, args.inline = list(SMOKE_SIZES), 64, 16, True
    if len(sizes) < 2 or sizes[0] < 2:
        ap.error("--sizes: give at least two sizes of 2 films or more (the exponent needs two points)")
    os.environ["XRAY_BENCH_THREADS"] = str(args.threads)
    os.environ.setdefault("XRAY_XAI_NO_PROGRESS", "1")

    started = time.perf_counter()
    print(f"# MURA-scale dry run: sizes {sizes}, {args.image_size} px, batch {args.batch}, {MODEL}", flush=True)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    results: list[dict[str, Any]] = []
    for n in sizes:
        results.append(run_size(n, args.image_size, args.batch, formats, args.tmp_dir, args.inline))
        if args.json_out:  # after each size: a run stopped early keeps the sizes it finished
            _write(args.json_out, _info(args, argv, formats, started), results, complete=len(results) == len(sizes))
    slopes = exponents(results)
    print()
    print(table(results, slopes))
    info = _info(args, argv, formats, started)
    print(f"\n{info}")
    if args.json_out:
        _write(args.json_out, info, results, complete=True)
    return 0


def _info(args: argparse.Namespace, argv: list[str] | None, formats: list[str], started: float) -> dict[str, Any]:
    return {
        "command": "python benchmarks/bench_scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "image_size": args.image_size,
        "batch": args.batch,
        "threads": args.threads,
        "explain_formats": formats,
        "inline": args.inline,
        "model": MODEL,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _write(path: str, info: dict[str, Any], results: list[dict[str, Any]], complete: bool) -> None:
    from xray_xai._util.fsutil import atomic_write_text

    slopes = exponents(results) if len(results) > 1 else {}
    payload = {"info": info, "complete": complete, "results": results, "exponents": slopes}
    atomic_write_text(Path(path), json.dumps(payload, indent=2, default=float) + "\n")


if __name__ == "__main__":
    sys.exit(main())
