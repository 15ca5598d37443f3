"""Localisation study: which model x input size x explainer points at small findings on real films (FracAtlas).

For each model checkpoint and input size, the fractured films of one split (films the model did not train on: use
the split the model was *not* fitted on, ``test`` by default) are explained by every method, and each map is scored
against the fracture boxes mapped through the model's own geometry:

* pointing game, exact and with a tolerance of 3.5% of the image side (8 px at 224 px);
* IoU of the map thresholded at Otsu's level with the boxes;
* mass in box (share of the map's total inside the boxes);
* each with a seeded 95% bootstrap interval over films; the chance levels (mean box area, mean area within the
  tolerance) are printed beside them.

Controls beside the methods: model-free maps (random, film brightness, Sobel edges) and the methods listed in
``--random-control`` on the fully randomised model. AUROC (fractured vs. non-fractured films of the same split, with a
bootstrap interval) tells whether the model is worth explaining at that input size.

Example (see docs/localisation.md for the runs reported there)::

    nohup /work/venv/bin/python benchmarks/localisation.py --model /path/to/model.safetensors \\
        --data ../shared/data/fracatlas --split test --limit 150 --normals 150 --size 224 \\
        --out /tmp/localisation.json > /tmp/localisation.log 2>&1 &

Method specs: ``name`` or ``name:key=value:key=value`` (e.g. ``layercam:layer=backbone.blocks.1:tta=true``,
``multilayer-cam:strides=4,8,16:fusion=geomean``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_METHODS = (
    "gradcam",
    "hirescam",
    "layercam:stride=32",
    "layercam:stride=16",
    "layercam:stride=8",
    "layercam:stride=4",
    "multilayer-cam:strides=4,8,16:fusion=mean",
    "multilayer-cam:strides=4,8,16:fusion=geomean",
    "multilayer-cam:strides=4,8:fusion=geomean",
    "layercam:stride=4:tta=true",
    "layercam:stride=4:blur=3",
)
DEFAULT_RANDOM_CONTROL = ("layercam:stride=4",)
METRICS = ("pointing", "pointing_tol", "iou_otsu", "mass")


def parse_value(text: str) -> Any:
    """``true``/``false`` -> bool, integers and floats -> numbers, anything else stays a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``name:key=value:key=value`` -> (name, params)."""
    name, *pairs = spec.split(":")
    params: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"bad method spec {spec!r}: {pair!r} is not key=value")
        key, value = pair.split("=", 1)
        params[key.strip()] = parse_value(value.strip())
    return name.strip(), params


def score_maps(maps: np.ndarray, masks: np.ndarray, side: int) -> dict[str, np.ndarray]:
    """Per-film localisation scores (``(N,)`` each) of ``maps`` against ``masks``."""
    from xray_xai.audit import scores as am

    return {
        "pointing": am.pointing_game(maps, masks),
        "pointing_tol": am.pointing_game(maps, masks, tolerance=am.tolerance_px(side)),
        "iou_otsu": am.iou(maps, masks, am.otsu_thresholds(maps)),
        "mass": am.mass_in_mask(maps, masks),
    }


def summarise_scores(scores: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    from xray_xai.audit.scores import summarize

    return {k: summarize(v, seed=seed) for k, v in scores.items()}


def chance_levels(masks: np.ndarray, side: int) -> dict[str, float]:
    """What a uniformly random maximum scores (the leaderboard service's rule, one home)."""
    from xray_xai.audit.leaderboard import chance_levels as _chance_levels

    return _chance_levels(masks, side)


def load_films(records: list[Any], pre: Any) -> tuple[Any, np.ndarray, np.ndarray, list[str]]:
    """Tensors ``(N, C, S, S)``, masks ``(N, S, S)`` (boxes through the model geometry), films ``(N, S, S)``."""
    import torch

    from xray_xai.data.geometry import geometry, geometry_mask, to_tensor
    from xray_xai.data.images import read_image
    from xray_xai.data.masks import ground_truth_mask

    tensors, masks, films, names = [], [], [], []
    for rec in records:
        try:
            image = read_image(rec.path)
        except Exception as exc:
            print(f"skipped {rec.path}: {exc}", file=sys.stderr)
            continue
        mask = geometry_mask(ground_truth_mask(rec, image.shape), pre, any_overlap=True)
        if not mask.any():
            continue
        tensors.append(to_tensor(image, pre))
        masks.append(mask)
        films.append(geometry(image, pre))
        names.append(rec.path.name)
    return torch.stack(tensors), np.stack(masks), np.stack(films), names


def explain_all(model: Any, method: str, params: dict[str, Any], images: Any, batch: int) -> tuple[np.ndarray, ...]:
    """Maps ``(N, S, S)`` and probabilities ``(N,)`` of ``method`` on ``images`` (target "abnormal")."""
    from xray_xai import get_explainer

    explainer = get_explainer(method)(**params)
    maps, probs = [], []
    for i in range(0, len(images), batch):
        exp = explainer.explain(model, images[i : i + batch], target="abnormal")
        maps.append(exp.maps)
        probs.append(exp.probabilities)
    return np.concatenate(maps), np.concatenate(probs)


def sweep_scores(model: Any, images: Any, masks: np.ndarray, side: int, batch: int) -> dict[str, dict[str, Any]]:
    """Scores of a family of stage-CAM variants computed from ONE forward + backward per batch.

    Activations and gradients of the logit are captured at every stage (the deepest stage at each resolution) and
    at the target layer at once; Grad-CAM, HiResCAM, LayerCAM per stage, fusions of stages and blurred variants are
    then derived with the plugins' own functions. Keys are method specs the plugins accept, so each number can be
    reproduced with ``xray-xai explain``; :func:`check_sweep` confirms the equivalence on a few films.
    Returns ``{spec: per-film scores}``.
    """
    import torch
    from xray_xai_plugins.explainers.hirescam import hirescam_maps
    from xray_xai_plugins.explainers.layercam import layercam_maps

    from xray_xai.sdk import activations_and_gradients_at, fuse_maps, gaussian_blur, layers_at_strides
    from xray_xai.sdk.explainer import eval_mode, frozen_parameters, normalize_maps, resize_maps

    strides = (2, 4, 8, 16, 32)
    by_stride = dict(zip(strides, layers_at_strides(model, images[:1], strides), strict=False))
    if len(set(by_stride.values())) < len(strides):  # fewer distinct stages than strides: map them one by one
        by_stride = {s: layers_at_strides(model, images[:1], [s])[0] for s in strides}
    target = str(model.target_layer)
    layers = list(dict.fromkeys([*by_stride.values(), target]))
    combos = {
        "2,4,8": (2, 4, 8),
        "4,8,16": (4, 8, 16),
        "4,8": (4, 8),
        "4,8,16,32": (4, 8, 16, 32),
        "2,4,8,16": (2, 4, 8, 16),
    }
    size = (side, side)
    out: dict[str, dict[str, list[np.ndarray]]] = {}

    def add(spec: str, evidence: Any, m: np.ndarray) -> None:
        maps = normalize_maps(resize_maps(evidence, size))
        for key, val in score_maps(maps, m, side).items():
            out.setdefault(spec, {}).setdefault(key, []).append(val)

    with eval_mode(model), frozen_parameters(model):
        for i in range(0, len(images), batch):
            x, m = images[i : i + batch], masks[i : i + batch]
            acts, grads, _ = activations_and_gradients_at(model, x, layers, 1.0)
            lc = {name: layercam_maps(a, g) for name, a, g in zip(layers, acts, grads, strict=True)}
            a_t, g_t = acts[layers.index(target)], grads[layers.index(target)]
            add("gradcam", torch.relu(torch.einsum("bk,bkhw->bhw", g_t.mean(dim=(2, 3)), a_t)), m)
            add("hirescam", torch.relu(hirescam_maps(a_t, g_t)), m)
            for stride, name in by_stride.items():
                add(f"layercam:stride={stride}:tta=false", lc[name], m)
            for key, combo in combos.items():
                for fusion in ("mean", "geomean"):
                    fused = fuse_maps([lc[by_stride[s]] for s in combo], size, fusion)
                    add(f"multilayer-cam:strides={key}:fusion={fusion}", fused, m)
                    if fusion == "mean" and key in ("4,8,16", "2,4,8"):
                        for sigma in (2.0, 4.0):
                            add(
                                f"multilayer-cam:strides={key}:fusion=mean:blur={sigma:g}",
                                gaussian_blur(fused, sigma),
                                m,
                            )
            for stride in (4, 8):
                single = fuse_maps([lc[by_stride[stride]]], size, "mean")
                for sigma in (2.0, 4.0):
                    add(f"layercam:stride={stride}:tta=false:blur={sigma:g}", gaussian_blur(single, sigma), m)
    return {spec: {k: np.concatenate(v) for k, v in scores.items()} for spec, scores in out.items()}


def check_sweep(model: Any, images: Any, masks: np.ndarray, side: int, specs: list[str]) -> float:
    """Largest difference between the sweep's scores and the real plugins' on a few films (should be ~0)."""
    worst = 0.0
    swept = sweep_scores(model, images, masks, side, len(images))
    for spec in specs:
        name, params = parse_method(spec)
        maps, _ = explain_all(model, name, params, images, len(images))
        real = score_maps(maps, masks, side)
        for key in ("mass", "iou_otsu"):
            worst = max(worst, float(np.nanmax(np.abs(real[key] - swept[spec][key]))))
    return worst


def predict_all(model: Any, images: Any, batch: int) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            out.append(model.predict_proba(images[i : i + batch]).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def auroc_with_ci(labels: np.ndarray, probs: np.ndarray, seed: int, n_boot: int = 1000) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    if len(set(labels.tolist())) < 2:
        return {"mean": None, "ci": [None, None], "n": len(labels)}
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(labels), len(labels))
        if len(set(labels[idx].tolist())) == 2:
            boots.append(roc_auc_score(labels[idx], probs[idx]))
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {
        "mean": round(float(roc_auc_score(labels, probs)), 4),
        "ci": [round(float(lo), 4), round(float(hi), 4)],
        "n": len(labels),
    }


def model_from_run_state(name: str, path: str) -> Any:
    """A model rebuilt from a training run's resumable ``last.pt`` (its best epoch so far; tensors only)."""
    import torch

    from xray_xai import get_model

    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = state.get("best_state") or state["model"]
    model = get_model(name)(pretrained=False)
    model.load_state_dict(weights)
    print(f"{path}: epoch {state.get('epoch')}, best {state.get('best', {}).get('epoch')}", flush=True)
    return model.eval()


def fully_randomised(model: Any, seed: int) -> Any:
    from xray_xai.audit.randomization import cascading_randomization

    last = model
    for _, rmodel in cascading_randomization(model, seed, n_stages=1):
        last = rmodel
    return last


def run_one(
    model_ref: str,
    size: int | None,
    preset_name: str | None,
    args: argparse.Namespace,
    save: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Every method and control for one (model, input size) cell of the grid."""
    import torch

    from xray_xai.audit.controls import control_maps
    from xray_xai.data.datasets import open_dataset
    from xray_xai.data.geometry import preset
    from xray_xai.models.store import load_model

    if model_ref.startswith("init:"):  # mechanics checks: a freshly built model (ImageNet trunk where it has one)
        from xray_xai import get_model

        torch.manual_seed(args.seed)
        model = get_model(model_ref[len("init:") :])()
    elif model_ref.startswith("state:"):  # state:<model name>:<run dir>/last.pt - a training run still going
        model = model_from_run_state(*model_ref[len("state:") :].split(":", 1))
    else:
        model = load_model(model_ref)
    model.eval()
    pre = model.preprocessing
    if preset_name:
        pre = preset(preset_name, size=size or pre.input_size)
        pre = replace(pre, mean=model.preprocessing.mean, std=model.preprocessing.std)
    elif size:
        pre = replace(pre, input_size=int(size))
    side = int(pre.input_size)
    ds = open_dataset(args.data, "fracatlas")
    records = ds.records(args.split)
    fractured = [r for r in records if r.label == 1 and r.has_ground_truth][: args.limit]
    normals = [r for r in records if r.label == 0][: args.normals]
    t0 = time.time()
    images, masks, films, names = load_films(fractured, pre)
    print(
        f"[{model_ref} @ {side} {pre.mode}] {len(names)} fractured films loaded in {time.time() - t0:.0f}s", flush=True
    )
    cell: dict[str, Any] = {
        "model": str(model_ref),
        "model_name": model.name,
        "preprocessing": pre.to_dict(),
        "sidecar": {k: v for k, v in (getattr(model, "sidecar", None) or {}).items() if k != "state"},
        "split": args.split,
        "n_fractured": len(names),
        "chance": chance_levels(masks, side),
        "methods": {},
        "controls": {},
    }
    save(cell)
    for cname, cmaps in control_maps(films, seed=args.seed).items():
        cell["controls"][cname] = summarise_scores(score_maps(cmaps, masks, side), args.seed)
        print(f"  control {cname:42s} {fmt(cell['controls'][cname])}", flush=True)
    if normals:
        probs_fractured = predict_all(model, images, args.batch)
        normal_images = torch.stack(_normal_tensors(normals, pre))
        probs_normal = predict_all(model, normal_images, args.batch)
        labels = np.r_[np.ones(len(probs_fractured)), np.zeros(len(probs_normal))]
        cell["auroc"] = auroc_with_ci(labels, np.r_[probs_fractured, probs_normal], args.seed)
        print(f"  AUROC {cell['auroc']}", flush=True)
        del normal_images
    save(cell)
    if args.sweep:
        t0 = time.time()
        checked = ["layercam:stride=4:tta=false", "multilayer-cam:strides=4,8,16:fusion=geomean", "hirescam", "gradcam"]
        diff = check_sweep(model, images[:2], masks[:2], side, checked)
        print(f"  sweep vs plugins: max score difference {diff:.2e}", flush=True)
        cell["sweep_check_max_diff"] = diff
        swept = sweep_scores(model, images, masks, side, args.batch)
        secs = (time.time() - t0) / max(1, len(names))
        for spec, scores in swept.items():
            cell["methods"][spec] = {**summarise_scores(scores, args.seed), "sec_per_image": 0.0}
            print(f"  {spec:50s} {fmt(cell['methods'][spec])}", flush=True)
        cell["sweep_sec_per_image"] = secs
        save(cell)
    for spec in args.methods:
        name, params = parse_method(spec)
        t0 = time.time()
        maps, _ = explain_all(model, name, params, images, args.batch)
        secs = (time.time() - t0) / max(1, len(names))
        cell["methods"][spec] = {**summarise_scores(score_maps(maps, masks, side), args.seed), "sec_per_image": secs}
        print(f"  {spec:50s} {fmt(cell['methods'][spec])}  ({secs:.2f}s/img)", flush=True)
        save(cell)
    if args.random_control:
        rmodel = fully_randomised(model, args.seed)
        for spec in args.random_control:
            name, params = parse_method(spec)
            maps, _ = explain_all(rmodel, name, params, images, args.batch)
            key = f"randomised-model {spec}"
            cell["controls"][key] = summarise_scores(score_maps(maps, masks, side), args.seed)
            print(f"  control {key:42s} {fmt(cell['controls'][key])}", flush=True)
            save(cell)
    return cell


def _normal_tensors(records: list[Any], pre: Any) -> list[Any]:
    from xray_xai.data.geometry import to_tensor
    from xray_xai.data.images import read_image

    out = []
    for rec in records:
        try:
            out.append(to_tensor(read_image(rec.path), pre))
        except Exception as exc:
            print(f"skipped {rec.path}: {exc}", file=sys.stderr)
    return out


def fmt(summary: dict[str, Any]) -> str:
    parts = []
    for key in METRICS:
        s = summary[key]
        if s["mean"] is None:
            parts.append(f"{key}=n/a")
        else:
            parts.append(f"{key}={s['mean']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]")
    return "  ".join(parts)


def markdown(results: list[dict[str, Any]]) -> str:
    """One table per grid cell: methods then controls, mean [95% CI]."""
    lines = []
    for cell in results:
        pre = cell["preprocessing"]
        auroc = cell.get("auroc", {})
        lines.append(
            f"\n### {cell['model_name']} @ {pre['input_size']} px ({pre['mode']}), {cell['n_fractured']} fractured "
            f"{cell['split']} films; AUROC {auroc.get('mean')} {auroc.get('ci')}\n"
        )
        ch = cell["chance"]
        lines.append(f"Chance: pointing {ch['pointing']:.3f}, pointing with tolerance {ch['pointing_tol']:.3f}\n")
        lines.append("| method | pointing | pointing 3.5% | IoU (Otsu) | mass in box | s/img |")
        lines.append("|---|---|---|---|---|---|")
        rows = [(k, v, f"{v.get('sec_per_image', 0):.2f}") for k, v in cell["methods"].items()]
        rows += [(f"control: {k}", v, "") for k, v in cell["controls"].items()]
        for key, s, secs in rows:
            vals = []
            for m in METRICS:
                x = s[m]
                vals.append("n/a" if x["mean"] is None else f"{x['mean']:.3f} [{x['ci'][0]:.3f}, {x['ci'][1]:.3f}]")
            lines.append(f"| `{key}` | " + " | ".join(vals) + f" | {secs} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, help="checkpoint path or stored model name; repeat")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "fracatlas"))
    ap.add_argument("--split", default="test", help="a split the models did not train on")
    ap.add_argument("--limit", type=int, default=150, help="fractured films with boxes (first N of the split)")
    ap.add_argument("--normals", type=int, default=150, help="non-fractured films for the AUROC (0: skip)")
    ap.add_argument("--size", type=int, action="append", help="input size(s); default: the model's own")
    ap.add_argument("--preset", default=None, help="preprocessing preset instead of the model's (e.g. letterbox-224)")
    ap.add_argument("--method", dest="methods", action="append", help="method spec; repeat (default: the study's)")
    ap.add_argument("--random-control", action="append", help="method spec(s) run on the randomised model")
    ap.add_argument("--no-random-control", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="score the stage-CAM family from one pass per batch")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSON results (and a .md table beside it)")
    args = ap.parse_args(argv)
    args.methods = args.methods if args.methods is not None else ([] if args.sweep else list(DEFAULT_METHODS))
    args.random_control = [] if args.no_random_control else (args.random_control or list(DEFAULT_RANDOM_CONTROL))
    torch.set_num_threads(args.threads)
    results: list[dict[str, Any]] = []
    for model_ref in args.model:
        for size in args.size or [None]:

            def save(cell: dict[str, Any]) -> None:
                if args.out:
                    _write(args.out, [*results, cell])

            results.append(run_one(model_ref, size, args.preset, args, save))
    print(markdown(results))
    return 0


def _write(out: str, results: list[dict[str, Any]]) -> None:
    from xray_xai._util.fsutil import atomic_write_json, atomic_write_text

    atomic_write_json(out, {"command": " ".join(sys.argv), "results": results})
    atomic_write_text(str(Path(out).with_suffix(".md")), markdown(results))


if __name__ == "__main__":
    raise SystemExit(main())
