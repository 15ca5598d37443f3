"""``xray-xai explain``: heatmaps for images or a data set split, with one or several models and methods."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import click

from xray_xai import api
from xray_xai.cli._common import (
    STRICT_HELP,
    announce_models,
    echo_json,
    echo_provenance,
    handle_errors,
    parse_or_bad_parameter,
    refuse_on_ray,
)


@click.command()
@click.option(
    "--model",
    "models",
    multiple=True,
    help=(
        "Shipped model (fracatlas-lite0), model name (newest trained one in the store) or checkpoint path; repeat to "
        "compare models side by side."
    ),
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Explain the model in this checkpoint (with --model NAME: its weights, checked to hold that model).",
)
@click.option(
    "--method",
    default=None,
    help=f"Explanation method (see `xray-xai plugins --kind explainer`); default: {api.DEFAULT_METHOD}.",
)
@click.option("--methods", default=None, help="Several methods, comma-separated, shown side by side.")
@click.option(
    "--input", "inputs", multiple=True, type=click.Path(path_type=Path), help="An image file or folder (repeatable)."
)
@click.option("--data", type=click.Path(path_type=Path), help="A data set root (MURA, FracAtlas, folder, synthetic).")
@click.option("--dataset", default=None, help="Data set plugin name (auto-detected by default).")
@click.option("--split", default=None, help="Split of --data to explain (default: all).")
@click.option(
    "--only",
    type=click.Choice(["all", "predicted-abnormal"]),
    default="all",
    show_default=True,
    help="Explain every image or only those predicted abnormal.",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="Decision threshold for --only (default: each model's operating point recorded by calibrate, else 0.5).",
)
@click.option("--limit", type=int, default=None, help="At most this many images.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("explanations"), show_default=True, help="Output folder."
)
@click.option(
    "--format",
    "formats",
    default="png,npy,json",
    show_default=True,
    help="Outputs per image, comma-separated: png (overlay), npy (raw map), json (metadata).",
)
@click.option("--per-member", is_flag=True, help="For ensembles also write each member's map and the disagreement.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Images per forward pass.")
@click.option(
    "--target",
    type=click.Choice(["abnormal", "normal"]),
    default="abnormal",
    show_default=True,
    help="Show evidence for abnormal (the logit) or for normal (its negation).",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="METHOD.KEY=VALUE",
    help="A method option, e.g. saliency.n_segments=200 (repeatable; KEY=VALUE when one method is chosen).",
)
@click.option(
    "--layer",
    help="Explain at this layer (methods that take one), e.g. features.denseblock3 or blocks.4; a wrong name lists "
    "close ones.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for methods that draw noise.")
@click.option("--resume", is_flag=True, help="Skip images whose outputs already exist.")
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help='Run here, or spread over a Ray cluster (maps as Parquet shards; pip install "xray-xai[ray]").',
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Ray actors, each holding one model (--backend ray).",
)
@click.option(
    "--ray-address", default=None, help="Ray cluster to join, e.g. auto or ray://host:10001 (default: local)."
)
@click.option("--strict", is_flag=True, help=STRICT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@handle_errors
def explain(
    models: tuple[str, ...],
    checkpoint: Path | None,
    method: str | None,
    methods: str | None,
    inputs: tuple[Path, ...],
    data: Path | None,
    dataset: str | None,
    split: str | None,
    only: Literal["all", "predicted-abnormal"],
    threshold: float | None,
    limit: int | None,
    out: Path,
    formats: str,
    per_member: bool,
    batch_size: int,
    target: Literal["abnormal", "normal"],
    params: tuple[str, ...],
    layer: str | None,
    seed: int,
    resume: bool,
    backend: str,
    concurrency: int,
    ray_address: str | None,
    strict: bool,
    as_json: bool,
) -> None:
    """Explain predictions with heatmaps: an overlay PNG, the raw map and metadata per image, a comparison figure
    when several models or methods are given (rows = models, columns = film + methods), one figure per study,
    and an index.html contact sheet. Unreadable images are skipped and listed in skipped.csv.

    --backend ray spreads the work over a Ray cluster (--concurrency actors, each loading the model once) and writes
    the maps as Parquet shards under OUT/<model>/<method>/ instead of PNG/NPY/JSON files (no figures, --only,
    --per-member or --resume there).

    \b
    Example:
      xray-xai explain --model densenet-full --method gradcam --input film.png --out expl
      xray-xai explain --model densenet-linear --model densenet-full --methods saliency,gradcam \\
          --data MURA-v1.1 --split valid --only predicted-abnormal --limit 50
      xray-xai explain --model densenet-full --method gradcam --data MURA-v1.1 --backend ray --concurrency 8
      xray-xai explain --model densenet-full --method gradcam --layer features.denseblock3 --input film.png
    """
    if not models and checkpoint is None:
        raise click.UsageError("give --model NAME (repeatable) or --checkpoint PATH")
    if not inputs and data is None:
        raise click.UsageError("give --input PATH (repeatable) or --data DIR")
    chosen = api.split_names(method, methods) or [api.DEFAULT_METHOD]
    method_params = parse_or_bad_parameter(lambda: api.method_params(params, chosen))
    if backend == "ray":
        refuse_on_ray("explain", only=only, per_member=per_member, resume=resume)
    # on Ray the workers resolve and load the models (the store may exist only there): no local provenance lookup
    lines = [] if backend == "ray" else announce_models(list(models), checkpoint=checkpoint, dataset=dataset,
                                                        data_root=data, inputs=inputs)  # fmt: skip
    result = api.explain(
        list(models), chosen, checkpoint=checkpoint, inputs=list(inputs), data=data, dataset=dataset, split=split,
        only=only, threshold=threshold, out=out, formats=formats, per_member=per_member, batch_size=batch_size,
        target=target, seed=seed, resume=resume, params=method_params, layer=layer, limit=limit,
        show_progress=not as_json, backend=backend, concurrency=concurrency, ray_address=ray_address, strict=strict,
    )  # fmt: skip
    if as_json:
        echo_json(result if isinstance(result, dict) else result.to_dict())
    elif isinstance(result, dict):
        _report_ray(result)
    else:
        _report(result)
    if not as_json:
        echo_provenance(lines)


def _report(result: Any) -> None:
    """The local run in a few lines: counts, the contact sheet, the first skipped files."""
    click.echo(
        f"explained {len({i['image_id'] for i in result.items})} image(s) with {', '.join(result.models)} x "
        f"{', '.join(result.methods)} in {result.seconds:.1f}s -> {result.out}"
    )
    if result.resumed:
        click.echo(f"{result.resumed} image(s) already done (--resume)")
    if result.index:
        click.echo(f"contact sheet: {result.index}")
    if result.skipped:
        click.echo(f"skipped {len(result.skipped)} file(s), listed in {Path(result.out) / 'skipped.csv'}:", err=True)
        for p in result.skipped[:10]:
            click.echo(f"  {p}", err=True)
    if result.warnings:
        click.echo(f"{len(result.warnings)} warning(s), listed in {Path(result.out) / 'warnings.csv'}", err=True)


def _report_ray(summary: dict[str, Any]) -> None:
    """``--backend ray`` in one line (and the first skipped files)."""
    runs = summary["runs"]
    done = sum(int(r.get("n_explained", 0)) for r in runs)
    seconds = sum(float(r.get("seconds", 0.0)) for r in runs)
    click.echo(f"explained {done} map(s) in {len(runs)} run(s) on Ray in {seconds:.1f}s -> {summary['out']} (Parquet)")
    if summary["skipped"]:
        click.echo(f"skipped {len(summary['skipped'])} file(s):", err=True)
        for p in summary["skipped"][:10]:
            click.echo(f"  {p['path']}: {p['problem']}", err=True)
