"""NASNet-A Mobile (our implementation, checked against the paper's size and cost) and the ``ensemble200`` preset
(DenseNet-201 + MobileNet-V1 + NASNet-Mobile): trained through ``xray-xai train``, saved, reloaded, explained per
member and fused. Tiny sizes throughout (64 px, a few phantom films, one epoch)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from xray_xai_plugins.models.ensembles import Ensemble200
from xray_xai_plugins.models.nasnet import NASNetATrunk, NasNetMobile
from xray_xai_plugins.models.timm_models import MobileNetV1

import xray_xai
from xray_xai.cli import main
from xray_xai.errors import PluginError
from xray_xai.sdk import registry
from xray_xai.testing.explainers import check_explainer
from xray_xai.testing.models import check_model, example_batch


@pytest.fixture(scope="module", autouse=True)
def _registered() -> Iterator[None]:
    """``mobilenet-v1`` and ``ensemble200`` are entry points of pyproject.toml; an environment installed before they
    were added does not list them yet, so they are registered here for the module when missing."""
    added = []
    for cls in (MobileNetV1, Ensemble200):
        if cls.name not in registry.models:
            registry.models.register(cls, package="xray-xai")
            added.append(cls.name)
    yield
    for name in added:
        registry.models.unregister(name)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_size_and_cost_match_the_paper() -> None:
    """Zoph et al. 2018, Table 2: NASNet-A (4 @ 1056) has 5.3 M parameters and 564 M multiply-adds at 224 px."""
    from torch.utils.flop_counter import FlopCounterMode

    trunk = NASNetATrunk(repeats=4, penultimate_filters=1056, stem_filters=32).eval()
    assert trunk.out_channels == 1056
    with_imagenet_head = _count(trunk) + 1056 * 1000 + 1000
    assert round(with_imagenet_head / 1e6, 1) == 5.3
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = trunk(torch.zeros(1, 3, 224, 224))
    mult_adds = counter.get_total_flops() / 2 + 1056 * 1000  # convolutions, and the 1000-class classifier
    assert abs(mult_adds - 564e6) / 564e6 < 0.01
    assert tuple(out.shape) == (1, 1056, 7, 7)
    ours = NasNetMobile(image_size=64)
    assert _count(ours) == _count(trunk) + 1056 + 1  # our head: one logit


def test_cells_follow_the_nasnet_a_layout() -> None:
    trunk = NASNetATrunk()
    names = trunk.cell_names
    assert names[:2] == ["cell_stem_0", "cell_stem_1"] and len(names) == 2 + 12 + 2
    assert names.index("reduction_cell_0") == 2 + 4 and names.index("reduction_cell_1") == 2 + 4 + 1 + 4
    widths = [getattr(trunk, n).out_channels for n in names]
    assert widths[:3] == [4 * 11, 4 * 22, 6 * 44] and widths[-1] == 6 * 176
    separable = {m.layers[1].kernel_size[0] for m in trunk.modules() if type(m).__name__ == "SeparableStack"}
    assert separable == {3, 5, 7}


@pytest.mark.parametrize("size,side", [(224, 7), (64, 2), (100, 4)])
def test_forward_shapes(size: int, side: int) -> None:
    torch.manual_seed(0)
    model = NasNetMobile(image_size=size).eval()
    x = example_batch(model.preprocessing, batch=2)
    with torch.no_grad():
        assert tuple(model.feature_map(x).shape) == (2, 1056, side, side)
        assert tuple(model(x).shape) == (2,) and tuple(model.features(x).shape) == (2, 1056)


def test_contract_channels_last_and_regime() -> None:
    torch.manual_seed(0)
    model: Any = check_model(NasNetMobile, image_size=64)
    assert model.get_submodule(model.target_layer) is model.backbone.relu
    x = example_batch(model.preprocessing, batch=2)
    with torch.no_grad():
        plain = model(x)
        fast = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)
    model.set_regime(["backbone.cell_11.", "classifier."])
    trainable = {n.split(".")[0] + "." + n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.cell_11", "classifier.weight", "classifier.bias"}
    model.train()
    frozen_bn = model.backbone.cell_0.conv_in[2]
    assert not frozen_bn.training and model.backbone.cell_11.conv_in[2].training


def test_pretrained_is_refused_in_one_line() -> None:
    with pytest.raises(PluginError) as err:
        NasNetMobile(pretrained=True)
    assert "nasnet-mobile" in str(err.value) and "--no-pretrained" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("method", ["gradcam", "layercam", "saliency"])
def test_explainers_run_on_it(method: str) -> None:
    torch.manual_seed(0)
    model = NasNetMobile(image_size=64)
    check_explainer(xray_xai.get_explainer(method), model)


def test_mobilenet_v1_sees_the_scale_its_weights_were_trained_on() -> None:
    torch.manual_seed(0)
    model: Any = check_model(MobileNetV1, image_size=64)
    pixels = torch.rand(1, 3, 64, 64)
    mean = torch.tensor(model.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.preprocessing.std).view(1, 3, 1, 1)
    imagenet = (pixels - mean) / std
    with torch.no_grad():
        ours = model.feature_map(imagenet)
        timm_scale = model.backbone.forward_features((pixels - 0.5) / 0.5)
    torch.testing.assert_close(ours, timm_scale, rtol=1e-4, atol=1e-5)


def test_ensemble200_needs_one_member_of_each_architecture() -> None:
    with pytest.raises(PluginError, match="xray-xai train --model ensemble200"):
        Ensemble200()
    two_nasnets = [NasNetMobile(image_size=32), NasNetMobile(image_size=32), MobileNetV1(image_size=32)]
    with pytest.raises(PluginError, match="one each of densenet201, mobilenet-v1, nasnet-mobile"):
        Ensemble200(members=two_nasnets)


def test_ensemble200_refuses_pretrained_before_training(tmp_path: Path) -> None:
    from xray_xai.api import train

    with pytest.raises(PluginError, match="member nasnet-mobile has no pretrained weights"):
        train("ensemble200", tmp_path, pretrained=True, progress=False)
    assert not list(tmp_path.rglob("history.csv"))


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xray_xai.data.datasets import synth

    return synth(tmp_path_factory.mktemp("e200") / "ph", n_studies=8, seed=3, image_size=64, progress=False)


def test_ensemble200_trains_reloads_and_explains_per_member(phantoms: Path, tmp_path: Path) -> None:
    from xray_xai import api
    from xray_xai.models.store import read_sidecar

    run = tmp_path / "run"
    args = ["train", "--model", "ensemble200", "--data", str(phantoms), "--image-size", "64", "--epochs", "1",
            "--batch-size", "4", "--seed", "0", "--out", str(run), "--json"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    checkpoint = Path(json.loads(res.stdout)["checkpoint"])
    for member in ("densenet201", "mobilenet-v1", "nasnet-mobile"):
        assert (run / f"member-{member}" / "history.csv").is_file()
    sidecar = read_sidecar(checkpoint)
    assert sidecar["name"] == "ensemble200" and len(sidecar["members"]) == 3

    ensemble: Any = api.load_model(checkpoint)
    assert ensemble.member_names == ["densenet201", "mobilenet-v1", "nasnet-mobile"]
    assert [m.preprocessing.input_size for m in ensemble.members] == [64, 64, 64]
    x = example_batch(ensemble.preprocessing, batch=3, seed=1)
    with torch.no_grad():
        each = torch.stack([m.predict_proba(x) for m in ensemble.members])
        fused = ensemble.predict_proba(x)
    assert len({tuple(p.tolist()) for p in each}) == 3  # three different models
    torch.testing.assert_close(fused, each.mean(dim=0))

    film = sorted(phantoms.rglob("*.png"))[0]
    out = tmp_path / "explained"
    res = CliRunner().invoke(main, ["explain", "--checkpoint", str(checkpoint), "--method", "gradcam", "--input",
                                    str(film), "--per-member", "--out", str(out), "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    folder = out / "ensemble200" / "gradcam"
    members = [np.load(next(folder.glob(f"*.member-{m}.npy"))) for m in ensemble.member_names]
    disagreement = np.load(next(folder.glob("*.disagreement.npy")))
    np.testing.assert_allclose(disagreement, np.stack(members).std(axis=0), atol=1e-6)
    assert next(folder.glob("*.members.png")).is_file()


def test_ensemble200_from_members_trained_elsewhere(phantoms: Path) -> None:
    """``--members``: one stored model of each architecture (any order) is scored and saved, nothing is trained."""
    from xray_xai import api
    from xray_xai.models.store import save_model

    torch.manual_seed(0)
    built = {name: xray_xai.get_model(name)(image_size=32) for name in ("nasnet-mobile", "densenet201", "mobilenet-v1")}
    paths = [str(save_model(model, metadata={})) for model in built.values()]
    res = api.train("ensemble200", phantoms, members=",".join(paths), progress=False)
    ensemble: Any = api.load_model(res.checkpoint)
    assert ensemble.member_names == ["nasnet-mobile", "densenet201", "mobilenet-v1"]
    assert [str(Path(m.checkpoint_path).parent) for m in ensemble.members] == paths
    assert not list(res.run_dir.glob("member-*"))
    with pytest.raises(PluginError, match="one each of"):
        api.train("ensemble200", phantoms, members=f"{paths[0]},{paths[0]},{paths[2]}", progress=False)
