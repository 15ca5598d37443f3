"""The weights fingerprint has one home (xray_xai.sdk.fingerprint) and is hashed once per set of weights."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

import xray_xai
from xray_xai.sdk import fingerprint as fpmod


def _cnn(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return xray_xai.get_model("cnn-small")(image_size=16).eval()


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = fpmod.hash_state

    def counting(name: str, state: Any) -> str:
        calls.append(1)
        return real(name, state)

    monkeypatch.setattr(fpmod, "hash_state", counting)
    return calls


def test_every_caller_gives_the_one_fingerprint(tmp_path: Path) -> None:
    from xray_xai.cluster.features import model_fingerprint
    from xray_xai.models import store
    from xray_xai.sdk.explainer import fingerprint

    model = _cnn()
    expected = fpmod.hash_state(model.name, model.state_dict())
    assert model.fingerprint() == fpmod.weights_fingerprint(model) == expected
    assert fingerprint(model) == model_fingerprint(model) == expected
    assert store.read_sidecar(store.save_model(model, tmp_path / "ck"))["fingerprint"] == expected
    assert _cnn(seed=1).fingerprint() != expected


def test_hashed_once_until_a_weight_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _cnn()
    calls = _count_hashes(monkeypatch)
    first = model.fingerprint()
    for _ in range(3):
        assert fpmod.weights_fingerprint(model) == model.fingerprint() == first
    assert len(calls) == 1
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    model(torch.rand(2, model.preprocessing.channels, 16, 16)).sum().backward()
    opt.step()  # in-place update: versions bump
    after_step = model.fingerprint()
    assert after_step != first and len(calls) == 2
    model.load_state_dict(_cnn().state_dict())  # back to the first weights
    assert model.fingerprint() == first and len(calls) == 3


def test_a_deep_copy_whose_weights_change_is_hashed_again() -> None:
    """The audit randomises deep copies: a value remembered for the original must not survive into the copy."""
    from xray_xai.audit.randomization import randomize_module

    model = _cnn()
    original = model.fingerprint()
    work = copy.deepcopy(model)
    assert work.fingerprint() == original  # same weights, same fingerprint
    last = [m for m in work.modules() if isinstance(m, torch.nn.Linear)][-1]
    randomize_module(last, generator_seed=3)
    changed = work.fingerprint()
    assert changed != original and changed == fpmod.hash_state(work.name, work.state_dict())
    assert model.fingerprint() == original  # the original is untouched
    with torch.no_grad():
        work.state_dict()[next(iter(work.state_dict()))].add_(1.0)  # through a state_dict view
    assert work.fingerprint() != changed


def test_models_without_a_fingerprint_method() -> None:
    class Plain(torch.nn.Module):
        name = "plain"

        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

    net = Plain()
    assert fpmod.weights_fingerprint(net) == fpmod.hash_state("plain", net.state_dict())
    assert fpmod.weights_fingerprint(object()) is None
