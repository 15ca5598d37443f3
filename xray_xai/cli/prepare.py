"""``xray-xai prepare``: decode a data set's films once into a model's geometry, for ``train --cache`` to read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from xray_xai import api
from xray_xai.cli._common import echo_json, handle_errors, param_option

#: skipped films named in the text summary; --json lists them all
MAX_SHOWN = 5


def _splits(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...] | None:
    """``--split train,val`` and ``--split train --split val`` both work."""
    names = [v.strip() for item in value for v in item.split(",") if v.strip()]
    return tuple(dict.fromkeys(names)) or None


@click.command()
@click.option("--data", "data_root", required=True, type=click.Path(path_type=Path), help="Data set folder.")
@click.option("--dataset", help="Dataset plugin: mura, fracatlas, synthetic, folder... (default: detected).")
@click.option(
    "-o",
    "--option",
    "dataset_options",
    multiple=True,
    callback=param_option,
    metavar="KEY=VALUE",
    help="Option for the data set reader, as in `xray-xai data`, e.g. -o labels=labels.csv for a folder.",
)
@click.option("--split", "splits", multiple=True, callback=_splits, help="Splits to prepare (default: all): train,val.")
@click.option(
    "--model",
    help="Take the geometry of this model: a model plugin name (as `train --model` starts it), a trained model or a "
    "checkpoint path (default: resize to 224 px).",
)
@click.option("--image-size", type=click.IntRange(min=8), help="Input size (default: the model's), as train's.")
@click.option("--letterbox", is_flag=True, help="Letterboxed geometry, as train's --letterbox.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Cache folder (default: $XRAY_XAI_HOME/cache/films); give it to `train --cache DIR`.",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Trust a prepared film only if its source's SHA-256 matches (reads every file); by default size and "
    "modification time must match.",
)
@click.option("--workers", default=0, show_default=True, type=click.IntRange(min=0), help="Decoding processes.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def prepare(
    data_root: Path,
    dataset: str | None,
    dataset_options: dict[str, Any],
    splits: tuple[str, ...] | None,
    model: str | None,
    image_size: int | None,
    letterbox: bool,
    out: Path | None,
    verify: bool,
    workers: int,
    as_json: bool,
) -> None:
    """Decode every film of a data set once, in a model's input geometry, into 8-bit shards on disk.

    Training with `--cache auto` (or `--cache DIR` for --out DIR) then reads these films instead of decoding
    JPEG/PNG/DICOM in every epoch and every run; augmentation and normalisation still happen on the fly. Films are
    kept per geometry (size, crop/resize/letterbox, orientation rule) and used only while their source file is
    unchanged (size and modification time; SHA-256 with --verify); films already prepared are not decoded again.
    Films are rounded to 8 bits (at most half a grey level) after resizing, so a run on them differs slightly from
    one that decodes. Unreadable films are skipped and listed in the pack's skipped.csv.

    \b
    Example:
      xray-xai synth phantoms --n-studies 20 --image-size 64
      xray-xai prepare --data phantoms --model cnn-small --image-size 32
      xray-xai train --model cnn-small --data phantoms --image-size 32 --epochs 1 --cache auto
      xray-xai prepare --data fracatlas --model efficientnet-lite0 --split train,val --workers 8 --json
    """
    summary = api.prepare_films(
        data_root, dataset=dataset, dataset_options=dataset_options or None, splits=splits, model=model,
        image_size=image_size, letterbox=letterbox, out=out, verify=verify, workers=workers, progress=True,
    )  # fmt: skip
    if as_json:
        echo_json(summary)
        return
    rate = f" ({summary['films_per_s']} films/s)" if summary["films_per_s"] else ""
    geo = summary["geometry"]
    click.echo(
        f"prepared {summary['prepared']} film(s) in {summary['seconds']:.1f} s{rate}, {summary['reused']} already "
        f"there; {summary['films']} films ({summary['bytes'] / 2**20:.1f} MiB) at {geo['input_size']} px "
        f"{geo['mode']} in {summary['folder']}"
    )
    if summary["warnings"]:
        click.echo(f"{len(summary['warnings'])} damaged film(s) kept (--json lists them)", err=True)
    if summary["skipped"]:
        where = f", listed in {Path(summary['pack']) / 'skipped.csv'}" if summary["pack"] else ""
        click.echo(f"{len(summary['skipped'])} film(s) could not be read{where}:", err=True)
        for p in summary["skipped"][:MAX_SHOWN]:
            click.echo(f"  {p['path']}: {p['problem']}", err=True)
