"""Run folders (issue 20, finding 6): every training run writes into a folder of its own, printed and recorded in the
sidecar; ``--resume`` continues the newest one; an ``--out`` that holds a run is refused instead of overwritten."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_training import make_tiny_mura

from xray_xai.cli import main
from xray_xai.models.store import read_sidecar


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_mura(tmp_path_factory.mktemp("runs") / "data", n_patients=40, size=24)


def _train(data: Path, epochs: int, *extra: str) -> tuple[str, str]:
    res = CliRunner().invoke(
        main,
        ["train", "--model", "cnn-small", "--data", str(data), "--epochs", str(epochs), "--image-size", "24",
         "--early-stop", "5", *extra],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return res.stdout, res.stderr


def _run_folder(stdout: str) -> Path:
    lines = [line for line in stdout.splitlines() if line.startswith("run folder: ")]
    assert len(lines) == 1, stdout
    return Path(lines[0].removeprefix("run folder: "))


def _epochs(run: Path) -> list[str]:
    return [row["epoch"] for row in csv.DictReader((run / "history.csv").open())]


def test_two_runs_in_a_row_keep_both_histories_and_resume_continues_the_newest(data: Path) -> None:
    first_out, _ = _train(data, 2)
    first = _run_folder(first_out)
    # printed before the epochs, on stdout (so `train ... > log` holds it), then one line per epoch
    lines = first_out.splitlines()
    assert lines[0].startswith("run folder: ") and [x.split()[0] for x in lines[1:3]] == ["epoch=1", "epoch=2"]
    first_history = (first / "history.csv").read_text()
    first_last = (first / "last.pt").read_bytes()

    second = _run_folder(_train(data, 1)[0])
    assert second != first and second.parent == first.parent
    assert (first / "history.csv").read_text() == first_history, "the 1-epoch run replaced the 2-epoch history"
    assert (first / "last.pt").read_bytes() == first_last and (first / "curves.png").is_file()
    assert _epochs(first) == ["1", "2"] and _epochs(second) == ["1"]

    # the sidecar of each checkpoint names its own run folder
    for run in (first, second):
        checkpoint = json.loads((run / "result.json").read_text())["checkpoint"]
        assert read_sidecar(checkpoint)["run_dir"] == str(run)

    # --resume without --out continues the newest run (the 1-epoch one), in place
    resumed = _run_folder(_train(data, 2, "--resume")[0])
    assert resumed == second and _epochs(second) == ["1", "2"]
    assert (first / "history.csv").read_text() == first_history


def test_an_out_folder_holding_a_run_is_refused_unless_resuming(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    stdout, _ = _train(data, 1, "--out", str(run))
    assert _run_folder(stdout) == run
    before = (run / "history.csv").read_text()
    res = CliRunner().invoke(
        main, ["train", "--model", "cnn-small", "--data", str(data), "--epochs", "1", "--image-size", "24",
               "--out", str(run)],
    )  # fmt: skip
    assert res.exit_code == 1
    assert res.stderr.startswith("error: ") and str(run) in res.stderr and "--resume" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert (run / "history.csv").read_text() == before
    stdout, _ = _train(data, 2, "--out", str(run), "--resume")
    assert _run_folder(stdout) == run and _epochs(run) == ["1", "2"]


def test_json_keeps_stdout_one_value_and_names_the_run_folder(data: Path) -> None:
    stdout, stderr = _train(data, 1, "--json")
    result = json.loads(stdout)
    run = Path(result["run_dir"])
    assert run.is_dir() and f"run folder: {run}" in stderr and "epoch=1" in stderr
    assert read_sidecar(result["checkpoint"])["run_dir"] == str(run)
