"""Box-guided training (``train --guide boxes``): the terms, the guided films, the masks that ride with the films."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from xray_xai.data.augment import Augment
from xray_xai.data.geometry import preset, to_tensor
from xray_xai.data.loader import RecordDataset
from xray_xai.errors import PluginError
from xray_xai.models.config import TrainConfig
from xray_xai.models.guidance import (
    Guide,
    Guides,
    GuideSpec,
    guided_indices,
    make_guide,
    outside_share,
    soft_pointing,
)
from xray_xai.sdk.interfaces import Box, Record


def _film(tmp_path: Path, name: str = "film.png", size: tuple[int, int] = (40, 60)) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / name
    Image.fromarray(rng.integers(0, 255, size=size, dtype=np.uint8)).save(path)
    return path


def test_outside_share_closed_form() -> None:
    positive = torch.tensor([[[1.0, 3.0], [0.0, 0.0]]])
    inside = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    assert float(outside_share(positive, inside)[0]) == pytest.approx(0.75)
    assert float(outside_share(positive, torch.ones_like(inside))[0]) == pytest.approx(0.0)


def test_soft_pointing_rewards_a_peak_in_the_box() -> None:
    inside = torch.zeros(1, 4, 4, dtype=torch.bool)
    inside[0, 0, 0] = True
    peak_in = torch.zeros(1, 4, 4)
    peak_in[0, 0, 0] = 5.0
    peak_out = torch.zeros(1, 4, 4)
    peak_out[0, 3, 3] = 5.0
    assert float(soft_pointing(peak_in, inside)[0]) < float(soft_pointing(peak_out, inside)[0])
    # a mask covering every cell gives log(1) = 0, an empty one contributes nothing
    assert float(soft_pointing(peak_out, torch.ones_like(inside))[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_pointing(peak_out, torch.zeros_like(inside))[0]) == 0.0


def test_soft_pointing_temperature_tends_to_the_gap_between_the_peaks() -> None:
    """At a low temperature the term is the gap, in standard deviations, between the map's highest cell and the
    highest cell inside the mask (what the pointing game asks); at 1 the bulk of the map weighs in too."""
    torch.manual_seed(0)
    cam = torch.rand(1, 56, 56)  # the default explainer's stage at 224 px
    cam[0, 50, 50] = 3.0  # the peak, outside
    cam[0, 2, 2] = 2.5  # a second blob, inside
    inside = torch.zeros(1, 56, 56, dtype=torch.bool)
    inside[0, :5, :5] = True
    flat = cam.flatten(1)
    z = (flat - flat.mean()) / flat.std()
    gap = float(z.max() - z[0, 2 * 56 + 2])
    assert float(soft_pointing(cam, inside, temperature=0.05)[0]) == pytest.approx(gap, abs=0.01)
    assert float(soft_pointing(cam, inside, temperature=1.0)[0]) > gap + 0.5  # the bulk outside adds to it
    assert float(soft_pointing(cam, inside)[0]) == float(soft_pointing(cam, inside, temperature=1.0)[0])
    swapped = cam.clone()
    swapped[0, 2, 2], swapped[0, 50, 50] = 3.0, 2.5  # the peak inside: nothing left to close
    assert float(soft_pointing(swapped, inside, temperature=0.05)[0]) == pytest.approx(0.0, abs=0.01)
    with pytest.raises(PluginError, match="temperature"):
        GuideSpec("boxes", "point", temperature=0.0)
    assert GuideSpec("boxes", "point", temperature=0.25).to_dict()["temperature"] == 0.25
    assert "temperature" not in GuideSpec("boxes", "point").to_dict()  # sidecars at 1 stay as they were


def test_guided_indices_only_abnormal_films_with_ground_truth() -> None:
    box = (Box(1, 1, 5, 5),)
    recs = [Record(Path(f"{i}.png"), label=i % 2, boxes=box if i % 3 else ()) for i in range(60)]
    every = guided_indices(recs, 1.0, seed=0)
    assert every == [i for i in range(60) if i % 2 == 1 and i % 3]
    quarter = guided_indices(recs, 0.25, seed=0)
    assert len(quarter) == round(0.25 * len(every)) and set(quarter) <= set(every)
    assert guided_indices(recs, 0.25, seed=0) == quarter  # seeded
    assert guided_indices(recs, 0.25, seed=1) != quarter
    assert len(guided_indices(recs, 0.001, seed=0)) == 1  # at least one film


def test_spec_refuses_bad_options() -> None:
    with pytest.raises(PluginError, match="unknown guide"):
        GuideSpec(source="masks")
    with pytest.raises(PluginError, match="fraction"):
        TrainConfig(guide="boxes", guide_fraction=0.0)
    with pytest.raises(PluginError, match="unknown guide loss"):
        TrainConfig(guide="boxes", guide_loss="gain")
    assert TrainConfig().guide_spec.active is False


def test_guided_dataset_carries_the_mask_through_augmentation(tmp_path: Path) -> None:
    path = _film(tmp_path)  # 40 rows x 60 columns
    pre = replace(preset("resize-224-imagenet", 32), mode="resize", crop=None)
    rec = Record(path, label=1, boxes=(Box(0, 0, 15, 40),))  # the left quarter of the film
    plain = RecordDataset([rec], pre)
    guided = RecordDataset([rec], pre, guided=[0])
    x, _, _ = plain[0]
    xg, _, _ = guided[0]
    assert xg.shape[0] == x.shape[0] + 1
    assert torch.equal(xg[:-1], x)  # the film itself is unchanged
    mask = xg[-1]
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0} and mask.sum() > 0
    cols = mask.sum(0)
    assert cols[: cols.numel() // 2].sum() > 0 and cols[cols.numel() // 2 :].sum() == 0  # left side only
    # a horizontal flip moves film and mask together
    flip = Augment(hflip=1.0, vflip=0.0, degrees=0.0, translate=0.0, scale=(1.0, 1.0))
    xf, _, _ = RecordDataset([rec], pre, augment=flip, guided=[0])[0]
    assert torch.equal(xf[-1], torch.flip(mask, dims=[-1]))
    assert torch.allclose(xf[:-1], torch.flip(x, dims=[-1]))
    # a film that is not guided gets the "no mask" channel
    xn, _, _ = RecordDataset([rec], pre, guided=[])[0]
    assert torch.all(xn[-1] == -1.0)


def test_unguided_dataset_items_are_what_they_were(tmp_path: Path) -> None:
    from xray_xai.data.images import read_image

    path = _film(tmp_path)
    pre = preset("resize-224-imagenet", 32)
    x, _, _ = RecordDataset([Record(path, label=0)], pre)[0]
    assert torch.equal(x, to_tensor(read_image(path), pre))


class _Tiny(torch.nn.Module):
    target_layer = "features"

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3))).squeeze(1)


@pytest.mark.parametrize("loss", ["point", "outside", "input-grad", "layercam", "layercam-point"])
def test_term_is_zero_without_guided_films_and_trains_the_weights(loss: str) -> None:
    torch.manual_seed(0)
    model = _Tiny().train()
    guide = Guide(GuideSpec("boxes", loss, 2.0, layer="features" if loss.startswith("layercam") else None), model)
    x = torch.randn(2, 3, 8, 8)
    unguided = torch.full((2, 8, 8), -1.0)
    term = guide.term(model(guide.prepare(x.clone())), unguided, x)
    assert float(term) == 0.0
    masks = unguided.clone()
    masks[1] = 0.0
    masks[1, :4, :4] = 1.0
    xs = guide.prepare(x.clone())
    term = guide.term(model(xs), masks, xs)
    assert term.item() > 0
    term.backward()
    assert model.features[0].weight.grad is not None and model.features[0].weight.grad.abs().sum() > 0
    guide.close()
    assert not model.features._forward_hooks  # nothing of the guidance stays on the model


def test_joined_families_add_their_own_terms() -> None:
    """``outside+layercam`` with a weight each: the term is the sum of the two families' terms, each on its own
    hook (the last layer's CAM from the batch's pass, the LayerCAM map from the second pass)."""
    torch.manual_seed(0)
    model = _Tiny().train()
    x = torch.randn(3, 3, 8, 8)
    masks = torch.full((3, 8, 8), -1.0)
    masks[1:] = 0.0
    masks[1:, :4, :4] = 1.0
    spec = GuideSpec("boxes", "outside+layercam", (0.5, 2.0), layer="features")
    both = make_guide(spec, model)
    assert isinstance(both, Guides) and [p.spec.loss for p in both.parts] == ["outside", "layercam"]
    total = both.term(model(x), masks, x)
    both.close()
    assert not model.features._forward_hooks
    singles = []
    for loss, weight in (("outside", 0.5), ("layercam", 2.0)):
        guide = make_guide(GuideSpec("boxes", loss, weight, layer="features"), model)
        assert isinstance(guide, Guide)
        singles.append(float(guide.term(model(x), masks, x).detach()))
        guide.close()
    assert all(t > 0 for t in singles)
    assert float(total.detach()) == pytest.approx(sum(singles), rel=1e-5)
    total.backward()  # the sum trains the weights like each term
    assert model.features[0].weight.grad is not None and model.features[0].weight.grad.abs().sum() > 0
    # one weight for all families
    shared = GuideSpec("boxes", "outside+layercam", 0.7)
    assert [(p.loss, p.weight) for p in shared.parts()] == [("outside", 0.7), ("layercam", 0.7)]


def test_joined_families_are_checked() -> None:
    with pytest.raises(PluginError, match="unknown guide loss 'gain'"):
        GuideSpec("boxes", "outside+gain")
    with pytest.raises(PluginError, match="twice"):
        GuideSpec("boxes", "outside+outside")
    with pytest.raises(PluginError, match="2 families but 3 weights"):
        GuideSpec("boxes", "outside+point", (0.1, 0.2, 0.3))
    with pytest.raises(PluginError, match=">= 0"):
        GuideSpec("boxes", "outside+point", (0.1, -0.2))
    with pytest.raises(PluginError, match="make_guide"):
        Guide(GuideSpec("boxes", "outside+point", (0.1, 0.2)), _Tiny())
    config = TrainConfig(guide="boxes", guide_loss="outside+layercam-point", guide_weight=[0.3, 0.05])
    assert config.guide_weight == (0.3, 0.05)  # a list read back from JSON
    assert config.guide_spec.to_dict()["weight"] == [0.3, 0.05]


class _TinyBN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.deep = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.deep(self.stem(x)).mean((2, 3))).squeeze(1)


def _minimise_term(
    guide: Guide, model: torch.nn.Module, x: torch.Tensor, masks: torch.Tensor, lr: float, steps: int
) -> float:
    """Train ``model`` on the guidance term alone with SGD; returns the term before the first step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    first = None
    for _ in range(steps):
        term = guide.term(model(x), masks, x)
        first = float(term.detach()) if first is None else first
        opt.zero_grad()
        term.backward()
        opt.step()
    assert first is not None
    return first


