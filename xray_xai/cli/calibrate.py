"""``xray-xai calibrate``: post-hoc calibration and operating points fitted on validation, recorded in the sidecar;
and the calibration and operating-point tables ``xray-xai evaluate`` prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from xray_xai import api
from xray_xai.cli._common import STRICT_HELP, echo_json, handle_errors, print_table

__all__ = ["calibrate", "parse_levels", "print_calibration"]


def parse_levels(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    """``--specificities 0.9,0.95`` -> ``(0.9, 0.95)``; every value in (0, 1)."""
    if value is None:
        return None
    try:
        levels = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
    if not levels or any(not 0.0 < v < 1.0 for v in levels):
        raise click.BadParameter(f"every level must be in (0, 1), got {value!r}")
    return levels


@click.command()
@click.option("--model", "model_name", help="Model name (newest trained in the store) or checkpoint path.")
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, path_type=Path),
    help="A checkpoint folder or file (with --model NAME: checked to hold that model).",
)
@click.option("--data", "data_root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dataset", help="Dataset plugin: mura, fracatlas, synthetic, folder... (default: detected).")
@click.option("--split", default="val", show_default=True, help="Split to fit on (never the test split).")
@click.option(
    "--method",
    type=click.Choice(api.CALIBRATION_METHODS),
    default="temperature",
    show_default=True,
    help="Post-hoc calibration: temperature scaling, Platt scaling, isotonic regression, or none (thresholds only).",
)
@click.option(
    "--rule",
    "rules",
    multiple=True,
    help="Operating-point rule, repeatable: youden, sensitivity=X, specificity=X, fixed=X. The first is the "
    "threshold every command uses; all are recorded and reported by evaluate. [default: youden]",
)
@click.option("--calibration-bins", default=10, show_default=True, type=click.IntRange(min=1), help="Bins for ECE.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="cpu", show_default=True)
@click.option("--tta", is_flag=True, help="Fit on flip-averaged probabilities (then use --tta everywhere).")
@click.option("--strict", is_flag=True, help=STRICT_HELP)
@click.option("--dry-run", is_flag=True, help="Fit and report, but leave the sidecar unchanged.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@handle_errors
def calibrate(
    model_name: str | None,
    checkpoint: Path | None,
    data_root: Path,
    dataset: str | None,
    split: str,
    method: str,
    rules: tuple[str, ...],
    calibration_bins: int,
    batch_size: int,
    device: str,
    tta: bool,
    strict: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Fit post-hoc calibration and choose decision thresholds on the validation split; record them in the sidecar.

    The checkpoint's model.json is updated atomically (the weights, their fingerprint and checksum are untouched);
    calibrating again replaces the entry. predict, evaluate, explain, cluster, the web page and the report then show
    the calibrated probability (--uncalibrated: the raw one) and use the first rule's threshold unless --threshold
    is given.

    \b
    Example:
      xray-xai calibrate --model cnn-small --data phantoms --split val
      xray-xai calibrate --checkpoint ~/.xray-xai/models/efficientnet-lite0/2026... --data fracatlas \\
        --dataset fracatlas --method platt --rule youden --rule sensitivity=0.90 --rule specificity=0.95 --json
    """
    if not model_name and checkpoint is None:
        raise click.UsageError("give --model NAME or --checkpoint PATH")
    if split.strip().lower() == "test":
        raise click.UsageError("calibrate fits on validation data; the test split is for evaluate only")
    for rule in rules:
        try:
            api.parse_rule(rule)
        except api.ParamError as exc:
            raise click.BadParameter(str(exc), param_hint="'--rule'") from None
    result = api.calibrate(
        api.resolve_model(model_name, checkpoint), data_root, dataset=dataset, split=split, method=method,
        rules=rules or ("youden",), batch_size=batch_size, device=device, tta=tta, strict=strict,
        calibration_bins=calibration_bins, write=not dry_run, progress=not as_json,
    )  # fmt: skip
    if as_json:
        echo_json(result)
        return
    _print_calibrate(result)


