"""What box guidance costs per training step, as a ratio to the unguided step measured in the same run.

One EfficientNet-Lite0 (ImageNet weights from the installed package, 224 px, channels-last, batch 16, ``--guided``
films of it guided: half by default; a FracAtlas batch carries about 2 of 16) takes ``--steps`` timed AdamW steps per
configuration after one warm-up step; the configurations alternate so a load change on the machine touches all of
them alike. Prints seconds per step and the ratio to unguided.

    python benchmarks/bench_guidance.py --steps 6
    python benchmarks/bench_guidance.py --steps 6 --guided 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from xray_xai.models.guidance import GUIDE_LOSSES, Guide, GuideSpec
from xray_xai.sdk.registry import models


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, guide: Guide | None, x: torch.Tensor,
          y: torch.Tensor, masks: torch.Tensor) -> float:  # fmt: skip
    t0 = time.perf_counter()
    xs = guide.prepare(x.clone()) if guide is not None else x
    logits = model(xs)
    loss = F.binary_cross_entropy_with_logits(logits, y)
    if guide is not None:
        loss = loss + guide.term(logits, masks, xs)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--guided", type=int, help="films of a batch that carry a box (default: half)")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = models.get(args.model)(image_size=args.size).train()
    model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    x = torch.randn(args.batch, int(model.preprocessing.channels), args.size, args.size).contiguous(
        memory_format=torch.channels_last
    )
    y = (torch.arange(args.batch) % 2).float()
    masks = torch.full((args.batch, args.size, args.size), -1.0)
    box = slice(args.size // 4, args.size // 2)
    n_guided = args.batch // 2 if args.guided is None else args.guided
    for i in range(1, 2 * n_guided, 2):  # abnormal films carry a box
        masks[i] = 0.0
        masks[i, box, box] = 1.0
    configs: dict[str, Guide | None] = {"unguided": None}
    for loss in GUIDE_LOSSES:
        configs[loss] = Guide(GuideSpec("boxes", loss), model)
    times: dict[str, list[float]] = {name: [] for name in configs}
    for guide in configs.values():  # warm-up
        _step(model, opt, guide, x, y, masks)
    for _ in range(args.steps):
        for name, guide in configs.items():
            times[name].append(_step(model, opt, guide, x, y, masks))
    base = sorted(times["unguided"])[len(times["unguided"]) // 2]
    result = {}
    for name, ts in times.items():
        median = sorted(ts)[len(ts) // 2]
        result[name] = {"seconds_per_step": round(median, 3), "ratio": round(median / base, 2)}
        print(f"{name:>11}: {median:.3f} s/step  x{median / base:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {"model": args.model, "batch": args.batch, "size": args.size, "guided": n_guided, "configs": result},
                fh,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
