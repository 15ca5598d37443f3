"""Where the default explainer's peak lands when it misses the fracture: per-film pointing on FracAtlas's fractured
test films, split by what the model predicts, by the size of the box and by how far the peak is from it.

The leaderboard reports the pointing game's mean; this script scores the same films with the leaderboard's own
functions (the first ``--films`` fractured films of the split, the explainer with its default parameters, the same
ground-truth masks and tolerance) and keeps each film's result, so the misses can be told apart: films the model calls
normal, fractures smaller than a few map cells, near misses where a second blob on the fracture almost reaches the
peak. Written for issue 18 (box-guided training): which misses guidance removed and which are left.

Usage: python benchmarks/pointing_misses.py LABEL=MODEL [LABEL=MODEL ...] [--data DIR] [--films 116] [--csv DIR]
MODEL: a shipped model's name or a checkpoint folder. Prints one markdown row per model; ``--csv`` keeps the films.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from xray_xai import get_explainer
from xray_xai.audit.inputs import prepare_inputs
from xray_xai.audit.leaderboard import MethodRun, fractured_records
from xray_xai.audit.scoring import AuditSettings, localisation, model_context
from xray_xai.audit.service import split_records
from xray_xai.models.resolve import resolve_model

#: a miss whose box holds a value of at least this share of the peak: a second blob on the fracture
NEAR = 0.8


def score(model_name: str, data: Path, films: int, method: str, batch_size: int) -> list[dict[str, Any]]:
    """One row per fractured film: hit (exact, with tolerance), the model's probability, the box's share of the film,
    the distance from the peak to the nearest box pixel (share of the side) and the box's best value / the peak."""
    model = resolve_model(model_name)
    _, records = split_records(data, None, "test")
    inputs = prepare_inputs(fractured_records(records)[:films], model.preprocessing)
    ctx = model_context(model, inputs, AuditSettings(seed=0, steps=8, grid=8, baseline="blur", n_boot=1000))
    explainer = get_explainer(method)()
    explainer.check_model(model)
    run = MethodRun(method, explainer)
    run.explain(model, inputs.images, len(inputs.records), lambda _: None, batch_size)
    maps = np.stack(run.maps)
    _, per = localisation(ctx, maps)
    side = int(inputs.images.shape[-1])
    rows = []
    for i, rec in enumerate(inputs.records):
        gt = inputs.gt[i]
        if gt is None:
            continue
        m = maps[i].astype(np.float64)
        peak = float(m.max())
        top = m >= peak - 1e-12  # the pointing game's peak (ties included)
        dist = distance_transform_edt(~gt)
        rows.append({
            "image_id": rec.image_id,
            "hit": float(per["pointing"][i]),
            "hit_tol": float(per["pointing_tol"][i]),
            "probability": float(ctx.probs[i]),
            "box_share": float(gt.mean()),
            "peak_distance": float(dist[top].min()) / side,
            "box_over_peak": float(m[gt].max()) / peak if peak > 0 else 0.0,
        })  # fmt: skip
    return rows


def summary(label: str, rows: list[dict[str, Any]]) -> str:
    """One markdown row: pointing overall, on films called fractured / normal, per box-size tercile, the misses."""
    col = {k: np.array([r[k] for r in rows]) for k in rows[0] if k != "image_id"}
    hit, tol, p = col["hit"], col["hit_tol"], col["probability"]
    called = p >= 0.5
    edges = np.quantile(col["box_share"], [1 / 3, 2 / 3])
    tercile = np.digitize(col["box_share"], edges)
    miss = hit == 0

    def pair(mask: np.ndarray) -> str:
        return f"{hit[mask].mean():.2f} / {tol[mask].mean():.2f} ({int(mask.sum())})" if mask.any() else "n/a"

    near = int((col["box_over_peak"][miss] >= NEAR).sum())
    distance = np.median(col["peak_distance"][miss]) if miss.any() else float("nan")
    return (
        f"| {label} | {pair(np.ones_like(called))} | {pair(called)} | {pair(~called)} | "
        + " | ".join(pair(tercile == k) for k in range(3))
        + f" | {distance:.3f} | {near} of {int(miss.sum())} |"
    )


HEADER = (
    "| model | pointing / 3.5% (films) | called fractured (p >= 0.5) | called normal | smallest third of boxes | "
    "middle third | largest third | misses: median distance (share of the side) | near misses |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="LABEL=MODEL")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fracatlas"))
    parser.add_argument("--films", type=int, default=116)
    parser.add_argument("--method", default="layercam")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--csv", type=Path, help="folder for one CSV of films per model")
    args = parser.parse_args()
    torch.manual_seed(0)
    lines = [HEADER]
    for item in args.models:
        label, _, name = item.partition("=")
        rows = score(name or label, args.data, args.films, args.method, args.batch_size)
        if args.csv:
            args.csv.mkdir(parents=True, exist_ok=True)
            with (args.csv / f"{label}.csv").open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        lines.append(summary(label, rows))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