def test_layercam_term_moves_the_fine_map_into_the_box() -> None:
    """The term is the share of the LayerCAM map outside the box at the guided stage: minimising it alone must pull
    the map into the box."""
    torch.manual_seed(0)
    model = _TinyBN().train()
    guide = Guide(GuideSpec("boxes", "layercam", 1.0, layer="stem"), model)
    x = torch.randn(4, 3, 12, 12)
    masks = torch.full((4, 12, 12), -1.0)
    masks[2:] = 0.0
    masks[2:, 6:, 6:] = 1.0  # a quarter of the film
    first = _minimise_term(guide, model, x, masks, lr=0.5, steps=40)
    assert first > 0.5  # most of the map lay outside the box at the start
    assert float(guide.term(model(x), masks, x).detach()) < 0.5 * first
    assert model.training  # the second pass restored train mode
    guide.close()
    assert not model.stem._forward_hooks


def test_layercam_point_term_pulls_the_blurred_maps_peak_into_the_box() -> None:
    """``layercam-point`` scores the peak of the map as the default explainer shows it (blurred): minimising the
    term alone must move that peak into the box on every guided film."""
    from xray_xai.sdk.stage_cam import gaussian_blur

    torch.manual_seed(0)
    model = _TinyBN().train()
    guide = Guide(GuideSpec("boxes", "layercam-point", 1.0, layer="stem"), model)
    x = torch.randn(4, 3, 12, 12)
    masks = torch.full((4, 12, 12), -1.0)
    masks[2:] = 0.0
    masks[2:, 8:, 8:] = 1.0  # a ninth of the film, in a corner
    first = _minimise_term(guide, model, x, masks, lr=0.2, steps=60)
    assert float(guide.term(model(x), masks, x).detach()) < 0.5 * first
    cam = gaussian_blur(guide._layercam(x[2:]), 1.0).detach()
    peaks = cam.flatten(1).argmax(1)
    rows, cols = peaks // 12, peaks % 12
    assert bool(((rows >= 8) & (cols >= 8)).all())  # the peak of each guided film's map sits in its box
    guide.close()


