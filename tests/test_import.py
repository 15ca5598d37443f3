"""Models from elsewhere: ``xray-xai import`` / ``api.import_model`` into the store, ``api.wrap_model`` in memory.

Outside models are built here the way other projects build them (their own wrapper classes, ``nn.DataParallel``,
a sigmoid or softmax in ``forward``, BatchNorm eps changed) and saved with ``torch.save(model.state_dict())``; after
the import, xray-xai must give the probabilities they gave, on inputs made by xray-xai's own preprocessing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from xray_xai import api
from xray_xai.cli import main
from xray_xai.data.geometry import to_tensor
from xray_xai.data.images import read_image
from xray_xai.errors import CheckpointError, PluginError
from xray_xai.sdk import registry
from xray_xai.testing.models import check_model


@pytest.fixture(autouse=True)
def _imported_plugin() -> Any:
    """The ``imported`` plugin, registered in-process where the installed metadata predates its entry point."""
    from xray_xai_plugins.models.imported import ImportedModel

    added = "imported" not in registry.models
    if added:
        registry.models.register(ImportedModel, package="xray-xai")
    yield
    if added:
        registry.models.unregister("imported")


def _randomise_bn(net: nn.Module, seed: int = 0) -> None:
    """Running statistics away from (0, 1), so that a wrong BatchNorm eps or a lost buffer changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


class SigmoidNet(nn.Module):
    """A torchvision ResNet-18 under its own key names, BatchNorm eps 1e-3, a sigmoid in forward."""

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        self.model = torchvision.models.resnet18(num_classes=1)
        for m in self.model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = 1e-3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x))


