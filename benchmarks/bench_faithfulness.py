"""Deletion curves at 112 steps: ``xray_xai.audit.scores.faithfulness_curves`` vs Quantus 0.6.0 ``PixelFlipping``.

Same model (``efficientnet-lite0``, its packaged ImageNet weights, one logit), same images, same Grad-CAM maps,
same protocol: pixels ranked by the map, 448 pixels (1/112 of 224 x 224) replaced by 0 per step, probability of
"abnormal" read after each step. Quantus flips one channel value at a time: with ``features_in_step=448`` (it must
divide 224 x 224) it evaluates 3 x 112 = 336 points, every third of which is a point of the 112-step curve (the
three values of a pixel are adjacent in its order). So two comparisons: the 112-step curve (what the protocol asks;
Quantus cannot give it with fewer evaluations) and ours at 336 steps (the same number of forward passes).
Quantus needs a two-class output: a wrapper returns ``(-l/2, l/2)``, whose softmax is ``sigmoid(l)``, our
probability. Also timed: a cheaper curve (16 steps on an 8 x 8 px grid) and its error against the 112-step curve
(``xray_xai.audit.scores.curve_error``).
"""

from __future__ import annotations

from typing import Any

from _util import Row, best, interleaved, run_case, set_threads

STEPS = 112


def case_curves(batch: int, repeats: int, steps: int = STEPS) -> dict[str, Any]:
    import numpy as np
    import torch
    from xray_xai_plugins.explainers.gradcam import GradCAM
    from xray_xai_plugins.models.efficientnet import EfficientNetLite0

    from xray_xai.audit.scores import curve_error, faithfulness_curves

    threads = set_threads()
    torch.manual_seed(0)
    model = EfficientNetLite0().eval()
    size = model.preprocessing.input_size
    x = torch.rand(batch, 3, size, size)  # min ~0: Quantus's "black" (the image minimum) equals our baseline 0.0
    maps = GradCAM().explain(model, x).maps
    res: dict[str, Any] = {}

    def ours() -> None:
        res["ours"] = faithfulness_curves(
            model.predict_proba, x, maps, steps=steps, grid=1, baseline=0.0, kinds=("deletion",)
        ).curves["deletion"]

    def ours_small_batches() -> None:
        res["ours_b8"] = faithfulness_curves(
            model.predict_proba, x, maps, steps=steps, grid=1, baseline=0.0, kinds=("deletion",), batch_size=8
        ).curves["deletion"]

    def ours_336() -> None:
        res["ours_336"] = faithfulness_curves(
            model.predict_proba, x, maps, steps=3 * steps, grid=1, baseline=0.0, kinds=("deletion",), batch_size=8
        ).curves["deletion"]

    def coarse() -> None:
        res["coarse"] = faithfulness_curves(
            model.predict_proba, x, maps, steps=16, grid=8, baseline=0.0, kinds=("deletion",)
        ).curves["deletion"]

    fns = {"ours": ours, "ours_b8": ours_small_batches, "ours_336": ours_336, "coarse": coarse}
    quantus_error = None
    try:
        import quantus

        class TwoClass(torch.nn.Module):
            def __init__(self, inner: torch.nn.Module) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, t: torch.Tensor) -> torch.Tensor:
                logit = self.inner(t)
                return torch.stack([-logit / 2, logit / 2], dim=1)

        wrapped = TwoClass(model).eval()
        metric = quantus.PixelFlipping(
            features_in_step=size * size // steps, perturb_baseline="black", normalise=False, disable_warnings=True,
            display_progressbar=False,
        )  # fmt: skip
        xb, yb, ab = x.numpy(), np.ones(batch, dtype=int), maps[:, None].astype(np.float32)

        def quantus_run() -> None:
            res["quantus"] = np.asarray(
                metric(model=wrapped, x_batch=xb, y_batch=yb, a_batch=ab, device="cpu", batch_size=batch),
                dtype=np.float64,
            )

        fns["quantus"] = quantus_run
    except Exception as exc:
        quantus_error = f"{type(exc).__name__}: {exc}"
    times = interleaved(fns, repeats=repeats, warmup=0)
    out: dict[str, Any] = {"times": times, "threads": threads, "quantus_error": quantus_error}
    fine = res["ours"]
    out["coarse_error"] = curve_error(fine, res["coarse"], coarse_fractions=None)
    if "quantus" in res:
        q = res["quantus"]
        # Quantus returns the points after each of its 336 steps; every third is one of our 112 (after step 1..112)
        thirds = q[:, 2::3][:, :steps]
        out["quantus_vs_ours_max_abs"] = float(np.abs(thirds - fine[:, 1 : thirds.shape[1] + 1]).max())
        out["quantus_vs_ours_mean_abs"] = float(np.abs(thirds - fine[:, 1 : thirds.shape[1] + 1]).mean())
        out["quantus_points"] = int(q.shape[1])
    return out


def run(quick: bool) -> list[Row]:
    batch, repeats = (2, 1) if quick else (2, 2)
    r = run_case("bench_faithfulness", "case_curves", batch=batch, repeats=repeats)
    t = {k: best(v) for k, v in r["times"].items()}
    rows = []
    setting = f"efficientnet-lite0, {batch} images x 224 px, {r['threads']} threads, best of {repeats}"
    if r["quantus_error"] is None:
        ratio = t["quantus"] / t["ours"]
        rows.append(
            Row(
                "faithfulness", f"deletion curve, {STEPS} steps, vs Quantus 0.6.0 PixelFlipping", f"{t['ours']:.1f} s",
                f"{t['quantus']:.1f} s", ratio, "speed-up (x)", ">= 1.5", ratio >= 1.5,
                f"{setting}; default batch_size=64; Quantus evaluates 336 points; curves agree to "
                f"{r['quantus_vs_ours_mean_abs']:.2g} mean, {r['quantus_vs_ours_max_abs']:.2g} max abs prob.",
            )
        )  # fmt: skip
        ratio8 = t["quantus"] / t["ours_b8"]
        ratio336 = t["quantus"] / t["ours_336"]
        rows.append(
            Row(
                "faithfulness", "same, faithfulness_curves(batch_size=8)", f"{t['ours_b8']:.1f} s",
                f"{t['quantus']:.1f} s", ratio8, "speed-up (x)", ">= 1.5", ratio8 >= 1.5,
                f"{setting}; on this CPU a forward pass of 64 images costs ~3x more per image than of 4-8",
            )
        )  # fmt: skip
        rows.append(
            Row(
                "faithfulness", "ours at 336 steps (batch_size=8) vs Quantus (336 evaluations)",
                f"{t['ours_336']:.1f} s", f"{t['quantus']:.1f} s", ratio336, "speed-up (x)", "", None,
                f"{setting}; equal number of forward passes",
            )
        )  # fmt: skip
    else:
        rows.append(Row("faithfulness", "vs Quantus PixelFlipping", "skipped", note=r["quantus_error"]))
    ce = r["coarse_error"]
    rows.append(
        Row(
            "faithfulness", "16 steps on 8 px grid vs 112 steps per pixel", f"{t['coarse']:.2f} s",
            f"{t['ours']:.1f} s",
            t["ours"] / t["coarse"], "speed-up (x)", "", None,
            f"curve error: mean {ce['mean_abs']:.3f}, max {ce['max_abs']:.3f}, AUC {ce['auc_abs']:.4f} (prob. units)",
        )
    )  # fmt: skip
    return rows