def test_layercam_guidance_leaves_the_running_statistics_alone() -> None:
    torch.manual_seed(0)
    model = _TinyBN().train()
    guide = Guide(GuideSpec("boxes", "layercam", 1.0, layer="stem"), model)
    x = torch.randn(4, 3, 12, 12)
    masks = torch.full((4, 12, 12), -1.0)
    masks[3] = 0.0
    masks[3, :6, :6] = 1.0
    with torch.no_grad():
        logits = model(x)  # the training forward pass moves the statistics once
    after_forward = model.stem[1].running_mean.clone()
    guide.term(logits, masks, x)
    assert torch.equal(model.stem[1].running_mean, after_forward)


def test_layercam_guidance_defaults_to_the_default_explainers_stage() -> None:
    from xray_xai.sdk.layers import layers_at_strides
    from xray_xai.sdk.registry import models

    model = models.get("cnn-small")(image_size=32)
    guide = Guide(GuideSpec("boxes", "layercam"), model)
    expected = layers_at_strides(model.eval(), torch.zeros(1, int(model.preprocessing.channels), 32, 32), [4])[0]
    assert guide.layer == expected


def test_guide_layer_must_exist() -> None:
    with pytest.raises(PluginError, match="not a module"):
        Guide(GuideSpec("boxes", "point", layer="nope"), _Tiny())


