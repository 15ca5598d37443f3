"""The demo end to end at a reduced size, then the two commands README shows after it."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
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


def test_quick_demo_keeps_its_models_out_of_the_store(tmp_path: Path, monkeypatch: Any) -> None:
    """Issue 20, finding 5: ``demo --quick`` stored its tiny models, which then became the newest ``densenet-full``.
    The command line asks for them in OUT/models (and names them by folder); the full demo still stores them."""
    import xray_xai.demo as demo_module

    seen: dict[str, Any] = {}

    def fake_demo(out: Any, *, config: Any, progress: bool, log: Any, store: bool) -> dict[str, Any]:
        seen.update(config=config, store=store)
        folder = Path(out) / "models" if not store else Path("/store")
        return {
            "out": str(out), "report": str(Path(out) / "report" / "report.html"), "total_seconds": 1.0,
            "models": {"efficientnet-lite0": str(folder / "efficientnet-lite0"), "densenet-full": str(folder / "dn")},
            "stored": store, "example_image": "film.png", "phantoms": str(Path(out) / "phantoms"),
        }  # fmt: skip

    monkeypatch.setattr(demo_module, "demo", fake_demo)
    quick = CliRunner().invoke(main, ["demo", "--quick", "--out", str(tmp_path / "q")])
    assert quick.exit_code == 0, quick.output
    assert seen["store"] is False and seen["config"] == DemoConfig.quick()
    assert f"models kept in {tmp_path / 'q' / 'models'} (not in the store)" in quick.stdout
    assert f"explain --model {tmp_path / 'q' / 'models' / 'dn'} " in quick.stdout  # by folder, not by name
    full = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "f")])
    assert full.exit_code == 0 and seen["store"] is True and seen["config"] == DemoConfig()
    assert "models in the store" in full.stdout and "explain --model densenet-full " in full.stdout


def test_training_can_keep_its_checkpoint_in_a_folder(tmp_path: Path) -> None:
    """What the quick demo relies on: ``save=<folder>`` puts the best weights there, the store stays empty."""
    from test_training import make_tiny_mura

    from xray_xai.models.training import train

    data = make_tiny_mura(tmp_path / "data", n_patients=12, size=24)
    res = train("cnn-small", data, dataset="mura", epochs=1, image_size=24, progress=False,
                dataset_options={"val_fraction": 0.3}, save=tmp_path / "models" / "cnn-small")  # fmt: skip
    assert res.checkpoint == tmp_path / "models" / "cnn-small"
    assert store.read_sidecar(res.checkpoint)["run_dir"] == str(res.run_dir)
    assert store.list_store() == []


def test_demo_run_again_into_its_folder_replaces_its_runs(tmp_path: Path, monkeypatch: Any) -> None:
    """A new training run never writes into a folder holding an earlier run; the demo's own earlier runs are
    replaced when it is run again into its folder (so it still works twice in a row)."""
    import xray_xai.demo as demo_module

    out = tmp_path / "demo"
    (out / "runs" / "densenet-full").mkdir(parents=True)
    (out / "runs" / "densenet-full" / "history.csv").write_text("epoch\n1\n")
    (out / "demo.json").write_text("{}")

    class Stop(Exception):
        pass

    def stop(*args: Any, **kwargs: Any) -> None:
        raise Stop

    monkeypatch.setattr(demo_module, "_synthesise", stop)
    with pytest.raises(Stop):  # stopped at step 1: the folder was accepted and its runs cleared
        demo(out, config=DemoConfig.quick(), progress=False)
    assert not (out / "runs").exists() and (out / "demo.json").exists()
