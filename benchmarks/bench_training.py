"""Training throughput: ``xray_xai.models.training.train`` against a plain torch loop on the same model and batch size.

What is timed. Ours: ``train(model, data, epochs=1, augment=False, save=False)`` on a synthetic MURA-layout data set
written beforehand (PNG files on disk); the number is the ``img_per_s`` that ``train`` itself records for the
training pass of the epoch (its DataLoader reading and preprocessing the PNGs with ``num_workers=0``, forward, BCE,
backward, SGD step, loss accumulation; validation, checkpointing and history files are outside it). Nothing is
subtracted. Baseline: the same architecture (a fresh instance of the same plugin class, same seed), the same
training films already preprocessed into in-memory tensors, ``model.train()``, SGD (lr 1e-3, momentum 0.9), BCE with
logits, the same batch size - the loop a user would write with torchvision. The two alternate (baseline, ours, ...)
in one process and the fastest epoch of each counts. Ours reads from disk and the baseline does not, so the ratio is
a lower bound on the loop's own overhead.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from _util import Row, run_case, set_threads


def case_train(model_name: str, image_size: int, n_images: int, batch: int, repeats: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from xray_xai_plugins.datasets.synthetic import SyntheticDataset

    from xray_xai._util.allocator import keep_freed_memory
    from xray_xai.data.datasets import open_dataset
    from xray_xai.data.loader import RecordDataset
    from xray_xai.models.training import train
    from xray_xai.sdk.registry import models

    keep_freed_memory()  # as the CLI does at its entry; train() leaves the process's allocator alone
    threads = set_threads()
    with tempfile.TemporaryDirectory() as tmp:
        root = SyntheticDataset.generate(
            Path(tmp) / "data", n_studies=max(12, n_images), image_size=256, seed=0, progress=False
        )
        # the images train() will use: the same subset rule (max_images, seed 0)
        from xray_xai.models.splits import subset as _subset

        recs = _subset([r for r in open_dataset(root).records("train") if r.label is not None], n_images, 0)
        cls = models.get(model_name)
        torch.manual_seed(0)
        probe = cls(image_size=image_size, pretrained=False)
        ds = RecordDataset(recs, probe.preprocessing)
        items = [ds[i] for i in range(len(ds))]
        xs = torch.stack([it[0] for it in items])
        ys = torch.tensor([float(it[1]) for it in items])
        del probe

        def baseline() -> float:
            torch.manual_seed(0)
            model = cls(image_size=image_size, pretrained=False)
            model.train()
            opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
            n = (len(xs) // batch) * batch if len(xs) % batch == 1 else len(xs)
            t0 = time.perf_counter()
            for s in range(0, n, batch):
                x, y = xs[s : s + batch], ys[s : s + batch]
                loss = F.binary_cross_entropy_with_logits(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return n / (time.perf_counter() - t0)

        def ours(i: int) -> float:
            result = train(
                model_name, root, epochs=1, batch_size=batch, image_size=image_size, augment=False,
                max_images=n_images, save=False, progress=False, out_dir=Path(tmp) / f"run{i}", pretrained=False,
                seed=0,
            )  # fmt: skip
            return float(result.history[0]["img_per_s"])

        baseline()  # warm-up, not counted: first-touch allocations and kernel selection
        base_rates, our_rates = [], []
        for i in range(repeats):
            base_rates.append(baseline())
            our_rates.append(ours(i))
    return {"ours": our_rates, "baseline": base_rates, "threads": threads, "n_train": len(recs)}


def run(quick: bool) -> list[Row]:
    rows = []
    for name in ("densenet-full", "efficientnet-lite0"):
        size, n, batch, repeats = (112, 16, 8, 2) if quick else (224, 32, 8, 3)
        r = run_case("bench_training", "case_train", model_name=name, image_size=size, n_images=n, batch=batch,
                     repeats=repeats)  # fmt: skip
        ours, base = max(r["ours"]), max(r["baseline"])
        rows.append(
            Row(
                "training", f"{name} train() vs plain torch loop", f"{ours:.2f} img/s", f"{base:.2f} img/s",
                ours / base, "throughput ratio", ">= 0.95", ours / base >= 0.95,
                f"{r['n_train']} films x {size} px, batch {batch}, SGD, {r['threads']} threads, best of {repeats} "
                f"epochs; ours decodes PNGs in the loop, the baseline holds tensors",
                {"ours_img_s": r["ours"], "baseline_img_s": r["baseline"], "peak_rss_mb": r["peak_rss_mb"]},
            )
        )  # fmt: skip
    return rows
