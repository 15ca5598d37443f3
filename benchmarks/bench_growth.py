"""How ``explain`` and ``cluster`` grow with the number of films: time and peak memory at three sizes.

Each size runs in a fresh process on a folder of N random 64 px PNG films and ``cnn-small`` at 64 px (untrained):
``xray_xai.explain.service.explain(model, "gradcam", formats=npy,json)`` and
``xray_xai.cluster.service.cluster(model, folder, threshold=None, k=4)`` (features, PCA + k-means, every report file).
The fitted exponent is the least-squares slope of log(time) and log(peak RSS above the process's RSS before the call)
on log(N): 1 is linear.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from _util import Row, loglog_slope, run_case, set_threads


def _films(folder: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(folder / f"film{i:05d}.png")


def case_grow(kind: str, n: int) -> dict[str, Any]:
    import torch
    from _util import peak_rss_mb, reset_peak_rss, rss_mb
    from xray_xai_plugins.models.small_cnns import CnnSmall

    from xray_xai.sdk.interfaces import Record

    set_threads()
    torch.manual_seed(0)
    model = CnnSmall(image_size=64).eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "films"
        _films(folder, n)
        import xray_xai.cluster.service  # heavy imports (sklearn, matplotlib) happen before the measurement
        import xray_xai.explain.service  # noqa: F401

        reset_peak_rss()
        before = rss_mb()
        t0 = time.perf_counter()
        if kind == "explain":
            from xray_xai.explain.service import explain

            recs = [Record(path=p) for p in sorted(folder.iterdir())]
            explain(model, "gradcam", records=recs, out=Path(tmp) / "out", formats=("npy", "json"), batch_size=64,
                    show_progress=False)  # fmt: skip
        else:
            from xray_xai.cluster.service import cluster

            cluster(model, folder, threshold=None, k=4, out_dir=Path(tmp) / "out", cache_dir=Path(tmp) / "cache",
                    progress=False, json=True, batch_size=64)  # fmt: skip
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rss_before_mb": before, "peak_during_mb": peak_rss_mb()}


def run(quick: bool) -> list[Row]:
    sizes = [100, 300, 1000] if quick else [100, 1000, 10_000]
    rows = []
    for kind in ("explain", "cluster"):
        res = [run_case("bench_growth", "case_grow", kind=kind, n=n) for n in sizes]
        secs = [r["seconds"] for r in res]
        mem = [max(r["peak_during_mb"] - r["rss_before_mb"], 1.0) for r in res]
        t_slope, m_slope = loglog_slope([float(n) for n in sizes], secs), loglog_slope([float(n) for n in sizes], mem)
        detail = "; ".join(f"N={n:,}: {s:.1f} s, +{m:.0f} MiB" for n, s, m in zip(sizes, secs, mem, strict=True))
        rows.append(
            Row(
                "growth", f"{kind}: time and memory vs N",
                f"time exponent {t_slope:.2f}, memory exponent {m_slope:.2f}",
                "", None, "", "<= 1.1 (linear)", t_slope <= 1.1 and m_slope <= 1.1,
                f"cnn-small 64 px; {detail} (memory: peak RSS above RSS before the call)",
                {"sizes": sizes, "seconds": secs, "memory_mb": mem},
            )
        )  # fmt: skip
    return rows
