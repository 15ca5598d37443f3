"""``xray-xai train | evaluate | predict | models``: thin faces over :func:`xray_xai.api.train`,
:func:`~xray_xai.api.evaluate`, :func:`~xray_xai.api.predict` and :func:`~xray_xai.api.list_store` (all logic lives
behind the API, so scripts get the same)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from xray_xai import api
from xray_xai.cli._common import STRICT_HELP, echo_json, handle_errors, param_option


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


@click.command()
@click.option("--model", "model_name", required=True, help="Model plugin name (see `xray-xai plugins --kind model`).")
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
@click.option("--resume", is_flag=True, help="Continue the run's last saved epoch.")
@click.option("--pretrained/--no-pretrained", default=None, help="Start from ImageNet weights (if available).")
@click.option("--hidden", help="Hidden layer sizes of the head, e.g. 512,256 ('none': linear head, CAM applies).")
@click.option("--dropout", type=float, help="Dropout of the head.")
@click.option("--init", "init", type=click.Choice(["he", "xavier"]), help="Initialisation of the head.")
@click.option("--members", help="Ensemble members: trained model names or checkpoint paths, comma-separated.")
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
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
@click.option("--strict", is_flag=True, help=STRICT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@handle_errors
def train(
    model_name: str,
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
    as_json: bool,
) -> None:
    """Train a model on the train split, validate on val, keep the best epoch in the model store.

    Defaults are the published DenseNet-169 MURA recipe: SGD lr 1e-3 momentum 0.9, BCE, LR / 10 on a 5-epoch
    validation-loss plateau, early stop after --early-stop epochs without better validation accuracy. The run
    folder holds history.csv, curves.png, skipped.csv and a resumable last.pt. Ensembles need --members.

    \b
    Example:
      xray-xai synth phantoms --n-studies 60 --seed 0
      xray-xai train --model cnn-small --data phantoms --epochs 5 --image-size 64
      xray-xai train --model ensemble-mean --members cnn-small,convnet --data phantoms
      xray-xai train --model efficientnet-lite0 --data fracatlas --optimizer adamw \\
        --schedule cosine --monitor auroc --augment light --loss weighted-bce --epochs 6
    """
    result = api.train(
        model_name, data_root, dataset=dataset, epochs=epochs, batch_size=batch_size, image_size=image_size,
        letterbox=letterbox, lr=lr, optimizer=optimizer, weight_decay=weight_decay, schedule=schedule,
        monitor=monitor, loss=loss, early_stop=early_stop, seed=seed, device=device, resume=resume,
        augment="none" if no_augment else augment, out_dir=out_dir, pretrained=pretrained, max_images=max_images,
        progress=not as_json, channels_last=channels_last, amp=amp, strict=strict,
        # each epoch's line as it ends (click.echo flushes: `train ... 2> log` shows the epochs as they come)
        on_epoch=None if as_json else lambda row: click.echo(api.epoch_line(row), err=True),
        **_head_options(hidden, dropout, init, members),
    )  # fmt: skip
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
@click.option("--model", "model_name", help="Model name (newest trained in the store) or checkpoint path.")
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
    as_json: bool,
) -> None:
    """Image- and study-level metrics (AUROC, accuracy, precision, recall, specificity, F1, kappa) with 95% CIs.

    A study's probability is the mean over its views (threshold 0.5). On MURA-layout data the per-region kappa
    is shown beside the published radiologists and DenseNet-169 baseline (Rajpurkar et al. 2018, Table 1).

    \b
    Example:
      xray-xai evaluate --model cnn-small --data phantoms --split test --out eval/
      xray-xai evaluate --model cnn-small --checkpoint ~/.xray-xai/models/cnn-small/2026... --data phantoms --json
      xray-xai evaluate --model efficientnet-lite0 --data fracatlas --dataset fracatlas --tta
      xray-xai evaluate --model cnn-small --data scans/ --dataset folder -o labels=labels.csv --split all
    """
    if not model_name and checkpoint is None:
        raise click.UsageError("give --model NAME or --checkpoint PATH")
    result = api.evaluate(
        api.resolve_model(model_name, checkpoint),
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
    )
    if as_json:
        echo_json(result)
        return
    _print_evaluation(result)


def _print_evaluation(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    names = ["auroc", "accuracy", "precision", "recall", "specificity", "f1", "kappa"]
    for level in ("image", "study"):
        table = Table(title=f"{result['model']} on {result['split']}: {level} level")
        table.add_column("region")
        table.add_column("n")
        for n in names:
            table.add_column(n)
        rows = [("overall", result[level]["overall"]), *result[level]["per_region"].items()]
        for region, m in rows:
            cells = []
            for n in names:
                ci = (m.get("ci95") or {}).get(n)
                cells.append(_fmt(m[n]) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
            table.add_row(region, str(m["n"]), *cells)
        console.print(table)
    if "kappa_table" in result:
        table = Table(title=f"Cohen's kappa per region beside {result['kappa_reference']}")
        cols = ("ours", "radiologist_1", "radiologist_2", "radiologist_3", "model")
        for col in ("region", *cols):
            table.add_column(col)
        for row in result["kappa_table"]:
            table.add_row(row["region"], *(_fmt(row[c]) for c in cols))
        console.print(table)
    if result["skipped"]:
        listed = (result.get("files") or {}).get("skipped")
        click.echo(f"{len(result['skipped'])} image(s) skipped" + (f", listed in {listed}" if listed else ""), err=True)
    if result.get("warnings"):
        listed = (result.get("files") or {}).get("warnings")
        n_kept = len(result["warnings"])
        click.echo(f"{n_kept} damaged image(s) kept" + (f", listed in {listed}" if listed else ""), err=True)


@click.command()
@click.option("--model", "model_name", help="Model name (newest trained in the store) or checkpoint path.")
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
) -> None:
    """Probability of abnormal per image (and per study: mean over its views); no labels needed.

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
    rows, problems = api.predict(
        api.resolve_model(model_name, checkpoint),
        list(inputs) or None,
        data_root=data_root,
        split=split,
        dataset=dataset,
        batch_size=batch_size,
        device=device,
        progress=not as_json,
        tta=tta,
        strict=strict,
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


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def models(as_json: bool) -> None:
    """List the trained models in the store ($XRAY_XAI_HOME/models, default ~/.xray-xai/models).

    \b
    Example:
      xray-xai models
      xray-xai models --json | jq '.[].path'
    """
    entries = api.list_store()
    if as_json:
        echo_json(entries)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("name", "created", "dataset", "epochs", "val accuracy", "path"):
        table.add_column(col, overflow="fold")
    for e in entries:
        acc = (e.get("metrics") or {}).get("val_accuracy")
        table.add_row(
            e["name"], str(e.get("created") or "-"), str(e.get("dataset") or "-"), _fmt(e.get("epochs")), _fmt(acc),
            e.get("problem") or e["path"],
        )  # fmt: skip
    Console().print(table)
    if not entries:
        click.echo("no trained models yet: xray-xai train --model NAME --data DIR", err=True)