def _recorded_hyperparameters(checkpoint: Path) -> dict[str, Any]:
    """The hyperparameters a trained checkpoint's JSON sidecar records."""
    sidecar = json.loads(next(Path(checkpoint).glob("*.json")).read_text())
    return sidecar["metadata"]["hyperparameters"] if "metadata" in sidecar else sidecar["hyperparameters"]


def test_guided_training_records_the_recipe(tmp_path: Path) -> None:
    from xray_xai import api

    data = tmp_path / "ph"
    api.synth(data, n_studies=16, seed=0, image_size=64, progress=False)
    result = api.train(
        "cnn-small", data, epochs=1, image_size=32, guide="boxes", guide_loss="outside", guide_weight=0.5,
        guide_fraction=0.5, progress=False, out_dir=tmp_path / "run",
    )  # fmt: skip
    hyper = _recorded_hyperparameters(result.checkpoint)
    assert hyper["guide"] == {"source": "boxes", "loss": "outside", "weight": 0.5, "fraction": 0.5, "layer": None}
    assert "train_guide" in (tmp_path / "run" / "history.csv").read_text().splitlines()[0]
    assert math.isfinite(result.history[0]["train_guide"])


def test_guide_start_switches_the_term_on_later_and_keeps_a_guided_epoch(tmp_path: Path) -> None:
    from xray_xai import api

    data = tmp_path / "ph"
    api.synth(data, n_studies=16, seed=0, image_size=64, progress=False)
    result = api.train(
        "cnn-small", data, epochs=3, image_size=32, guide="boxes", guide_weight=0.5, guide_start=3, progress=False,
        out_dir=tmp_path / "run",
    )  # fmt: skip
    terms = [row["train_guide"] for row in result.history]
    assert terms[0] == 0.0 and terms[1] == 0.0 and terms[2] > 0.0
    assert result.best_epoch == 3  # the only guided epoch, whatever the earlier ones scored
    hyper = _recorded_hyperparameters(result.checkpoint)
    assert hyper["guide"]["start"] == 3
    with pytest.raises(PluginError, match="start"):
        GuideSpec("boxes", start=0)
    with pytest.raises(PluginError, match="after the last epoch"):  # no epoch guided: nothing to keep
        TrainConfig(guide="boxes", guide_start=4, epochs=3)
    assert TrainConfig(guide_start=4, epochs=3).guide_start == 4  # unguided: the start says nothing


def test_guide_without_ground_truth_is_refused(tmp_path: Path) -> None:
    from xray_xai.models.epochs import RunSpec, _guidance

    recs = [Record(_film(tmp_path, f"{i}.png"), label=i % 2) for i in range(4)]
    spec = RunSpec("tiny", "folder", recs, recs, "f", tmp_path)
    with pytest.raises(PluginError, match="no abnormal training film"):
        _guidance(_Tiny(), spec, TrainConfig(guide="boxes"))
    assert _guidance(_Tiny(), spec, TrainConfig()) == (None, None)


