"""Feature extraction and clustering against a plain torch + scikit-learn script; streaming memory at scale.

* extraction: ``xray_xai.cluster.features.extract_features`` (cache off)
  vs a loop that opens each PNG with PIL, resizes,
  normalises and calls the network's feature extractor under ``inference_mode``; DenseNet-169 at 224 px.
* clustering 40,000 x 1,664 float32 features (random, with 4 planted clusters in a 10-d subspace): our ``pca-kmeans``
  (randomized PCA to 50 components, k-means with 4 restarts) vs ``PCA(50)`` + ``KMeans(4)`` from scikit-learn.
* streaming: N x 1,664 float32 written to a ``.npy`` on disk (by another process, so its page cache is not ours),
  then ``pca-kmeans`` with ``streaming=True`` on the path: peak RSS of that process must stay under 2 GiB.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _util import Row, best, interleaved, run_case, set_threads

DIM = 1664


def planted(n: int, d: int = DIM, k: int = 4, seed: int = 0, start: int = 0) -> tuple[Any, Any]:
    """Rows ``start..start+n`` of a data set with ``k`` clusters planted in a 10-d subspace (deterministic per row)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((10, d)).astype(np.float32) / np.sqrt(10)
    centres = rng.standard_normal((k, 10)).astype(np.float32) * 6.0
    rows = np.random.default_rng(seed + 1 + start)
    labels = rows.integers(0, k, n)
    X = rows.standard_normal((n, d), dtype=np.float32) + centres[labels] @ basis
    return X, labels


def case_cluster(n: int, repeats: int) -> dict[str, Any]:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score
    from xray_xai_plugins.clusterers.kmeans import PcaKMeans

    set_threads()
    X, truth = planted(n)
    out: dict[str, Any] = {}

    def ours() -> None:
        out["ours"] = PcaKMeans(n_clusters=4, random_state=0).fit(X).labels_

    def plain() -> None:
        Z = PCA(n_components=50, random_state=0).fit_transform(X)
        out["plain"] = KMeans(n_clusters=4, random_state=0).fit(Z).labels_

    times = interleaved({"ours": ours, "plain": plain}, repeats=repeats, warmup=0)
    return {
        "times": times,
        "ari_ours": float(adjusted_rand_score(truth, out["ours"])),
        "ari_plain": float(adjusted_rand_score(truth, out["plain"])),
    }


def case_extract(n_images: int, size: int, repeats: int) -> dict[str, Any]:
    import numpy as np
    import torch
    from PIL import Image
    from xray_xai_plugins.models.densenet import DenseNetFull

    from xray_xai.cluster.features import extract_features
    from xray_xai.sdk.interfaces import Record

    threads = set_threads()
    torch.manual_seed(0)
    model = DenseNetFull(image_size=size).eval()
    mean = torch.tensor(model.preprocessing.mean).view(3, 1, 1)
    std = torch.tensor(model.preprocessing.std).view(3, 1, 1)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(n_images):
            p = Path(tmp) / f"film{i:04d}.png"
            Image.fromarray((rng.random((320, 256)) * 255).astype(np.uint8)).save(p)
            paths.append(p)
        recs = [Record(path=p) for p in paths]
        res: dict[str, Any] = {}

        def ours() -> None:
            res["ours"] = extract_features(model, recs, batch_size=16, use_cache=False, progress=False).features

        @torch.inference_mode()
        def plain() -> None:
            feats = []
            for s in range(0, len(paths), 16):
                batch = []
                for p in paths[s : s + 16]:
                    img = Image.open(p).convert("L").resize((size, size), Image.BILINEAR)
                    t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None].expand(3, -1, -1)
                    batch.append((t - mean) / std)
                feats.append(model.forward_features(torch.stack(batch)))
            res["plain"] = torch.cat(feats).numpy()

        times = interleaved({"ours": ours, "plain": plain}, repeats=repeats, warmup=1)
    return {"times": times, "threads": threads, "shape": list(res["ours"].shape)}