class SoftmaxNet(nn.Module):
    """timm's tiny test EfficientNet as a 2-class softmax classifier (softmax inside forward)."""

    def __init__(self) -> None:
        super().__init__()
        import timm

        self.net = timm.create_model("test_efficientnet", num_classes=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


def _film_batch(tmp_path: Path, pre: Any, n: int = 3) -> torch.Tensor:
    """``n`` random 8-bit films of odd sizes, read and preprocessed by xray-xai."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        path = tmp_path / f"film{i}.png"
        Image.fromarray(rng.integers(0, 256, (70 + 9 * i, 61 + 5 * i), dtype=np.uint8)).save(path)
        out.append(to_tensor(read_image(path), pre))
    return torch.stack(out)


@pytest.mark.parametrize("parallel", [False, True], ids=["plain", "dataparallel"])
def test_torchvision_sigmoid_model_round_trip(tmp_path: Path, parallel: bool) -> None:
    torch.manual_seed(0)
    inner = SigmoidNet()
    _randomise_bn(inner)
    outside: nn.Module = nn.DataParallel(inner) if parallel else inner
    outside.eval()
    path = tmp_path / "resnet.pth"
    torch.save(outside.state_dict(), path)
    assert next(iter(outside.state_dict())).startswith("module.model." if parallel else "model.")

    pre = api.preprocessing(input_size=48, mean=[0.5], std=[0.25])
    result = api.import_model(
        path, "torchvision:resnet18", "outside-resnet", output="probability", arch_options={"bn_eps": 1e-3},
        preprocessing=pre,
    )  # fmt: skip
    assert result.prefix_stripped == ("module.model." if parallel else "model.")
    assert result.num_classes == 1 and result.target_layer == "backbone.layer4" and result.cam_exact
    model = api.load_model("outside-resnet")
    assert model.name == "outside-resnet" and model.preprocessing == pre
    x = _film_batch(tmp_path, model.preprocessing)
    with torch.no_grad():
        theirs = outside(x).squeeze(1)
        logits = inner.model(x).squeeze(1)
        assert torch.allclose(model(x), logits, rtol=1e-5, atol=1e-6)
    assert torch.allclose(model.predict_proba(x), theirs, atol=1e-6)
    check_model(model)  # the model contract, including the rebuild from the sidecar's config


def test_bn_eps_matters_and_is_recorded(tmp_path: Path) -> None:
    """Without --arch-option bn_eps the same weights give other probabilities: the option is not decoration."""
    torch.manual_seed(1)
    inner = SigmoidNet().eval()
    _randomise_bn(inner, seed=1)
    path = tmp_path / "r.pth"
    torch.save(inner.state_dict(), path)
    pre = api.preprocessing(input_size=40)
    api.import_model(path, "torchvision:resnet18", "eps-default", output="probability", preprocessing=pre)
    api.import_model(
        path, "torchvision:resnet18", "eps-right", output="probability", preprocessing=pre,
        arch_options={"bn_eps": 1e-3},
    )  # fmt: skip
    x = _film_batch(tmp_path, pre, n=2)
    right, default = api.load_model("eps-right"), api.load_model("eps-default")
    with torch.no_grad():
        theirs = inner.model(x).squeeze(1)
        assert torch.allclose(right(x), theirs, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(default(x), theirs, rtol=1e-4, atol=1e-5)
    assert right.sidecar is not None and right.sidecar["source"]["arch_options"] == {"bn_eps": 1e-3}


@pytest.mark.parametrize("parallel", [False, True], ids=["plain", "dataparallel"])
def test_timm_softmax_model_round_trip(tmp_path: Path, parallel: bool) -> None:
    torch.manual_seed(2)
    inner = SoftmaxNet()
    _randomise_bn(inner, seed=2)
    outside: nn.Module = nn.DataParallel(inner) if parallel else inner
    outside.eval()
    path = tmp_path / "effnet.safetensors" if parallel else tmp_path / "effnet.pt"
    if parallel:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in outside.state_dict().items()}, str(path))
    else:
        torch.save({"epoch": 3, "state_dict": outside.state_dict()}, path)  # nested, as training scripts save
    pre = api.preprocessing(input_size=64, mode="center-crop", resize=72)
    result = api.import_model(path, "timm:test_efficientnet", "outside-effnet", output="softmax", preprocessing=pre)
    assert result.num_classes == 2  # read from the file's last layer
    model = api.load_model("outside-effnet")
    x = _film_batch(tmp_path, model.preprocessing)
    with torch.no_grad():
        theirs = outside(x)[:, 1]
    assert torch.allclose(model.predict_proba(x), theirs, atol=1e-6)
    check_model(model)  # two classes: a Linear(D, 1) classifier built from the rows' difference


def test_positive_index_picks_the_abnormal_class(tmp_path: Path) -> None:
    torch.manual_seed(3)
    inner = SoftmaxNet().eval()
    path = tmp_path / "s.pth"
    torch.save(inner.state_dict(), path)
    pre = api.preprocessing(input_size=32)
    api.import_model(path, "timm:test_efficientnet", "class-zero", output="softmax", positive_index=0,
                     preprocessing=pre)  # fmt: skip
    x = _film_batch(tmp_path, pre, n=2)
    with torch.no_grad():
        theirs = inner(x)[:, 0]
    assert torch.allclose(api.load_model("class-zero").predict_proba(x), theirs, atol=1e-6)


def test_whole_model_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"

    class Payload:
        def __reduce__(self) -> Any:
            return (open, (str(marker), "w"))  # unpickling would create the marker file

    evil = tmp_path / "evil.pth"
    torch.save({"model": Payload()}, evil)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=r"torch\.save\(model\.state_dict\(\)") as info:
        api.import_model(evil, "torchvision:resnet18", "evil")
    assert "evil.pth" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()

    whole = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(3, 1)), whole)  # a pickled whole model
    res = CliRunner().invoke(main, ["import", str(whole), "--arch", "torchvision:resnet18", "--name", "whole"])
    assert res.exit_code == 1
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: ") and "whole.pt" in line and "state_dict()" in line
    assert not (Path(api.models_dir()) / "whole").exists()


def test_missing_and_unexpected_keys_are_listed_and_refused(tmp_path: Path) -> None:
    torch.manual_seed(4)
    net = nn.DataParallel(SigmoidNet())
    state = dict(net.state_dict())
    state.pop("module.model.layer2.0.bn1.running_var")
    state["module.model.extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"1 missing .*1 unexpected") as info:
        api.import_model(path, "torchvision:resnet18", "broken")
    details = info.value.details  # type: ignore[attr-defined]
    assert details["missing"] == ["layer2.0.bn1.running_var"] and details["unexpected"] == ["extra.weight"]

    res = CliRunner().invoke(
        main, ["import", str(path), "--arch", "torchvision:resnet18", "--name", "broken", "--json"]
    )
    assert res.exit_code == 1
    listed = json.loads(res.stdout)
    assert listed["missing"] == ["layer2.0.bn1.running_var"] and listed["unexpected"] == ["extra.weight"]
    assert len(res.stderr.strip().splitlines()) == 1

    res = CliRunner().invoke(main, ["import", str(path), "--arch", "torchvision:resnet34", "--name", "other"])
    assert res.exit_code == 1 and "missing" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_softmax_file_imported_as_logit_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "s.pth"
    torch.save(SoftmaxNet().state_dict(), path)
    with pytest.raises(CheckpointError, match="--output softmax"):
        api.import_model(path, "timm:test_efficientnet", "wrong-output")


def test_bad_specs_and_names(tmp_path: Path) -> None:
    path = tmp_path / "r.pth"
    torch.save(SigmoidNet().state_dict(), path)
    with pytest.raises(PluginError, match="did you mean resnet18"):
        api.import_model(path, "torchvision:resnet18x", "x")
    with pytest.raises(PluginError, match="timm:<model> or torchvision:<model>"):
        api.import_model(path, "keras:resnet18", "x")
    with pytest.raises(PluginError, match="registered model plugin"):
        api.import_model(path, "torchvision:resnet18", "cnn-small")
    with pytest.raises(PluginError, match="center-crop needs --resize"):
        api.preprocessing(mode="center-crop")
    res = CliRunner().invoke(main, ["import", str(tmp_path / "nope.pth"), "--arch", "timm:x", "--name", "n"])
    assert res.exit_code == 1 and "nope.pth" in res.stderr and "not found" in res.stderr


def test_cli_import_then_models_shows_provenance(tmp_path: Path) -> None:
    torch.manual_seed(5)
    net = nn.DataParallel(SigmoidNet())
    path = tmp_path / "mura_densenet_like.pth"
    torch.save(net.state_dict(), path)
    runner = CliRunner()
    res = runner.invoke(main, [
        "import", str(path), "--arch", "torchvision:resnet18", "--name", "cli-import", "--output", "probability",
        "--arch-option", "bn_eps=1e-3", "--input-size", "40", "--mean", "0.5", "--std", "0.5",
        "--trained-on", "mura",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "imported cli-import from mura_densenet_like.pth" in res.stdout and "'module.model.'" in res.stdout
    from xray_xai._util.fsutil import sha256_file

    digest = sha256_file(path)
    res = runner.invoke(main, ["models", "--json"])
    (entry,) = [e for e in json.loads(res.stdout) if e["name"] == "cli-import"]
    assert entry["source"]["sha256"] == digest and entry["source"]["file"] == path.name
    assert entry["source"]["arch"] == "torchvision:resnet18" and entry["dataset"] == "mura"
    res = runner.invoke(main, ["models"], env={"COLUMNS": "400"})
    assert res.exit_code == 0 and f"imported from {path.name}" in res.stdout and digest[:12] in res.stdout
    sidecar = json.loads((Path(entry["path"]) / "model.json").read_text())
    assert sidecar["plugin"] == "imported" and sidecar["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert sidecar["config"]["arch_options"] == {"bn_eps": 0.001}


class ToyNet(nn.Module):
    """A user's own small classifier: conv trunk, global pooling, linear head, a sigmoid in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1),
                                   nn.ReLU(inplace=True))  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(self.pool(self.trunk(x)).flatten(1)))


