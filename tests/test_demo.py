"""The demo end to end at a reduced size, then the two commands README shows after it."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from click.testing import CliRunner

from xray_xai.cli import main
from xray_xai.demo import DemoConfig, demo
from xray_xai.models import store


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.external: list[str] = []

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("src", "href") and value and value.startswith(("http:", "https:", "//")):
                self.external.append(value)


def test_demo_quick_end_to_end_then_readme_commands(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    said: list[str] = []
    summary = demo(out, config=DemoConfig.quick(), progress=False, log=said.append)
    # the eight steps, announced in order and each timed
    assert [line.split("] ")[0] for line in said] == [f"[{i}/8" for i in range(1, 9)]
    assert said[0].endswith("synthetic phantoms") and said[-1].endswith("write the report")
    assert list(summary["seconds"]) == [line.split("] ", 1)[1] for line in said]

    report = Path(summary["report"])
    parser = _Text()
    parser.feed(report.read_text(encoding="utf-8"))
    text = " ".join(parser.text)
    assert parser.external == []  # self-contained: nothing fetched from the internet
    for method in DemoConfig.quick().methods:
        assert method in text
    assert "Model metrics" in text and "Audit" in text and "Clusters" in text
    saved = json.loads((report.parent / "report.json").read_text())
    assert {row["method"] for row in saved["audit"]["pairs"]} == set(DemoConfig.quick().methods)

    explained = json.loads((out / "explanations" / "summary.json").read_text())
    assert explained["n_explained"] > 0  # abnormal test films are explained whatever the model predicts

    # both models are in the store, so names resolve as the docs promise
    names = {row["name"] for row in store.list_store()}
    assert {"efficientnet-lite0", "densenet-full"} <= names

    image = summary["example_image"]
    assert image and Path(image).exists()
    runner = CliRunner()
    explained = runner.invoke(
        main, ["explain", "--model", "densenet-full", "--method", "saliency", "--input", image,
               "--out", str(tmp_path / "exp"), "--json"],
    )  # fmt: skip
    assert explained.exit_code == 0, explained.output
    assert list((tmp_path / "exp").rglob("*.png"))
    clustered = runner.invoke(
        main, ["cluster", "--model", "densenet-full", "--data", summary["phantoms"], "--k", "2", "--threshold", "0",
               "--out", str(tmp_path / "clu"), "--json"],
    )  # fmt: skip
    assert clustered.exit_code == 0, clustered.output
    assert (tmp_path / "clu" / "assignments.csv").exists()


def test_demo_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("do not delete")
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--quick"])
    assert result.exit_code == 1
    assert "not empty" in result.stderr and (tmp_path / "mine.txt").exists()
