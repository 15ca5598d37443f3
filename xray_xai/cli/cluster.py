"""``xray-xai cluster``: group the films a model calls abnormal by deep features (or by where it looks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import click

from xray_xai import api
from xray_xai.cli._common import (
    MODEL_HELP,
    announce_models,
    echo_json,
    echo_provenance,
    handle_errors,
    param_option,
    refuse_on_ray,
)


def _parse_range(text: str | None) -> list[int] | None:
    """``"2-10"`` -> [2..10]; ``"2,4,8"`` -> [2, 4, 8]."""
    if not text:
        return None
    try:
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            values = list(range(lo, hi + 1))
        else:
            values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected a range like 2-10 or a list like 2,4,8, got {text!r}") from None
    if not values or min(values) < 2:
        raise click.BadParameter(f"K must be at least 2, got {text!r}")
    return values


@click.command()
@click.option("--model", "model_name", help=MODEL_HELP)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=True, path_type=Path),
    help="Weights to load (with --model NAME: checked to hold that model).",
)
@click.option("--data", "data_root", required=True, type=click.Path(exists=True, path_type=Path), help="Data set root.")
@click.option("--dataset", help="Data set layout (mura, fracatlas, folder, synthetic); detected if omitted.")
@click.option("--k", "k", default=4, show_default=True, type=click.IntRange(1), help="Number of clusters.")
@click.option("--method", default="pca-kmeans", show_default=True, help="Clusterer plugin (xray-xai plugins).")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    callback=param_option,
    help="Clusterer option, e.g. n_components=0.95 (repeatable).",
)
@click.option("--splits", default="train,test", show_default=True, help="Splits pooled (MURA 'valid' = 'test').")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="p(abnormal) cut (default: the operating point recorded by calibrate, else 0.5).",
)
@click.option("--all-images", is_flag=True, help="Cluster every film, not only those predicted abnormal.")
@click.option("--region", help="Only this region (e.g. wrist).")
@click.option("--per-region", is_flag=True, help="Cluster each region separately (one sub-folder each).")
@click.option("--on", "on", type=click.Choice(["features", "explanations"]), default="features", show_default=True)
@click.option("--explainer", default=api.CLUSTER_EXPLAINER, show_default=True, help="Explainer for --on explanations.")
@click.option("--grid", default=16, show_default=True, type=click.IntRange(1), help="Map size for --on explanations.")
@click.option(
    "--select-k",
    "select_k",
    metavar="RANGE",
    help="Choose K by silhouette over e.g. 2-10 among the Ks whose clusters all reach --min-cluster-size "
    "(overrides --k).",
)
@click.option(
    "--min-cluster-size",
    type=click.IntRange(1),
    help="Smallest cluster worth describing, in films (default: 5% of the films clustered, at least 3): --select-k "
    "skips Ks with smaller clusters, and a clustering with one is warned about.",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help='Embed here, or on a Ray cluster (assignments.parquet; pip install "xray-xai[ray]").',
)
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(1), help="Ray actors (--backend ray).")
@click.option("--ray-address", help="Ray cluster to join, e.g. auto or ray://host:10001 (default: start a local one).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@handle_errors
def cluster(
    model_name: str | None,
    checkpoint: Path | None,
    data_root: Path,
    dataset: str | None,
    k: int,
    method: str,
    params: dict[str, Any],
    splits: str,
    threshold: float | None,
    all_images: bool,
    region: str | None,
    per_region: bool,
    on: Literal["features", "explanations"],
    explainer: str,
    grid: int,
    select_k: str | None,
    min_cluster_size: int | None,
    out_dir: Path | None,
    seed: int,
    batch_size: int,
    backend: str,
    concurrency: int,
    ray_address: str | None,
    as_json: bool,
) -> None:
    """Cluster the films a model predicts abnormal (PCA + k-means on deep features by default).

    Writes to --out: assignments.csv (image, study, region, cluster, distance to centroid, probability), a montage
    of the films nearest each centroid, projection.png (by cluster and by region), composition.csv, agreement.csv
    (NMI/ARI against every metadata column), summary.json and summary.md. Features are cached, so re-running with
    another --k, --method or --threshold is fast. --on explanations clusters Grad-CAM maps instead: groups of films
    where the model looks at the same kind of place.

    --backend ray embeds the films on a Ray cluster (--concurrency actors) and clusters on this machine, streaming
    from disk when the features are large; it writes features.npy and assignments.parquet (no figures, and no
    --per-region, --select-k or --on explanations there).

    \b
    Example:
      xray-xai cluster --model densenet-full --data MURA-v1.1 --k 4 --splits train,valid --out clusters/
      xray-xai cluster --model cnn-small --data phantoms --per-region --select-k 2-8
      xray-xai cluster --model densenet-full --data MURA-v1.1 --on explanations --explainer gradcam --json
      xray-xai cluster --model densenet-full --data MURA-v1.1 --backend ray --ray-address auto --concurrency 16
    """
    if region and per_region:
        raise click.UsageError("give either --region or --per-region, not both")
    if checkpoint is None and not model_name:
        raise click.UsageError("give --model NAME or --checkpoint PATH")
    k_range = _parse_range(select_k)
    if threshold is None and not all_images:  # the model's recorded operating point (else 0.5; on Ray: 0.5)
        # on Ray the workers load the model: the store may exist only there
        model = api.resolve_model(model_name, checkpoint) if backend != "ray" else None
        threshold = api.resolve_threshold(model) if model is not None else api.DECISION_THRESHOLD
    if backend == "ray":
        refuse_on_ray("cluster", per_region=per_region, select_k_range=k_range, on=on)
        if min_cluster_size is not None:
            raise click.UsageError("--min-cluster-size only works with --backend local")
    names = [model_name] if model_name else []
    films = {"checkpoint": checkpoint, "dataset": dataset, "data_root": data_root}
    lines = [] if backend == "ray" else announce_models(names, **films)
    summary = api.cluster(
        model_name, data_root, checkpoint=checkpoint, dataset=dataset, k=k, method=method, method_params=params,
        splits=api.split_names(splits), threshold=None if all_images else threshold, region=region,
        per_region=per_region, on=on, explainer=explainer, grid=grid, select_k_range=k_range, out_dir=out_dir,
        seed=seed, batch_size=batch_size, json=True, progress=not as_json, backend=backend, concurrency=concurrency,
        ray_address=ray_address, min_cluster_size=min_cluster_size,
    )  # fmt: skip
    if as_json:
        echo_json(summary)
    elif backend == "ray":
        _report_ray(summary)
    else:
        _report(summary)
    if not as_json:
        echo_provenance(lines)


def _report(summary: dict[str, Any]) -> None:
    """Per group: silhouette and one line per cluster; then the unreadable films."""
    click.echo(f"{summary['n_selected']} of {summary['n_read']} films clustered -> {summary['out_dir']}")
    for name, group in summary["groups"].items():
        if name != "all":
            click.echo(f"[{name}]")
        if "descriptions" not in group:
            click.echo(f"  not clustered: {group.get('skipped')}")
            continue
        sil = group["silhouette"]
        click.echo(f"  silhouette {sil:.3f}" if sil is not None else "  silhouette n/a")
        for text in group["descriptions"].values():
            click.echo(f"  {text}")
        for warning in group.get("warnings") or []:
            click.echo(f"warning: {'' if name == 'all' else f'[{name}] '}{warning}", err=True)
    if summary["skipped"]:
        where = summary.get("files_summary", {}).get("skipped", "summary.json")
        click.echo(f"{len(summary['skipped'])} unreadable films skipped, listed in {where}", err=True)


def _report_ray(summary: dict[str, Any]) -> None:
    """``--backend ray`` in one line."""
    sizes = ", ".join(f"{c}: {n}" for c, n in summary["sizes"].items())
    how = "streamed" if summary["streamed"] else "in memory"
    click.echo(
        f"{summary['n_selected']} of {summary['n_images']} films clustered on Ray ({how}; sizes {sizes}) "
        f"in {summary['seconds'] + summary['fit_seconds']:.1f}s -> {summary['out']}"
    )
    if summary["skipped"]:
        click.echo(f"{len(summary['skipped'])} unreadable films skipped", err=True)