def test_guided_prepared_film_still_gets_its_mask(tmp_path: Path) -> None:
    from xray_xai.data.film_cache import prepare

    pre = replace(preset("resize-224-imagenet", 32), mode="resize", crop=None)
    rec = Record(_film(tmp_path), label=1, boxes=(Box(0, 0, 15, 40),))
    cache = prepare([rec], pre, tmp_path / "films", progress=False).cache
    decoded, _, _ = RecordDataset([rec], pre, guided=[0])[0]
    prepared, _, _ = RecordDataset([rec], pre, guided=[0], films=cache)[0]
    assert torch.equal(prepared[-1], decoded[-1]) and prepared[-1].sum() > 0


def test_recipe_sets_the_options_and_the_command_line_overrides_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from xray_xai import api
    from xray_xai.cli import main

    seen: dict[str, Any] = {}

    def fake_train(model: str, data_root: Path, config: Any = None, **kw: Any) -> Any:
        seen.update(model=model, config=config, **kw)
        raise SystemExit(0)

    monkeypatch.setattr(api, "train", fake_train)
    data = tmp_path / "d"
    data.mkdir()
    CliRunner().invoke(main, ["train", "--recipe", "fracatlas-lite0-guided", "--data", str(data), "--epochs", "2"])
    assert seen["model"] == "efficientnet-lite0" and seen["dataset"] == "fracatlas"
    assert seen["config"].guide == "boxes" and seen["config"].batch_size == 32 and seen["config"].lr == 5e-4
    assert seen["epochs"] == 2 and "batch_size" not in seen  # given: overrides; left at its default: the recipe's
    seen.clear()
    args = ["train", "--recipe", "fracatlas-lite0-guided-layercam", "--data", str(data), "--guide-start", "3"]
    CliRunner().invoke(main, args)
    assert seen["config"].guide_loss == "layercam" and seen["config"].guide_weight == 0.3 and seen["guide_start"] == 3
    assert seen["config"].guide_start == 1 and "guide_loss" not in seen  # the recipe's loss stands, its start is moved
    seen.clear()
    CliRunner().invoke(main, ["train", "--recipe", "fracatlas-lite0-guided-point", "--data", str(data)])
    assert seen["config"].guide_loss == "outside+layercam-point" and seen["config"].guide_weight == (0.3, 0.05)
    assert [(p.loss, p.weight) for p in seen["config"].guide_spec.parts()] == [
        ("outside", 0.3),
        ("layercam-point", 0.05),
    ]
    seen.clear()
    CliRunner().invoke(main, ["train", "--recipe", "fracatlas-lite0-guided-point-288", "--data", str(data)])
    assert (seen["config"].image_size, seen["config"].epochs) == (288, 6) and "image_size" not in seen
    assert seen["config"].guide_weight == (0.3, 0.05) and seen["config"].batch_size == 32
    seen.clear()
    CliRunner().invoke(main, ["train", "--recipe", "fracatlas-lite0-guided-point-288", "--data", str(data),
                              "--image-size", "224", "--epochs", "8"])  # fmt: skip
    assert (seen["image_size"], seen["epochs"]) == (224, 8)  # given: they override the recipe's size and length
    seen.clear()
    args += ["--guide-loss", "outside+layercam-point", "--guide-weight", "0.3,0.05"]
    CliRunner().invoke(main, args)
    assert seen["guide_loss"] == "outside+layercam-point" and seen["guide_weight"] == (0.3, 0.05)
    seen.clear()
    CliRunner().invoke(main, [*args[:5], "--guide-temperature", "0.25"])
    assert seen["guide_temperature"] == 0.25 and seen["config"].guide_temperature == 1.0
    for bad, message in ((["--guide-loss", "outside+gain"], "'gain' is not one of"),
                         (["--guide-weight", "0.3,x"], "comma-separated numbers")):  # fmt: skip
        result = CliRunner().invoke(main, [*args[:5], *bad])
        assert result.exit_code == 2 and message in result.output
    result = CliRunner().invoke(main, ["train", "--recipe", "fracatlas-lite", "--data", str(data)])
    assert result.exit_code != 0 and "did you mean fracatlas-lite0" in result.output
    result = CliRunner().invoke(main, ["train", "--data", str(data)])
    assert result.exit_code != 0 and "--model" in result.output
