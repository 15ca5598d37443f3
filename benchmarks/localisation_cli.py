"""End-to-end check of the localisation numbers through the command line, in each film's own pixel grid.

``xray-xai explain`` (default method unless ``--method``) writes one ``.npy`` map per film; each map is resized to its
film (the models here resize, not letterbox), and its maximum is scored against the fracture boxes of FracAtlas:
pointing game exact, and within 3.5% of the film's longer side. This is what a user's own script would do with the
CLI's output, so it checks that the study (benchmarks/localisation.py, which scores at the model's input size) is not
an artefact of its own pipeline.

    python benchmarks/localisation_cli.py --checkpoint $XRAY_XAI_HOME/models/efficientnet-lite0/<run> --limit 100
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from PIL import Image
    from scipy.ndimage import distance_transform_edt

    from xray_xai.data.datasets import open_dataset
    from xray_xai.data.images import read_image
    from xray_xai.data.masks import ground_truth_mask

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "fracatlas"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--method", default=None, help="explainer (default: the CLI's default)")
    args = ap.parse_args(argv)

    records = open_dataset(args.data, "fracatlas").records(args.split)
    fractured = [r for r in records if r.label == 1 and r.has_ground_truth][: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        films, out = Path(tmp) / "films", Path(tmp) / "out"
        films.mkdir()
        for rec in fractured:
            (films / rec.path.name).symlink_to(rec.path.resolve())
        cli = [sys.executable, "-c", "from xray_xai.cli import main; main()"]
        cmd = [*cli, "explain", "--checkpoint", args.checkpoint, "--input", str(films)]
        cmd += ["--out", str(out), "--format", "npy,json", "--json"] + (
            ["--method", args.method] if args.method else []
        )
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        hits, near = [], []
        for rec in fractured:
            maps = sorted(out.rglob(f"{rec.path.stem}*.npy"))
            if not maps:
                continue
            image = read_image(rec.path)
            height, width = image.shape[:2]
            truth = ground_truth_mask(rec, image.shape)
            if not truth.any():
                continue
            heat_small = Image.fromarray(np.load(maps[0]).astype(np.float32))
            heat = np.asarray(heat_small.resize((width, height), Image.Resampling.BILINEAR))  # as the explainers do
            y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
            hits.append(bool(truth[y, x]))
            near.append(bool(distance_transform_edt(~truth)[y, x] <= 0.035 * max(height, width)))
        shutil.rmtree(out, ignore_errors=True)
    print(f"films {len(hits)}  pointing {np.mean(hits):.3f}  pointing within 3.5% of the side {np.mean(near):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
