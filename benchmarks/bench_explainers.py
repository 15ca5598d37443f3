"""Explainers on DenseNet-169 (``densenet-full``, untrained weights) against the libraries users would otherwise call.

Timed (round-robin in one process, fastest of ``repeats``): our ``gradcam`` vs pytorch-grad-cam's ``GradCAM`` called
as its README shows (a wrapper gives it the ``(B, 1)`` output it expects); our ``saliency`` (raw gradients) vs captum
``Saliency`` and vs one forward + backward with frozen parameters (CPU seconds and wall time, more repeats: the two
differ by a few milliseconds per call, far below the load's noise in wall time); ``saliency`` with SLIC superpixels
vs without. The default explainer ``layercam`` against ``gradcam`` per film on the shipped FracAtlas model
(EfficientNet-Lite0, 224 px), and the previous default (flips and the 2x view). Counted: forward calls per ``cam`` /
``gradcam`` explanation (the probability comes from the same pass). Memory: peak RSS of integrated gradients at two
internal batch sizes, each in a fresh process.
"""

from __future__ import annotations

from typing import Any

from _util import Row, best, fmt_rate, interleaved, run_case, set_threads


def _model_and_batch(batch: int, size: int) -> tuple[Any, Any]:
    import torch
    from xray_xai_plugins.models.densenet import DenseNetFull

    torch.manual_seed(0)
    model = DenseNetFull(image_size=size).eval()
    x = torch.randn(batch, 3, size, size)
    return model, x


def case_speed(batch: int, size: int, repeats: int) -> dict[str, Any]:
    """Every timed comparison of the explainers, interleaved so machine load affects all of them alike."""
    import torch
    from pytorch_grad_cam import GradCAM as PgcGradCAM
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget
    from xray_xai_plugins.explainers.cam import CAM
    from xray_xai_plugins.explainers.gradcam import GradCAM
    from xray_xai_plugins.explainers.saliency import Saliency

    from xray_xai.sdk.explainer import find_layer

    threads = set_threads()
    model, x = _model_and_batch(batch, size)

    wrapped = _two_dim(model)
    layer = find_layer(model, model.target_layer)
    pgc = PgcGradCAM(model=wrapped, target_layers=[layer])
    targets = [BinaryClassifierOutputTarget(1) for _ in range(batch)]
    ours_gc = GradCAM()
    ours_sal = Saliency(superpixels=False)
    ours_sp = Saliency(superpixels=True)

    fns = {
        "ours_gradcam": lambda: ours_gc.explain(model, x),
        "pgc_gradcam": lambda: pgc(input_tensor=x, targets=targets),
        "ours_saliency": lambda: ours_sal.explain(model, x),
        "ours_saliency_superpixels": lambda: ours_sp.explain(model, x),
    }
    times = interleaved(fns, repeats=repeats, warmup=1)
    model.zero_grad(set_to_none=True)

    # forward calls per explanation: one pass gives the map and the probability
    calls = {"n": 0}
    handle = model.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    counts = {}
    try:
        for name, exp in (("cam", CAM()), ("gradcam", ours_gc)):
            calls["n"] = 0
            e = exp.explain(model, x)
            with torch.no_grad():
                p_ref = torch.sigmoid(model(x)).numpy()
            counts[name] = {
                "forwards": calls["n"] - 1,
                "probability_matches": bool(abs(e.probabilities - p_ref).max() < 1e-4),
            }
    finally:
        handle.remove()
    return {"times": times, "forward_counts": counts, "threads": threads, "batch": batch, "size": size}


