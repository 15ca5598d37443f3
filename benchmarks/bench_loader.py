"""Films per second: decoding (read_film + geometry) against reading prepared films, and the DataLoader settings.

One process, torch on one thread, everything measured in the same run on the same films (FracAtlas JPEGs by
default), so the ratios hold on a loaded machine even where the absolute numbers do not:

1. **cold decode vs prepared**: ``read_film`` + ``geometry`` (what every epoch of a run without prepared films
   does at least once per film) against ``FilmCache.film`` (memory-mapped uint8 row -> float32), alternated
   A B A B, best of ``--repeats``; films per second of wall time and per CPU-second (one core). Also the cost of
   ``prepare`` itself (decode + SHA-256 + write). The shards were just written, so they are in the page cache; a
   cold disk adds its read time (50 KB per film at 224 px).
2. **DataLoader settings**: a training epoch of the loader alone (RecordDataset with ``--augment``, shuffled,
   batches of ``--batch``, collate, no model) for num_workers 0/1/2, prefetch_factor 2/4, persistent workers on/off,
   pin_memory (only with CUDA), with prepared films and, for reference, decoding (``cache=True``: the float16
   in-memory cache of training from the second epoch on); ``--epochs`` each, round-robin: the first epoch (workers
   start, films decoded) and the best later one.
3. **what the 8-bit rounding changes** (``--model``, default the shipped ``fracatlas-lite0``, skipped if absent):
   the model's probabilities on the same films decoded and prepared: max and mean absolute difference, AUROC of
   both.

    nice -n 10 python benchmarks/bench_loader.py --data ../shared/data/fracatlas --n 200 --size 224 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from _util import best, interleaved  # noqa: E402


def _records(data: Path, n: int, seed: int) -> list[Any]:
    """``n`` films of the data set, a seeded sample across its splits (both labels)."""
    import numpy as np

    from xray_xai import api

    recs = api.open_dataset(data).records()
    pick = np.random.default_rng(seed).permutation(len(recs))[:n]
    return [recs[int(i)] for i in sorted(pick)]


def _clock(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def decode_vs_prepared(recs: list[Any], pre: Any, root: Path, repeats: int) -> dict[str, Any]:
    from xray_xai.data.film_cache import open_cache, prepare
    from xray_xai.data.geometry import geometry
    from xray_xai.data.images import read_film

    prep_wall, prep_cpu = _clock(lambda: prepare(recs, pre, root, progress=False))
    cache = open_cache(pre, root)
    locs = cache.locate_all(recs)
    assert None not in locs, "some films could not be prepared"

    def cold() -> None:
        for r in recs:
            geometry(read_film(r.path, orient=pre.exif_orientation).pixels, pre)

    def warm() -> None:
        for loc in locs:
            cache.film(loc)  # type: ignore[arg-type]

    times = interleaved({"decode": cold, "prepared": warm}, repeats=repeats, warmup=0)
    cpu = {"decode": _clock(cold)[1], "prepared": _clock(warm)[1]}
    n = len(recs)
    out = {
        "films": n,
        "decode_films_per_s": n / best(times["decode"]),
        "prepared_films_per_s": n / best(times["prepared"]),
        "decode_films_per_cpu_s": n / cpu["decode"],
        "prepared_films_per_cpu_s": n / max(cpu["prepared"], 1e-9),
        "prepare_films_per_s": n / prep_wall,
        "prepare_films_per_cpu_s": n / prep_cpu,
        "shard_bytes": sum(p.stat().st_size for p in cache.shards),
    }
    out["ratio_wall"] = out["prepared_films_per_s"] / out["decode_films_per_s"]
    out["ratio_cpu"] = out["prepared_films_per_cpu_s"] / out["decode_films_per_cpu_s"]
    return out


def _loader(ds: Any, batch: int, seed: int, **settings: Any) -> Any:
    """A shuffled training DataLoader over ``ds`` with ``settings`` (films are only collated: no model runs)."""
    import torch
    from torch.utils.data import DataLoader

    from xray_xai.data.loader import collate_skip_bad

    gen = torch.Generator()
    gen.manual_seed(seed)
    return DataLoader(ds, batch_size=batch, shuffle=True, generator=gen, collate_fn=collate_skip_bad, **settings)


def _epoch(loader: Any) -> float:
    """Seconds of one pass over ``loader`` (batches moved to the GPU when the loader pins memory)."""
    t0 = time.perf_counter()
    for x, *_ in loader:
        if loader.pin_memory:
            x.to("cuda", non_blocking=True)
    return time.perf_counter() - t0


#: (label, DataLoader keyword arguments) measured with prepared films
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("workers 0", {"num_workers": 0}),
    ("workers 1, prefetch 2, persistent", {"num_workers": 1, "prefetch_factor": 2, "persistent_workers": True}),
    ("workers 2, prefetch 2, persistent", {"num_workers": 2, "prefetch_factor": 2, "persistent_workers": True}),
    ("workers 2, prefetch 4, persistent", {"num_workers": 2, "prefetch_factor": 4, "persistent_workers": True}),
    ("workers 2, prefetch 2, not persistent", {"num_workers": 2, "prefetch_factor": 2, "persistent_workers": False}),
]


def loader_settings(
    recs: list[Any], pre: Any, root: Path, batch: int, augment: str, epochs: int
) -> list[dict[str, Any]]:
    """Every setting's loader built once, then epochs round-robin (A B C ... A B C ...) so that load from other
    processes hits all alike: the first epoch (workers starting, films decoded without prepared films) and the best
    later one (steady state: persistent workers, the in-memory float16 cache of training filled)."""
    import torch

    from xray_xai.data.augment import Augment
    from xray_xai.data.film_cache import open_cache
    from xray_xai.data.loader import RecordDataset

    aug = Augment.preset(augment)
    cache = open_cache(pre, root)
    cases = [(label, kw, True) for label, kw in SETTINGS]
    if torch.cuda.is_available():
        cases.append(("workers 2, prefetch 2, persistent, pin_memory", {**SETTINGS[2][1], "pin_memory": True}, True))
    cases += [("decoding: workers 0", {"num_workers": 0}, False)]
    cases += [("decoding: workers 2, prefetch 2, persistent", SETTINGS[2][1], False)]
    _epoch(_loader(RecordDataset(recs, pre, augment=aug, films=cache), batch, 0))  # warm-up: first calls
    loaders = [
        _loader(RecordDataset(recs, pre, augment=aug, cache=True, films=cache if prepared else None), batch, 0, **kw)
        for _, kw, prepared in cases
    ]
    seconds: list[list[float]] = [[] for _ in cases]
    for _ in range(epochs):
        for k, loader in enumerate(loaders):
            seconds[k].append(_epoch(loader))
    rows = []
    for (label, _, _), secs in zip(cases, seconds, strict=True):
        later = min(secs[1:]) if len(secs) > 1 else secs[0]
        rows.append({"setting": label, "epoch_s": secs, "first_films_per_s": len(recs) / secs[0],
                     "later_films_per_s": len(recs) / later})  # fmt: skip
    del loaders
    return rows


def rounding_effect(recs: list[Any], model_name: str, root: Path, batch: int = 16) -> dict[str, Any] | None:
    """Probabilities of ``model_name`` on the same films decoded, prepared (8-bit), and decoded plus uniform noise of
    the rounding's size (+-half a grey level, seeded): is the model's change the rounding's, or any such nudge's?"""
    import numpy as np
    import torch

    from xray_xai import api
    from xray_xai.data.film_cache import prepare
    from xray_xai.data.geometry import geometry, geometry_to_tensor
    from xray_xai.data.images import read_film
    from xray_xai.models.metrics import auroc

    try:
        model = api.load_model(model_name)
    except Exception as exc:  # the shipped model is optional here
        return {"skipped": f"{model_name}: {exc}"}
    pre = model.preprocessing
    recs = [r for r in recs if r.label is not None]
    films = prepare(recs, pre, root, progress=False).cache
    rng = np.random.default_rng(0)
    probs: dict[str, list[float]] = {"decoded": [], "prepared": [], "noise": []}
    for start in range(0, len(recs), batch):
        chunk = recs[start : start + batch]
        decoded = [geometry(read_film(r.path, orient=pre.exif_orientation).pixels, pre) for r in chunk]
        views = {
            "decoded": decoded,
            "prepared": [films.film(films.locate(r.path)) for r in chunk],  # type: ignore[arg-type]
            "noise": [np.clip(g + rng.uniform(-0.5, 0.5, g.shape).astype(np.float32) / 255, 0, 1) for g in decoded],
        }
        with torch.no_grad():
            for name, arrays in views.items():
                x = torch.stack([geometry_to_tensor(a, pre) for a in arrays])
                probs[name] += model.predict_proba(x).float().reshape(-1).tolist()
    y = np.array([r.label for r in recs])
    p = {k: np.array(v) for k, v in probs.items()}
    out: dict[str, Any] = {"model": model_name, "films": len(recs), "eight_bit": bool(pre.eight_bit)}
    for name in ("prepared", "noise"):
        d = np.abs(p[name] - p["decoded"])
        out[name] = {
            "max_abs_diff": float(d.max()),
            "mean_abs_diff": float(d.mean()),
            "auroc": auroc(y, p[name]),
            "decisions_changed_at_0.5": int(((p[name] >= 0.5) != (p["decoded"] >= 0.5)).sum()),
        }
    out["auroc_decoded"] = auroc(y, p["decoded"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/fracatlas")
    ap.add_argument("--n", type=int, default=200, help="films")
    ap.add_argument("--size", type=int, default=224, help="input size")
    ap.add_argument("--model", default="efficientnet-lite0", help="whose preprocessing (geometry) to use")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--augment", default="standard")
    ap.add_argument("--repeats", type=int, default=3, help="decode/prepared passes (best counts)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per DataLoader setting (best after the first)")
    ap.add_argument("--rounding-model", default="fracatlas-lite0", help="'' to skip part 3")
    ap.add_argument("--json", dest="json_out", type=Path)
    args = ap.parse_args(argv)

    import torch

    from xray_xai import api

    torch.set_num_threads(1)
    recs = _records(args.data, args.n, seed=0)
    pre = api.film_preprocessing(args.model, args.size)
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_start": os.getloadavg()}}
    result["setup"] = {"data": str(args.data), "films": len(recs), "preprocessing": pre.to_dict()}
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        root = Path(tmp)
        result["decode_vs_prepared"] = decode_vs_prepared(recs, pre, root, args.repeats)
        print(json.dumps(result["decode_vs_prepared"], indent=1), flush=True)
        result["loader"] = loader_settings(recs, pre, root, args.batch, args.augment, args.epochs)
        for row in result["loader"]:
            first, later = row["first_films_per_s"], row["later_films_per_s"]
            print(f"{row['setting']:<50} films/s: first epoch {first:.0f}, later best {later:.0f}", flush=True)
        if args.rounding_model:
            result["rounding"] = rounding_effect(recs, args.rounding_model, root)
            print(json.dumps(result["rounding"], indent=1), flush=True)
    result["machine"]["load_end"] = os.getloadavg()
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
