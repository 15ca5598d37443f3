"""``xray-xai leaderboard``: every explanation method scored on one model's fractured films."""

from __future__ import annotations

from pathlib import Path

import click

from xray_xai import api
from xray_xai.cli._common import STRICT_HELP, echo_json, handle_errors, parse_or_bad_parameter

__all__ = ["leaderboard"]


def _films_per_method(items: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        method, sep, n = item.rpartition("=")
        if not sep or not method or not n.isdigit() or int(n) < 1:
            raise click.BadParameter(
                f"{item!r}: expected METHOD=N, e.g. grad-cam:ScoreCAM=5", param_hint="'--films-for'"
            )
        out[method] = int(n)
    return out


@click.command()
@click.option("--model", "model", required=True, help="Trained model name (latest in the store) or checkpoint path.")
@click.option("--checkpoint", type=click.Path(exists=True, path_type=Path), help="Pin the model's weights.")
@click.option(
    "--data",
    "data_root",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Data set folder with ground-truth boxes or masks (e.g. FracAtlas).",
)
@click.option("--dataset", default=None, help="Dataset plugin name (auto-detected if omitted).")
@click.option("--split", default="test", show_default=True, help="Split whose fractured films are scored.")
@click.option("--method", "methods", multiple=True, help="Method(s) to score, comma-separated or repeated.")
@click.option("--all", "all_methods", is_flag=True, help="Score every registered method (the default).")
@click.option("--films", type=click.IntRange(min=1), help="At most this many fractured films (first N of the split).")
@click.option("--budget-minutes", type=click.FloatRange(min=0.1), help="Share this wall time out between methods.")
@click.option("--probe", default=3, show_default=True, type=click.IntRange(min=1), help="Films every method gets "
              "first (its seconds per film plan the budget).")  # fmt: skip
@click.option("--films-for", "films_for", multiple=True, metavar="METHOD=N", help="Pin one method's films.")
@click.option("--faithfulness-films", default=8, show_default=True, type=click.IntRange(min=1),
              help="Films with deletion/insertion curves per method.")  # fmt: skip
@click.option("--sanity-films", default=4, show_default=True, type=click.IntRange(min=1),
              help="Films explained again on the randomised model.")  # fmt: skip
@click.option("--steps", default=8, show_default=True, type=click.IntRange(min=1), help="Deletion/insertion steps.")
@click.option("--grid", default=8, show_default=True, type=click.IntRange(min=1), help="Deletion cell size in px.")
@click.option("--baseline", type=click.Choice(["blur", "mean"]), default="blur", show_default=True,
              help="What removed pixels become in the curves.")  # fmt: skip
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Films per explainer call (cost per film = the batch's share).")  # fmt: skip
@click.option("--param", "-p", "params", multiple=True, metavar="METHOD.KEY=VALUE",
              help="A method option, e.g. captum:DeepLift.baseline=zeros (repeatable).")  # fmt: skip
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds noise, random maps and the bootstrap.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--strict", is_flag=True, help=STRICT_HELP)
@handle_errors
def leaderboard(
    model: str, checkpoint: Path | None, data_root: Path, dataset: str | None, split: str, methods: tuple[str, ...],
    all_methods: bool, films: int | None, budget_minutes: float | None, probe: int, films_for: tuple[str, ...],
    faithfulness_films: int, sanity_films: int, steps: int, grid: int, baseline: str, batch_size: int,
    params: tuple[str, ...],
    seed: int, out_dir: Path | None, as_json: bool, strict: bool,
) -> None:  # fmt: skip
    """Score explanation methods on one model's fractured films, beside model-free controls.

    Pointing (exact and within 3.5% of the side), mass in box, IoU, deletion/insertion AUC, randomisation sanity,
    seconds and forward/backward passes per film, each with a 95% bootstrap interval. Writes leaderboard.json,
    leaderboard.md and a sortable leaderboard.html to OUT (default ./leaderboard-<date>). A method that fails
    is skipped and listed.

    \b
    Example:
      xray-xai leaderboard --model efficientnet-lite0 --data ../shared/data/fracatlas \\
          --method gradcam,layercam,captum:InputXGradient,grad-cam:EigenCAM --films 20 --out board
    """
    import datetime as dt

    if methods and all_methods:
        raise click.UsageError("give --method or --all, not both")
    chosen = api.split_names(list(methods)) or api.explainer_names()
    options = parse_or_bad_parameter(lambda: api.method_params(params, chosen))
    if out_dir is None:
        out_dir = Path(f"leaderboard-{dt.datetime.now():%Y%m%d-%H%M%S}")
    log = None if as_json else (lambda msg: click.echo(msg, err=True))
    result = api.leaderboard(
        model, data_root, chosen, checkpoint=checkpoint, dataset=dataset, split=split, films=films, probe=probe,
        budget_minutes=budget_minutes, films_per_method=_films_per_method(films_for),
        faithfulness_films=faithfulness_films, sanity_films=sanity_films, steps=steps, grid=grid, baseline=baseline,
        batch_size=batch_size, seed=seed, params=options, out_dir=out_dir, log=log, strict=strict,
    )  # fmt: skip
    if as_json:
        echo_json(result)
        return
    click.echo(Path(result["outputs"]["markdown"]).read_text())
    click.echo(f"wrote {result['outputs']['html']}, {result['outputs']['json']}")
