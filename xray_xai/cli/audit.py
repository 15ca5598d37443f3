"""``xray-xai audit``: score explanation methods and write the HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import click

from xray_xai import api
from xray_xai.cli._common import STRICT_HELP, announce_models, echo_json, echo_provenance, handle_errors, print_table

__all__ = ["audit"]


@click.command()
@click.option(
    "--models",
    required=True,
    help="Comma-separated model names (shipped, e.g. fracatlas-lite0, or the newest trained in the store) or paths.",
)
@click.option("--methods", required=True, help="Comma-separated explainer names, e.g. gradcam,saliency.")
@click.option(
    "--data",
    "data_root",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Data set folder (MURA, FracAtlas, synthetic or any folder of films).",
)
@click.option("--dataset", default=None, help="Dataset plugin name (auto-detected if omitted).")
@click.option("--split", default="test", show_default=True, help="Split to audit (or 'all').")
@click.option("--n", "n", default=100, show_default=True, type=click.IntRange(min=1), help="Images to audit.")
@click.option(
    "--steps", default=32, show_default=True, type=click.IntRange(min=1), help="Deletion/insertion steps (e.g. 112)."
)
@click.option(
    "--grid", default=8, show_default=True, type=click.IntRange(min=1), help="Deletion cell size in px (1 = pixels)."
)
@click.option(
    "--baseline",
    type=click.Choice(["blur", "mean"]),
    default="blur",
    show_default=True,
    help="What removed pixels become: a blurred film or its mean intensity.",
)
@click.option(
    "--sanity-stages",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Cascading randomisation stages: the output layer, then the rest in equal groups down to the input.",
)
@click.option(
    "--control-faithfulness/--no-control-faithfulness",
    default=True,
    show_default=True,
    help="Also run deletion/insertion on the control maps (the costliest part).",
)
@click.option(
    "--curve-check",
    "curve_check_n",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="On this many images, compare the curves with fine ones (112 steps, pixel grid) and report the error.",
)
@click.option(
    "--batch-size", default=16, show_default=True, type=click.IntRange(min=1), help="Images per explainer call."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds image choice, random maps, bootstrap.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the audit as JSON on stdout.")
@click.option("--strict", is_flag=True, help=STRICT_HELP)
@handle_errors
def audit(
    models: str,
    methods: str,
    data_root: Path,
    dataset: str | None,
    split: str,
    n: int,
    steps: int,
    grid: int,
    baseline: Literal["blur", "mean"],
    sanity_stages: int,
    control_faithfulness: bool,
    curve_check_n: int,
    batch_size: int,
    seed: int,
    out_dir: Path | None,
    as_json: bool,
    strict: bool,
) -> None:
    """Audit explanation methods: faithfulness, sanity, localisation, controls and shortcuts.

    Every model x method pair is scored on the same N images (localisation on the abnormal ones with ground
    truth), beside model-free control maps; results go to OUT/report.html (self-contained) and OUT/report.json.
    Without --out the report goes to ./audit-<date>.

    \b
    Example:
      xray-xai audit --models densenet-full,efficientnet-lite0 --methods gradcam,saliency \\
          --data ../shared/data/fracatlas --n 100 --steps 112 --grid 1 --out audit-fracatlas
    """
    import datetime as dt

    if out_dir is None:
        out_dir = Path(f"audit-{dt.datetime.now():%Y%m%d-%H%M%S}")
    lines = announce_models(api.split_names(models), dataset=dataset, data_root=data_root)
    result = api.audit(
        api.split_names(models),
        methods,
        data_root,
        dataset=dataset,
        split=split,
        n=n,
        seed=seed,
        steps=steps,
        grid=grid,
        batch_size=batch_size,
        out_dir=out_dir,
        progress=not as_json,
        baseline=baseline,
        sanity_stages=sanity_stages,
        control_faithfulness=control_faithfulness,
        curve_check_n=curve_check_n,
        strict=strict,
    )
    if as_json:
        echo_json(result)
        return
    _print_table(result)
    if result.get("warnings"):
        listed = Path(out_dir) / "warnings.csv"
        click.echo(f"{len(result['warnings'])} damaged image(s) kept, listed in {listed}", err=True)
    click.echo(f"report: {result['report']['html']}")
    echo_provenance(lines)


def _print_table(result: dict[str, Any]) -> None:
    cols = (
        ("deletion ↓", "faithfulness", "deletion_auc"),
        ("insertion ↑", "faithfulness", "insertion_auc"),
        ("pointing", "localisation", "pointing"),
        ("IoU otsu", "localisation", "iou_otsu"),
        ("mass in mask", "localisation", "mass_in_mask"),
        ("border", "shortcuts", "border_share"),
    )
    from rich.markup import escape

    rows = []
    for pair in result.get("pairs", []):
        if pair.get("status") != "ok":
            rows.append([pair["model"], pair["method"], escape(f"skipped: {pair.get('reason', '')}")])
            continue
        cells = [escape(api.format_stat((pair.get(sec) or {}).get(key))) for _, sec, key in cols]
        rows.append([pair["model"], pair["method"], *cells, str(pair.get("sanity", {}).get("status", ""))])
    print_table(("model", "method", *(c[0] for c in cols), "sanity"), rows, title="audit (mean [95% CI])")
    for problem in result.get("problems", []):
        click.echo(f"skipped: {problem}", err=True)