def test_wrap_model_with_explainers_audit_and_clustering(tmp_path: Path) -> None:
    torch.manual_seed(6)
    net = ToyNet()
    model = api.wrap_model(net, preprocessing=api.preprocessing(input_size=32), output="probability", name="toy")
    assert model.target_layer == "backbone.trunk" and model.tags.has_linear_head  # found, and CAM is exact
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.predict_proba(x), net(x).squeeze(1), atol=1e-6)

    root = api.synth(tmp_path / "ph", n_studies=6, seed=0, image_size=64, progress=False)
    result = api.explain(model, "gradcam,cam", data=root, split="test", out=tmp_path / "ex", limit=2,
                         show_progress=False)  # fmt: skip
    maps = sorted((tmp_path / "ex").rglob("*.npy"))
    assert len(maps) == 4, result
    for m in maps:
        arr = np.load(m)
        assert arr.shape == (32, 32) and np.isfinite(arr).all() and arr.std() > 0
    report = api.audit([model], ["gradcam"], root, split="test", n=4, steps=3, grid=4, n_boot=20,
                       sanity_stages=1, sanity_n=2, n_examples=1, progress=False)  # fmt: skip
    (pair,) = report["pairs"]
    assert pair["status"] == "ok" and report["models"]["toy"]["n_images"] == 4
    feats = api.extract_features(model, api.open_dataset(root).records("test")[:3], progress=False,
                                 use_cache=False)  # fmt: skip
    assert feats.features.shape == (3, 8)


