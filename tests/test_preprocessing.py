"""Presets, geometry shared by films/masks/boxes, normalisation, augmentation and the fault-tolerant dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xray_xai.data.augment import Augment
from xray_xai.data.geometry import (
    PRESETS,
    denormalize,
    geometry,
    geometry_boxes,
    geometry_mask,
    geometry_points,
    preset,
    to_tensor,
)
from xray_xai.data.loader import RecordDataset, collate_skip_bad, load_batch
from xray_xai.data.masks import boxes_mask
from xray_xai.errors import XrayXaiError
from xray_xai.sdk.interfaces import IMAGENET_MEAN, IMAGENET_STD, Box, Preprocessing, Record

S = 32  # every preset is exercised at this input size to keep the tests fast
NAMES = sorted(PRESETS)


def _film(h: int = 60, w: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w), dtype=np.float32)


def test_required_presets() -> None:
    assert {"densenet-mura", "resize-224-imagenet", "resize-256-minmax", "letterbox-224"} <= set(PRESETS)
    mura = PRESETS["densenet-mura"]
    assert (mura.mode, mura.crop, mura.input_size, mura.channels) == ("center-crop", 312, 224, 3)
    assert (mura.mean, mura.std, mura.normalize) == (IMAGENET_MEAN, IMAGENET_STD, "imagenet")
    mm = PRESETS["resize-256-minmax"]
    assert (mm.mode, mm.input_size, mm.normalize, mm.channels) == ("resize", 256, "minmax", 3)
    assert PRESETS["letterbox-224"].mode == "letterbox"
    for name, pre in PRESETS.items():
        assert pre.name == name
        assert Preprocessing.from_dict(pre.to_dict()) == pre  # travels with the weights as JSON


def test_preset_size_scales_crop() -> None:
    small = preset("densenet-mura", size=112)
    assert small.input_size == 112 and small.crop == 156
    assert preset("densenet-mura") is PRESETS["densenet-mura"]
    assert preset("resize-224-imagenet", 64).crop is None


def test_unknown_preset_suggests() -> None:
    with pytest.raises(XrayXaiError, match="did you mean densenet-mura"):
        preset("densenet-mur")


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_ranges(name: str) -> None:
    pre = preset(name, S)
    film = _film()
    g = geometry(film, pre)
    assert g.shape == (S, S) and g.dtype == np.float32
    assert g.min() >= 0.0 and g.max() <= 1.0
    x = to_tensor(film, pre)
    assert x.shape == (3, S, S) and x.dtype == torch.float32 and x.is_contiguous()
    assert torch.isfinite(x).all()
    back = denormalize(x, pre)
    assert back.shape == (1, S, S)
    if pre.normalize != "minmax":
        np.testing.assert_allclose(back[0], g, atol=1e-5)  # denormalize undoes the normalisation


@pytest.mark.parametrize("name", NAMES)
def test_one_pixel_film(name: str) -> None:
    pre = preset(name, S)
    x = to_tensor(np.ones((1, 1), np.float32), pre)
    assert x.shape == (3, S, S) and torch.isfinite(x).all()
    assert geometry_mask(np.ones((1, 1), bool), pre).shape == (S, S)
    assert geometry_mask(np.ones((1, 1), bool), pre, any_overlap=True).any()  # a one-pixel region is not lost


def test_normalisations() -> None:
    film = _film()
    base = preset("resize-224-imagenet", S)
    g = torch.from_numpy(geometry(film, base))
    x = to_tensor(film, base)
    for c in range(3):
        torch.testing.assert_close(x[c], (g - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
    mm = to_tensor(film * 0.5 + 0.2, preset("resize-256-minmax", S))
    assert float(mm.min()) == 0.0 and abs(float(mm.max()) - 1.0) < 1e-6
    assert torch.equal(mm[0], mm[2])  # gray replicated
    flat = to_tensor(np.full((10, 10), 0.3, np.float32), preset("resize-256-minmax", S))
    assert torch.count_nonzero(flat) == 0  # a constant film does not divide by zero
    none = to_tensor(film, Preprocessing("raw", input_size=S, normalize="none", channels=1))
    assert none.shape == (1, S, S)
    np.testing.assert_allclose(none[0].numpy(), geometry(film, base), atol=1e-6)
    gray = to_tensor(film, Preprocessing("g", input_size=S, channels=1))  # one channel: mean of ImageNet stats
    torch.testing.assert_close(gray[0], (g - float(np.mean(IMAGENET_MEAN))) / float(np.mean(IMAGENET_STD)))


def test_center_crop_pads_small_film() -> None:
    pre = preset("densenet-mura", S)  # crop 45 px (312 * 32 / 224 rounded) then resize to 32
    assert pre.crop == 45
    g = geometry(np.ones((10, 10), np.float32), pre)
    assert g[S // 2, S // 2] == pytest.approx(1.0)
    assert g[0, 0] == 0.0 and g[-1, -1] == 0.0  # black padding around the small film
    assert 0.02 < (g > 0.5).mean() < 0.1  # ~ (10 / 45) ** 2 of the square


def test_center_crop_cuts_large_film() -> None:
    pre = preset("densenet-mura", S)
    film = np.zeros((200, 300), np.float32)
    film[100, 150] = 1.0  # centre kept
    film[0, 0] = 1.0  # corner cropped away
    g = geometry(film, pre)
    assert g.max() > 0 and g[: S // 4, : S // 4].max() == 0.0
    pts = geometry_points([(150.5, 100.5)], film.shape, pre)
    assert np.allclose(pts, [[S / 2, S / 2]], atol=1.0)


def test_letterbox_keeps_aspect() -> None:
    pre = preset("letterbox-224", S)
    g = geometry(np.ones((20, 40), np.float32), pre)  # 2:1 film -> 32 x 16 content, centred
    rows = np.flatnonzero(g.max(axis=1) > 0.5)
    cols = np.flatnonzero(g.max(axis=0) > 0.5)
    assert (rows[0], rows[-1] + 1) == (8, 24)
    assert (cols[0], cols[-1] + 1) == (0, S)


@pytest.mark.parametrize("name", NAMES)
def test_geometry_mask_aligned(name: str) -> None:
    pre = preset(name, S)
    film = np.zeros((60, 80), np.float32)
    film[20:40, 30:50] = 1.0
    mask = film > 0
    g = geometry(film, pre)
    m = geometry_mask(mask, pre)
    assert m.dtype == bool and m.shape == (S, S) and m.any()
    assert not (g > 0.99)[~m].any()  # every fully bright pixel is inside the mask
    assert not m[g < 0.01].any()  # the mask never lands on black
    loose = geometry_mask(mask, pre, any_overlap=True)
    assert (loose >= m).all() and not loose[g == 0].any()
    [box] = geometry_boxes([Box(30, 20, 50, 40, "fracture")], film.shape, pre)
    assert box.label == "fracture"
    bm = boxes_mask([box], (S, S))
    iou = (bm & m).sum() / (bm | m).sum()
    assert iou > 0.75  # boxes follow the same geometry as masks


def test_geometry_boxes_clip_and_drop() -> None:
    pre = preset("densenet-mura", S)  # crop 45 around the centre of a 200 x 300 film
    boxes = [Box(0, 0, 10, 10), Box(140, 90, 400, 110)]
    out = geometry_boxes(boxes, (200, 300), pre)
    assert len(out) == 1  # the corner box is cut away by the crop
    assert out[0].x1 == S and 0 < out[0].x0 < S


def test_geometry_rejects_color_arrays() -> None:
    with pytest.raises(ValueError, match="2-D"):
        geometry(np.zeros((4, 4, 3), np.float32), PRESETS["letterbox-224"])


def test_augment_deterministic_and_shape() -> None:
    x = torch.from_numpy(_film(S, S)).unsqueeze(0)
    aug = Augment.default()
    a = aug(x, generator=torch.Generator().manual_seed(3))
    b = aug(x, generator=torch.Generator().manual_seed(3))
    assert a.shape == x.shape and torch.equal(a, b)
    outs = [aug(x, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    batch = aug(x.expand(2, 3, S, S), generator=torch.Generator().manual_seed(0))
    assert batch.shape == (2, 3, S, S)


def test_augment_flips_and_rotation_limits() -> None:
    x = torch.from_numpy(_film(S, S)).unsqueeze(0)
    hflip = Augment(hflip=1.0, vflip=0.0, degrees=0.0, translate=0.0, scale=(1.0, 1.0))
    assert torch.equal(hflip(x), torch.flip(x, dims=[-1]))
    vflip = Augment(hflip=0.0, vflip=1.0, degrees=0.0, translate=0.0, scale=(1.0, 1.0))
    assert torch.equal(vflip(x), torch.flip(x, dims=[-2]))
    rot = Augment(hflip=0.0, vflip=0.0, degrees=30.0, translate=0.0, scale=(1.0, 1.0))
    torch.manual_seed(0)
    r = rot(torch.ones(1, S, S))
    assert r[0, 0, 0] == 0.0  # corners uncovered by the rotation are black
    assert r[0, S // 2, S // 2] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        Augment(hflip=2.0)


def test_to_tensor_with_augment_is_seeded() -> None:
    pre = preset("resize-224-imagenet", S)
    film = _film()
    a = to_tensor(film, pre, augment=Augment.default(), generator=torch.Generator().manual_seed(1))
    b = to_tensor(film, pre, augment=Augment.default(), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == (3, S, S)


def _write(path: Path, value: int) -> Path:
    Image.new("L", (40, 30), value).save(path)
    return path


def test_load_batch(tmp_path: Path) -> None:
    pre = preset("resize-224-imagenet", S)
    paths = [_write(tmp_path / "a.png", 0), _write(tmp_path / "b.png", 255)]
    batch = load_batch(paths, pre)
    assert batch.shape == (2, 3, S, S)
    films = denormalize(batch, pre)
    assert films.shape == (2, S, S)
    np.testing.assert_allclose(films[0], 0.0, atol=1e-5)
    np.testing.assert_allclose(films[1], 1.0, atol=1e-5)
    assert load_batch([], pre).shape == (0, 3, S, S)


def test_record_dataset_skips_bad_files(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    (tmp_path / "bad.png").write_text("not an image")
    records = [
        Record(_write(tmp_path / "a.png", 10), label=1),
        Record(tmp_path / "bad.png", label=0),
        Record(_write(tmp_path / "c.png", 200), label=None),
        Record(tmp_path / "missing.png", label=1),
    ]
    pre = preset("resize-256-minmax", S)
    ds = RecordDataset(records, pre)
    assert len(ds) == 4
    np.testing.assert_array_equal(np.isnan(ds.labels), [False, False, True, False])
    x, label, idx = ds[0]
    assert x.shape == (3, S, S) and label.dtype == torch.float32 and float(label) == 1.0 and idx == 0
    assert torch.isnan(ds[2][1])

    batches = list(DataLoader(ds, batch_size=2, collate_fn=collate_skip_bad))
    images, labels, indices, problems = batches[0]
    assert images.shape == (1, 3, S, S) and indices.tolist() == [0] and labels.tolist() == [1.0]
    assert [p.path for p in problems] == [str(tmp_path / "bad.png")]
    assert batches[1].indices.tolist() == [2] and "not found" in batches[1].problems[0].problem
    ds.add_skipped(problems)  # what a training loop does with worker processes: no duplicates
    assert sorted(Path(p.path).name for p in ds.skipped) == ["bad.png", "missing.png"]

    all_bad = collate_skip_bad([ds[1], ds[3]])
    assert all_bad.images.shape == (0, 3, S, S) and len(all_bad.problems) == 2


def test_augment_presets() -> None:
    light = Augment.preset("light")
    assert light is not None and light.degrees == 10.0 and light.translate == 0.0 and light.scale == (1.0, 1.0)
    std = Augment.preset("standard")
    assert std is not None and std.degrees == 30.0
    assert Augment.preset("none") is None
    with pytest.raises(ValueError, match="unknown augmentation"):
        Augment.preset("heavy")
    from xray_xai.cli.train import train as train_command
    from xray_xai.data.augment import AUGMENTATIONS

    (option,) = [p for p in train_command.params if p.name == "augment"]
    assert tuple(option.type.choices) == AUGMENTATIONS  # type: ignore[attr-defined]  # the CLI lists every preset
    x = torch.rand(1, 16, 16)
    g = torch.Generator().manual_seed(0)
    out = light(x, generator=g)
    assert out.shape == x.shape


def _cut_film(path: Path, cut: int | None) -> Path:
    rng = np.random.default_rng(2)
    buf = path.with_suffix(".full" + path.suffix)
    Image.fromarray(rng.integers(0, 255, (128, 128), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    data = buf.read_bytes()
    path.write_bytes(data[: len(data) // 2] if cut is None else data[:-cut])
    return path


@pytest.mark.parametrize("workers", [0, 1])
def test_record_dataset_keeps_slightly_cut_films_with_warnings(tmp_path: Path, workers: int) -> None:
    """A film whose stream ends a little early is read and reported as a warning (also from a worker process); a
    badly cut one is skipped; ``strict`` skips both."""
    from torch.utils.data import DataLoader

    from xray_xai.data.loader import Warned

    records = [
        Record(_write(tmp_path / "a.png", 10), label=1),
        Record(_cut_film(tmp_path / "slight.jpg", 30), label=0),
        Record(_cut_film(tmp_path / "half.jpg", None), label=0),
    ]
    pre = preset("resize-256-minmax", S)
    for strict in (False, True):
        ds = RecordDataset(records, pre, strict=strict)
        loader = DataLoader(ds, batch_size=3, collate_fn=collate_skip_bad, num_workers=workers)
        seen = []
        for batch in loader:
            ds.add_skipped(batch.problems)
            seen += batch.indices.tolist()
        skipped = sorted(Path(p.path).name for p in ds.skipped)
        if strict:
            assert seen == [0] and skipped == ["half.jpg", "slight.jpg"] and ds.warnings == []
            assert "refused: strict" in next(p.problem for p in ds.skipped if p.path.endswith("slight.jpg"))
        else:
            assert seen == [0, 1] and skipped == ["half.jpg"]
            assert [(Path(w.path).name, w.severity) for w in ds.warnings] == [("slight.jpg", "warning")]
            assert "JPEG stream ends early" in ds.warnings[0].problem and ds.warnings[0].problem.endswith(": kept")
    item = RecordDataset(records, pre)[1]
    assert isinstance(item, Warned) and len(item) == 3 and item[2] == 1 and item.warning.severity == "warning"
