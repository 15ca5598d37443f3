"""Audit metrics on hand-made cases: perfect maps score 1, inverted maps 0, random maps chance."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from xray_xai.audit import scores as am
from xray_xai.audit.controls import CONTROL_NAMES, control_maps
from xray_xai.audit.randomization import cascading_randomization, layer_order


def _square_mask(size: int = 32, lo: int = 10, hi: int = 18) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[lo:hi, lo:hi] = True
    return m


# -- localisation -------------------------------------------------------------------------------------------------
def test_map_equal_to_mask_scores_one_and_inverted_map_zero() -> None:
    mask = _square_mask()[None]
    perfect = mask.astype(np.float32)
    inverted = 1.0 - perfect
    assert am.pointing_game(perfect, mask)[0] == 1.0
    assert am.iou(perfect, mask, am.otsu_thresholds(perfect))[0] == 1.0
    assert am.mass_in_mask(perfect, mask)[0] == 1.0
    assert am.pointing_game(inverted, mask)[0] == 0.0
    assert am.iou(inverted, mask, 0.5)[0] == 0.0
    assert am.mass_in_mask(inverted, mask)[0] == 0.0


def test_random_maps_score_chance() -> None:
    rng = np.random.default_rng(0)
    mask = np.broadcast_to(_square_mask(), (400, 32, 32))
    maps = rng.random((400, 32, 32))
    area = mask[0].mean()
    assert am.pointing_game(maps, mask).mean() == pytest.approx(area, abs=0.03)
    assert np.nanmean(am.mass_in_mask(maps, mask)) == pytest.approx(area, abs=0.01)
    # a constant map has tied maxima everywhere: the share of them in the mask is the chance level exactly
    assert am.pointing_game(np.ones((1, 32, 32)), mask[:1])[0] == pytest.approx(area)


def test_pointing_tolerance_uses_distance_to_mask() -> None:
    mask = _square_mask()[None]
    m = np.zeros((1, 32, 32))
    m[0, 14, 20] = 1.0  # 3 px right of the mask's last column (17)
    assert am.pointing_game(m, mask)[0] == 0.0
    assert am.pointing_game(m, mask, tolerance=2.0)[0] == 0.0
    assert am.pointing_game(m, mask, tolerance=3.0)[0] == 1.0
    assert am.tolerance_px(224) == pytest.approx(7.84)
    assert np.isnan(am.pointing_game(m, np.zeros_like(mask))[0])  # no ground truth: undefined, not a miss


def test_tune_threshold_finds_the_separating_level() -> None:
    mask = np.broadcast_to(_square_mask(), (3, 32, 32))
    maps = np.where(mask, 0.8, 0.3) + np.random.default_rng(1).uniform(-0.05, 0.05, mask.shape)
    t = am.tune_threshold(maps, mask)
    assert 0.35 <= t <= 0.75
    assert np.all(am.iou(maps, mask, t) == 1.0)
    assert np.all(am.iou(maps, mask, 0.05) < 0.2)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean() -> None:
    v = np.random.default_rng(2).random(50)
    mean, lo, hi = am.bootstrap_ci(v, seed=3)
    assert lo < mean < hi and mean == pytest.approx(v.mean())
    assert am.bootstrap_ci(v, seed=3) == (mean, lo, hi)
    s = am.summarize(np.array([np.nan, 1.0, np.nan]))
    assert s == {"mean": 1.0, "ci": [1.0, 1.0], "n": 1}
    assert am.summarize(np.array([np.nan]))["mean"] is None


def test_border_band_and_confidence_bins() -> None:
    band = am.border_band_mask((100, 100), 0.1)
    assert band.sum() == 100 * 100 - 80 * 80 and band[0, 50] and not band[50, 50]
    assert am.confidence_bin(np.array([0.5, 0.25, 0.95, 0.05, 0.85])) == [
        "0.5-0.7",
        "0.7-0.9",
        "0.9-1",
        "0.9-1",
        "0.7-0.9",
    ]


# -- sanity similarity ----------------------------------------------------------------------------------------------
def test_identical_maps_have_spearman_and_ssim_one() -> None:
    maps = np.random.default_rng(4).random((3, 16, 16))
    assert np.allclose(am.spearman_maps(maps, maps), 1.0)
    assert np.allclose(am.ssim_maps(maps, maps), 1.0)
    assert np.allclose(am.spearman_maps(maps, 1 - maps), -1.0)
    const = np.zeros((1, 16, 16))
    assert am.spearman_maps(const, const)[0] == 1.0
    assert am.spearman_maps(const, maps[:1])[0] == 0.0
    unrelated = am.spearman_maps(maps, np.random.default_rng(5).random((3, 16, 16)))
    assert np.all(np.abs(unrelated) < 0.2)
    assert am.sanity_passed(0.1) and not am.sanity_passed(0.9) and not am.sanity_passed(float("nan"))


# -- faithfulness ---------------------------------------------------------------------------------------------------
class RegionProbe(nn.Module):
    """P(abnormal) depends only on the mean intensity inside a known square."""

    def __init__(self, mask: np.ndarray) -> None:
        super().__init__()
        self.mask = torch.from_numpy(mask.astype(np.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = (x.mean(dim=1) * self.mask).sum(dim=(1, 2)) / self.mask.sum()
        return torch.sigmoid(10 * (inside - 0.5))


def _probe_case(n: int = 3) -> tuple[RegionProbe, torch.Tensor, np.ndarray]:
    mask = _square_mask()
    gen = torch.Generator().manual_seed(0)
    images = 0.3 * torch.rand(n, 3, 32, 32, generator=gen)
    images[:, :, torch.from_numpy(mask)] = 1.0
    return RegionProbe(mask), images, np.broadcast_to(mask, (n, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("grid", [1, 4])
def test_perfect_map_deletes_faster_than_random_order(grid: int) -> None:
    probe, images, perfect = _probe_case()
    kw: dict[str, Any] = {"steps": 16, "grid": grid, "baseline": "mean", "batch_size": 20}
    good = am.faithfulness_curves(probe, images, perfect, **kw)
    rand = am.faithfulness_curves(probe, images, None, seed=1, **kw)
    assert good.curves["deletion"].shape == (3, 17)
    assert np.all(good.auc("deletion") < rand.auc("deletion") - 0.2)
    assert np.all(good.auc("insertion") > rand.auc("insertion") + 0.2)
    # the endpoints are the unperturbed and the fully perturbed inputs
    assert np.allclose(good.curves["deletion"][:, 0], probe(images).numpy())
    assert np.allclose(good.curves["deletion"][:, -1], good.curves["insertion"][:, 0])
    assert good.fractions[0] == 0 and good.fractions[-1] == 1


def test_vectorised_curves_match_a_naive_loop() -> None:
    probe, images, _ = _probe_case(2)
    maps = np.random.default_rng(7).random((2, 32, 32)).astype(np.float32)
    steps, grid = 5, 8
    got = am.faithfulness_curves(probe, images, maps, steps=steps, grid=grid, baseline="blur", batch_size=3)
    base = am.gaussian_blur(images)
    for b in range(2):
        cells = maps[b].reshape(4, 8, 4, 8).mean(axis=(1, 3)).ravel()
        order = np.argsort(-cells, kind="stable")
        for k in range(steps + 1):
            n = round(k / steps * 16)
            cell_on = np.zeros(16, bool)
            cell_on[order[:n]] = True
            pix = torch.from_numpy(np.kron(cell_on.reshape(4, 4), np.ones((8, 8))).astype(bool))
            deleted = torch.where(pix, base[b], images[b])
            inserted = torch.where(pix, images[b], base[b])
            assert got.curves["deletion"][b, k] == pytest.approx(float(probe(deleted[None])[0]), abs=1e-6)
            assert got.curves["insertion"][b, k] == pytest.approx(float(probe(inserted[None])[0]), abs=1e-6)


def test_default_faithfulness_batch_is_small_and_does_not_change_curves() -> None:
    """The default chunk (8 perturbed inputs, faster on CPU) gives the same curves as one large batch."""
    probe, images, perfect = _probe_case(3)
    sizes: list[int] = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        sizes.append(len(x))
        return probe(x)

    small = am.faithfulness_curves(counting, images, perfect, steps=8, grid=4, baseline="mean")
    assert max(sizes) == am.FAITHFULNESS_BATCH_SIZE == 8 and len(sizes) > 4
    large = am.faithfulness_curves(probe, images, perfect, steps=8, grid=4, baseline="mean", batch_size=64)
    for kind in ("deletion", "insertion"):
        np.testing.assert_allclose(small.curves[kind], large.curves[kind], atol=1e-6)


def test_curve_error_of_coarser_curves_is_small_and_zero_for_identical() -> None:
    probe, images, perfect = _probe_case(2)
    fine = am.faithfulness_curves(probe, images, perfect, steps=64, grid=1, baseline="mean", kinds=("deletion",))
    coarse = am.faithfulness_curves(probe, images, perfect, steps=8, grid=2, baseline="mean", kinds=("deletion",))
    same = am.curve_error(fine.curves["deletion"], fine.curves["deletion"])
    assert same == {"mean_abs": 0.0, "max_abs": 0.0, "auc_abs": 0.0}
    err = am.curve_error(fine.curves["deletion"], coarse.curves["deletion"], fine.fractions, coarse.fractions)
    assert 0 < err["mean_abs"] < 0.1 and err["auc_abs"] < 0.05
    with pytest.raises(ValueError):
        am.faithfulness_curves(probe, images, perfect, kinds=("sideways",))  # type: ignore[arg-type]


# -- randomisation --------------------------------------------------------------------------------------------------
class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # registered out of data-flow order on purpose: the head first
        self.classifier = nn.Linear(4, 1)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x)))))
        return self.classifier(x.mean(dim=(2, 3))).squeeze(-1)


def test_layer_order_follows_the_forward_pass() -> None:
    assert layer_order(Tiny()) == ["conv1", "bn", "conv2", "classifier"]


def test_cascading_randomization_changes_weights_and_leaves_original_untouched() -> None:
    torch.manual_seed(0)
    model = Tiny().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 8, 8)
    out_before = model(x).detach().clone()
    rng_state = torch.random.get_rng_state()
    names = []
    for name, rmodel in cascading_randomization(model, seed=1):
        names.append(name)
        assert rmodel is not model
        changed = [k for k, v in rmodel.state_dict().items() if not torch.equal(v, before[k])]
        assert any(k.startswith(name + ".") for k in changed)  # the stage's layer really changed
    assert names == ["classifier", "conv2", "bn", "conv1"]
    final = dict(rmodel.named_parameters())
    for k, v in model.named_parameters():
        assert not torch.equal(final[k], v), k  # nothing restored by accident at the end
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the original is bit-identical
    assert torch.equal(model(x), out_before)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # global RNG untouched


def test_cascading_randomization_stages_and_seed() -> None:
    model = Tiny()
    stages = [name for name, _ in cascading_randomization(model, seed=0, n_stages=2)]
    assert stages == ["classifier", "conv1"]  # the head alone, then everything else
    a = [{k: v.clone() for k, v in m.state_dict().items()} for _, m in cascading_randomization(model, 3)][-1]
    b = [{k: v.clone() for k, v in m.state_dict().items()} for _, m in cascading_randomization(model, 3)][-1]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert list(cascading_randomization(object(), 0)) == []


# -- controls --------------------------------------------------------------------------------------------------------
def test_control_maps_are_model_free_seeded_and_in_range() -> None:
    films = np.zeros((2, 32, 32), np.float32)
    films[:, :, 16:] = 0.8  # a vertical edge at column 16
    c1 = control_maps(films, seed=0)
    c2 = control_maps(torch.from_numpy(films)[:, None].repeat(1, 3, 1, 1), seed=0)
    assert tuple(c1) == CONTROL_NAMES
    for name in CONTROL_NAMES:
        assert c1[name].shape == (2, 32, 32)
        assert c1[name].min() >= 0 and c1[name].max() <= 1
        assert np.allclose(c1[name], c2[name])
    assert c1["edges"][0, 10, 15:17].min() > 0.9 and c1["edges"][0, 10, 5] == 0
    assert np.array_equal(c1["brightness"][0] > 0.5, films[0] > 0.5)
    assert not np.allclose(control_maps(films, seed=1)["random"], c1["random"])
