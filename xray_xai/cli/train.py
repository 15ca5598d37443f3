"""``xray-xai train | evaluate | predict | models``: thin faces over :func:`xray_xai.api.train`,
:func:`~xray_xai.api.evaluate`, :func:`~xray_xai.api.predict` and :func:`~xray_xai.api.list_store` (all logic lives
behind the API, so scripts get the same)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from xray_xai import api
from xray_xai.cli._common import (
    CACHE_HELP,
    MODEL_HELP,
    STRICT_HELP,
    announce_models,
    echo_json,
    echo_provenance,
    handle_errors,
    param_option,
    print_table,
)
from xray_xai.cli._torchrun import KeepsArgs, launch_if_asked, rank_zero_reports_first
from xray_xai.cli.calibrate import parse_levels, print_calibration


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


#: the options of ``train`` that a recipe may set (those left at their defaults give way to the recipe's)
_RECIPE_OPTIONS = (
    "dataset", "epochs", "batch_size", "image_size", "letterbox", "lr", "optimizer", "weight_decay", "schedule",
    "monitor", "loss", "early_stop", "seed", "guide", "guide_loss", "guide_weight", "guide_fraction", "guide_layer",
    "guide_start", "guide_temperature",
)  # fmt: skip


def _guide_losses(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--guide-loss``: one family or several joined with ``+``, each one of the known families."""
    families = [part.strip() for part in value.split("+")]
    known = api.TRAIN_CHOICES["guide_loss"]
    for family in families:
        if family not in known:
            raise click.BadParameter(f"{family!r} is not one of {', '.join(known)}")
    return "+".join(families)


def _guide_weights(ctx: click.Context, param: click.Parameter, value: str) -> float | tuple[float, ...]:
    """``--guide-weight``: one number >= 0, or a comma-separated list of them (one per guide-loss family)."""
    try:
        weights = tuple(float(w) for w in value.split(",") if w.strip())
    except ValueError:
        raise click.BadParameter(f"expected a number or comma-separated numbers, got {value!r}") from None
    if not weights or any(w < 0 for w in weights):
        raise click.BadParameter(f"weights must be numbers >= 0, got {value!r}")
    return weights[0] if len(weights) == 1 else weights


