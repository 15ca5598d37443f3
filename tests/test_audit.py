"""The audit service end to end on a tiny model and a tiny data set, its metadata parsers and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from xray_xai.audit.service import audit, collimation_mask, marker_mask, select_records
from xray_xai.errors import DataError
from xray_xai.sdk.interfaces import Box, DatasetPlugin, Explainer, Explanation, Model, Preprocessing, Record, Tags
from xray_xai.sdk.registry import explainers
from xray_xai.sdk.torch_model import TorchModel

SIZE = 32


class TinyGap(TorchModel):
    """Conv -> GAP -> linear: small enough for tests, with a real layer stack to randomise."""

    name = "tiny-gap-audit"
    default_preprocessing = Preprocessing(name="tiny", input_size=SIZE, mode="resize", normalize="none")
    tags = Tags(differentiable=True, has_target_layer=True)  # no has_linear_head: the second explainer is refused
    target_layer = "conv2"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.classifier = nn.Linear(8, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean(dim=(2, 3))


class InputGradient(Explainer):
    """|d logit / d input|, max over channels, scaled to [0, 1] per image."""

    name = "test-input-gradient"
    tags = Tags(needs_gradients=True)

    def explain(self, model: Model, images: torch.Tensor, target: str = "abnormal") -> Explanation:
        assert isinstance(model, nn.Module)
        x = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(model(x).sum(), x)
        raw = grad.abs().amax(dim=1).numpy()
        maps = raw / np.maximum(raw.reshape(len(raw), -1).max(axis=1), 1e-12)[:, None, None]
        probs = model.predict_proba(images).numpy()
        return Explanation(maps=maps.astype(np.float32), raw=raw, probabilities=probs, method=self.name)


class NeedsOddThing(InputGradient):
    """An explainer the tiny model cannot serve (it needs a linear-head tag the model lacks): the pair is skipped."""

    name = "test-needs-linear-head"
    tags = Tags(needs_linear_head=True)


class TinyData(DatasetPlugin):
    """Films written by the fixture; abnormal ones carry a box, a marker box and collimation in metadata."""

    name = "tiny-audit-data"
    splits: ClassVar[tuple[str, ...]] = ("test",)

    def __init__(self, root: str | Path, recs: list[Record]) -> None:
        super().__init__(root)
        self._recs = recs

    def records(self, split: str | None = None) -> list[Record]:
        return [r for r in self._recs if split in (None, "all", r.split)]


@pytest.fixture
def registered() -> Iterator[None]:
    explainers.register(InputGradient)
    explainers.register(NeedsOddThing)
    try:
        yield
    finally:
        explainers.unregister(InputGradient.name)
        explainers.unregister(NeedsOddThing.name)


@pytest.fixture
def tiny_data(tmp_path: Path) -> TinyData:
    rng = np.random.default_rng(0)
    recs = []
    for i in range(8):
        film = 0.2 + 0.1 * rng.random((40, 40))
        label = i % 2
        boxes: tuple[Box, ...] = ()
        if label:
            film[12:24, 14:26] = 0.9
            boxes = (Box(14, 12, 26, 24),)
        path = tmp_path / "films" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray((film * 255).astype(np.uint8)).save(path)
        meta = {"marker_box": [1, 1, 6, 6], "collimation": {"top": 3, "bottom": 0, "left": 2, "right": 0}}
        recs.append(
            Record(
                path=path,
                split="test",
                region=("hand", "wrist")[i % 3 == 0],
                label=label,
                boxes=boxes,
                metadata=meta if i < 6 else {},
            )
        )
    bad = tmp_path / "films" / "broken.png"
    bad.write_bytes(b"not a png")
    recs.append(Record(path=bad, split="test", label=0))
    return TinyData(tmp_path, recs)


def test_audit_end_to_end_writes_report(tiny_data: TinyData, registered: None, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyGap().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / "out"
    result = audit(
        [model],
        [InputGradient.name, NeedsOddThing.name],
        None,
        dataset=tiny_data,
        n=9,
        steps=4,
        grid=4,
        batch_size=4,
        out_dir=out,
        progress=False,
        n_boot=50,
        sanity_stages=2,
        sanity_n=3,
        n_examples=1,
        curve_check_n=1,
    )
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # audit never alters the model
    assert (out / "report.html").is_file() and (out / "report.json").is_file()
    saved = json.loads((out / "report.json").read_text())
    assert saved["audit"]["pairs"][0]["faithfulness"] == result["pairs"][0]["faithfulness"]
    assert len(result["problems"]) == 1 and "broken.png" in result["problems"][0]
    m = result["models"]["tiny-gap-audit"]
    assert m["n_images"] == 8 and m["n_localisation"] == 4
    assert set(m["controls"]) == {"brightness", "edges", "random"}
    ok, skipped = result["pairs"]
    assert skipped["status"] == "skipped" and "linear head" in skipped["reason"]
    assert ok["status"] == "ok"
    for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
        assert 0 <= ok["faithfulness"][key]["mean"] <= 1
    check = ok["faithfulness"]["curve_error"]
    assert check["n_images"] == 1 and 0 <= check["deletion"]["mean_abs"] <= check["deletion"]["max_abs"] <= 1
    loc = ok["localisation"]
    for key in ("pointing", "pointing_tol", "iou_otsu", "iou_tuned", "mass_in_mask"):
        assert loc[key]["n"] == 4 and loc[key]["ci"][0] <= loc[key]["mean"] <= loc[key]["ci"][1]
    assert len(loc["tuned_thresholds"]) == 2
    san = ok["sanity"]
    assert san["status"] in ("pass", "fail") and san["threshold"] == 0.5
    assert [s["layer"] for s in san["stages"]] == ["classifier", "conv1"]
    assert san["stages"][0]["spearman"]["n"] == 3 and san["stages"][-1]["spearman"]["n"] == 8  # sanity_n, then all
    assert set(ok["controls"]) == {"brightness", "edges", "random", "randomized-model"}
    assert "faithfulness" in ok["controls"]["randomized-model"]
    sc = ok["shortcuts"]
    assert sc["marker_share"]["n"] == 6 and sc["collimation_share"]["n"] == 6
    assert 0 < sc["border_area_fraction"] < 0.5
    assert set(ok["breakdowns"]) == {"region", "prediction", "confidence"}
    assert set(ok["breakdowns"]["region"]) == {"hand", "wrist"}
    assert len(ok["per_image"]) == 8
    for which in ("best", "worst"):
        (item,) = ok["examples"][which]
        assert (out / item["png"]).is_file()
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "tiny-gap-audit" in html and "Curve error" in html


def test_audit_same_seed_same_numbers(tiny_data: TinyData, registered: None) -> None:
    torch.manual_seed(0)
    model = TinyGap().eval()
    kw: dict[str, Any] = {
        "dataset": tiny_data,
        "n": 6,
        "steps": 3,
        "grid": 8,
        "progress": False,
        "n_boot": 20,
        "sanity_stages": 1,
        "sanity_n": 2,
        "control_faithfulness": False,
    }
    a = audit([model], [InputGradient.name], None, **kw)
    b = audit([model], [InputGradient.name], None, **kw)
    for pa, pb in zip(a["pairs"], b["pairs"], strict=True):
        assert pa.pop("seconds") >= 0 and pb.pop("seconds") >= 0
        assert pa == pb


def test_audit_refuses_unknown_split(tiny_data: TinyData) -> None:
    with pytest.raises(DataError, match="no split 'train'"):
        audit([TinyGap()], ["x"], None, dataset=tiny_data, split="train", progress=False)


def test_select_records_prefers_ground_truth_reproducibly(tiny_data: TinyData) -> None:
    recs = tiny_data.records()
    chosen = select_records(recs, 4, seed=1)
    assert chosen == select_records(recs, 4, seed=1)
    assert len(chosen) == 4 and sum(r.has_ground_truth for r in chosen) == 2
    assert [r for r in recs if r in chosen] == chosen  # dataset order kept
    assert len(select_records(recs, 100)) == len(recs)


def test_marker_and_collimation_metadata() -> None:
    rec = Record(path=Path("x.png"), metadata={"marker_box": [2, 3, 5, 7], "collimation": {"top": 2, "right": 1}})
    mk = marker_mask(rec, (10, 10))
    assert mk is not None and mk.sum() == 3 * 4 and mk[3, 2] and not mk[7, 5]
    cl = collimation_mask(rec, (10, 10))
    assert cl is not None and cl[:2].all() and cl[:, 9].all() and cl.sum() == 20 + 8
    frac = Record(path=Path("x.png"), metadata={"marker_box": [0.1, 0.1, 0.3, 0.5], "collimation": [0, 0, 0, 0.5]})
    assert marker_mask(frac, (10, 20)) is not None and marker_mask(frac, (10, 20)).sum() == 4 * 4  # type: ignore[union-attr]
    assert collimation_mask(frac, (10, 20)).sum() == 5 * 20  # type: ignore[union-attr]  # bottom half
    field = Record(path=Path("x.png"), metadata={"collimation": {"box": [2, 2, 8, 8]}})
    assert collimation_mask(field, (10, 10)).sum() == 100 - 36  # type: ignore[union-attr]
    for junk in ({"marker_box": "top-left", "collimation": "yes"}, {"marker_box": [1, 2]}, {}):
        r = Record(path=Path("x.png"), metadata=junk)
        assert marker_mask(r, (10, 10)) is None and collimation_mask(r, (10, 10)) is None


def test_cli_help_has_example_and_demo_placeholder() -> None:
    from xray_xai.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["audit", "--help"])
    assert res.exit_code == 0 and "Example:" in res.output and "--steps" in res.output
    res = runner.invoke(main, ["--help"])
    assert res.exit_code == 0 and "audit" in res.output
    res = runner.invoke(main, ["audit", "--models", "a", "--methods", "b"])
    assert res.exit_code == 2 and "Missing option '--data'" in res.output  # a usage error


def test_cli_audit_on_a_stored_model_and_an_unlabelled_folder(registered: None, tmp_path: Path) -> None:
    """The whole command: checkpoint path -> folder data set (no labels, no ground truth) -> table and report."""
    from xray_xai.cli import main
    from xray_xai.models.store import save_model
    from xray_xai.sdk.registry import models

    models.register(TinyGap)
    try:
        torch.manual_seed(0)
        ckpt = save_model(TinyGap().eval(), tmp_path / "ckpt")
        data = tmp_path / "folder"
        data.mkdir()
        rng = np.random.default_rng(0)
        for i in range(3):
            Image.fromarray((rng.random((36, 36)) * 255).astype(np.uint8)).save(data / f"f{i}.png")
        out = tmp_path / "rep"
        args = ["audit", "--models", str(ckpt), "--methods", InputGradient.name, "--data", str(data),
                "--dataset", "folder", "--split", "all", "--n", "3", "--steps", "2", "--grid", "8",
                "--sanity-stages", "1", "--no-control-faithfulness", "--out", str(out)]  # fmt: skip
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
        assert "report:" in res.output and (out / "report.html").is_file()
        res = CliRunner().invoke(main, [*args, "--json"])
        assert res.exit_code == 0, res.output
        result = json.loads(res.output)
        (pair,) = result["pairs"]
        assert pair["status"] == "ok" and pair["localisation"]["n"] == 0 and "note" in pair["localisation"]
        assert result["models"]["tiny-gap-audit"]["accuracy"] is None  # a checkpoint path shows as its model name
        assert "faithfulness" not in pair["controls"]["brightness"]
        res = CliRunner().invoke(main, [*args[:2], "nope-model", *args[3:]])
        assert res.exit_code == 1 and res.output.startswith("error:")
    finally:
        models.unregister(TinyGap.name)


def test_channels_last_predictor_matches_and_leaves_the_model_alone() -> None:
    from xray_xai.audit.scoring import predict_fn as _predict_fn

    torch.manual_seed(0)
    model = TinyGap().eval()
    x = torch.rand(3, 3, SIZE, SIZE)
    fast = _predict_fn(model, channels_last=True)(x)
    assert torch.allclose(fast, model.predict_proba(x), atol=1e-6)
    assert model.conv1.weight.is_contiguous()  # the caller's model keeps its memory format


def test_audit_steps_run_alone_give_the_audit_numbers(tiny_data: TinyData, registered: None) -> None:
    # the controls, the pair scoring and the sanity cascade are separate steps: run one by one they give exactly
    # what audit_records reports for the same pair
    from xray_xai.audit.sanity import sanity_cascade
    from xray_xai.audit.scoring import (
        AuditSettings,
        explain_maps,
        model_context,
        score_controls,
        score_maps,
        summarize_faithfulness,
    )
    from xray_xai.audit.service import audit_records, prepare_inputs

    torch.manual_seed(0)
    model = TinyGap().eval()
    records = [r for r in tiny_data.records() if r.path.name != "broken.png"]
    kw: dict[str, Any] = {"steps": 3, "grid": 8, "n_boot": 20, "sanity_stages": 2, "sanity_n": 3, "seed": 4}
    whole = audit_records([model], [InputGradient.name], records, progress=False, **kw)
    (pair,) = whole["pairs"]

    settings = AuditSettings(**kw)
    ctx = model_context(model, prepare_inputs(records, model.preprocessing), settings)
    random_faith, controls = score_controls(ctx, settings.control_faithfulness)
    assert summarize_faithfulness(random_faith, ctx) == whole["models"]["tiny-gap-audit"]["random_order"]
    assert controls == whole["models"]["tiny-gap-audit"]["controls"]
    explainer = InputGradient()
    maps = explain_maps(explainer, model, ctx.inputs.images, settings.batch_size)
    scored = score_maps(ctx, maps)
    assert scored.localisation == pair["localisation"] and scored.shortcuts == pair["shortcuts"]
    faith = summarize_faithfulness(scored.faithfulness, ctx)
    assert faith == {k: pair["faithfulness"][k] for k in ("deletion_auc", "insertion_auc")}
    sanity = sanity_cascade(explainer, model, ctx.inputs.images, maps, settings)
    assert sanity.summary == pair["sanity"]
    assert sanity.randomized_maps is not None and sanity.randomized_maps.shape == maps.shape


def test_sanity_cascade_is_not_applicable_without_torch_parameters(tiny_data: TinyData) -> None:
    from xray_xai.audit.sanity import sanity_cascade
    from xray_xai.audit.scoring import AuditSettings

    class NoWeights:
        name = "no-weights"

    maps = np.zeros((2, SIZE, SIZE), np.float32)
    result = sanity_cascade(object(), NoWeights(), torch.zeros(2, 3, SIZE, SIZE), maps, AuditSettings())  # type: ignore[arg-type]
    assert result.summary["status"] == "not applicable" and result.randomized_maps is None


@pytest.mark.parametrize("strict", [False, True])
def test_audit_inputs_keep_slightly_cut_films_with_a_warning(tmp_path: Path, strict: bool) -> None:
    """The audit reads films by the one damaged-film policy: kept and listed as a warning, or skipped when strict."""
    from badinputs import slightly_cut_film

    from xray_xai.audit.inputs import prepare_inputs
    from xray_xai.sdk.interfaces import Preprocessing, Record

    whole = tmp_path / "whole.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(whole)
    cut = slightly_cut_film(tmp_path, "cut.jpg")
    pre = Preprocessing(name="test-32", input_size=32)
    inputs = prepare_inputs([Record(path=whole), Record(path=cut)], pre, strict=strict)
    if strict:
        assert [r.path for r in inputs.records] == [whole] and [p.path for p in inputs.skipped] == [str(cut)]
        assert inputs.warnings == []
    else:
        assert [r.path for r in inputs.records] == [whole, cut] and inputs.skipped == []
        assert [p.path for p in inputs.warnings] == [str(cut)] and "ends early" in inputs.warnings[0].problem
