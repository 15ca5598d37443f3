from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_training import make_tiny_mura

from xray_xai.cli import main
from xray_xai.models.metrics import METRIC_NAMES


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "models"])
def test_help_has_an_example(command: str) -> None:
    res = CliRunner().invoke(main, [command, "--help"])
    assert res.exit_code == 0 and "Example:" in res.output and f"xray-xai {command}" in res.output


def test_train_evaluate_predict_models(tmp_path: Path) -> None:
    # the default MURA val_fraction (0.1) needs more patients for a val split: 40 patients, 4 in val on average
    root = make_tiny_mura(tmp_path / "data", n_patients=40, size=24)
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "train",
            "--model",
            "cnn-small",
            "--data",
            str(root),
            "--epochs",
            "1",
            "--image-size",
            "24",
            "--hidden",
            "16",
            "--dropout",
            "0.1",
            "--out",
            str(tmp_path / "run"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    trained = json.loads(res.stdout)
    assert trained["best_epoch"] == 1 and Path(trained["checkpoint"]).is_dir()

    res = runner.invoke(
        main,
        [
            "evaluate",
            "--model",
            "cnn-small",
            "--data",
            str(root),
            "--bootstrap",
            "50",
            "--json",
            "--out",
            str(tmp_path / "eval"),
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for level in ("image", "study"):
        for m in (out[level]["overall"], *out[level]["per_region"].values()):
            assert set(METRIC_NAMES) <= set(m) and {"tn", "fp", "fn", "tp", "sensitivity"} <= set(m)
        assert set(out[level]["per_region"]) == {"hand", "wrist"}
    assert out["kappa_table"][-1]["region"] == "overall"
    assert (tmp_path / "eval" / "roc.png").exists()

    res = runner.invoke(main, ["evaluate", "--model", "cnn-small", "--data", str(root), "--bootstrap", "20"])
    assert res.exit_code == 0 and "kappa" in res.output

    csv_path = tmp_path / "pred.csv"
    res = runner.invoke(
        main,
        [
            "predict",
            "--model",
            "cnn-small",
            "--checkpoint",
            trained["checkpoint"],
            "--data",
            str(root),
            "--split",
            "test",
            "--csv",
            str(csv_path),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(csv_path.open()))
    assert rows and 0.0 <= float(rows[0]["probability"]) <= 1.0 and rows[0]["study_probability"]

    res = runner.invoke(main, ["models", "--json"])
    assert res.exit_code == 0
    listed = json.loads(res.stdout)
    assert [e["name"] for e in listed if not e["shipped"]] == ["cnn-small"]
    assert {e["name"] for e in listed if e["shipped"]} == {"fracatlas-lite0", "fracatlas-lite0-guided"}


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["evaluate", "--model", "cnn-small", "--data", str(tmp_path)])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "error:" in res.output
    res = runner.invoke(main, ["train", "--model", "ensemble-mean", "--data", str(tmp_path), "--members", "x"])
    assert res.exit_code == 1 and res.output == "error: an ensemble needs at least two members, got ['x']\n"
    res = runner.invoke(main, ["predict", "--model", "cnn-small"])
    assert res.exit_code == 2 and "give either --input (one or more) or --data" in res.output


def test_train_logs_each_epoch_as_it_ends_with_a_readable_lr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`xray-xai train ... 2> log` shows finished epochs before the run ends (here: a run that fails in epoch 2),
    and a learning rate of 5e-4 is printed as such, not as lr=0.000."""
    import re

    from xray_xai.errors import DataError
    from xray_xai.models import epochs

    real_epoch = epochs._epoch

    def failing_in_epoch_2(*args: object, **kwargs: object) -> object:
        if args[6] == 2:  # the epoch number
            raise DataError("films", "disk gone in epoch 2")
        return real_epoch(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(epochs, "_epoch", failing_in_epoch_2)
    root = make_tiny_mura(tmp_path / "data", n_patients=40, size=24)
    res = CliRunner().invoke(
        main,
        ["train", "--model", "cnn-small", "--data", str(root), "--epochs", "3", "--image-size", "24", "--optimizer",
         "adam", "--lr", "5e-4", "--out", str(tmp_path / "run")],
    )  # fmt: skip
    assert res.exit_code != 0 and "disk gone in epoch 2" in res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("epoch=")]
    assert len(lines) == 1 and lines[0].startswith("epoch=1  ")
    assert re.search(r"  lr=5\.00e-04  ", lines[0]), lines[0]
