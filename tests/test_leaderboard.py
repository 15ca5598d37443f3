"""The leaderboard: pass counting, the film budget, a tiny end-to-end run (skip-and-list, outputs) and the CLI."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from xray_xai_plugins.explainers import captum_family

from xray_xai.audit.leaderboard import PassCounter, allocate_films, leaderboard, write_outputs
from xray_xai.sdk import Attribution, TorchExplainer
from xray_xai.sdk.interfaces import Box, Record
from xray_xai.sdk.registry import explainers
from xray_xai.testing.explainers import example_images, tiny_convnet


@pytest.fixture(autouse=True, scope="module")
def _captum_family() -> None:
    if "captum" not in explainers.families():
        explainers.register_family("captum", captum_family.members, package="xray-xai")
    warnings.simplefilter("ignore")


class Fails(TorchExplainer):
    """Fails on the second batch: a method that breaks midway is skipped and listed, the others go on."""

    name = "test-fails-midway"
    description = "test explainer that raises"
    calls = 0

    def attribute(self, model: Any, images: Any, sign: float) -> Attribution:
        type(self).calls += 1
        if type(self).calls > 1:
            raise RuntimeError("boom\nsecond line")
        return Attribution(raw=images[:, 0], probabilities=images[:, 0, 0, 0] * 0)


@pytest.fixture
def failing() -> Iterator[None]:
    Fails.calls = 0
    explainers.register(Fails)
    try:
        yield
    finally:
        explainers.unregister(Fails.name)


def _records(tmp_path: Path, n: int = 5) -> list[Record]:
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        film = 0.2 + 0.1 * rng.random((40, 40))
        film[10:20, 12:22] = 0.9
        path = tmp_path / f"film{i}.png"
        Image.fromarray((film * 255).astype(np.uint8)).save(path)
        recs.append(Record(path=path, split="test", label=1, boxes=(Box(12, 10, 22, 20),)))
    recs.append(Record(path=tmp_path / "film0.png", split="test", label=0))  # not fractured: left out
    return recs


def test_pass_counter_counts_forward_and_backward_images() -> None:
    model = tiny_convnet(seed=0)
    x = example_images(model, batch=3)
    counter = PassCounter()
    with counter.counting(model):
        explainers.get("gradcam")().explain(model, x)
        explainers.get("captum:InputXGradient")().explain(model, x)
    # gradcam: one forward (+ one for nothing else); InputXGradient: the attribution pass and the probability pass
    assert counter.forward == 3 + 6 and counter.backward == 3 + 3
    with counter.counting(model):
        pass
    assert not model._forward_hooks


def test_allocate_films_shares_the_budget_cheapest_first() -> None:
    costs = {"cheap": 1.0, "mid": 10.0, "dear": 100.0}
    plan = allocate_films(costs, {}, budget_s=330.0, probe=2, most=50)
    assert plan["cheap"] == 50  # capped: its share (110 s) buys more films than there are
    assert plan["mid"] == 14  # (330 - 50) / 2 = 140 s
    assert plan["dear"] == 2  # what is left (140 s) buys one: never fewer than the probe
    assert allocate_films(costs, {"cheap": 1000.0}, 330.0, 2, 50)["cheap"] == 2


def test_leaderboard_end_to_end_skips_and_lists_a_failing_method(tmp_path: Path, failing: None) -> None:
    model = tiny_convnet(seed=0, image_size=32)
    methods = ["gradcam", "captum:Saliency", "test-fails-midway", "captum:Occlusion"]
    result = leaderboard(
        model, methods, _records(tmp_path), faithfulness_films=3, sanity_films=2, steps=4, n_boot=50,
        explainer_options={"captum:Occlusion": {"grid": 2}}, batch_size=2,
    )  # fmt: skip
    names = [r["method"] for r in result["rows"]]
    assert names == ["gradcam", "captum:Saliency", "captum:Occlusion"]
    assert result["skipped"] == [{"method": "test-fails-midway", "status": "skipped", "reason": "RuntimeError: boom"}]
    assert result["n_films"] == 5 and set(result["controls"]) == {"brightness", "edges", "random"}
    row = result["rows"][0]
    assert row["n_films"] == 5 and row["n_faithfulness"] == 3 and row["n_sanity"] == 2
    for block in ("localisation", "faithfulness", "cost"):
        for stat in row[block].values():
            assert stat["ci"][0] <= stat["mean"] <= stat["ci"][1]
    assert row["cost"]["forward_per_film"]["mean"] >= 1 and row["cost"]["backward_per_film"]["mean"] >= 1
    occ = result["rows"][2]
    assert occ["cost"]["forward_per_film"]["mean"] > 4 and occ["cost"]["backward_per_film"]["mean"] == 0
    Fails.calls = 0
    again = leaderboard(model, methods, _records(tmp_path), faithfulness_films=3, sanity_films=2, steps=4, n_boot=50,
                        explainer_options={"captum:Occlusion": {"grid": 2}}, batch_size=2)  # fmt: skip
    assert [r["localisation"] for r in again["rows"]] == [r["localisation"] for r in result["rows"]]

    paths = write_outputs(result, tmp_path / "out")
    md = Path(paths["markdown"]).read_text()
    assert "| `gradcam` | 5 / 3 / 2 |" in md and "control: random" in md and "test-fails-midway" in md
    page = Path(paths["html"]).read_text()
    assert "addEventListener('click'" in page and "<th" in page and "captum:Occlusion" in page
    assert json.loads(Path(paths["json"]).read_text())["rows"][1]["method"] == "captum:Saliency"


def test_budget_gives_cheap_methods_more_films(tmp_path: Path) -> None:
    model = tiny_convnet(seed=0, image_size=32)
    result = leaderboard(
        model, ["gradcam", "captum:Occlusion"], _records(tmp_path), probe=2, budget_minutes=0.2,
        faithfulness_films=2, sanity_films=2, steps=2, n_boot=20, explainer_options={"captum:Occlusion": {"grid": 8}},
        films_per_method={"captum:Occlusion": 3},
    )  # fmt: skip
    films = result["config"]["films_per_method"]
    assert films["captum:Occlusion"] == 3  # pinned
    assert 2 <= films["gradcam"] <= 5


def test_cli_leaderboard_help_and_bad_films_for() -> None:
    from xray_xai.cli import main

    runner = CliRunner()
    out = runner.invoke(main, ["leaderboard", "--help"])
    assert out.exit_code == 0 and "Example:" in out.output and "--budget-minutes" in out.output
    bad = runner.invoke(main, ["leaderboard", "--model", "x", "--data", ".", "--films-for", "gradcam"])
    assert bad.exit_code == 2 and "METHOD=N" in bad.output


def test_a_spent_budget_stops_the_run_and_each_row_is_seen_as_it_comes(tmp_path: Path) -> None:
    model = tiny_convnet(seed=0, image_size=32)
    seen: list[int] = []
    result = leaderboard(model, ["gradcam", "captum:Saliency"], _records(tmp_path), films=3, faithfulness_films=2,
                         sanity_films=2, steps=2, n_boot=20, on_row=lambda r: seen.append(len(r["rows"])))  # fmt: skip
    assert seen == [1, 2] and result["config"]["probe"] is None
    spent = leaderboard(model, ["gradcam", "captum:Saliency"], _records(tmp_path), films=3, budget_minutes=1e-6,
                        probe=3, faithfulness_films=2, sanity_films=2, steps=2, n_boot=20)  # fmt: skip
    assert spent["rows"] == []
    assert {s["reason"] for s in spent["skipped"]} == {"not run: the time budget was spent"}