def case_write_npy(path: str, n: int, chunk: int = 50_000) -> dict[str, Any]:
    """Write the planted data set to ``path`` chunk by chunk (its own process: the page cache is not the reader's)."""
    import numpy as np

    t0 = time.perf_counter()
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, DIM))
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        mm[s : s + m] = planted(m, start=s)[0]
        mm.flush()
    del mm
    return {"seconds": time.perf_counter() - t0, "bytes": os.path.getsize(path)}


def case_stream(path: str) -> dict[str, Any]:
    from _util import peak_rss_mb
    from xray_xai_plugins.clusterers.kmeans import PcaKMeans

    set_threads()
    before = peak_rss_mb()
    t0 = time.perf_counter()
    est = PcaKMeans(n_clusters=4, streaming=True, random_state=0).fit(path)
    sizes = [int((est.labels_ == c).sum()) for c in range(4)]
    return {"seconds": time.perf_counter() - t0, "rss_before_mb": before, "sizes": sizes}


def run(quick: bool) -> list[Row]:
    rows: list[Row] = []
    n_img, size, rep = (8, 224, 1) if quick else (32, 224, 2)
    e = run_case("bench_clustering", "case_extract", n_images=n_img, size=size, repeats=rep)
    to, tp = best(e["times"]["ours"]), best(e["times"]["plain"])
    rows.append(
        Row(
            "features", "extract_features vs plain torch loop", f"{n_img / to:.2f} img/s", f"{n_img / tp:.2f} img/s",
            tp / to, "speed-up (x)", ">= 0.95", tp / to >= 0.95,
            f"densenet-full, {n_img} PNG films -> {size} px, batch 16, {e['threads']} threads, cache off",
        )
    )  # fmt: skip
    c = run_case("bench_clustering", "case_cluster", n=40_000, repeats=1 if quick else 2)
    to, tp = best(c["times"]["ours"]), best(c["times"]["plain"])
    rows.append(
        Row(
            "clustering", "pca-kmeans 40,000 x 1,664 vs sklearn PCA+KMeans", f"{to:.2f} s", f"{tp:.2f} s", tp / to,
            "speed-up (x)", "< 5 s", to < 5.0,
            f"ARI vs planted clusters: ours {c['ari_ours']:.3f}, sklearn {c['ari_plain']:.3f}; ours runs 4 k-means "
            f"restarts, sklearn's default 1; peak RSS {c['peak_rss_mb']:.0f} MiB",
        )
    )  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="xray-bench-stream-"))
    try:
        free = shutil.disk_usage(tmp).free
        n = 100_000 if quick else 1_000_000
        need = n * DIM * 4
        note = ""
        if free < 3 * need:
            n = 250_000
            note = f"only {free / 2**30:.1f} GiB free: 250,000 rows measured; "
        w = run_case("bench_clustering", "case_write_npy", path=str(tmp / "features.npy"), n=n)
        s = run_case("bench_clustering", "case_stream", path=str(tmp / "features.npy"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    peak = s["peak_rss_mb"]
    if n < 1_000_000:
        note += (
            f"measured at {n:,} rows; at 1,000,000 the projections add ~{(1_000_000 - n) * 50 * 4 / 2**20:.0f} MiB; "
        )
    rows.append(
        Row(
            "clustering", f"streaming pca-kmeans, {n:,} x 1,664 .npy ({w['bytes'] / 2**30:.2f} GiB)",
            f"peak RSS {peak:.0f} MiB, {s['seconds']:.1f} s", "", None, "", "< 2048 MiB", peak < 2048,
            note + f"RSS after imports {s['rss_before_mb']:.0f} MiB; file written in {w['seconds']:.0f} s by another "
            f"process; cluster sizes {s['sizes']}",
        )
    )  # fmt: skip
    return rows
