"""Prepared films (xray_xai.data.film_cache): round trip, staleness never silent, bad films, the training path."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import replace
from pathlib import Path

import badinputs as bad
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from xray_xai.data import film_cache
from xray_xai.data.film_cache import cache_key, open_cache, prepare
from xray_xai.data.geometry import geometry
from xray_xai.data.images import read_film
from xray_xai.data.loader import RecordDataset, Skipped, Warned
from xray_xai.sdk.interfaces import Preprocessing, Record

PRE = Preprocessing(name="resize-24", input_size=24, mode="resize")
#: the 8-bit rounding moves a film by at most half a level; normalised by ImageNet's smallest std
HALF_LEVEL = 0.5 / 255 + 1e-6
HALF_LEVEL_NORMALISED = HALF_LEVEL / min(PRE.std) + 1e-5


def _films(folder: Path, n: int = 5, seed: int = 0) -> list[Record]:
    """Grey-noise films of different, non-square sizes (so the resize makes fractional levels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        h, w = int(rng.integers(30, 60)), int(rng.integers(30, 60))
        path = folder / f"film{i}.png"
        Image.fromarray((rng.random((h, w)) * 255).astype(np.uint8)).save(path)
        recs.append(Record(path=path, label=i % 2))
    return recs


def _decoded(path: Path, pre: Preprocessing = PRE) -> np.ndarray:
    return geometry(read_film(path).pixels, pre)


def test_round_trip_is_the_decoded_film_rounded_to_8_bits(tmp_path: Path) -> None:
    recs = _films(tmp_path / "films")
    done = prepare(recs, PRE, tmp_path / "cache", progress=False)
    assert (done.prepared, done.reused, done.skipped) == (5, 0, [])
    locs = done.cache.locate_all(recs)
    for rec, loc in zip(recs, locs, strict=True):
        assert loc is not None
        want = _decoded(rec.path)
        assert np.array_equal(done.cache.read(loc), np.round(want * 255).astype(np.uint8))
        err = np.abs(done.cache.film(loc) - want).max()
        assert 0 < err <= HALF_LEVEL  # resized noise is not on the 8-bit grid: the rounding shows, within bounds
    assert done.cache.read_many([x for x in locs if x]).shape == (5, 24, 24)
    again = prepare(recs, PRE, tmp_path / "cache", progress=False)  # nothing new: no decoding, no new pack
    assert (again.prepared, again.reused, again.pack) == (0, 5, None)
    assert len(list((tmp_path / "cache" / cache_key(PRE)).iterdir())) == 1


def test_an_eight_bit_preprocessing_reads_back_bit_identical(tmp_path: Path) -> None:
    pre = replace(PRE, eight_bit=True)
    recs = _films(tmp_path / "films", n=3)
    cache = prepare(recs, pre, tmp_path / "cache", progress=False).cache
    for rec, loc in zip(recs, cache.locate_all(recs), strict=True):
        assert loc is not None and np.array_equal(cache.film(loc), _decoded(rec.path, pre))


def test_a_changed_source_is_never_read_from_the_cache(tmp_path: Path) -> None:
    recs = _films(tmp_path / "films", n=3)
    root = tmp_path / "cache"
    prepare(recs, PRE, root, progress=False)
    target = recs[1].path
    Image.fromarray(np.full((40, 40), 200, np.uint8)).save(target)  # new content, new size and mtime
    cache = open_cache(PRE, root)
    assert cache.locate(target) is None and cache.locate(recs[0].path) is not None
    redo = prepare(recs, PRE, root, progress=False)
    assert (redo.prepared, redo.reused) == (1, 2)  # only the changed film is decoded again
    loc = redo.cache.locate(target)
    assert loc is not None and np.all(redo.cache.read(loc) == 200)
    target.unlink()  # a source gone: not found either
    assert open_cache(PRE, root).locate(target) is None


def test_same_size_and_mtime_is_caught_by_verify_only(tmp_path: Path) -> None:
    recs = _films(tmp_path / "films", n=2)
    root = tmp_path / "cache"
    prepare(recs, PRE, root, progress=False)
    path = recs[0].path
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # one byte changed in place (inside the PNG's IEND/CRC region: size unchanged)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as `cp -p` or `rsync -t` would leave it
    assert open_cache(PRE, root).locate(path) is not None  # the documented limit of the quick check
    assert open_cache(PRE, root, verify=True).locate(path) is None
    assert open_cache(PRE, root, verify=True).locate(recs[1].path) is not None


def test_another_geometry_has_another_key_and_normalisation_does_not(tmp_path: Path) -> None:
    recs = _films(tmp_path / "films", n=2)
    root = tmp_path / "cache"
    prepare(recs, PRE, root, progress=False)
    for other in (
        replace(PRE, input_size=32),
        replace(PRE, mode="letterbox"),
        replace(PRE, mode="center-crop", crop=20),
        replace(PRE, exif_orientation=False),
        replace(PRE, eight_bit=True),
    ):
        assert cache_key(other) != cache_key(PRE)
        assert open_cache(other, root).locate_all(recs) == [None, None], other
    same = replace(PRE, name="renamed", normalize="minmax", channels=1, mean=(0.5,), std=(0.25,))
    assert cache_key(same) == cache_key(PRE)  # these act after the cached film: the films are shared
    assert None not in open_cache(same, root).locate_all(recs)


def test_a_pack_of_another_format_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recs = _films(tmp_path / "films", n=2)
    root = tmp_path / "cache"
    done = prepare(recs, PRE, root, progress=False)
    assert done.pack is not None
    index = json.loads((done.pack / "index.json").read_text())
    index["format"] = film_cache.FORMAT_VERSION + 1  # a pack written by another version under the same folder
    (done.pack / "index.json").write_text(json.dumps(index))
    assert open_cache(PRE, root).locate_all(recs) == [None, None]


def test_bad_films_are_skipped_listed_and_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recs = _films(tmp_path / "films", n=2)
    broken = bad.text_as_png(tmp_path / "films")
    slight = bad.slightly_cut_film(tmp_path / "films", "slight.jpg")
    recs += [Record(path=broken, label=0), Record(path=slight, label=1)]
    done = prepare(recs, PRE, tmp_path / "cache", progress=False)
    assert done.prepared == 3 and [p.path for p in done.skipped] == [str(broken)]
    assert [p.path for p in done.warnings] == [str(slight)] and "kept" in done.warnings[0].problem
    assert done.pack is not None and str(broken) in (done.pack / "skipped.csv").read_text()
    assert str(slight) in (done.pack / "warnings.csv").read_text()

    calls: list[str] = []
    real = film_cache._decode_one
    monkeypatch.setattr(film_cache, "_decode_one", lambda p, f: calls.append(p) or real(p, f))
    again = prepare(recs, PRE, tmp_path / "cache", progress=False)
    assert calls == [] and [p.path for p in again.skipped] == [str(broken)]

    ds = RecordDataset(recs, PRE, films=again.cache)
    assert isinstance(ds[2], Skipped) and ds.skipped[0].path == str(broken)  # decoded as usual: the usual error
    kept = ds[3]
    assert isinstance(kept, Warned) and kept.warning.severity == "warning" and ds.warnings == [kept.warning]
    strict = RecordDataset(recs, PRE, films=again.cache, strict=True)
    assert strict._where[3] is None and isinstance(strict[3], Skipped)  # strict refuses it as a decode would


def test_an_interrupted_prepare_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recs = _films(tmp_path / "films", n=4)
    real = film_cache._decode_one
    seen: list[str] = []

    def dying(path: str, fields: dict[str, object]) -> dict[str, object]:
        if len(seen) == 2:
            raise KeyboardInterrupt
        seen.append(path)
        return real(path, fields)

    monkeypatch.setattr(film_cache, "_decode_one", dying)
    with pytest.raises(KeyboardInterrupt):
        prepare(recs, PRE, tmp_path / "cache", progress=False, shard_films=1)
    folder = tmp_path / "cache" / cache_key(PRE)
    assert list(folder.iterdir()) == []  # no pack, no temporary folder
    assert open_cache(PRE, tmp_path / "cache").locate_all(recs) == [None] * 4


def test_worker_processes_and_small_shards_give_the_same_films(tmp_path: Path) -> None:
    recs = _films(tmp_path / "films", n=5)
    serial = prepare(recs, PRE, tmp_path / "a", progress=False).cache
    pooled = prepare(recs, PRE, tmp_path / "b", progress=False, workers=2, shard_films=2).cache
    assert len(pooled.shards) == 3
    a = serial.read_many([x for x in serial.locate_all(recs) if x])
    b = pooled.read_many([x for x in pooled.locate_all(recs) if x])
    assert np.array_equal(a, b)
    clone = pickle.loads(pickle.dumps(pooled))  # as a DataLoader worker gets it
    loc = clone.locate(recs[4].path)
    assert loc is not None and np.array_equal(clone.read(loc), b[4])


def test_dataset_items_match_decoding_up_to_the_rounding(tmp_path: Path) -> None:
    from xray_xai.data.augment import Augment

    recs = _films(tmp_path / "films", n=4)
    cache = prepare(recs, PRE, tmp_path / "cache", progress=False).cache
    for augment in (None, Augment.preset("standard")):
        plain = RecordDataset(recs, PRE, augment=augment)  # decoded, unrounded (cache=True would round to float16)
        cached = RecordDataset(recs, PRE, augment=augment, cache=True, films=cache)
        for i in range(len(recs)):
            torch.manual_seed(i)
            x, y, idx = plain[i]
            torch.manual_seed(i)
            xc, yc, idxc = cached[i]
            assert (y, idx) == (yc, idxc) and x.shape == xc.shape == (3, 24, 24)
            assert float((x - xc).abs().max()) <= HALF_LEVEL_NORMALISED
        assert cached._films == {}  # prepared films are not copied into the in-memory cache


def test_training_prepares_then_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_training import _train, make_tiny_mura

    root = make_tiny_mura(tmp_path / "m", n_patients=6)
    first = _train(root, tmp_path / "a", epochs=1, film_cache="auto", save=False)
    assert json.loads((tmp_path / "a" / "result.json").read_text())["hyperparameters"]["films"] == "prepared, 8-bit"
    import xray_xai.data.loader as loader

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("a prepared film was decoded")

    monkeypatch.setattr(loader, "read_film", no_decoding)
    monkeypatch.setattr(film_cache, "_decode_one", no_decoding)
    second = _train(root, tmp_path / "b", epochs=1, film_cache="auto", save=False)
    assert first.history[0]["train_loss"] == second.history[0]["train_loss"]  # type: ignore[attr-defined]


def test_prepare_command(tmp_path: Path) -> None:
    from test_training import make_tiny_mura

    from xray_xai.cli import main

    root = make_tiny_mura(tmp_path / "m", n_patients=3)
    runner = CliRunner()
    args = ["prepare", "--data", str(root), "--model", "cnn-small", "--image-size", "16", "--out", str(tmp_path / "c")]
    res = runner.invoke(main, [*args, "--split", "train,val", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    assert got["prepared"] == got["records"] > 0 and got["geometry"]["input_size"] == 16
    assert got["splits"] == ["train", "val"] and Path(got["folder"]).parent == tmp_path / "c"
    res = runner.invoke(main, args)
    assert res.exit_code == 0 and "prepared" in res.output
    res = runner.invoke(main, ["prepare", "--data", str(tmp_path / "nowhere")])
    assert res.exit_code == 1 and res.output.strip().count("\n") == 0 and "no such folder" in res.output


def test_evaluate_reads_prepared_films_and_says_so(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from test_training import make_tiny_mura

    from xray_xai import api

    root = make_tiny_mura(tmp_path / "m", n_patients=3)
    off = api.evaluate(tiny_checkpoint, root, dataset="mura", bootstrap=0)
    (tmp_path / "c").mkdir()  # a folder of one's own must exist (prepare --out makes it)
    on = api.evaluate(tiny_checkpoint, root, dataset="mura", bootstrap=0, film_cache=tmp_path / "c")
    assert "films" not in off and on["films"] == "prepared, 8-bit" and on["n_images"] == off["n_images"]
    test_films = api.open_dataset(root, "mura").records("test")
    cache = api.open_films(tiny_checkpoint, out=tmp_path / "c")
    assert cache.key == film_cache.cache_key(api.load_model(tiny_checkpoint).preprocessing)
    assert None not in cache.locate_all(test_films)


def test_a_cache_folder_that_is_not_there_or_not_a_folder_is_one_clear_error(tmp_path: Path) -> None:
    from test_training import _train, make_tiny_mura

    from xray_xai.errors import DataError

    root = make_tiny_mura(tmp_path / "m", n_patients=3)
    with pytest.raises(DataError, match="no such cache folder"):  # `--cache atuo` must not make a folder "atuo"
        _train(root, tmp_path / "run", epochs=1, film_cache=str(tmp_path / "atuo"), save=False)
    assert not (tmp_path / "atuo").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        prepare(_films(tmp_path / "films", n=1), PRE, tmp_path / "file", progress=False)
