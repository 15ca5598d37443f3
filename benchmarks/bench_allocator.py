"""Training-step speed with glibc's default allocator thresholds against
:func:`xray_xai._util.allocator.keep_freed_memory`.

Each variant runs in its own process (the thresholds are process-wide): EfficientNet-Lite0 (no pretrained weights
needed for timing), channels_last, AdamW, a batch of random films at 224 px, 2 warm-up steps then ``--steps`` timed
steps. Printed: images per second, user and system CPU seconds and minor page faults of the timed steps, and the ratio
keep / default. Linux with glibc only.

    python benchmarks/bench_allocator.py --steps 6 --batch 32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
from xray_xai._util.allocator import keep_freed_memory
from xray_xai import get_model
kept = keep_freed_memory()
steps, batch = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
m = get_model("efficientnet-lite0")(pretrained=False).train().to(memory_format=torch.channels_last)
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
y = torch.rand(batch)
def step():
    loss = torch.nn.functional.binary_cross_entropy_with_logits(m(x).float(), y)
    opt.zero_grad(); loss.backward(); opt.step()
step(); step()
r0 = resource.getrusage(resource.RUSAGE_SELF); t = time.perf_counter()
for _ in range(steps):
    step()
dt = time.perf_counter() - t
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"kept": kept, "img_per_s": steps * batch / dt, "user_s": r1.ru_utime - r0.ru_utime,
                  "sys_s": r1.ru_stime - r0.ru_stime, "minor_faults": r1.ru_minflt - r0.ru_minflt}))
"""


def run(keep: bool, steps: int, batch: int) -> dict[str, float]:
    env = {**os.environ, "XRAY_XAI_KEEP_MEMORY": "1" if keep else "0"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(steps), str(batch)], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    default = run(False, args.steps, args.batch)
    keep = run(True, args.steps, args.batch)
    for name, r in (("default thresholds", default), ("keep_freed_memory", keep)):
        print(
            f"{name:20s} {r['img_per_s']:6.1f} img/s  user {r['user_s']:5.1f} s  sys {r['sys_s']:5.1f} s  "
            f"minor faults {r['minor_faults']:>9d}"
        )
    print(f"ratio keep / default: {keep['img_per_s'] / default['img_per_s']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
