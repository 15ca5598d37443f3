"""Which views of a film does LayerCAM need? Pointing of every combination of views from one pass per view.

``layercam`` averages the maps of several views of the film: the film itself, its horizontal (``h``) and vertical
(``v``) flips (``tta``) and the film enlarged by each factor of ``scales``, each map brought back to the film's
grid. Each view costs one forward and one backward pass, the enlarged ones 2.25-4x more, so the views decide the
cost of the default explainer. This script explains the fractured films of a FracAtlas split once per view, with
the plugin's own code (:meth:`xray_xai.sdk.StageCAM.view_maps` and :meth:`~xray_xai.sdk.StageCAM.fused_view`),
then scores every combination below (the mean of its views, optionally blurred) with the localisation study's
metrics and bootstrap intervals. A combination is named by its views, e.g. ``1+1h+1v+2`` (native, both flips, 2x)
and, where the plugin can run it, by its method spec. It also times each view's pass against ``gradcam`` on the same
films, so each combination's estimated cost is the sum of its views' times over Grad-CAM's (the real plugins are
timed in ``bench_explainers.py``), and checks that the plugin gives the same maps as the combination on two films.

Example (the numbers of docs/localisation.md)::

    nice -n 10 python benchmarks/layercam_views.py --model fracatlas-lite0 \\
        --data ../shared/data/fracatlas --split test --limit 100 --out /tmp/views.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localisation import METRICS, chance_levels, load_films, score_maps, summarise_scores

#: the views explained: (name, scale, flip dims)
VIEWS: dict[str, tuple[float, tuple[int, ...]]] = {
    "1": (1.0, ()),
    "1h": (1.0, (3,)),
    "1v": (1.0, (2,)),
    "1.25": (1.25, ()),
    "1.5": (1.5, ()),
    "2": (2.0, ()),
    "2h": (2.0, (3,)),
    "2v": (2.0, (2,)),
}

#: combinations scored: views -> the layercam spec that computes it, blur apart (None: not a plugin configuration)
COMBOS: dict[str, str | None] = {
    "1": "layercam:tta=false:scales=1",
    "1+1h": "layercam:tta=h:scales=1",
    "1+1v": "layercam:tta=v:scales=1",
    "1+1h+1v": "layercam:tta=true:scales=1",
    "1+1.25": "layercam:tta=false:scales=1,1.25",
    "1.25": None,
    "1+1.5": "layercam:tta=false:scales=1,1.5",
    "1.5": None,
    "1+2": "layercam:tta=false:scales=1,2",
    "2": None,
    "2+2h+2v": None,
    "1+1h+2": None,
    "1+1h+1v+2": None,
    "1+1h+1v+2+2h+2v": "layercam:tta=true:scales=1,2",
}
#: the combination the others are compared with, film by film (the default until this study)
REFERENCE = "1+1h+1v+2+2h+2v"
#: the metrics compared film by film with the reference
PAIRED = ("pointing", "pointing_tol")
#: combinations also scored with a Gaussian blur of sigma 2 and 4 px (the cheap ones)
BLURRED = ("1", "1+1h", "1+1v", "1+1h+1v", "1+1.25", "1+1.5")


def view_maps(model: Any, images: Any, batch: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each view's fused map ``(N, S, S)`` (the plugin's code, one view per pass) and seconds per film per view,
    ``gradcam`` included: it runs on each batch between the views, so that load from other processes hits all alike.
    """
    import torch
    from xray_xai_plugins.explainers.gradcam import GradCAM
    from xray_xai_plugins.explainers.layercam import LayerCAM

    from xray_xai.sdk.explainer import eval_mode, frozen_parameters

    cam, gradcam = LayerCAM(tta=False, scales=1), GradCAM()
    size = (int(images.shape[-2]), int(images.shape[-1]))
    maps: dict[str, list[np.ndarray]] = {name: [] for name in VIEWS}
    secs = dict.fromkeys([*VIEWS, "gradcam"], 0.0)
    gradcam.explain(model, images[:batch])  # warm-up
    with eval_mode(model), frozen_parameters(model), torch.random.fork_rng(devices=[]):
        layers = cam.chosen_layers(model, images[:1])
        for i in range(0, len(images), batch):
            x = images[i : i + batch]
            for name, view in VIEWS.items():
                t0 = time.perf_counter()
                per_view, _ = cam.view_maps(model, x, layers, 1.0, [view])
                fused = cam.fused_view(view, per_view[view], size)
                secs[name] += time.perf_counter() - t0
                maps[name].append(fused.numpy())
                if name == "1h":
                    t0 = time.perf_counter()
                    gradcam.explain(model, x)
                    secs["gradcam"] += time.perf_counter() - t0
    n = max(1, len(images))
    return {k: np.concatenate(v) for k, v in maps.items()}, {k: v / n for k, v in secs.items()}


