"""The synthetic MURA generator: byte-identical from a seed, read back by the MURA reader, truthful masks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from xray_xai_plugins.datasets import _phantoms
from xray_xai_plugins.datasets.mura import MuraDataset
from xray_xai_plugins.datasets.synthetic import SIDECAR, SyntheticDataset, phantom, plan_studies

from xray_xai.errors import DataError
from xray_xai.sdk.interfaces import REGIONS

SIZE = 64


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "data"
    return SyntheticDataset.generate(out, n_studies=16, seed=3, image_size=SIZE, abnormal_fraction=0.5, progress=False)


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path: Path) -> None:
    kwargs = {"n_studies": 5, "image_size": SIZE, "progress": False}
    a = _tree_hashes(SyntheticDataset.generate(tmp_path / "a", seed=7, **kwargs))
    b = _tree_hashes(SyntheticDataset.generate(tmp_path / "b", seed=7, **kwargs))
    c = _tree_hashes(SyntheticDataset.generate(tmp_path / "c", seed=8, **kwargs))
    assert a == b
    assert any(name.endswith(".png") for name in a)
    assert f"MURA-v1.1/{SIDECAR}" in a and "MURA-v1.1/train_image_paths.csv" in a
    assert a != c


def test_studies_depend_only_on_seed_and_index() -> None:
    assert plan_studies(12, seed=1)[:5] == plan_studies(5, seed=1)


def test_mura_reader_reads_counts_labels_and_ground_truth(generated: Path) -> None:
    assert SyntheticDataset.detect(generated) and MuraDataset.detect(generated)
    ds = SyntheticDataset(generated)
    assert ds.problems == []
    studies = ds.studies()
    assert len(studies) == 16
    plans = {p.folder: p for p in plan_studies(16, seed=3, abnormal_fraction=0.5)}
    for study, recs in studies.items():
        assert 1 <= len(recs) <= 4
        assert study in plans and all(r.label == plans[study].label for r in recs)
        assert all(r.region == plans[study].region for r in recs)
    assert abs(sum(p.label for p in plans.values()) - 8) <= 1  # exact per block of ten, random in a partial block
    records = ds.records()
    assert {r.split for r in records} <= {"train", "val", "test"} and "test" in {r.split for r in records}
    assert all(r.view in ("frontal", "lateral") for r in records)
    assert all(r.metadata["abnormality"] == "none" for r in records if r.label == 0)
    assert all(r.metadata["abnormality"] in _phantoms.ABNORMALITIES for r in records if r.label == 1)
    # the plain MURA reader sees the same images and labels (the layout is exactly MURA's)
    plain = MuraDataset(generated)
    assert [(r.path, r.label, r.split) for r in plain.records()] == [(r.path, r.label, r.split) for r in records]
    assert all(r.mask_path is None and not r.boxes for r in plain.records())


def test_abnormal_images_have_a_mask_and_box_normal_ones_none(generated: Path) -> None:
    for rec in SyntheticDataset(generated).records():
        with Image.open(rec.path) as im:
            image = np.asarray(im)
        if rec.label == 0:
            assert rec.mask_path is None and rec.boxes == ()
            continue
        assert rec.mask_path is not None and len(rec.boxes) == 1
        with Image.open(rec.mask_path) as im:
            mask = np.asarray(im) > 127
        assert mask.shape == image.shape and mask.any()
        box = rec.boxes[0]
        ys, xs = np.nonzero(mask)
        assert (box.x0, box.y0, box.x1, box.y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert box.label == rec.metadata["abnormality"]


def test_marker_box_holds_the_bright_letter(generated: Path) -> None:
    for rec in SyntheticDataset(generated).records():
        with Image.open(rec.path) as im:
            image = np.asarray(im)
        x0, y0, x1, y1 = rec.metadata["marker_box"]
        assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
        patch = image[y0:y1, x0:x1]
        assert (patch > 220).sum() >= 6, rec.path
        assert rec.metadata["marker"] in ("L", "R")


def test_all_seven_regions_appear_and_fraction_is_kept() -> None:
    plans = plan_studies(14, seed=0)
    assert {p.region for p in plans} == set(REGIONS)
    labels = [p.label for p in plan_studies(100, seed=5, abnormal_fraction=0.4)]
    assert sum(labels) == 40
    assert {p.region for p in plan_studies(30, seed=0, regions=["wrist", "hand"])} == {"wrist", "hand"}
    # patients: one region, 1-2 studies, never in both splits
    by_patient: dict[int, set[tuple[str, str]]] = {}
    for p in plan_studies(60, seed=2):
        by_patient.setdefault(p.patient, set()).add((p.region, p.split))
    assert all(len(v) == 1 for v in by_patient.values())


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("kind", ["fracture", "lesion", "degenerative", "hardware"])
def test_findings_lie_on_bone_and_show_on_the_film(region: str, kind: str) -> None:
    for seed in range(3):
        rng = np.random.default_rng(seed)
        image, masks = phantom(region, rng, 96, kind, "lateral" if seed == 1 else "frontal")
        assert image.dtype == np.float32 and image.min() >= 0.0 and image.max() <= 1.0
        finding = masks["abnormality"]
        assert finding.any(), (region, kind, seed)
        if kind == "hardware":
            # metal may cross soft tissue, but is the brightest thing on the film
            assert np.median(image[finding]) > np.median(image[masks["bone"] & ~finding])
            continue
        on_bone = (finding & masks["bone"]).sum() / finding.sum()
        assert on_bone > 0.8, (region, kind, seed, on_bone)
        background = ~(masks["soft_tissue"] | masks["bone"] | masks["collimation"] | masks["marker"])
        if background.any():
            assert np.median(image[finding]) > np.median(image[background]) + 0.1


def test_normal_phantom_has_empty_finding_mask_and_is_deterministic() -> None:
    a, ma = phantom("hand", np.random.default_rng(4), 80)
    b, _ = phantom("hand", np.random.default_rng(4), 80)
    assert np.array_equal(a, b) and not ma["abnormality"].any()
    assert max(a.shape) == 80
    # dark background, bright bone
    background = ~(ma["bone"] | ma["soft_tissue"] | ma["marker"] | ma["collimation"])
    assert np.median(a[ma["bone"]]) > np.median(a[background]) + 0.3


def test_contrast_scales_how_visible_the_finding_is() -> None:
    vp = _phantoms.ViewParams(96, 96)

    def difference(contrast: float) -> float:
        base = _phantoms.anatomy("forearm", np.random.default_rng(1))
        sick = _phantoms.anatomy("forearm", np.random.default_rng(1))
        _phantoms.draw_finding(sick, "lesion", np.random.default_rng(2), contrast)
        img0, _, _ = _phantoms.render(base, vp, np.random.default_rng(3))
        img1, masks, _ = _phantoms.render(sick, vp, np.random.default_rng(3))
        assert masks["abnormality"].any()
        return float(np.abs(img1 - img0)[masks["abnormality"]].mean())

    assert difference(1.0) > 2 * difference(0.3) > 0


def test_refuses_to_overwrite_unless_asked_and_only_its_own_data(tmp_path: Path) -> None:
    out = SyntheticDataset.generate(tmp_path / "d", n_studies=2, seed=0, image_size=SIZE, progress=False)
    with pytest.raises(DataError, match="not empty"):
        SyntheticDataset.generate(out, n_studies=2, seed=1, image_size=SIZE, progress=False)
    before = _tree_hashes(out)
    SyntheticDataset.generate(out, n_studies=2, seed=1, image_size=SIZE, progress=False, overwrite=True)
    assert _tree_hashes(out) != before
    other = tmp_path / "precious"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not a synthetic"):
        SyntheticDataset.generate(other, n_studies=2, image_size=SIZE, progress=False, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "precious"]  # no temporary folders left behind


@pytest.mark.parametrize(
    "kwargs",
    [{"image_size": 32}, {"image_size": 2048}, {"regions": ["knee"]}, {"abnormal_fraction": 1.5}, {"difficulty": 0}],
)
def test_bad_options_raise_data_error(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(DataError):
        SyntheticDataset.generate(tmp_path / "x", n_studies=1, progress=False, **kwargs)


def test_registered_as_a_generator_with_ground_truth() -> None:
    from xray_xai.sdk.registry import datasets

    cls = datasets.get("synthetic")
    assert cls is SyntheticDataset
    assert cls.tags.generator and cls.tags.has_ground_truth and cls.tags.has_studies


def test_cli_image_size_help_and_range_agree_with_the_generator(tmp_path: Path) -> None:
    """Issue 20, finding 4: ``synth --help`` promised ``[x>=16]`` square images; the generator takes 64-1024 and
    draws films that are not square."""
    from click.testing import CliRunner
    from xray_xai_plugins.datasets.synthetic import _MAX_SIZE, _MIN_SIZE

    from xray_xai.cli import main

    runner = CliRunner()
    helped = " ".join(runner.invoke(main, ["synth", "--help"]).output.split())
    option = helped[helped.index("--image-size INTEGER") :]
    option = option[: option.index("--regions")]
    assert f"{_MIN_SIZE}-{_MAX_SIZE}" in option and "x>=16" not in option, option
    assert "square images" not in helped and "not square" in helped
    for bad in (_MIN_SIZE - 1, _MAX_SIZE + 1):  # what the help promises is what is refused, in one line
        refused = runner.invoke(main, ["synth", str(tmp_path / "s"), "--n-studies", "1", "--image-size", str(bad)])
        assert refused.exit_code == 1 and f"must be in [{_MIN_SIZE}, {_MAX_SIZE}], got {bad}" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "s").exists()
    made = runner.invoke(main, ["synth", str(tmp_path / "s"), "--n-studies", "2", "--image-size", str(_MIN_SIZE)])
    assert made.exit_code == 0, made.output
    sides = {Image.open(p).size for p in (tmp_path / "s").rglob("image*.png") if "masks" not in p.parts}
    assert all(max(s) == _MIN_SIZE for s in sides) and any(min(s) < _MIN_SIZE for s in sides)


def test_cli_overwrite_flag_is_the_one_the_refusal_names(tmp_path: Path) -> None:
    """Finding 4: writing into a non-empty folder said "pass overwrite=True", which the command line lacked."""
    from click.testing import CliRunner

    from xray_xai.cli import main

    runner = CliRunner()
    args = ["synth", str(tmp_path / "s"), "--n-studies", "2", "--image-size", "64"]
    assert runner.invoke(main, args).exit_code == 0
    before = _tree_hashes(tmp_path / "s")
    refused = runner.invoke(main, [*args, "--seed", "1"])
    assert refused.exit_code == 1 and "--overwrite" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and _tree_hashes(tmp_path / "s") == before
    replaced = runner.invoke(main, [*args, "--seed", "1", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert _tree_hashes(tmp_path / "s") != before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("mine")
    foreign = runner.invoke(main, ["synth", str(tmp_path / "mine"), "--n-studies", "1", "--overwrite"])
    assert foreign.exit_code == 1 and (tmp_path / "mine" / "keep.txt").read_text() == "mine"