def test_wrap_model_measures_whether_cam_applies() -> None:
    import torchvision

    dense = torchvision.models.densenet121(num_classes=1)  # ReLU after "features" is functional: CAM applies it
    model = api.wrap_model(dense, preprocessing=api.preprocessing(input_size=64))
    assert model.target_layer == "backbone.features" and model.tags.has_linear_head
    from xray_xai.sdk.layers import resolve_layer, stage_layers

    assert "backbone.features.denseblock3" in stage_layers(model)  # layer-wise methods see the dense blocks
    assert resolve_layer(model, "features.denseblock3") == "backbone.features.denseblock3"  # the user's own name

    mlp = ToyNet()
    mlp.fc = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 1))  # type: ignore[assignment]
    wrapped = api.wrap_model(mlp, preprocessing=api.preprocessing(input_size=32), output="probability")
    assert wrapped.target_layer == "backbone.trunk" and not wrapped.tags.has_linear_head
    with pytest.raises(PluginError, match="global-pooling"):
        registry.explainers.get("cam")().check_model(wrapped)
    with pytest.raises(PluginError, match="one output"):
        api.wrap_model(torchvision.models.resnet18(num_classes=3), preprocessing=api.preprocessing(input_size=32))


@pytest.mark.parametrize("rgb", [False, True])
def test_preprocessing_is_torchvision_bit_for_bit(tmp_path: Path, rgb: bool) -> None:
    """``--mode center-crop --resize R`` with 8-bit resizing is torchvision's Resize(R) + CenterCrop(S) + ToTensor +
    Normalize on ``Image.open(path).convert("RGB")``; ``--mode resize`` is Resize((S, S))."""
    from torchvision import transforms as T

    rng = np.random.default_rng(7)
    grey = rng.integers(0, 256, (157, 121), dtype=np.uint8)
    path = tmp_path / "film.png"
    Image.fromarray(np.stack([grey] * 3, axis=-1) if rgb else grey).save(path)
    pil = Image.open(path).convert("RGB")
    cases = [
        (api.preprocessing(input_size=64, mode="center-crop", resize=73, mean=[0.5], std=[0.5]),
         T.Compose([T.Resize(73), T.CenterCrop(64), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])),
        (api.preprocessing(input_size=50),
         T.Compose([T.Resize((50, 50)), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])),
    ]  # fmt: skip
    for pre, tf in cases:
        assert torch.equal(to_tensor(read_image(path), pre), tf(pil))
    float_pre = api.preprocessing(input_size=50, eight_bit=False)
    assert not torch.equal(to_tensor(read_image(path), float_pre), cases[1][1](pil))  # the option matters


def test_import_help_has_an_example() -> None:
    res = CliRunner().invoke(main, ["import", "--help"])
    assert res.exit_code == 0 and "Example:" in res.output and "xray-xai import" in res.output
    assert "--arch-option" in res.output and "--stored-orientation" in res.output


def test_a_registered_plugin_architecture_round_trips(tmp_path: Path) -> None:
    """``--arch cnn-small``: the plugin's own architecture, with its options, from a DataParallel state dict."""
    torch.manual_seed(8)
    theirs = registry.models.get("cnn-small")(image_size=32, hidden=[8])
    theirs.eval()
    path = tmp_path / "cnn.pth"
    torch.save(nn.DataParallel(theirs).state_dict(), path)  # type: ignore[arg-type]
    result = api.import_model(path, "cnn-small", "my-cnn", arch_options={"image_size": 32, "hidden": [8]})
    assert result.prefix_stripped == "module."
    model = api.load_model("my-cnn")
    assert model.name == "my-cnn" and type(model).name == "cnn-small" and model.preprocessing == theirs.preprocessing
    x = torch.randn(2, theirs.preprocessing.channels, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), theirs(x))  # type: ignore[operator]
    with pytest.raises(PluginError, match="outputs a logit by contract"):
        api.import_model(path, "cnn-small", "my-cnn2", output="probability")
