"""The model store: bit-exact round trips, newest-wins resolution, and refusal of anything unsafe or foreign."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import xray_xai
from xray_xai.errors import CheckpointError
from xray_xai.models import store
from xray_xai.sdk.interfaces import Preprocessing
from xray_xai.testing.models import example_batch


def _cnn(seed: int = 0, size: int = 32) -> Any:
    torch.manual_seed(seed)
    model = xray_xai.get_model("cnn-small")(image_size=size)
    model.train()  # move the BatchNorm running statistics away from their init, so they must be saved too
    with torch.no_grad():
        model(example_batch(model.preprocessing, batch=4, seed=seed))
    return model.eval()


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    model = _cnn()
    x = example_batch(model.preprocessing, batch=3, seed=5)
    with torch.no_grad():
        before = model(x)
    meta = {"dataset": "synthetic", "split_fingerprint": "abc", "epochs": 2, "metrics": {"auc": 0.75}}
    folder = store.save_model(model, metadata=meta)
    assert folder.parent == store.home() / "models" / "cnn-small"
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"

    side = store.read_sidecar(folder)
    assert side["name"] == "cnn-small" and side["config"] == model.config()
    assert side["metrics"] == {"auc": 0.75} and side["dataset"] == "synthetic" and side["epochs"] == 2
    assert side["fingerprint"] == model.fingerprint() and side["trainable"] is None
    assert Preprocessing.from_dict(side["preprocessing"]) == model.preprocessing
    assert side["xray_xai_version"] == xray_xai.__version__ and side["created"]

    for ref in ("cnn-small", folder, folder / "model.safetensors"):
        loaded: Any = store.load_model(ref)
        assert not loaded.training
        with torch.no_grad():
            assert torch.equal(loaded(x), before)
        assert loaded.fingerprint() == model.fingerprint()
        assert loaded.checkpoint_path == folder / "model.safetensors"


def test_regime_and_preprocessing_come_back(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = xray_xai.get_model("densenet-linear")(image_size=48)
    folder = store.save_model(model, tmp_path / "ckpt")
    assert folder == tmp_path / "ckpt"
    loaded: Any = store.load_model(folder)
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}
    assert loaded.preprocessing == model.preprocessing and loaded.preprocessing.crop == round(312 * 48 / 224)


def test_newest_checkpoint_wins_and_list_store() -> None:
    first = store.save_model(_cnn(seed=0), metadata={"metrics": {"auc": 0.6}})
    second = store.save_model(_cnn(seed=1), metadata={"metrics": {"auc": 0.7}})
    assert first != second
    assert store.latest("cnn-small") == second
    newest: Any = store.load_model("cnn-small")
    assert newest.fingerprint() == _cnn(seed=1).fingerprint()
    listed = store.list_store()
    assert [e["path"] for e in listed] == [str(first), str(second)]
    assert listed[1]["metrics"] == {"auc": 0.7} and "problem" not in listed[1]


def test_untrained_name_says_how_to_train() -> None:
    with pytest.raises(CheckpointError) as err:
        store.load_model("densenet-full")
    msg = str(err.value)
    assert "no trained 'densenet-full'" in msg and str(store.home() / "models") in msg
    assert "xray-xai train --model densenet-full --data DIR" in msg and "\n" not in msg


def test_unknown_name_or_missing_path() -> None:
    with pytest.raises(CheckpointError, match="not a registered model name"):
        store.load_model("no-such-model-or-file")


class _Payload:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("fname", ["model.pt", "model.pth", "model.ckpt", "model.safetensors"])
def test_pickles_are_refused_without_unpickling(tmp_path: Path, fname: str) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "ckpt"
    evil.mkdir()
    (evil / fname).write_bytes(pickle.dumps(_Payload(marker)))
    (evil / "model.json").write_text(json.dumps({"name": "cnn-small", "config": {"image_size": 32}}))
    for ref in (evil / fname, evil):
        with pytest.raises(CheckpointError) as err:
            store.load_model(ref)
        assert fname in str(err.value)
    assert not marker.exists(), "a pickle was unpickled"


def test_truncated_weights_are_reported(tmp_path: Path) -> None:
    folder = store.save_model(_cnn(), tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as err:
        store.load_model(folder)
    assert str(weights) in str(err.value)
    # without the checksum in the sidecar, safetensors itself must notice
    side = json.loads((folder / "model.json").read_text())
    del side["weights_sha256"]
    (folder / "model.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="safetensors") as err:
        store.load_model(folder)
    assert str(weights) in str(err.value)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    folder = store.save_model(_cnn(), tmp_path / "ckpt")
    side = json.loads((folder / "model.json").read_text())
    side["name"] = "convnet"
    side["config"] = {"image_size": 32}
    (folder / "model.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="do not fit model 'convnet'") as err:
        store.load_model(folder)
    assert "model.safetensors" in str(err.value) and "\n" not in str(err.value)


def test_weights_that_do_not_fit_name_each_kind_of_mismatch_in_one_line(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = store.save_model(_cnn(), tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    first = next(iter(state))
    missing = next(k for k in state if k != first and k.endswith("running_var"))
    state[first] = torch.zeros(3, 3)
    del state[missing]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(weights))
    side = json.loads((folder / "model.json").read_text())
    del side["weights_sha256"]  # let the fit check, not the checksum, speak
    (folder / "model.json").write_text(json.dumps(side))
    model_shape = tuple(_cnn().state_dict()[first].shape)
    with pytest.raises(CheckpointError) as err:
        store.load_model(folder)
    message = str(err.value)
    assert "\n" not in message and "do not fit model 'cnn-small' (another architecture?)" in message
    assert f"1 missing (e.g. {missing})" in message
    assert "1 unexpected (e.g. extra.weight)" in message
    assert f"1 of other shape (e.g. {first}: file (3, 3), model {model_shape})" in message


def test_state_fit_lists_every_mismatch_and_spares_what_may_be_missing() -> None:
    from xray_xai.models.statefit import state_fit

    want = {"a": torch.zeros(2), "b": torch.zeros(2, 2), "bn.num_batches_tracked": torch.zeros(()), "c": torch.zeros(1)}
    have = {"a": torch.zeros(2), "b": torch.zeros(3), "x": torch.zeros(1)}
    fit = state_fit(have, want)
    assert not fit.ok
    assert fit.missing == ["bn.num_batches_tracked", "c"] and fit.unexpected == ["x"]
    assert fit.shape_mismatch == [{"key": "b", "file": [3], "model": [2, 2]}]
    spared = state_fit(have, want, may_miss=lambda k: k.endswith("num_batches_tracked"))
    assert spared.missing == ["c"]
    assert (
        spared.summary()
        == "1 missing (e.g. c); 1 unexpected (e.g. x); 1 of other shape (e.g. b: file (3,), model (2, 2))"
    )
    assert state_fit(want, want).ok and state_fit(want, want).summary() == ""


def test_missing_sidecar(tmp_path: Path) -> None:
    folder = store.save_model(_cnn(), tmp_path / "ckpt")
    (folder / "model.json").unlink()
    with pytest.raises(CheckpointError, match="sidecar"):
        store.load_model(folder / "model.safetensors")


def test_metadata_cannot_override_reserved_keys() -> None:
    with pytest.raises(ValueError, match="config"):
        store.save_model(_cnn(), metadata={"config": {}})


def test_lbp_logreg_round_trip_without_pickle(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.random((12, 1, 24, 24)), dtype=torch.float32)
    y = np.arange(12) % 2
    model = xray_xai.get_model("lbp-logreg")(image_size=24, n_components=5).fit(x, y)
    folder = store.save_model(model, tmp_path / "lbp")
    loaded: Any = store.load_model(folder)
    assert torch.equal(loaded.predict_proba(x), model.predict_proba(x))
    assert torch.equal(loaded.features(x), model.features(x))
    assert loaded.fingerprint() == model.fingerprint()


def test_members_hook_for_ensembles(tmp_path: Path) -> None:
    from xray_xai.sdk import registry

    calls: list[tuple[dict[str, Any], Path]] = []
    base = xray_xai.get_model("cnn-small")

    class Combo(base):  # type: ignore[misc,valid-type]
        name = "test-combo"

        @classmethod
        def from_sidecar(cls, sidecar: dict[str, Any], path: Path, *, load_member: Any) -> Any:
            assert load_member is store.load_model  # the store hands its loader over: plugins never import it
            calls.append((sidecar, path))
            return cls(**sidecar["config"])

    registry.models.register(Combo)
    try:
        torch.manual_seed(0)
        folder = store.save_model(Combo(image_size=32), tmp_path / "combo", metadata={"members": ["a", "b"], "seed": 3})
        loaded: Any = store.load_model(folder)
    finally:
        registry.models.unregister("test-combo")
    assert isinstance(loaded, Combo)
    assert calls and calls[0][0]["members"] == ["a", "b"] and calls[0][1] == folder / "model.safetensors"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_store_files_get_the_permissions_the_umask_allows(tmp_path: Path, umask: int) -> None:
    """A store shared by a lab: checkpoint folders and files are as readable as the umask allows (not 0700/0600)."""
    from xray_xai._util.fsutil import atomic_write_text

    old = os.umask(umask)
    try:
        folder = store.save_model(_cnn())  # a new folder in the store
        again = store.save_model(_cnn(seed=1), tmp_path / "explicit")  # an explicit folder...
        store.save_model(_cnn(seed=2), again)  # ...and one overwritten in place
        text = atomic_write_text(tmp_path / "out" / "note.txt", "x")
    finally:
        os.umask(old)
    for d in (folder, again):
        assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~umask, d
        for f in (d / "model.safetensors", d / "model.json"):
            assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f
    assert stat.S_IMODE(text.stat().st_mode) == 0o666 & ~umask