def _print_calibrate(result: dict[str, Any]) -> None:
    cal = result["calibration"]
    params = ", ".join(f"{k}={v:.4g}" for k, v in cal["params"].items() if isinstance(v, float))
    if cal["method"] == "isotonic":
        params = f"{len(cal['params']['x'])} breakpoints"
    keys = ("nll", "brier", "ece", "mce", "auroc", "mean_probability", "prevalence")
    print_table(
        ("", "NLL", "Brier", "ECE", "MCE", "AUROC", "mean p", "prevalence"),
        [[when, *(_fmt(cal["validation"][when][k]) for k in keys)] for when in ("before", "after")],
        title=f"{result['model']}: {cal['method']} ({params}) fitted on {cal['split']}, n={cal['n']}",
    )
    rows = []
    for p in result["operating_points"]:
        v = p["validation"]
        rows.append([p["rule"], _fmt(p["threshold"]), _fmt(p["threshold_raw"]),
                     *(_fmt(v[k]) for k in ("sensitivity", "specificity", "precision", "share_positive"))])  # fmt: skip
    print_table(
        ("rule", "threshold", "threshold (raw)", "sensitivity", "specificity", "PPV", "called abnormal"),
        rows,
        title="operating points chosen on validation (the first is used)",
    )
    where = result.get("sidecar")
    click.echo(f"recorded in {where}" if where else "dry run: sidecar unchanged", err=True)


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _ci(m: dict[str, Any], key: str) -> str:
    ci = (m.get("ci95") or {}).get(key)
    return _fmt(m.get(key)) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def print_calibration(result: dict[str, Any]) -> None:
    """The calibration table (overall, per region; before/after) and the operating-point table of ``evaluate``."""
    cal = result.get("calibration")
    if not cal:
        return
    keys = [k for k in cal["image"]["overall"] if k.startswith(("sensitivity_at", "specificity_at"))]
    # sens@spec.90: sensitivity at specificity 0.90; spec@sens.95: specificity at sensitivity 0.95
    heads = [k.replace("sensitivity_at_specificity_0", "sens@spec").replace("specificity_at_sensitivity_0", "spec@sens")
             for k in keys]  # fmt: skip
    for level in ("image", "study"):
        rows = [("overall", cal[level]["overall"]), *cal[level]["per_region"].items()]
        before = (result.get("calibration_uncalibrated") or {}).get(level)
        if before:
            rows.insert(1, ("overall, uncalibrated", before["overall"]))
        body = []
        for region, m in rows:  # intervals on the overall rows only (per region: in --json), to stay readable
            cell = _ci if region.startswith("overall") else (lambda m, k: _fmt(m.get(k)))
            body.append([region, str(m["n"]), _fmt(m["prevalence"]), _fmt(m["mean_probability"]),
                         *(cell(m, k) for k in ("brier", "ece", "mce", "slope", "intercept", *keys))])  # fmt: skip
        print_table(("region", "n", "prev.", "mean p", "Brier", "ECE", "MCE", "slope", "intercept", *heads), body,
                    title=f"calibration, {level} level ({result.get('probability', '')} probability)")  # fmt: skip
    points = []
    for p in result.get("operating_points", []):
        v = p.get("validation") or {}
        val = f"{_fmt(v.get('sensitivity'))}/{_fmt(v.get('specificity'))}" if v else "-"
        for level in ("image", "study"):
            m = p[level]
            points.append([p["name"] + (" *" if p["in_use"] else ""), _fmt(p["threshold"]), level,
                           *(_fmt(m[k]) for k in ("sensitivity", "specificity", "precision", "share_positive")),
                           val])  # fmt: skip
    columns = ("point", "threshold", "level", "sensitivity", "specificity", "PPV", "called abnormal", "val sens/spec")
    in_use = f"{_fmt(result['threshold'])}, {result['threshold_source']}"
    print_table(columns, points, title=f"operating points (in use: {in_use})")
