"""``xray-xai data`` and ``xray-xai synth`` through click's CliRunner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner
from xray_xai_plugins.datasets.mura import MuraDataset

from xray_xai.cli import main
from xray_xai.sdk.interfaces import Tags
from xray_xai.sdk.registry import datasets
from xray_xai.testing.datasets import write_tiny_mura


def _run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_data_json_counts_on_a_mura_tree(tmp_path: Path) -> None:
    mura = write_tiny_mura(tmp_path)
    result = _run("data", str(mura.parent), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["dataset"] == "mura"
    assert summary["images"] == {"total": 19, "abnormal": 10, "normal": 9, "unknown": 0}
    assert summary["studies"]["total"] == 11 and summary["studies"]["abnormal"] == 5
    assert summary["splits"]["test"]["images"]["total"] == 5
    assert summary["splits"]["test"]["studies"] == {"total": 3, "abnormal": 1, "normal": 2, "unknown": 0}
    assert sum(s["images"]["total"] for s in summary["splits"].values()) == 19
    assert summary["regions"]["wrist"]["images"]["total"] == 7
    cells = {(row["split"], row["region"]): row["images"]["total"] for row in summary["table"]}
    assert cells[("test", "elbow")] == 1 and sum(cells.values()) == 19
    assert summary["problem_count"] == 0 and summary["problems"] == []


def test_data_text_lists_problems_and_exits_zero(tmp_path: Path) -> None:
    mura = write_tiny_mura(tmp_path)
    (mura / "valid_labeled_studies.csv").unlink()
    (mura / "train" / "XR_HAND" / "patient00005" / "study1_positive" / "image1.png").write_bytes(b"garbage")
    result = _run("data", str(mura), "--check-images")
    assert result.exit_code == 0, result.output
    assert "mura" in result.output and "wrist" in result.output
    assert "valid_labeled_studies.csv" in result.output
    assert "image1.png" in result.output  # the unreadable film found by --check-images
    assert "2 problem(s)" in result.output


def test_data_with_named_reader_and_options(tmp_path: Path) -> None:
    mura = write_tiny_mura(tmp_path)
    result = _run("data", str(mura), "--dataset", "mura", "-o", 'regions=["elbow"]', "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert list(summary["regions"]) == ["elbow"] and summary["images"]["total"] == 5
    result = _run("data", str(mura), "--dataset", "murra")
    assert result.exit_code == 1 and "did you mean 'mura'" in result.output
    result = _run("data", str(mura), "-o", "novalue")
    assert result.exit_code == 2 and "Invalid value for '--option': 'novalue': expected KEY=VALUE" in result.output


def test_data_missing_directory_is_one_line_exit_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["data", str(tmp_path / "absent")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "absent" in lines[0] and "no such folder" in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["synth", "out"], "Missing option '--n-studies'"),
        (["synth", "out", "--n-studies", "0"], "'--n-studies': 0 is not in the range x>=1"),
        (["synth", "out", "--n-studies", "3", "--regions", "knee"], "unknown region(s) knee; choose from elbow"),
        (["synth", "out", "--n-studies", "3", "--abnormal-fraction", "1.5"], "'--abnormal-fraction': 1.5 is not"),
    ],
)
def test_synth_usage_errors_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [args[0], str(tmp_path / args[1]), *args[2:]])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


class _StandInGenerator(MuraDataset):
    """Stands in for the synthetic plugin: records what it was asked for, writes a tiny MURA tree."""

    name: ClassVar[str] = "synthetic"
    tags: ClassVar[Tags] = Tags(generator=True, has_studies=True)
    calls: ClassVar[list[dict[str, Any]]] = []

    @classmethod
    def detect(cls, root: str | Path) -> bool:
        return (Path(root) / "stand-in.json").is_file()

    @classmethod
    def generate(cls, out: str | Path, *, n_studies: int, seed: int = 0, **options: Any) -> Path:
        cls.calls.append({"out": Path(out), "n_studies": n_studies, "seed": seed, **options})
        write_tiny_mura(out)
        (Path(out) / "stand-in.json").write_text("{}")
        return Path(out)


@pytest.fixture
def stand_in() -> Iterator[type[_StandInGenerator]]:
    datasets.unregister("synthetic")
    datasets.register(_StandInGenerator, package="tests")
    _StandInGenerator.calls.clear()
    try:
        yield _StandInGenerator
    finally:
        datasets.reset()


def test_synth_calls_the_registered_generator(stand_in: type[_StandInGenerator], tmp_path: Path) -> None:
    out = tmp_path / "phantoms"
    args = ["synth", str(out), "--n-studies", "11", "--seed", "4", "--regions", "wrist,elbow", "--image-size", "32"]
    result = _run(*args, "--json")
    assert result.exit_code == 0, result.output
    assert stand_in.calls == [{"out": out, "n_studies": 11, "seed": 4, "regions": ("wrist", "elbow"), "image_size": 32}]
    payload = json.loads(result.output)
    assert payload["path"] == str(out)
    assert payload["summary"]["dataset"] == "synthetic" and payload["summary"]["studies"]["total"] == 11
    text = _run("synth", str(tmp_path / "again"), "--n-studies", "2", "--abnormal-fraction", "0.5")
    assert text.exit_code == 0 and "wrote 11 studies" in text.output
    assert stand_in.calls[-1]["abnormal_fraction"] == 0.5


def test_synth_with_the_real_generator(tmp_path: Path) -> None:
    if "synthetic" not in datasets.names():
        pytest.skip("the synthetic dataset plugin is not installed")
    out = tmp_path / "phantoms"
    result = _run("synth", str(out), "--n-studies", "4", "--seed", "0", "--image-size", "64", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    assert summary["dataset"] == "synthetic" and summary["studies"]["total"] == 4
    again = json.loads(_run("data", str(out), "--json").output)
    assert again["dataset"] == "synthetic" and again["images"] == summary["images"]


def test_help_has_examples() -> None:
    for command in ("synth", "data"):
        result = _run(command, "--help")
        assert result.exit_code == 0 and "Example:" in result.output and f"xray-xai {command}" in result.output
