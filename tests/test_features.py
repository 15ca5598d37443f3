"""Feature extraction: one forward pass for features and probabilities, an on-disk cache that skips the model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from xray_xai.cluster.features import cache_key, extract_explanation_features, extract_features
from xray_xai.data.images import write_png
from xray_xai.sdk.interfaces import Explainer, Explanation, Preprocessing, Record
from xray_xai.sdk.torch_model import TorchModel


class TinyNet(TorchModel):
    """4x4 grid of pooled conv responses (64-d): features that know where the bright spot is."""

    name: ClassVar[str] = "tiny-features-test"
    default_preprocessing: ClassVar[Preprocessing] = Preprocessing(
        name="tiny", input_size=32, mode="resize", channels=1, normalize="none"
    )

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.classifier = nn.Linear(64, 1)
        self.calls = 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.pool(torch.relu(self.conv(x))).flatten(1)


class ExplodingNet(TinyNet):
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the model must not run when the features are cached")


def _films(folder: Path, n: int, seed: int = 0) -> list[Record]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        img = rng.uniform(0, 0.2, size=(40, 48))
        y, x = (5, 5) if i % 2 == 0 else (28, 34)
        img[y : y + 8, x : x + 8] = 1.0
        path = write_png(folder / f"img{i:02d}.png", img)
        records.append(Record(path=path, region="wrist" if i % 2 == 0 else "hand", study=f"s{i // 2}"))
    return records


def test_features_and_probabilities_from_one_pass(tmp_path: Path) -> None:
    records = _films(tmp_path, 5)
    model = TinyNet()
    fs = extract_features(model, records, batch_size=2, cache_dir=tmp_path / "cache", progress=False)
    assert fs.features.shape == (5, 64) and fs.features.dtype == np.float32
    assert model.calls == 3  # ceil(5 / 2) batches, one forward each: probabilities need no second pass
    from xray_xai.data.loader import load_batch

    x = load_batch([r.path for r in records], model.preprocessing)
    np.testing.assert_allclose(fs.probabilities, model.predict_proba(x).numpy(), atol=1e-6)
    np.testing.assert_allclose(fs.features, model.features(x).numpy(), atol=1e-6)
    assert fs.ids == [r.image_id for r in records]


def test_cache_hit_never_calls_the_model(tmp_path: Path) -> None:
    records = _films(tmp_path, 6)
    first = extract_features(TinyNet(), records, batch_size=4, cache_dir=tmp_path / "c", progress=False)
    assert not first.from_cache and first.cache_path is not None and first.cache_path.is_file()
    assert first.cache_path.with_suffix(".json").is_file()
    exploding = ExplodingNet()
    exploding.load_state_dict(TinyNet().state_dict())
    exploding.name = TinyNet.name  # same weights and name -> same fingerprint
    assert exploding.fingerprint() == TinyNet().fingerprint()
    again = extract_features(exploding, list(reversed(records)), cache_dir=tmp_path / "c", progress=False)
    assert again.from_cache
    np.testing.assert_array_equal(again.features, first.features[::-1])  # rows follow the records asked for
    np.testing.assert_array_equal(again.probabilities, first.probabilities[::-1])
    with np.load(first.cache_path, allow_pickle=False) as data:  # no object arrays: loadable without pickle
        assert set(data.files) >= {"features", "probabilities", "paths"}


def test_default_cache_dir_is_under_home(tmp_path: Path) -> None:
    records = _films(tmp_path, 2)
    fs = extract_features(TinyNet(), records, progress=False)
    assert fs.cache_path is not None
    assert fs.cache_path.parent == Path(os.environ["XRAY_XAI_HOME"]) / "cache" / "features"


def test_key_changes_with_weights_images_and_preprocessing(tmp_path: Path) -> None:
    records = _films(tmp_path, 3)
    model = TinyNet()
    key = cache_key(model, records)
    assert cache_key(model, list(reversed(records))) == key  # order does not matter
    assert cache_key(model, records[:2]) != key
    other = TinyNet()
    with torch.no_grad():
        other.classifier.bias += 1
    assert cache_key(other, records) != key
    model.preprocessing = Preprocessing(name="tiny", input_size=24, mode="resize", channels=1, normalize="none")
    assert cache_key(model, records) != key
    model = TinyNet()
    st = os.stat(records[0].path)
    os.utime(records[0].path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a re-written film
    assert cache_key(model, records) != key


def test_bad_images_skipped_listed_and_cached(tmp_path: Path) -> None:
    records = _films(tmp_path, 3)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    records.insert(1, Record(path=broken, region="hand"))
    fs = extract_features(TinyNet(), records, cache_dir=tmp_path / "c", progress=False)
    assert len(fs) == 3 and [p.path for p in fs.skipped] == [str(broken)]
    assert fs.skipped[0].problem  # says why
    assert [r.path for r in fs.records] == [records[0].path, records[2].path, records[3].path]


def test_bad_images_listed_from_cache(tmp_path: Path) -> None:
    records = _films(tmp_path, 2)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"garbage")
    records.append(Record(path=broken))
    extract_features(TinyNet(), records, cache_dir=tmp_path / "c", progress=False)
    model = ExplodingNet()
    model.load_state_dict(TinyNet().state_dict())
    model.name = TinyNet.name
    hit = extract_features(model, records, cache_dir=tmp_path / "c", progress=False)
    assert hit.from_cache and [p.path for p in hit.skipped] == [str(broken)] and "broken.png" not in hit.ids


def test_damaged_films_kept_are_listed_as_warnings_computed_and_from_cache(tmp_path: Path) -> None:
    """A film cut short but kept (read_film) is in the rows and in ``warnings``, also when the set comes from cache."""
    from badinputs import slightly_cut_film

    records = _films(tmp_path, 2)
    cut = slightly_cut_film(tmp_path, "cut.png", size=64)
    records.append(Record(path=cut))
    fs = extract_features(TinyNet(), records, cache_dir=tmp_path / "c", progress=False)
    assert len(fs) == 3 and fs.skipped == [] and [p.path for p in fs.warnings] == [str(cut)]
    assert fs.warnings[0].severity == "warning" and "ends early" in fs.warnings[0].problem
    model = ExplodingNet()
    model.load_state_dict(TinyNet().state_dict())
    model.name = TinyNet.name
    hit = extract_features(model, records, cache_dir=tmp_path / "c", progress=False)
    assert hit.from_cache and [(p.path, p.problem) for p in hit.warnings] == [(str(cut), fs.warnings[0].problem)]


def test_subset_keeps_rows_aligned(tmp_path: Path) -> None:
    fs = extract_features(TinyNet(), _films(tmp_path, 4), cache_dir=tmp_path / "c", progress=False)
    sub = fs.subset(fs.probabilities >= np.median(fs.probabilities))
    for rec, row in zip(sub.records, sub.features, strict=True):
        np.testing.assert_array_equal(row, fs.features[fs.records.index(rec)])


class CornerExplainer(Explainer):
    """Stand-in explainer: the map is the input film itself (so bright-spot location shows in the maps)."""

    name: ClassVar[str] = "corner-test"
    description: ClassVar[str] = "test stand-in"

    def explain(self, model, images, target="abnormal"):  # type: ignore[no-untyped-def]
        maps = images[:, 0].detach().numpy().astype(np.float32)
        return Explanation(maps=maps, raw=maps, probabilities=model.predict_proba(images).numpy(), method=self.name)


@pytest.fixture
def corner_explainer():  # type: ignore[no-untyped-def]
    from xray_xai.sdk.registry import explainers

    explainers.register(CornerExplainer)
    yield CornerExplainer.name
    explainers.unregister(CornerExplainer.name)


def test_explanation_features_downsampled_and_cached(tmp_path: Path, corner_explainer: str) -> None:
    records = _films(tmp_path, 4)
    fs = extract_explanation_features(
        TinyNet(), records, corner_explainer, grid=4, cache_dir=tmp_path / "c", progress=False
    )
    assert fs.features.shape == (4, 16)
    assert fs.features[0].argmax() == 0 and fs.features[1].argmax() == 15  # top-left vs bottom-right spot
    assert extract_explanation_features(
        TinyNet(), records, corner_explainer, grid=4, cache_dir=tmp_path / "c", progress=False
    ).from_cache
    # a different grid is a different cache entry
    assert extract_explanation_features(
        TinyNet(), records, corner_explainer, grid=2, cache_dir=tmp_path / "c", progress=False
    ).features.shape == (4, 4)