def _two_dim(model: Any) -> Any:
    """The model with a ``(B, 1)`` output: pytorch-grad-cam and captum want ``(B, n_outputs)``, ours gives ``(B,)``."""
    import torch

    class TwoDim(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.inner(t)[:, None]

    return TwoDim(model).eval()


def _both_clocks(fns: dict[str, Any], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds of each function, round-robin after one warm-up round (see ``_util.interleaved``)."""
    import time

    for fn in fns.values():
        fn()
    out: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            out[name]["cpu"].append(time.process_time() - c0)
            out[name]["wall"].append(time.perf_counter() - w0)
    return out


def case_saliency(batch: int, size: int, repeats: int) -> dict[str, Any]:
    """Our raw ``saliency`` vs captum ``Saliency`` vs one forward + input-gradient backward with frozen parameters,
    on the same batch, plus the per-call cost on one 32 px image (where fixed costs dominate)."""
    import warnings

    import torch
    from captum.attr import Saliency as CaptumSaliency
    from xray_xai_plugins.explainers.saliency import Saliency

    threads = set_threads()
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
    model, x = _model_and_batch(batch, size)
    captum_sal = CaptumSaliency(_two_dim(model))
    ours = Saliency(superpixels=False)

    def plain_fwd_bwd(images: Any) -> None:
        params = list(model.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            xi = images.detach().clone().requires_grad_(True)
            model(xi).sum().backward()
            assert xi.grad is not None
        finally:
            for p, f in zip(params, flags, strict=True):
                p.requires_grad_(f)

    big = _both_clocks(
        {
            "ours_saliency": lambda: ours.explain(model, x),
            "captum_saliency": lambda: captum_sal.attribute(x, target=0, abs=True),
            "plain_fwd_bwd": lambda: plain_fwd_bwd(x),
        },
        repeats,
    )
    small_x = torch.randn(1, 3, 32, 32)
    small = _both_clocks(
        {
            "ours_saliency": lambda: ours.explain(model, small_x),
            "captum_saliency": lambda: captum_sal.attribute(small_x, target=0, abs=True),
        },
        repeats * 5,
    )
    return {"times": big, "small": small, "threads": threads, "batch": batch, "size": size}


def case_layercam_cost(batch: int, size: int, repeats: int) -> dict[str, Any]:
    """Seconds per film of ``gradcam`` and ``layercam`` (default, previous default) on the shipped FracAtlas model."""
    import torch
    from xray_xai_plugins.explainers.gradcam import GradCAM
    from xray_xai_plugins.explainers.layercam import LayerCAM

    from xray_xai.models.store import load_model

    threads = set_threads()
    model = load_model("fracatlas-lite0").eval()
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size)
    configs = {
        "gradcam": GradCAM(),
        "layercam": LayerCAM(),
        "layercam_previous": LayerCAM(tta=True, scales="1,2", blur=0),
    }
    times = _both_clocks({k: (lambda e=e: e.explain(model, x)) for k, e in configs.items()}, repeats)
    calls = {"n": 0}
    handle = model.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    passes = {}
    try:
        for name, exp in configs.items():
            calls["n"] = 0
            exp.explain(model, x)
            passes[name] = calls["n"]
    finally:
        handle.remove()
    params = {k: e.params for k, e in configs.items()}
    return {"times": times, "passes": passes, "params": params, "threads": threads, "batch": batch, "size": size}


def case_service_forwards(batch: int, size: int) -> dict[str, Any]:
    """Forward passes the explain service runs for methods ``cam,gradcam`` on one batch (no extra prediction pass)."""
    import tempfile
    from pathlib import Path

    import numpy as np
    from PIL import Image
    from xray_xai_plugins.models.densenet import DenseNetFull

    from xray_xai.explain.service import explain

    set_threads()
    model = DenseNetFull(image_size=size).eval()
    calls = {"n": 0}
    model.register_forward_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(batch):
            p = Path(tmp) / f"img{i:03d}.png"
            Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(p)
            paths.append(p)
        explain(model, "cam,gradcam", inputs=[str(p) for p in paths], out=None, batch_size=batch, show_progress=False)
    return {"forwards": calls["n"], "batches": 1, "methods": 2}


def case_ig_memory(batch: int, size: int, n_steps: int, internal_batch_size: int) -> dict[str, Any]:
    """Peak RSS of integrated gradients with a given internal batch size (fresh process: VmHWM is the case's)."""
    import time

    from _util import peak_rss_mb
    from xray_xai_plugins.explainers.captum_methods import IntegratedGradients

    set_threads()
    model, x = _model_and_batch(batch, size)
    before = peak_rss_mb()
    t0 = time.perf_counter()
    IntegratedGradients(n_steps=n_steps, internal_batch_size=internal_batch_size).explain(model, x)
    return {"seconds": time.perf_counter() - t0, "rss_before_mb": before}


def run(quick: bool) -> list[Row]:
    batch, size, repeats = (4, 224, 2) if quick else (16, 224, 2)
    r = run_case("bench_explainers", "case_speed", batch=batch, size=size, repeats=repeats)
    t = {k: best(v) for k, v in r["times"].items()}
    setting = f"densenet-full, batch {batch} x {size} px, {r['threads']} threads, best of {repeats}"
    rows = [
        Row(
            "explainers", "gradcam vs pytorch-grad-cam GradCAM", fmt_rate(batch, t["ours_gradcam"]),
            fmt_rate(batch, t["pgc_gradcam"]), t["pgc_gradcam"] / t["ours_gradcam"], "speed-up (x)", ">= 2.5",
            t["pgc_gradcam"] / t["ours_gradcam"] >= 2.5, setting,
        ),
        Row(
            "explainers", "saliency superpixels vs raw", fmt_rate(batch, t["ours_saliency_superpixels"]),
            fmt_rate(batch, t["ours_saliency"]), t["ours_saliency_superpixels"] / t["ours_saliency"], "time ratio",
            "<= 1.30", t["ours_saliency_superpixels"] / t["ours_saliency"] <= 1.30, "SLIC n_segments=150; " + setting,
        ),
    ]  # fmt: skip
    rows += _saliency_rows(batch, size, 3 if quick else 5)
    rows += _layercam_rows(8, 224, 2 if quick else 3)
    fc = r["forward_counts"]
    ok = all(v["forwards"] == 1 and v["probability_matches"] for v in fc.values())
    svc = run_case("bench_explainers", "case_service_forwards", batch=4, size=size)
    rows.append(
        Row(
            "explainers", "forward passes per explanation (cam, gradcam)",
            f"cam {fc['cam']['forwards']}, gradcam {fc['gradcam']['forwards']}", "1 each", None, "", "1 each", ok,
            f"probability from the same pass: {ok}; explain service, methods cam,gradcam, 1 batch: "
            f"{svc['forwards']} forwards (one per method, no separate prediction pass)",
            {"per_explainer": fc, "service": svc},
        )
    )  # fmt: skip
    ig = {}
    ig_batch, ig_steps = (1, 16) if quick else (2, 32)
    for ibs in (2, 8):
        ig[ibs] = run_case(
            "bench_explainers", "case_ig_memory", batch=ig_batch, size=size, n_steps=ig_steps, internal_batch_size=ibs
        )
    grow = ig[8]["peak_rss_mb"] - ig[2]["peak_rss_mb"]
    rows.append(
        Row(
            "explainers", "integrated-gradients peak RSS, internal batch 2 vs 8",
            f"{ig[2]['peak_rss_mb']:.0f} MiB vs {ig[8]['peak_rss_mb']:.0f} MiB", "",
            ig[8]["peak_rss_mb"] / ig[2]["peak_rss_mb"],
            "RSS ratio (8 / 2)", "bounded by internal batch", ig[2]["peak_rss_mb"] < ig[8]["peak_rss_mb"],
            f"{ig_batch} images x {ig_steps} steps = {ig_batch * ig_steps} forward rows either way; +{grow:.0f} MiB "
            f"for 6 more rows per chunk; RSS after loading the model {ig[2]['rss_before_mb']:.0f} MiB",
            {"ig": ig},
        )
    )  # fmt: skip
    return rows


def _saliency_rows(batch: int, size: int, repeats: int) -> list[Row]:
    r = run_case("bench_explainers", "case_saliency", batch=batch, size=size, repeats=repeats)
    cpu = {k: best(v["cpu"]) for k, v in r["times"].items()}
    wall = {k: best(v["wall"]) for k, v in r["times"].items()}
    small = {k: best(v["cpu"]) for k, v in r["small"].items()}
    setting = (
        f"densenet-full, batch {batch} x {size} px, {r['threads']} threads, CPU seconds, best of {repeats}; wall time: "
        f"ours {wall['ours_saliency']:.2f} s, captum {wall['captum_saliency']:.2f} s, "
        f"{wall['captum_saliency'] / wall['ours_saliency']:.2f}x"
    )
    fixed = f"per call on one 32 px image: ours {small['ours_saliency'] * 1e3:.1f} ms, captum "
    fixed += f"{small['captum_saliency'] * 1e3:.1f} ms (CPU, best of {repeats * 5})"
    speedup = cpu["captum_saliency"] / cpu["ours_saliency"]
    ratio = cpu["ours_saliency"] / cpu["plain_fwd_bwd"]
    return [
        Row(
            "explainers", "saliency (raw) vs captum Saliency", fmt_rate(batch, cpu["ours_saliency"]),
            fmt_rate(batch, cpu["captum_saliency"]), speedup, "speed-up (x)", ">= 1.0", speedup >= 1.0,
            f"{setting}; {fixed}", {"cpu": cpu, "wall": wall, "small_cpu": small},
        ),
        Row(
            "explainers", "saliency (raw) vs 1 fwd+bwd, frozen params", fmt_rate(batch, cpu["ours_saliency"]),
            fmt_rate(batch, cpu["plain_fwd_bwd"]), ratio, "time ratio", "<= 1.10", ratio <= 1.10, setting,
        ),
    ]  # fmt: skip


def _layercam_rows(batch: int, size: int, repeats: int) -> list[Row]:
    r = run_case("bench_explainers", "case_layercam_cost", batch=batch, size=size, repeats=repeats)
    cpu = {k: best(v["cpu"]) for k, v in r["times"].items()}
    wall = {k: best(v["wall"]) for k, v in r["times"].items()}
    passes = r["passes"]
    setting = f"fracatlas-lite0, batch {batch} x {size} px, {r['threads']} threads, CPU seconds, best of {repeats}"

    def note(name: str) -> str:
        p = r["params"][name]
        return (
            f"tta={p['tta']}, scales={p['scales']}, blur={p['blur']:g}: {passes[name]} forward passes per batch "
            f"(gradcam {passes['gradcam']}); wall time {wall[name] / wall['gradcam']:.1f}x; {setting}"
        )

    now = cpu["layercam"] / cpu["gradcam"]
    before = cpu["layercam_previous"] / cpu["gradcam"]
    return [
        Row(
            "explainers", "layercam (the default) vs gradcam, per film", f"{cpu['layercam'] / batch * 1e3:.0f} ms/film",
            f"{cpu['gradcam'] / batch * 1e3:.0f} ms/film", now, "cost ratio (x)", "<= 4", now <= 4.0, note("layercam"),
            {"cpu": cpu, "wall": wall, "passes": passes},
        ),
        Row(
            "explainers", "layercam tta=true scales=1,2 blur=0 (the previous default) vs gradcam",
            f"{cpu['layercam_previous'] / batch * 1e3:.0f} ms/film", f"{cpu['gradcam'] / batch * 1e3:.0f} ms/film",
            before, "cost ratio (x)", "", None, note("layercam_previous"),
        ),
    ]  # fmt: skip
