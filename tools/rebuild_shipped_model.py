"""Rebuild a shipped model (``fracatlas-lite0``, or ``--name fracatlas-lite0-guided``) from the FracAtlas films and
compare it with the shipped weights.

Runs the documented recipe (docs/model-card-fracatlas-lite0.md, "How to rebuild") with the ``xray-xai train`` command
in a fresh, empty ``XRAY_XAI_HOME`` (a temporary folder, so no checkpoint of yours is touched or read), then compares
the new weights with the shipped ones: the sha256 of the safetensors file and the weights fingerprint. Prints MATCH
or DIFFERENT and exits 0 on MATCH, 1 on DIFFERENT, 2 when the rebuild itself failed.

The weights are bit-identical only on the kind of CPU that trained them (an x86-64 Intel Xeon with AVX-512; float
kernels differ between CPU kinds and can flip the kept epoch, see docs/results.md). About 20 minutes on 2 idle cores.

Example::

    python tools/rebuild_shipped_model.py --data ../shared/data/fracatlas
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED_DIR = REPO / "xray_xai" / "models" / "shipped"

#: the recipe of docs/results.md "FracAtlas: EfficientNet-Lite0 fine-tuned on the train split" (run 5)
RECIPE = [
    "train", "--model", "efficientnet-lite0", "--dataset", "fracatlas",
    "--epochs", "8", "--batch-size", "32", "--optimizer", "adamw", "--lr", "5e-4", "--schedule", "cosine",
    "--monitor", "auroc", "--augment", "standard", "--loss", "weighted-bce", "--early-stop", "8", "--seed", "0",
]  # fmt: skip


def _tensors_equal(a: Path, b: Path) -> bool:
    """Every tensor of ``a`` equals the same-named tensor of ``b`` bit for bit (and the names are the same)."""
    import torch
    from safetensors import safe_open

    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        keys = sorted(fa.keys())
        return keys == sorted(fb.keys()) and all(torch.equal(fa.get_tensor(k), fb.get_tensor(k)) for k in keys)


def _rebuilt_sidecar(home: Path) -> dict:
    found = sorted((home / "models" / "efficientnet-lite0").glob("*/model.json"))
    if len(found) != 1:
        raise SystemExit(f"rebuild failed: expected one checkpoint under {home / 'models'}, found {len(found)}")
    return {**json.loads(found[0].read_text(encoding="utf-8")), "_dir": str(found[0].parent)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fracatlas",
                        help="the FracAtlas folder (default: ../shared/data/fracatlas)")  # fmt: skip
    parser.add_argument("--name", default="fracatlas-lite0", help="the shipped model (default: fracatlas-lite0)")
    parser.add_argument("--keep", type=Path, help="keep the rebuilt store and run folder here (default: discarded)")
    args = parser.parse_args(argv)
    if not (args.data / "dataset.csv").is_file():
        print(f"error: {args.data}: not a FracAtlas folder (no dataset.csv)", file=sys.stderr)
        return 2
    folder = SHIPPED_DIR / args.name
    if not (folder / "model.json").is_file():
        print(f"error: {folder}: no shipped model {args.name!r}", file=sys.stderr)
        return 2
    shipped = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    # the labels-only model's recipe spelled out as run 5 ran it; any other shipped model is a named recipe
    recipe = RECIPE if args.name == "fracatlas-lite0" else ["train", "--recipe", args.name]
    work = Path(tempfile.mkdtemp(prefix=f"rebuild-{args.name}-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XRAY_XAI_HOME": str(work / "home")}
    cmd = [sys.executable, "-m", "xray_xai", *recipe, "--data", str(args.data.resolve()), "--out", str(work / "run")]
    print("running:", " ".join(cmd[2:]), flush=True)
    start = time.monotonic()
    done = subprocess.run(cmd, env=env, cwd=work, check=False)
    if done.returncode != 0:
        print(f"rebuild failed: xray-xai train exited {done.returncode}", file=sys.stderr)
        return 2
    new = _rebuilt_sidecar(work / "home")
    print(f"trained in {time.monotonic() - start:.0f} s; rebuilt and shipped:")
    same = True
    for key in ("fingerprint", "best_epoch", "split_fingerprint"):
        a, b = new.get(key), shipped.get(key)
        same &= a == b
        print(f"  {key:18} {a}  {b}  {'same' if a == b else 'DIFFERENT'}")
    # the file's bytes may differ in tensor order while every tensor is equal: compare tensors, report the file hash
    tensors_equal = _tensors_equal(Path(new["_dir"]) / "model.safetensors", folder / "model.safetensors")
    same &= tensors_equal
    print(f"  {'tensors':18} {'all equal' if tensors_equal else 'DIFFERENT'}")
    print(f"  {'file sha256':18} {new.get('weights_sha256')}  {shipped.get('weights_sha256')}  (information)")
    print("MATCH" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
