"""Absolute GPU throughput of training, inference, explainers and the film loader, in one command.

What each row times (warm-up excluded; on CUDA ``torch.cuda.synchronize()`` before starting and after stopping the
clock, so queued kernels are counted; ``torch.backends.cudnn.benchmark`` on, so the warm-up also picks kernels):

* ``train``: training steps of ``--model`` (default ``densenet-full``, DenseNet-169, untrained weights) at
  ``--image-size`` px on random batches already on the device: forward under ``torch.autocast(dtype=bfloat16)``
  (``--amp``, default on CUDA), model and batch in ``channels_last``, BCE on float32 logits, backward, SGD step - the
  step of ``xray_xai.models.epochs`` without data loading;
* ``train (deterministic)``: the same with ``torch.use_deterministic_algorithms(True, warn_only=True)`` and cudnn
  benchmarking off, which is how ``xray-xai train`` runs (bit-reproducible runs);
* ``inference``: forward passes under ``torch.inference_mode()`` and the same autocast and memory format;
* ``gradcam``, ``saliency``, ``layercam``: the explainer plugins made through the registry as ``xray-xai explain``
  makes them (``make_explainer``), run by its engine (``explain_prepared``: batch to the device, one explanation
  pass, maps resized and normalised on the host) on films already decoded (``prepare_film``); float32, as the CLI;
* ``loader``: one epoch of ``RecordDataset`` (``xray_xai.data.loader``, training's augmentation) through a
  DataLoader with ``collate_skip_bad`` over PNG films written by the synthetic generator at ``--film-size`` px, the
  batches copied to the device; per ``--workers`` value. The first epoch is a warm-up (it starts the persistent
  workers and reads the files into the page cache), the second is timed;
* ``loader, prepared films``: the same reading from ``xray_xai.data.film_cache`` (films prepared once in model
  geometry) when that module is installed; otherwise the table says it is not available.

Usage::

    python benchmarks/gpu.py --json gpu.json            # one GPU: a few minutes
    python benchmarks/gpu.py --device cpu --smoke       # seconds: tiny sizes, checks that every path runs
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

EXPLAINERS: tuple[str, ...] = ("gradcam", "saliency", "layercam")


@dataclass
class Settings:
    """Sizes and switches of one run (all recorded in the JSON)."""

    device: str
    model: str = "densenet-full"
    image_size: int = 224
    train_batch: int = 64
    infer_batch: int = 256
    explain_batch: int = 32
    warmup: int = 5
    steps: int = 20
    explain_batches: int = 4
    loader_studies: int = 400
    film_size: int = 512
    loader_batch: int = 64
    workers: tuple[int, ...] = (0, 8)
    amp: bool = True
    channels_last: bool = True
    deterministic_row: bool = True


@dataclass
class Row:
    name: str
    unit: str
    rate: float | None
    batch: int | None
    seconds: float | None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# -- timing ---------------------------------------------------------------------------------------------------------
def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: Any, warmup: int, repeats: int) -> float:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` uncounted ones; CUDA work is waited for at both ends."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return time.perf_counter() - t0


@contextlib.contextmanager
def cudnn_benchmark(on: bool, deterministic: bool = False) -> Iterator[None]:
    """cudnn autotuning on or off, and deterministic algorithms, for the block; the previous settings restored."""
    import torch

    bench = torch.backends.cudnn.benchmark
    det, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.backends.cudnn.benchmark = on
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # warn_only: one warning per non-deterministic kernel
            yield
    finally:
        torch.backends.cudnn.benchmark = bench
        torch.use_deterministic_algorithms(det, warn_only=warn_only)


def _peak_reset(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: Any) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


# -- the model ------------------------------------------------------------------------------------------------------
def make_model(s: Settings, device: Any) -> Any:
    """A fresh ``s.model`` (registry, untrained: nothing is downloaded) on ``device``."""
    import torch

    from xray_xai.sdk.registry import models

    torch.manual_seed(0)
    return models.get(s.model)(image_size=s.image_size, pretrained=False).to(device)


def _autocast(device: Any, amp: bool) -> Any:
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp)


def _batch(s: Settings, model: Any, n: int, device: Any) -> Any:
    import torch

    pre = model.preprocessing
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, int(pre.channels), s.image_size, s.image_size, generator=gen).to(device)
    return x.contiguous(memory_format=torch.channels_last) if s.channels_last else x


# -- the rows -------------------------------------------------------------------------------------------------------
def bench_train(s: Settings, device: Any, deterministic: bool = False) -> Row:
    import torch
    import torch.nn.functional as F

    model = make_model(s, device)
    if s.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    x = _batch(s, model, s.train_batch, device)
    y = (torch.arange(s.train_batch, device=device) % 2).float()

    def step() -> None:
        with _autocast(device, s.amp):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float().reshape(-1), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    _peak_reset(device)
    with cudnn_benchmark(not deterministic, deterministic):
        secs = timed(step, device, s.warmup, s.steps)
    n = s.steps * s.train_batch
    name = "train (deterministic)" if deterministic else "train"
    note = "use_deterministic_algorithms, cudnn.benchmark off (as xray-xai train)" if deterministic else ""
    return Row(name, "img/s", n / secs, s.train_batch, secs, note, {"peak_mem_mb": _peak_mb(device), "images": n})


def bench_inference(s: Settings, device: Any) -> Row:
    import torch

    model = make_model(s, device).eval()
    if s.channels_last:
        model.to(memory_format=torch.channels_last)
    x = _batch(s, model, s.infer_batch, device)

    def forward() -> None:
        with torch.inference_mode(), _autocast(device, s.amp):
            model(x)

    _peak_reset(device)
    with cudnn_benchmark(True):
        secs = timed(forward, device, s.warmup, s.steps)
    n = s.steps * s.infer_batch
    return Row("inference", "img/s", n / secs, s.infer_batch, secs, "", {"peak_mem_mb": _peak_mb(device), "images": n})


def bench_explainers(s: Settings, device: Any) -> list[Row]:
    import numpy as np

    from xray_xai.explain.engine import explain_prepared, make_explainer, model_labels, prepare_film

    model = make_model(s, device).eval()
    labels = model_labels([model])
    rng = np.random.default_rng(0)
    films = [rng.random((s.image_size, s.image_size), dtype=np.float32) for _ in range(s.explain_batch)]
    prepared = [prepare_film(f, [model], labels) for f in films]
    rows = []
    for method in EXPLAINERS:
        explainer = make_explainer(method)  # through the registry, as ``xray-xai explain`` does

        def run(name: str = method, ex: Any = explainer) -> None:
            explain_prepared(prepared, [model], labels, {name: ex})

        _peak_reset(device)
        with cudnn_benchmark(True):
            secs = timed(run, device, max(1, s.warmup // 2), s.explain_batches)
        n = s.explain_batches * s.explain_batch
        note = "float32, default memory format (as the CLI)"
        rows.append(
            Row(method, "films/s", n / secs, s.explain_batch, secs, note, {"peak_mem_mb": _peak_mb(device), "films": n})
        )
    return rows


def _loader_epoch(ds: Any, s: Settings, device: Any, workers: int) -> tuple[float, int]:
    """Seconds and films of the second of two epochs over ``ds`` (the first, uncounted, starts the persistent
    workers and brings the files into the page cache)."""
    from torch.utils.data import DataLoader

    from xray_xai.data.loader import collate_skip_bad

    loader = DataLoader(ds, batch_size=s.loader_batch, shuffle=False, num_workers=workers,
                        collate_fn=collate_skip_bad, pin_memory=device.type == "cuda",
                        persistent_workers=workers > 0)  # fmt: skip
    secs, n = 0.0, 0
    for _ in range(2):
        n = 0
        _sync(device)
        t0 = time.perf_counter()
        for x, _y, idx, _problems in loader:
            x.to(device, non_blocking=True)
            n += len(idx)
        _sync(device)
        secs = time.perf_counter() - t0
    return secs, n


def film_cache_module() -> tuple[Any | None, str]:
    """``xray_xai.data.film_cache`` if it is installed with what this benchmark uses, else None and why not."""
    try:
        mod = importlib.import_module("xray_xai.data.film_cache")
    except ImportError as exc:
        return None, f"xray_xai.data.film_cache is not installed ({exc})"
    from xray_xai.data.loader import RecordDataset

    if not hasattr(mod, "prepare") or "films" not in inspect.signature(RecordDataset.__init__).parameters:
        return None, "xray_xai.data.film_cache lacks prepare() or RecordDataset(films=...)"
    return mod, ""


def bench_loader(s: Settings, device: Any, tmp: Path) -> list[Row]:
    from xray_xai_plugins.datasets.synthetic import SyntheticDataset

    from xray_xai.data.augment import Augment
    from xray_xai.data.datasets import open_dataset
    from xray_xai.data.loader import RecordDataset

    root = SyntheticDataset.generate(tmp / "films", n_studies=s.loader_studies, image_size=s.film_size, seed=0,
                                     progress=False)  # fmt: skip
    records = open_dataset(root).records(None)
    pre = make_model(s, "cpu").preprocessing
    augment = Augment.preset("standard")
    rows = []
    for w in s.workers:
        secs, n = _loader_epoch(RecordDataset(records, pre, augment=augment), s, device, w)
        note = f"decode {s.film_size} px PNG -> {s.image_size} px, standard augmentation"
        rows.append(Row(f"loader, {w} workers", "films/s", n / secs, s.loader_batch, secs, note, {"films": n}))
    mod, why = film_cache_module()
    if mod is None:
        rows.append(Row("loader, prepared films", "films/s", None, None, None, f"not available: {why}"))
        return rows
    try:  # the module is young: a changed API costs this row, not the rows measured before it
        rows += _prepared_rows(mod, records, pre, augment, s, device, tmp)
    except Exception as exc:
        rows.append(Row("loader, prepared films", "films/s", None, None, None, f"failed: {type(exc).__name__}: {exc}"))
    return rows


def _prepared_rows(mod: Any, records: Any, pre: Any, augment: Any, s: Settings, device: Any, tmp: Path) -> list[Row]:
    """Prepare the films once (timed), then one loader epoch over them per worker count."""
    from xray_xai.data.loader import RecordDataset

    t0 = time.perf_counter()
    done = mod.prepare(records, pre, tmp / "prepared", workers=max(s.workers), progress=False)
    prep_secs = time.perf_counter() - t0
    rows = [Row("prepare films (once)", "films/s", len(records) / prep_secs, None, prep_secs,
                f"{max(s.workers)} worker processes", {"films": len(records)})]  # fmt: skip
    for w in s.workers:
        prepared: dict[str, Any] = {"films": done.cache}  # RecordDataset(films=...) comes with film_cache
        ds = RecordDataset(records, pre, augment=augment, **prepared)
        secs, n = _loader_epoch(ds, s, device, w)
        rows.append(Row(f"loader, prepared films, {w} workers", "films/s", n / secs, s.loader_batch, secs,
                        "xray_xai.data.film_cache shards, standard augmentation", {"films": n}))  # fmt: skip
    return rows


# -- the run --------------------------------------------------------------------------------------------------------
def environment(device: Any) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        info["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    return info


def run(s: Settings, log: Callable[[str], None] = print) -> tuple[dict[str, Any], list[Row]]:
    import torch

    device = torch.device(s.device)
    env = environment(device)
    log(f"# {env['device_name']} ({device}), torch {env['torch']}, amp {s.amp}, channels_last {s.channels_last}")
    rows: list[Row] = []
    steps: list[tuple[str, Callable[[], Row | list[Row]]]] = [
        ("train", lambda: bench_train(s, device)),
        ("inference", lambda: bench_inference(s, device)),
        ("explainers", lambda: bench_explainers(s, device)),
    ]
    if s.deterministic_row:
        steps.insert(1, ("train (deterministic)", lambda: bench_train(s, device, deterministic=True)))
    with tempfile.TemporaryDirectory(prefix="xray-gpu-bench-") as tmp:
        steps.append(("loader", lambda: bench_loader(s, device, Path(tmp))))
        for label, fn in steps:
            t0 = time.perf_counter()
            got = fn()
            new = got if isinstance(got, list) else [got]
            rows.extend(new)
            for r in new:
                log(f"  {r.name}: {_rate(r)}")
            log(f"  ({label}: {time.perf_counter() - t0:.1f} s)")
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return env, rows


def _rate(r: Row) -> str:
    return f"{r.rate:,.1f} {r.unit}" if r.rate is not None else r.note


def table(rows: list[Row]) -> str:
    out = [
        "| row | throughput | batch | timed s | peak device MiB | notes |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        rate = f"{r.rate:,.1f} {r.unit}" if r.rate is not None else "-"
        batch = "" if r.batch is None else str(r.batch)
        secs = "" if r.seconds is None else f"{r.seconds:.2f}"
        mem = r.extra.get("peak_mem_mb")
        out.append(f"| {r.name} | {rate} | {batch} | {secs} | {'' if mem is None else mem} | {r.note} |")
    return "\n".join(out)


SMOKE = {
    "image_size": 32, "train_batch": 2, "infer_batch": 2, "explain_batch": 2, "warmup": 0, "steps": 1,
    "explain_batches": 1, "loader_studies": 2, "film_size": 64, "loader_batch": 2, "workers": (0,),
}  # fmt: skip


def parse(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    d = Settings(device="auto")
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python benchmarks/gpu.py --json gpu.json   (CPU check: --device cpu --smoke)",
    )
    ap.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (default: cuda when there is one)")
    ap.add_argument("--model", default=d.model, help=f"model plugin (default {d.model})")
    ap.add_argument("--image-size", type=int, default=d.image_size, help=f"input px (default {d.image_size})")
    ap.add_argument("--train-batch", type=int, default=d.train_batch, help=f"default {d.train_batch}")
    ap.add_argument("--infer-batch", type=int, default=d.infer_batch, help=f"default {d.infer_batch}")
    ap.add_argument("--explain-batch", type=int, default=d.explain_batch, help=f"default {d.explain_batch}")
    ap.add_argument("--warmup", type=int, default=d.warmup, help=f"uncounted steps first (default {d.warmup})")
    ap.add_argument("--steps", type=int, default=d.steps, help=f"timed steps (default {d.steps})")
    ap.add_argument("--loader-studies", type=int, default=d.loader_studies,
                    help=f"synthetic studies for the loader, 2.45 films each (default {d.loader_studies})")  # fmt: skip
    ap.add_argument(
        "--film-size", type=int, default=d.film_size, help=f"px of the films on disk (default {d.film_size})"
    )
    ap.add_argument(
        "--workers", default=None, help="DataLoader workers to try, comma-separated (default 0,min(8,cpus))"
    )
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: on for CUDA, off on CPU)")  # fmt: skip
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True, help="default on")
    ap.add_argument("--no-deterministic-row", action="store_true", help="skip the deterministic training row")
    ap.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks every path in seconds (use with --device cpu)"
    )
    ap.add_argument("--json", dest="json_out", default=None, help="write environment, settings and rows here")
    args = ap.parse_args(argv)
    from xray_xai._util.device import resolve_device

    device = resolve_device(args.device)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = (0, min(8, cpus)) if args.workers is None else tuple(int(w) for w in args.workers.split(",") if w.strip())
    s = Settings(
        device=device, model=args.model, image_size=args.image_size, train_batch=args.train_batch,
        infer_batch=args.infer_batch, explain_batch=args.explain_batch, warmup=args.warmup, steps=args.steps,
        loader_studies=args.loader_studies, film_size=args.film_size, workers=tuple(dict.fromkeys(workers)),
        amp=device.startswith("cuda") if args.amp is None else bool(args.amp), channels_last=args.channels_last,
        deterministic_row=not args.no_deterministic_row,
    )  # fmt: skip
    if args.smoke:
        for k, v in SMOKE.items():
            if k != "workers" or args.workers is None:
                setattr(s, k, v)
    bad = [k for k in ("image_size", "train_batch", "infer_batch", "explain_batch", "steps") if getattr(s, k) < 1]
    if bad or s.warmup < 0 or s.loader_studies < 1 or any(w < 0 for w in s.workers) or not s.workers:
        ap.error(f"sizes, batches, steps and studies must be positive, workers >= 0 (got {asdict(s)})")
    return s, args


def main(argv: list[str] | None = None) -> int:
    from xray_xai.errors import XrayXaiError

    try:
        s, args = parse(argv)
        started = time.perf_counter()
        env, rows = run(s, log=lambda line: print(line, flush=True))
    except XrayXaiError as exc:
        print(f"gpu.py: error: {exc}", file=sys.stderr)
        return 2
    env["seconds"] = round(time.perf_counter() - started, 1)
    env["command"] = "python benchmarks/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print()
    print(table(rows))
    print(f"\n{env}\nsettings: {asdict(s)}")
    if args.json_out:
        from xray_xai._util.fsutil import atomic_write_text

        payload = {"environment": env, "settings": asdict(s), "rows": [asdict(r) for r in rows]}
        atomic_write_text(Path(args.json_out), json.dumps(payload, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