@click.command(cls=KeepsArgs)
@click.option("--model", "model_name", help="Model plugin name (see `xray-xai plugins --kind model`).")
@click.option(
    "--recipe", "recipe_name",
    help=f"A named recipe (model, data set and options; see docs/localisation.md): {', '.join(api.recipe_names())}. "
    "Options given here override it.",
)  # fmt: skip
@click.option("--data", "data_root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dataset", help="Dataset plugin: mura, fracatlas, synthetic, folder... (default: detected).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--image-size", type=click.IntRange(min=8), help="Input size (default: the model's preset).")
@click.option(
    "--letterbox", is_flag=True, help="Fit films into the input square keeping their aspect ratio (black bars)."
)
@click.option("--lr", type=float, help="Learning rate (default: 1e-3 for SGD and AdamW, 1e-4 for Adam).")
@click.option("--optimizer", type=click.Choice(api.TRAIN_CHOICES["optimizer"]), default="sgd", show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), help="Weight decay (default: 0.01 for AdamW, else 0).")
@click.option(
    "--schedule",
    type=click.Choice(api.TRAIN_CHOICES["schedule"]),
    default="plateau",
    show_default=True,
    help="plateau: LR / 10 after 5 epochs without lower val loss; cosine: half-epoch warm-up, cosine decay to 0.",
)
@click.option(
    "--monitor",
    type=click.Choice(api.TRAIN_CHOICES["monitor"]),
    default="accuracy",
    show_default=True,
    help="Validation metric that picks the kept epoch and drives --early-stop.",
)
@click.option("--loss", type=click.Choice(api.TRAIN_CHOICES["loss"]), default="bce", show_default=True)
@click.option(
    "--early-stop",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Patience (epochs without a better --monitor).",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, mps ...")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the last saved epoch of --out, or of the newest run of this model, data and seed.",
)
@click.option("--pretrained/--no-pretrained", default=None, help="Start from ImageNet weights (if available).")
@click.option("--hidden", help="Hidden layer sizes of the head, e.g. 512,256 ('none': linear head, CAM applies).")
@click.option("--dropout", type=float, help="Dropout of the head.")
@click.option("--init", "init", type=click.Choice(["he", "xavier"]), help="Initialisation of the head.")
@click.option(
    "--members",
    help="Ensemble members: trained model names or checkpoint paths, comma-separated (ensemble200: trains its own).",
)
@click.option("--max-images", type=click.IntRange(min=1), help="Use at most N images per split (quick runs).")
@click.option(
    "--augment",
    type=click.Choice(["standard", "light", "none"]),  # preprocessing.AUGMENTATIONS (not imported: numpy at start)
    default="standard",
    show_default=True,
    help="standard: flips, +-30 deg, 5% shift, +-10% zoom; light: flips and +-10 deg.",
)
@click.option("--no-augment", is_flag=True, help="Turn off training augmentation (same as --augment none).")
@click.option("--amp", is_flag=True, help="Mixed precision (CUDA only).")
@click.option(
    "--channels-last/--no-channels-last",
    default=True,
    show_default=True,
    help="NHWC memory format (faster on CPU and GPU for depthwise convolutions).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder (default: a new one under $XRAY_XAI_HOME/runs); one holding a run needs --resume.",
)
@click.option("--strict", is_flag=True, help=STRICT_HELP)
@click.option(
    "--guide", type=click.Choice(api.TRAIN_CHOICES["guide"]), default="none", show_default=True,
    help="boxes: add a loss that puts the model's evidence inside the ground-truth boxes of abnormal films.",
)  # fmt: skip
@click.option(
    "--guide-loss", default="outside", show_default=True, callback=_guide_losses,
    help="outside: share of the target layer's CAM mass outside the boxes; point: soft pointing game on that CAM; "
    "input-grad: input-gradient mass outside the boxes (Ross et al. 2017; about 10x slower); layercam: share of the "
    "default explainer's LayerCAM map (stride 4) outside the boxes (about 1.7x slower); layercam-point: soft pointing "
    "game on that map, blurred as the explainer shows it. Join families with + to add their terms "
    "(outside+layercam-point).",
)  # fmt: skip
@click.option(
    "--guide-weight", default="0.3", show_default=True, callback=_guide_weights,
    help="Weight of the guide term; with several families one for all or one each, comma-separated (0.3,0.05).",
)  # fmt: skip
@click.option(
    "--guide-fraction", default=1.0, show_default=True, type=click.FloatRange(min=0, max=1, min_open=True),
    help="Share of the abnormal training films whose boxes are used (a seeded draw).",
)  # fmt: skip
@click.option(
    "--guide-layer",
    help="Module whose map is guided (default: the model's target layer; for layercam the default explainer's stage).",
)
@click.option(
    "--guide-start", default=1, show_default=True, type=click.IntRange(min=1),
    help="First epoch with the guide term; the kept epoch is the best from it on.",
)  # fmt: skip
@click.option(
    "--guide-temperature", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
    help="Softmax temperature of point and layercam-point, in standard deviations of the map: below 1 the term "
    "weighs the map's peaks alone (the highest cell against the highest inside the boxes).",
)  # fmt: skip
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    help="Train data-parallel in N processes on this machine (torchrun; CPU: gloo, --device cuda: one GPU each). "
    "--batch-size stays the global batch (each process takes batch/N).",
)
@click.option("--cache", "film_cache", default="off", show_default=True, metavar="off|auto|DIR", help=CACHE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@handle_errors
def train(
    model_name: str | None,
    recipe_name: str | None,
    data_root: Path,
    dataset: str | None,
    epochs: int,
    batch_size: int,
    image_size: int | None,
    letterbox: bool,
    lr: float | None,
    optimizer: str,
    weight_decay: float | None,
    schedule: str,
    monitor: str,
    loss: str,
    early_stop: int,
    seed: int,
    device: str,
    resume: bool,
    pretrained: bool | None,
    hidden: str | None,
    dropout: float | None,
    init: str | None,
    members: str | None,
    max_images: int | None,
    augment: str,
    no_augment: bool,
    amp: bool,
    channels_last: bool,
    out_dir: Path | None,
    strict: bool,
    guide: str,
    guide_loss: str,
    guide_weight: float | tuple[float, ...],
    guide_fraction: float,
    guide_layer: str | None,
    guide_start: int,
    guide_temperature: float,
    nproc: int | None,
    film_cache: str,
    as_json: bool,
) -> None:
    """Train a model on the train split, validate on val, keep the best epoch in the model store.

    Defaults are the published DenseNet-169 MURA recipe: SGD lr 1e-3 momentum 0.9, BCE, LR / 10 on a 5-epoch
    validation-loss plateau, early stop after --early-stop epochs without better validation accuracy. Each run gets a
    new run folder (printed first; --resume continues the newest one) holding history.csv, curves.png, skipped.csv and
    a resumable last.pt. Ensembles need --members, except ensemble200 (DenseNet-201 + MobileNet-V1 + NASNet-Mobile).

    --nproc N (or `torchrun --nproc_per_node N -m xray_xai train ...`) runs the same recipe in N processes with
    DistributedDataParallel: the same global batches of --batch-size films, gradients averaged over the processes,
    validation on the whole split by rank 0, which alone writes the run folder and the store entry.

    \b
    Example:
      xray-xai synth phantoms --n-studies 60 --seed 0
      xray-xai train --model cnn-small --data phantoms --epochs 5 --image-size 64
      xray-xai train --model ensemble-mean --members cnn-small,convnet --data phantoms
      xray-xai train --model ensemble200 --data phantoms --epochs 1 --image-size 64
      xray-xai train --model efficientnet-lite0 --data fracatlas --optimizer adamw \\
        --schedule cosine --monitor auroc --augment light --loss weighted-bce --epochs 6 --cache auto
      xray-xai train --model cnn-small --data phantoms --image-size 64 --batch-size 16 --nproc 2
      xray-xai train --recipe fracatlas-lite0-guided --data ../shared/data/fracatlas
    """
    given = locals()
    options: dict[str, Any] = {k: given[k] for k in _RECIPE_OPTIONS}
    options["augment"] = "none" if no_augment else augment
    model_name, config, options = _apply_recipe(recipe_name, model_name, options)
    launch_if_asked(nproc, int(options.get("batch_size") or config.batch_size))
    say = _progress_lines(as_json)
    with rank_zero_reports_first():
        result = api.train(
            model_name, data_root, config, device=device, resume=resume, out_dir=out_dir, pretrained=pretrained,
            max_images=max_images, progress=not as_json, channels_last=channels_last, amp=amp, strict=strict,
            film_cache=film_cache, **options, on_epoch=lambda row: say(api.epoch_line(row)),
            on_run_dir=lambda folder: say(f"run folder: {folder}"),
            **_head_options(hidden, dropout, init, members),
        )  # fmt: skip
    if os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 alone reports
        _report(result, as_json)


def _progress_lines(as_json: bool) -> Any:
    """Where the run folder and each epoch's line go: stdout, or stderr with --json (stdout then stays one JSON
    value). click.echo flushes, so `train ... > train.log` shows them as they come."""
    return lambda line: click.echo(line, err=as_json)


def _report(result: Any, as_json: bool) -> None:
    """What ``train`` prints when the run ends: the result as JSON, or the skipped and damaged films and the kept
    checkpoint."""
    if as_json:
        echo_json(result.to_dict())
        return
    if result.skipped:
        click.echo(f"{len(result.skipped)} image(s) skipped, listed in {result.run_dir / 'skipped.csv'}", err=True)
    if result.warnings:
        listed = result.run_dir / "warnings.csv"
        click.echo(f"{len(result.warnings)} damaged image(s) kept, listed in {listed}", err=True)
    # an ensemble has no epoch of its own (its members were trained before): its row 0 is the check on val
    kept = f"best epoch {result.best_epoch}" if result.best_epoch else "ensemble of trained members (no epochs)"
    click.echo(f"{kept}: saved {result.checkpoint}")


def _apply_recipe(name: str | None, model_name: str | None, options: dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    """The model, the base config and the options to apply on it: with ``--recipe``, the options left at their
    defaults on the command line are dropped, so the recipe's values stand and those given override them."""
    if name is None:
        if model_name is None:
            raise click.UsageError("give --model (or --recipe)")
        return model_name, None, options
    found = api.recipe(name)
    ctx = click.get_current_context()
    given = {
        key: value for key, value in options.items()
        if ctx.get_parameter_source("no_augment" if key == "augment" and ctx.params.get("no_augment") else key)
        not in (click.core.ParameterSource.DEFAULT, None)
    }  # fmt: skip
    if "dataset" not in given and found.dataset is not None:
        given["dataset"] = found.dataset
    return model_name or found.model, found.config(), given


def _head_options(hidden: str | None, dropout: float | None, init: str | None, members: str | None) -> dict[str, Any]:
    """The model options given on the command line (``--hidden 512,256`` or ``none``, ``--dropout``, ``--init``,
    ``--members``); those not given are left to the model's defaults."""
    options: dict[str, Any] = {}
    if hidden is not None:
        try:
            hidden_clean = "" if hidden.strip().lower() in ("", "none") else hidden
            options["hidden"] = [int(h) for h in hidden_clean.split(",") if h.strip()]
        except ValueError:
            raise click.BadParameter(
                f"expected comma-separated integers or none, got {hidden!r}", param_hint="'--hidden'"
            ) from None
    if dropout is not None:
        options["dropout"] = dropout
    if init is not None:
        options["init"] = init
    if members:
        options["members"] = members
    return options


@click.command()
@click.option("--model", "model_name", help=MODEL_HELP)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, path_type=Path),
    help="A checkpoint folder or file (with --model NAME: checked to hold that model).",
)
@click.option("--data", "data_root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dataset", help="Dataset plugin: mura, fracatlas, synthetic, folder... (default: detected).")
@click.option("--split", default="test", show_default=True)
@click.option(
    "-o",
    "--option",
    "dataset_options",
    multiple=True,
    callback=param_option,
    metavar="KEY=VALUE",
    help="Option for the data set reader, as in `xray-xai data`, e.g. -o labels=labels.csv for a folder.",
)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--bootstrap", default=1000, show_default=True, type=click.IntRange(min=0), help="Resamples for CIs.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Write metrics + plots.")
@click.option("--tta", is_flag=True, help="Average each film with its horizontal and vertical flips (3 passes).")
@click.option("--strict", is_flag=True, help=STRICT_HELP)
@click.option("--threshold", type=float, help="Decision threshold (default: the sidecar's operating point, else 0.5).")
@click.option("--uncalibrated", is_flag=True, help="Use the model's raw probability, not the sidecar's calibration.")
@click.option(
    "--study-aggregation", type=click.Choice(api.STUDY_AGGREGATIONS), default="mean", show_default=True,
    help="A study's probability from its views': mean (MURA), max or noisy-or.",
)  # fmt: skip
@click.option("--calibration-bins", default=10, show_default=True, type=click.IntRange(min=1), help="Bins for ECE.")
@click.option("--adaptive-bins", is_flag=True, help="Equal-mass calibration bins (default: equal-width).")
@click.option("--specificities", callback=parse_levels, help="Report sensitivity at these (default 0.90,0.95).")
@click.option("--sensitivities", callback=parse_levels, help="Report specificity at these (default 0.90,0.95).")
@click.option("--cache", "film_cache", default="off", show_default=True, metavar="off|auto|DIR", help=CACHE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@handle_errors
def evaluate(
    model_name: str | None,
    checkpoint: Path | None,
    data_root: Path,
    dataset: str | None,
    split: str,
    dataset_options: dict[str, Any],
    batch_size: int,
    bootstrap: int,
    seed: int,
    device: str,
    out_dir: Path | None,
    tta: bool,
    strict: bool,
    threshold: float | None,
    uncalibrated: bool,
    study_aggregation: str,
    calibration_bins: int,
    adaptive_bins: bool,
    specificities: tuple[float, ...] | None,
    sensitivities: tuple[float, ...] | None,
    film_cache: str,
    as_json: bool,
) -> None:
    """Image- and study-level metrics (AUROC, accuracy, precision, recall, specificity, F1, kappa) with 95% CIs,
    and calibration (Brier, ECE, MCE, slope, intercept) with sensitivity at fixed specificities and vice versa.

    A study's probability is the mean over its views (--study-aggregation). The probability is the calibrated one
    and the threshold the operating point recorded by `xray-xai calibrate` (else 0.5), never tuned on this split.
    On MURA-layout data the per-region kappa is shown beside the published radiologists and DenseNet-169 baseline
    (Rajpurkar et al. 2018, Table 1).

    \b
    Example:
      xray-xai evaluate --model cnn-small --data phantoms --split test --out eval/
      xray-xai evaluate --model cnn-small --checkpoint ~/.xray-xai/models/cnn-small/2026... --data phantoms --json
      xray-xai evaluate --model efficientnet-lite0 --data fracatlas --dataset fracatlas --tta
      xray-xai evaluate --model cnn-small --data scans/ --dataset folder -o labels=labels.csv --split all
    """
    if not model_name and checkpoint is None:
        raise click.UsageError("give --model NAME or --checkpoint PATH")
    model = api.resolve_model(model_name, checkpoint)
    lines = announce_models(model, dataset=dataset, data_root=data_root)
    result = api.evaluate(
        model,
        data_root,
        dataset=dataset,
        dataset_options=dataset_options,
        split=split,
        batch_size=batch_size,
        bootstrap=bootstrap,
        seed=seed,
        out_dir=out_dir,
        device=device,
        progress=not as_json,
        tta=tta,
        strict=strict,
        threshold=threshold,
        uncalibrated=uncalibrated,
        study_aggregation=study_aggregation,
        calibration_bins=calibration_bins,
        adaptive_bins=adaptive_bins,
        specificities=specificities or api.DEFAULT_LEVELS,
        sensitivities=sensitivities or api.DEFAULT_LEVELS,
        film_cache=film_cache,
    )
    if as_json:
        echo_json(result)
        return
    _print_evaluation(result)
    print_calibration(result)
    echo_provenance(lines)


def _print_evaluation(result: dict[str, Any]) -> None:
    from rich.markup import escape

    names = ["auroc", "accuracy", "precision", "recall", "specificity", "f1", "kappa"]
    for level in ("image", "study"):
        rows = []
        for region, m in [("overall", result[level]["overall"]), *result[level]["per_region"].items()]:
            cells = []
            for n in names:
                ci = (m.get("ci95") or {}).get(n)
                cells.append(escape(_fmt(m[n]) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")))
            rows.append([region, str(m["n"]), *cells])
        print_table(("region", "n", *names), rows, title=f"{result['model']} on {result['split']}: {level} level")
    if "kappa_table" in result:
        cols = ("ours", "radiologist_1", "radiologist_2", "radiologist_3", "model")
        rows = [[row["region"], *(_fmt(row[c]) for c in cols)] for row in result["kappa_table"]]
        print_table(("region", *cols), rows, title=f"Cohen's kappa per region beside {result['kappa_reference']}")
    if result["skipped"]:
        listed = (result.get("files") or {}).get("skipped")
        click.echo(f"{len(result['skipped'])} image(s) skipped" + (f", listed in {listed}" if listed else ""), err=True)
    if result.get("warnings"):
        listed = (result.get("files") or {}).get("warnings")
        n_kept = len(result["warnings"])
        click.echo(f"{n_kept} damaged image(s) kept" + (f", listed in {listed}" if listed else ""), err=True)


@click.command()
@click.option("--model", "model_name", help=MODEL_HELP)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, path_type=Path),
    help="A checkpoint folder or file (with --model NAME: checked to hold that model).",
)
@click.option("--input", "inputs", multiple=True, type=click.Path(exists=True, path_type=Path), help="Image or folder.")
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dataset", help="Dataset plugin reading --data (default: detected).")
@click.option("--split", help="Split of --data (default: all).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Rows as JSON on stdout.")
@click.option("--tta", is_flag=True, help="Average each film with its horizontal and vertical flips (3 passes).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Write rows to a CSV file.")
@click.option("--strict", is_flag=True, help=STRICT_HELP)
@click.option("--threshold", type=float, help="Decision threshold (default: the sidecar's operating point, else 0.5).")
@click.option("--uncalibrated", is_flag=True, help="Show the model's raw probability, not the sidecar's calibration.")
@click.option(
    "--study-aggregation", type=click.Choice(api.STUDY_AGGREGATIONS), default="mean", show_default=True,
    help="A study's probability from its views': mean (MURA), max or noisy-or.",
)  # fmt: skip
@handle_errors
def predict(
    model_name: str | None,
    checkpoint: Path | None,
    inputs: tuple[Path, ...],
    data_root: Path | None,
    dataset: str | None,
    split: str | None,
    batch_size: int,
    device: str,
    as_json: bool,
    tta: bool,
    csv_path: Path | None,
    strict: bool,
    threshold: float | None,
    uncalibrated: bool,
    study_aggregation: str,
) -> None:
    """Probability of abnormal per image (and per study: mean over its views); no labels needed.

    The probability is calibrated when `xray-xai calibrate` recorded a calibration (the model's own is in
    probability_raw) and the threshold is its operating point (else 0.5), unless --uncalibrated / --threshold.

    Inputs are PNG/JPEG/DICOM files or folders (each sub-folder a study), or a data set split. Unreadable files
    are skipped and listed on stderr (and, with --csv, in NAME.skipped.csv beside it); none readable is an error.

    \b
    Example:
      xray-xai predict --model cnn-small --input films/ --csv predictions.csv
      xray-xai predict --model cnn-small --data phantoms --split test --json
    """
    if not model_name and checkpoint is None:
        raise click.UsageError("give --model NAME or --checkpoint PATH")
    if bool(inputs) == (data_root is not None):
        raise click.UsageError("give either --input (one or more) or --data")
    model = api.resolve_model(model_name, checkpoint)
    lines = announce_models(model, dataset=dataset, data_root=data_root, inputs=inputs)
    rows, problems = api.predict(
        model,
        list(inputs) or None,
        data_root=data_root,
        split=split,
        dataset=dataset,
        batch_size=batch_size,
        device=device,
        progress=not as_json,
        tta=tta,
        strict=strict,
        threshold=threshold,
        uncalibrated=uncalibrated,
        study_aggregation=study_aggregation,
    )
    warned = [p for p in problems if p.severity == "warning"]
    problems = [p for p in problems if p.severity != "warning"]
    for p in problems:
        click.echo(f"skipped: {p}", err=True)
    for p in warned:
        click.echo(f"warning: {p}", err=True)
    if csv_path is not None:
        listed = api.write_predictions(csv_path, rows, problems, warnings=warned)
        if listed is not None and problems:
            click.echo(f"{len(problems)} file(s) skipped, listed in {listed}", err=True)
    if as_json:
        echo_json(rows)
    elif csv_path is None:
        click.echo(api.predictions_csv(rows), nl=False)
    for line in lines:  # on stderr: stdout may be the CSV
        click.echo(f"model: {line}", err=True)


def _source(source: Any) -> str:
    """Where a stored model came from: ``imported from FILE (sha256 ..., ARCH)``, or ``trained`` by xray-xai."""
    if isinstance(source, dict) and source.get("kind") == "imported":
        return f"imported from {source.get('file')} (sha256 {str(source.get('sha256'))[:12]}, {source.get('arch')})"
    return "trained"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def models(as_json: bool) -> None:
    """List the models that ship with xray-xai and the trained models in the store ($XRAY_XAI_HOME/models, default
    ~/.xray-xai/models), with the data set each was trained on and its AUROC (test AUROC from the model card for a
    shipped model, validation AUROC of the kept epoch for a trained one).

    \b
    Example:
      xray-xai models
      xray-xai models --json | jq '.[].path'
    """
    entries = api.list_models()
    if as_json:
        echo_json(entries)
        return
    from rich.markup import escape

    rows = []
    for e in entries:
        if e.get("shipped"):
            kind, auroc = "shipped", (e.get("test") or {}).get("auroc")
        else:
            kind, auroc = _source(e.get("source")), (e.get("metrics") or {}).get("val_auroc")
        rows.append([
            e["name"], kind, str(e.get("created") or "-")[:19], str(e.get("dataset") or "-"), _fmt(e.get("epochs")),
            (_fmt(auroc) + (" test" if e.get("shipped") else " val")) if auroc is not None else "-",
            escape(e.get("problem") or e["path"]),
        ])  # fmt: skip
    print_table(("name", "source", "created", "dataset", "epochs", "AUROC", "path"), rows)
    if not any(not e.get("shipped") for e in entries):
        click.echo("no trained models yet: xray-xai train --model NAME --data DIR", err=True)
