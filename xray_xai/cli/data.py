"""``xray-xai synth`` (write a synthetic data set) and ``xray-xai data`` (what a data set folder holds)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import click

from xray_xai import api
from xray_xai.cli._common import echo_json, handle_errors, param_option

#: problems printed in the text report; --json lists them all
MAX_PROBLEMS_SHOWN = 20


def _regions(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...] | None:
    """``--regions wrist,elbow`` and ``--regions wrist --regions elbow`` both work."""
    names = [v.strip().lower() for item in value for v in item.split(",") if v.strip()]
    unknown = sorted(set(names) - set(api.REGIONS))
    if unknown:
        raise click.BadParameter(f"unknown region(s) {', '.join(unknown)}; choose from {', '.join(api.REGIONS)}")
    return tuple(dict.fromkeys(names)) or None


def _options(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, Any]:
    """``-o key=value`` pairs (``key-name`` is ``key_name``); values are read as JSON when they parse."""
    return {key.replace("-", "_"): v for key, v in param_option(ctx, param, value).items()}


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n-studies", type=click.IntRange(min=1), required=True, help="Number of studies to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; same seed, same files.")
@click.option(
    "--abnormal-fraction",
    type=click.FloatRange(0, 1),
    default=None,
    help="Share of abnormal studies (generator default if omitted).",
)
@click.option(
    "--image-size",
    type=click.IntRange(min=1),  # the generator checks its own range (built-in: 64-1024), so another one may differ
    default=None,
    help="Longer side of each film in pixels (built-in generator: 64-1024, default 256); films are not square: the "
    "other side is 72-100% of it (portrait; shoulders half landscape).",
)
@click.option(
    "--regions",
    multiple=True,
    callback=_regions,
    help=f"Regions to draw from ({', '.join(api.REGIONS)}); comma-separated or repeated.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace OUT when it holds an earlier synthetic data set (any other non-empty folder is refused).",
)
@click.option(
    "--shortcut",
    type=click.Choice(["marker"]),
    default=None,
    help="Plant a shortcut: a token that follows the label in the training films of --shortcut-region.",
)
@click.option("--shortcut-region", help="Region where the shortcut is planted (e.g. wrist).")
@click.option(
    "--shortcut-strength",
    type=click.FloatRange(0.5, 1),
    default=None,
    help="P(token | abnormal) = 1 - P(token | normal) in training films (default 0.9); test films: 0.5 either way.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the path and a summary as JSON.")
@handle_errors
def synth(
    out: Path,
    n_studies: int,
    seed: int,
    abnormal_fraction: float | None,
    image_size: int | None,
    regions: tuple[str, ...] | None,
    overwrite: bool,
    shortcut: str | None,
    shortcut_region: str | None,
    shortcut_strength: float | None,
    as_json: bool,
) -> None:
    """Write a synthetic MURA-layout data set with known ground truth to OUT.

    The files follow MURA-v1.1 exactly (folders, CSVs), plus a JSON sidecar with the masks of the planted
    abnormalities, so every command that reads MURA reads them and the audit can score explanations. OUT is
    written atomically (built beside it, then renamed); a non-empty OUT is refused unless --overwrite and it holds
    an earlier synthetic data set.

    \b
    Example:
      xray-xai synth phantoms --n-studies 50 --seed 0
      xray-xai synth phantoms --n-studies 20 --regions wrist,elbow --image-size 64 --json
      xray-xai synth shortcut --n-studies 200 --regions wrist,elbow --shortcut marker --shortcut-region wrist
    """
    root = api.synth(
        out, n_studies, seed, abnormal_fraction=abnormal_fraction, image_size=image_size, regions=regions,
        overwrite=overwrite or None,
        shortcut=shortcut, shortcut_region=shortcut_region, shortcut_strength=shortcut_strength,
    )  # fmt: skip
    summary = api.data_summary(root)
    if as_json:
        echo_json({"path": str(root), "summary": summary})
        return
    click.echo(
        f"wrote {summary['studies']['total']} studies, {summary['images']['total']} images "
        f"({summary['studies']['abnormal']} abnormal studies) to {root}"
    )


@click.command()
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option(
    "--dataset",
    "dataset_name",
    metavar="NAME",
    help="Reader to use (see `xray-xai plugins --kind dataset`); detected if omitted.",
)
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    callback=_options,
    metavar="KEY=VALUE",
    help="Option for the reader, e.g. -o regions='[\"wrist\"]' -o val_fraction=0.2 -o labels=labels.csv.",
)
@click.option(
    "--check-images",
    is_flag=True,
    help="Also decode every image: unreadable files as errors, films cut short but kept by the commands as warnings.",
)
@click.option("--strict", is_flag=True, help="With --check-images: report films cut short as errors.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (every count and every problem).")
@handle_errors
def data(
    directory: Path, dataset_name: str | None, options: dict[str, Any], check_images: bool, strict: bool, as_json: bool
) -> None:
    """Show what a data set folder holds: images and studies by split, region and label, and the problems found.

    The layout (synthetic, mura, fracatlas, or any folder of images) is detected unless --dataset names it.
    Problems (missing CSVs, label mismatches, missing or empty files) are listed but do not change the exit code.

    \b
    Example:
      xray-xai data ~/data/MURA-v1.1
      xray-xai data ../shared/data/fracatlas --dataset fracatlas --json
      xray-xai data scans/ --dataset folder -o labels=labels.csv --check-images
    """
    summary = api.data_summary(directory, dataset_name, images=check_images, progress=True, strict=strict, **options)
    if as_json:
        echo_json(summary)
        return
    _print_summary(summary)


def _print_summary(summary: dict[str, Any]) -> None:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    img, std = summary["images"], summary["studies"]
    console.print(
        f"[bold]{summary['dataset']}[/bold] {summary['root']}: {img['total']} images "
        f"({img['abnormal']} abnormal, {img['normal']} normal, {img['unknown']} unlabelled), "
        f"{std['total']} studies, {summary['patients']} patients"
    )
    columns = _columns(summary)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)  # light borders: the whole table fits 80 columns
    for title, _ in columns:
        justify: Literal["left", "right"] = "left" if title in ("split", "region") else "right"
        width = 8 if title == "region" else len(title)  # "shoulder", "fracatlas" regions fit
        table.add_column(title, justify=justify, no_wrap=True, min_width=width)
    for row in summary["table"]:
        table.add_row(row["split"], row["region"], *(get(row) for _, get in columns[2:]))
    table.add_section()
    for split, counts in summary["splits"].items():
        if counts["images"]["total"]:
            table.add_row(split, "all", *(get(counts) for _, get in columns[2:]), style="bold")
    console.print(table)
    problems = summary["problems"]
    if not problems:
        console.print("no problems found")
        return
    console.print(
        f"[bold]{summary['problem_count']} problem(s)[/bold] "
        f"({summary['error_count']} error(s), {summary['warning_count']} warning(s)):"
    )
    for p in problems[:MAX_PROBLEMS_SHOWN]:
        colour = "red" if p["severity"] == "error" else "yellow"
        console.print(
            f"  [{colour}]{p['severity']}[/{colour}] {escape(p['path'])}: {escape(p['problem'])}", highlight=False
        )
    if len(problems) > MAX_PROBLEMS_SHOWN:
        console.print(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more (use --json to see all)")


def _columns(summary: dict[str, Any]) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    """Table columns (abn./norm.: images labelled abnormal/normal; abn.st: abnormal studies; w/ mask: images with
    localisation ground truth); those that would
    only repeat another column or hold zeros are left out, so the table fits 80 columns."""
    columns: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("split", str),
        ("region", str),
        ("imgs", lambda c: str(c["images"]["total"])),
        ("abn.", lambda c: str(c["images"]["abnormal"])),
        ("norm.", lambda c: str(c["images"]["normal"])),
    ]
    if summary["images"]["unknown"]:
        columns.append(("unlab.", lambda c: str(c["images"]["unknown"])))
    if summary["studies"]["total"] != summary["images"]["total"]:
        columns.append(("studies", lambda c: str(c["studies"]["total"])))
        columns.append(("abn.st", lambda c: str(c["studies"]["abnormal"])))
    if summary["patients"]:
        columns.append(("patients", lambda c: str(c["patients"])))
    if summary["with_ground_truth"]:
        columns.append(("w/ mask", lambda c: str(c["with_ground_truth"])))
    return columns
