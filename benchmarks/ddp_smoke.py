"""Smoke test of multi-process training: a few DDP steps of cnn-small on random films, then the ranks compare weights.

Run with ``torchrun --standalone --nproc_per_node 2 benchmarks/ddp_smoke.py --steps 3 --out ddp.json`` (CPU: gloo;
on GPUs the same command uses nccl, one GPU per process). Rank 0 writes the world size, each rank's parameter
checksum after training (all equal when gradients are all-reduced) and whether training changed the weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4, help="per process")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--backend", default=None, help="gloo (CPU) or nccl (GPU); default: nccl if CUDA else gloo")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from xray_xai_plugins.models.small_cnns import CnnSmall

    from xray_xai.scale import ddp

    torch.set_num_threads(1)
    device = ddp.init(args.backend)
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = CnnSmall(image_size=args.size)
    start = ddp.params_checksum(model)
    net = ddp.wrap(model, device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.9)
    gen = torch.Generator().manual_seed(1000 + ddp.rank())  # each rank sees different films
    net.train()
    for _ in range(args.steps):
        x = torch.rand(args.batch_size, 1, args.size, args.size, generator=gen).to(device)
        y = (torch.rand(args.batch_size, generator=gen) > 0.5).float().to(device)
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    mine = torch.tensor([ddp.params_checksum(model)], dtype=torch.float64)
    sums = [torch.zeros(1, dtype=torch.float64) for _ in range(ddp.world_size())]
    if ddp.world_size() > 1:
        dist.all_gather(sums, mine)
    else:
        sums = [mine]
    if ddp.is_main() and args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "world_size": ddp.world_size(),
                    "backend": dist.get_backend() if dist.is_initialized() else None,
                    "checksums": [round(float(s.item()), 9) for s in sums],
                    "changed": abs(float(mine.item()) - start) > 1e-9,
                    "steps": args.steps,
                }
            )
        )
    ddp.cleanup()


if __name__ == "__main__":
    main()
