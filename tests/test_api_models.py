"""The model functions of the API are typed: no ``**options: Any``, and every recipe field is a keyword of train."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from test_training import OPTS, make_tiny_mura

from xray_xai import api
from xray_xai.models.config import TrainConfig

FUNCTIONS = [api.train, api.evaluate, api.predict, api.load_model, api.save_model, api.list_store]


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_no_catch_all_keywords(fn: object) -> None:
    kinds = {p.kind for p in inspect.signature(fn).parameters.values()}  # type: ignore[arg-type]
    assert inspect.Parameter.VAR_KEYWORD not in kinds


def test_train_takes_every_recipe_field_and_a_config(tmp_path: Path) -> None:
    params = inspect.signature(api.train).parameters
    missing = {f.name for f in dataclasses.fields(TrainConfig)} - set(params) - {"model_options"}
    assert not missing and "model_options" in params and "config" in params
    root = make_tiny_mura(tmp_path / "data", n_patients=12, size=16)
    cfg = TrainConfig(epochs=1, image_size=16, optimizer="adam")
    res = api.train("cnn-small", root, cfg, lr=5e-4, hidden=[8], dataset="mura", dataset_options=OPTS,
                    out_dir=tmp_path / "run", progress=False)  # fmt: skip
    side = api.load_model(res.checkpoint).sidecar  # type: ignore[attr-defined]
    assert side["hyperparameters"]["lr"] == 5e-4 and side["hyperparameters"]["optimizer"] == "adam"
    assert side["config"]["hidden"] == [8] and side["epochs"] == 1
    assert [e["path"] for e in api.list_store()] == [str(res.checkpoint)]
