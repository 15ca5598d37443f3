"""``xray-xai strata``: which subgroups a model fails, which clusters, and what it leans on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from xray_xai import api
from xray_xai.cli._common import echo_json, handle_errors


@click.command()
@click.option("--model", "model_name", help="Model name (newest stored checkpoint of it) or checkpoint path.")
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=True, path_type=Path),
    help="Weights to load (with --model NAME: checked to hold that model).",
)
@click.option("--data", "data_root", required=True, type=click.Path(exists=True, path_type=Path), help="Data set root.")
@click.option("--dataset", help="Data set layout (mura, fracatlas, folder, synthetic); detected if omitted.")
@click.option("--split", default="test", show_default=True, help="Split analysed (MURA 'valid' = 'test').")
@click.option(
    "--predictions",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV of xray-xai predict (path, probability) to use instead of running the model.",
)
@click.option(
    "--threshold",
    default=api.DECISION_THRESHOLD,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="p(abnormal) at or above which a film is called abnormal (sensitivity, specificity).",
)
@click.option("--column", "columns", multiple=True, help="Only this metadata column (repeatable; default: all).")
@click.option(
    "--shortcut",
    "shortcuts",
    multiple=True,
    metavar="COLUMN[=VALUE]",
    help="Binary column to check as a shortcut, e.g. hardware (repeatable; default: hardware, shortcut_marker).",
)
@click.option("--no-shortcuts", is_flag=True, help="Check no shortcut column.")
@click.option("--bootstrap", "n_boot", default=1000, show_default=True, type=click.IntRange(0), help="Resamples.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the bootstrap, clusters and TCAV.")
@click.option(
    "--correction",
    type=click.Choice(list(api.STRATA_CORRECTIONS)),
    default="holm",
    show_default=True,
    help="Multiple-comparison correction: holm (family-wise), bh (false discovery rate) or none.",
)
@click.option("--alpha", default=0.05, show_default=True, type=click.FloatRange(0, 1, min_open=True), help="Level.")
@click.option("--min-size", default=10, show_default=True, type=click.IntRange(1), help="Smallest subgroup tested.")
@click.option("--bins", default=4, show_default=True, type=click.IntRange(2), help="Quantile bins of numeric columns.")
@click.option(
    "--max-levels", default=8, show_default=True, type=click.IntRange(2), help="A numeric column with more is binned."
)
@click.option(
    "--clusters", "k", default=0, show_default=True, type=click.IntRange(0), help="K of cluster strata (0: none)."
)
@click.option("--cluster-on", type=click.Choice(["features", "explanations"]), default="features", show_default=True)
@click.option("--cluster-method", default="pca-kmeans", show_default=True, help="Clusterer plugin.")
@click.option("--tcav/--no-tcav", default=True, show_default=True, help="Concept test (TCAV) of each shortcut.")
@click.option("--tcav-concept-size", default=30, show_default=True, type=click.IntRange(5), help="Films per concept.")
@click.option("--tcav-runs", default=5, show_default=True, type=click.IntRange(2), help="Random concepts (runs).")
@click.option("--tcav-inputs", default=30, show_default=True, type=click.IntRange(1), help="Abnormal films scored.")
@click.option("--tcav-layer", help="Layer of the CAVs (default: three quarters down the stages to the target layer).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@handle_errors
def strata(model_name: str | None, checkpoint: Path | None, data_root: Path, columns: tuple[str, ...],
           shortcuts: tuple[str, ...], no_shortcuts: bool, as_json: bool, k: int, **options: Any) -> None:  # fmt: skip
    """Which subgroups a model fails, which clusters, and what it leans on (hidden stratification, shortcuts).

    Every metadata column of the films (FracAtlas: region and view flags, hardware, multiscan, fracture count;
    MURA: region, views per study; phantoms: finding, marker...) is cut into subgroups (numeric columns into
    quantile bins). Per subgroup: n, abnormal films, AUROC, sensitivity and specificity with 95% bootstrap
    intervals, and a test against the rest of the films (DeLong, Fisher) corrected for the number of tests; a
    subgroup significantly below the rest is flagged. --clusters K adds the clusters of xray-xai cluster as strata;
    each --shortcut column gets its performance with and without, the prediction's dependence on it, and a TCAV
    concept test. Writes strata.json, predictions.csv, forest.png and report.html to --out.

    \b
    Example:
      xray-xai strata --model cnn-small --data phantoms --split test --out strata/
      xray-xai strata --checkpoint run/ --data FracAtlas --shortcut hardware --clusters 4 --json
      xray-xai strata --data FracAtlas --predictions predictions.csv --no-tcav --correction bh
    """
    if checkpoint is None and not model_name and options.get("predictions") is None:
        raise click.UsageError("give --model NAME, --checkpoint PATH or --predictions CSV")
    result = api.strata(
        model_name, data_root, checkpoint=checkpoint, columns=list(columns) or None,
        shortcuts=[] if no_shortcuts else (list(shortcuts) or None), clusters=k, progress=not as_json, **options,
    )  # fmt: skip
    if as_json:
        echo_json(result)
    else:
        _report(result)


def _report(result: dict[str, Any]) -> None:
    """The flagged subgroups, each shortcut check in a line or two, the files."""
    sub = result["subgroups"]
    click.echo(
        f"{result['n_films']} films of {result['split']}; {sub['n_tests']} tests ({sub['correction']} correction, "
        f"alpha {sub['alpha']}); AUROC all films {_f(sub['overall']['auroc'])}"
    )
    flagged = [r for r in sub["rows"] if r["flagged"]]
    click.echo("flagged subgroups:" if flagged else "flagged subgroups: none")
    for r in flagged:
        parts = []
        for metric in r["flagged"]:
            t = r["tests"][metric]
            parts.append(f"{metric} {_f(r[metric])} vs {_f(r['rest'][metric])} (p adj {t['p_adjusted']:.2g})")
        click.echo(f"  {r['column']}={r['level']} (n={r['n']}): " + "; ".join(parts))
    for sc in result.get("shortcuts") or []:
        dep = sc["dependence_abnormal"]
        ci = dep.get("ci95") or [None, None]
        click.echo(
            f"shortcut {sc['column']}={sc['present']}: abnormal films with it p {_f(dep['mean_with'])}, without "
            f"{_f(dep['mean_without'])} (difference {_f(dep['difference'])} [{_f(ci[0])}, {_f(ci[1])}])"
        )
        ct = sc.get("concept_test")
        if ct and "skipped" not in ct:
            verdict = "significant" if ct["significant"] else "not significant"
            click.echo(f"  TCAV {_f(ct['score'])} vs random {_f(ct['random_score'])}: p {ct['p']:.2g}, {verdict}")
    cl = result.get("clusters")
    if cl and "rows" in cl:
        names = [r["level"] for r in cl["rows"] if r["flagged"]]
        click.echo(f"flagged clusters: {', '.join(names) if names else 'none'}")
    click.echo(f"report: {result['files']['report']}")


def _f(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"
