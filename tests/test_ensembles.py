from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from xray_xai_plugins.models.ensembles import EnsembleCalibrated, EnsembleMean, select_region_learners

import xray_xai
from xray_xai.errors import PluginError
from xray_xai.sdk.interfaces import Model, Preprocessing

PRE = Preprocessing(name="t", input_size=16, channels=1, normalize="none")


class Fixed(Model):
    """A non-torch member whose probability is a constant."""

    name = "fixed"

    def __init__(self, p: float, pre: Preprocessing = PRE) -> None:
        self.p = p
        self.preprocessing = pre

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return torch.full((images.shape[0],), self.p)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.full((images.shape[0], 2), self.p)


def _cnn(seed: int) -> Any:
    torch.manual_seed(seed)
    return xray_xai.get_model("cnn-small")(image_size=16)


def test_mean_of_members_and_features_concatenate() -> None:
    ens = EnsembleMean([Fixed(0.2), Fixed(0.9)], member_names=["a", "b"])
    x = torch.zeros(3, 1, 16, 16)
    assert torch.allclose(ens.predict_proba(x), torch.full((3,), 0.55))
    assert ens.member_probabilities(x).shape == (2, 3)
    assert ens.features(x).shape == (3, 4)
    assert ens.tags.ensemble and not ens.tags.differentiable  # a non-torch member
    assert ens.member_names == ["a", "b"] and len(ens.members) == 2


def test_torch_members_make_it_differentiable() -> None:
    a, b = _cnn(0), _cnn(1)
    ens = EnsembleMean([a, b])
    assert ens.tags.differentiable and EnsembleMean.tags.differentiable is False  # per instance, class untouched
    x = torch.rand(2, 1, 16, 16)
    expected = (a.predict_proba(x) + b.predict_proba(x)) / 2
    assert torch.allclose(ens.predict_proba(x), expected)


def test_members_must_share_preprocessing() -> None:
    other = Preprocessing(name="u", input_size=32, channels=1, normalize="none")
    with pytest.raises(PluginError, match="share one preprocessing"):
        EnsembleMean([Fixed(0.1), Fixed(0.2, other)])
    renamed = Preprocessing(name="renamed", input_size=16, channels=1, normalize="none")
    EnsembleMean([Fixed(0.1), Fixed(0.2, renamed)])  # only the name differs: same pixels in, accepted


@given(st.floats(0, 1), st.floats(0, 1))
def test_res_dense_rule_equals_mean_at_half(p_resnet: float, p_densenet: float) -> None:
    ens = EnsembleMean([Fixed(p_resnet), Fixed(p_densenet)])
    mean = float(ens.predict_proba(torch.zeros(1, 1, 16, 16))[0])
    # the ensemble computes in float32, as the members' probabilities are float32
    p1, p2 = np.float32(p_resnet), np.float32(p_densenet)
    assert (mean >= 0.5) == (float(p1) + float(p2) >= 1.0) or abs(float(p1) + float(p2) - 1.0) < 1e-6


def test_select_region_learners_two_of_three_then_auc() -> None:
    scores = {
        "resnet": {"hand": {"auroc": 0.9, "accuracy": 0.7, "kappa": 0.4}, "wrist": {"auroc": 0.8, "accuracy": 0.8}},
        "dense": {"hand": {"auroc": 0.8, "accuracy": 0.8, "kappa": 0.5}, "wrist": {"auroc": 0.85, "accuracy": 0.7}},
        "mobile": {"hand": {"auroc": 0.7, "accuracy": 0.6, "kappa": 0.3}, "wrist": {"auroc": None, "accuracy": 0.6}},
    }
    scores["resnet"]["wrist"]["kappa"] = 0.3
    scores["dense"]["wrist"]["kappa"] = 0.2
    scores["mobile"]["wrist"]["kappa"] = 0.9
    choice = select_region_learners(scores)
    assert choice["hand"] == "dense"  # wins accuracy and kappa although resnet has the best AUROC
    # wrist: each member wins one metric -> no one wins two -> best AUROC (mobile's None ranks last)
    assert choice["wrist"] == "dense"
    assert EnsembleCalibrated.select is select_region_learners


def test_calibrated_routes_by_region() -> None:
    ens = EnsembleCalibrated([Fixed(0.2), Fixed(0.4)], routes={"Hand": Fixed(0.9)})
    x = torch.zeros(3, 1, 16, 16)
    out = ens.predict_proba(x, regions=["hand", "wrist", None])
    assert torch.allclose(out, torch.tensor([0.9, 0.3, 0.3]))
    assert torch.allclose(ens.predict_proba(x), torch.full((3,), 0.3))
    with pytest.raises(PluginError):
        ens.predict_proba(x, regions=["hand"])
    assert ens.config()["routes"].keys() == {"hand"}


def test_ensemble_mean_saved_and_loaded_through_the_store(tmp_path: Path) -> None:
    from xray_xai.models.store import load_model, save_model

    a, b = _cnn(0), _cnn(1)
    pa, pb = save_model(a, tmp_path / "a"), save_model(b, tmp_path / "b")
    ens = EnsembleMean([str(pa), str(pb)], load_member=load_model)
    assert ens.member_paths() == [str(pa / "model.safetensors"), str(pb / "model.safetensors")]
    ckpt = save_model(ens, tmp_path / "ens", metadata={"members": ens.member_names})
    back = load_model(ckpt)
    assert isinstance(back, EnsembleMean)
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(back.predict_proba(x), ens.predict_proba(x))
    assert back.fingerprint() == ens.fingerprint()


def test_members_by_name_need_a_loader_and_the_plugin_never_imports_the_store(tmp_path: Path) -> None:
    """Plugins import only the SDK and the ground floor: the store hands its loader to from_sidecar."""
    with pytest.raises(PluginError, match="load_member"):
        EnsembleMean(["densenet-full", "cnn-small"])
    loaded: list[str] = []

    def loader(name: str) -> Model:
        loaded.append(name)
        return Fixed(0.25)

    ens = EnsembleCalibrated(["m1", "m2"], routes={"hand": "m3"}, load_member=loader)
    assert loaded == ["m1", "m2", "m3"]
    assert ens.config() == {"members": ["m1", "m2"], "member_names": ["m1", "m2"], "routes": {"hand": "m3"}}
    assert "load_member" not in ens.config()  # the loader is not an option to save
    back = EnsembleCalibrated.from_sidecar({"config": ens.config()}, tmp_path / "w", load_member=loader)
    assert isinstance(back, EnsembleCalibrated) and loaded[3:] == ["m1", "m2", "m3"]


def test_calibrated_ensemble_round_trips_through_the_store(tmp_path: Path) -> None:
    from xray_xai.models.store import load_model, save_model

    a, b, hand = _cnn(0), _cnn(1), _cnn(2)
    pa, pb, ph = (save_model(m, tmp_path / n) for m, n in ((a, "a"), (b, "b"), (hand, "hand")))
    ens = EnsembleCalibrated([str(pa), str(pb)], routes={"hand": str(ph)}, load_member=load_model)
    back = load_model(save_model(ens, tmp_path / "ens"))
    assert isinstance(back, EnsembleCalibrated) and set(back.routes) == {"hand"}
    x = torch.rand(2, 1, 16, 16)
    regions = ["hand", "wrist"]
    assert torch.allclose(back.predict_proba(x, regions=regions), ens.predict_proba(x, regions=regions))