def combine(maps: dict[str, np.ndarray], combo: str, blur: float) -> np.ndarray:
    """The plugin's last steps on a combination: mean of the views (in :data:`VIEWS` order), blur, scale to [0, 1]."""
    import torch

    from xray_xai.sdk import gaussian_blur
    from xray_xai.sdk.explainer import normalize_maps

    names = combo.split("+")
    stacked = torch.stack([torch.from_numpy(maps[n]) for n in sorted(names, key=list(VIEWS).index)])
    fused = stacked[0] if len(names) == 1 else stacked.mean(dim=0)
    return normalize_maps(gaussian_blur(fused, blur).numpy())


def check_plugin(model: Any, images: Any, maps: dict[str, np.ndarray]) -> float:
    """Largest difference between the plugin's maps and the combination's for every spec, on the first 2 films."""
    from localisation import parse_method

    from xray_xai import get_explainer

    worst = 0.0
    two = {k: v[:2] for k, v in maps.items()}
    for combo, spec in COMBOS.items():
        if spec is None:
            continue
        name, params = parse_method(spec + ":blur=0")
        got = get_explainer(name)(**params).explain(model, images[:2]).maps
        worst = max(worst, float(np.abs(got - combine(two, combo, 0.0)).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    import torch

    from xray_xai.data.datasets import open_dataset
    from xray_xai.models.store import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="fracatlas-lite0", help="shipped model name, stored model name or path")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "fracatlas"))
    ap.add_argument("--split", default="test", help="a split the model did not train on")
    ap.add_argument("--limit", type=int, default=100, help="fractured films with boxes (first N of the split)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON results (and a .md table beside it)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = load_model(args.model).eval()
    pre = model.preprocessing
    records = [r for r in open_dataset(args.data, "fracatlas").records(args.split) if r.label == 1]
    records = [r for r in records if r.has_ground_truth][: args.limit]
    images, masks, _, names = load_films(records, pre)
    side = int(pre.input_size)
    print(f"{args.model}: {len(names)} fractured {args.split} films at {side} px", flush=True)
    maps, secs = view_maps(model, images, args.batch)
    grad_s = secs.pop("gradcam")
    diff = check_plugin(model, images, maps)
    print(f"gradcam {grad_s * 1000:.1f} ms/film; plugin vs combination: max map difference {diff:.2e}", flush=True)
    from xray_xai.audit.scores import summarize

    reference = score_maps(combine(maps, REFERENCE, 0.0), masks, side)
    rows: dict[str, Any] = {}
    for combo, spec in COMBOS.items():
        for blur in (0.0, 2.0, 4.0) if combo in BLURRED else (0.0,):
            key = combo + (f" blur={blur:g}" if blur else "")
            per_film = score_maps(combine(maps, combo, blur), masks, side)
            scores = summarise_scores(per_film, args.seed)
            cost = sum(secs[v] for v in combo.split("+"))
            rows[key] = {
                "spec": f"{spec}:blur={blur:g}" if spec else None,
                "views": combo.split("+"),
                "sec_per_film": cost,
                "cost_vs_gradcam": cost / grad_s,
                **scores,
                # paired over films: this combination's score minus the reference's on the same film
                "vs_reference": {m: summarize(per_film[m] - reference[m], seed=args.seed) for m in PAIRED},
            }
            print(f"  {key:28s} x{cost / grad_s:5.1f}  {_fmt(scores)}", flush=True)
    result = {
        "command": " ".join(sys.argv),
        "model": args.model,
        "split": args.split,
        "n_fractured": len(names),
        "chance": chance_levels(masks, side),
        "gradcam_sec_per_film": grad_s,
        "view_sec_per_film": secs,
        "plugin_check_max_diff": diff,
        "combinations": rows,
    }
    table = markdown(result)
    print(table)
    if args.out:
        from xray_xai._util.fsutil import atomic_write_json, atomic_write_text

        atomic_write_json(args.out, result)
        atomic_write_text(str(Path(args.out).with_suffix(".md")), table)
    return 0


def _fmt(scores: dict[str, Any]) -> str:
    return "  ".join(f"{k}={s['mean']:.3f} [{s['ci'][0]:.2f}, {s['ci'][1]:.2f}]" for k, s in scores.items())


def markdown(result: dict[str, Any]) -> str:
    """The combinations as a table: views, spec, estimated cost over Grad-CAM, scores with intervals."""
    ch = result["chance"]
    lines = [
        f"{result['model']}, {result['n_fractured']} fractured {result['split']} films; chance: pointing "
        f"{ch['pointing']:.3f}, with tolerance {ch['pointing_tol']:.3f}; Grad-CAM "
        f"{result['gradcam_sec_per_film'] * 1000:.1f} ms/film\n",
        f"| views | spec | cost / gradcam | pointing | pointing 3.5% | IoU (Otsu) | mass in box | "
        f"pointing - {REFERENCE} | pointing 3.5% - {REFERENCE} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(s: dict[str, Any]) -> str:
        return f"{s['mean']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"

    for key, row in result["combinations"].items():
        vals = [cell(row[m]) for m in METRICS] + [cell(row["vs_reference"][m]) for m in PAIRED]
        spec = f"`{row['spec']}`" if row["spec"] else ""
        lines.append(f"| {key} | {spec} | {row['cost_vs_gradcam']:.1f} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
