"""``xray-xai cluster`` and the cluster service end to end on a tiny data set with a tiny model."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from xray_xai.cli import main
from xray_xai.cluster.service import cluster
from xray_xai.data.images import write_png
from xray_xai.errors import XrayXaiError
from xray_xai.sdk.interfaces import DatasetPlugin, Explainer, Explanation, Preprocessing, Record
from xray_xai.sdk.torch_model import TorchModel


class SpotNet(TorchModel):
    """64-d features = 4x4 pooled conv responses (they encode where the bright spot is); p(abnormal) ~ 1."""

    name: ClassVar[str] = "spot-net-test"
    default_preprocessing: ClassVar[Preprocessing] = Preprocessing(
        name="tiny", input_size=32, mode="resize", channels=1, normalize="none"
    )
    target_layer = "conv"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.classifier = nn.Linear(64, 1)
        with torch.no_grad():
            self.classifier.weight.zero_()
            self.classifier.bias.fill_(3.0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(x))).flatten(1)


class MetaFolder(DatasetPlugin):
    """Stand-in reader: ``<split>/<region>/<view>_<marker>_<i>.png`` with view and marker as metadata."""

    name: ClassVar[str] = "meta-folder-test"
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    def records(self, split: str | None = None) -> list[Record]:
        out = []
        for path in sorted(self.root.glob("*/*/*.png")):
            view, marker, _ = path.stem.split("_")
            rec = Record(path=path, split=path.parts[-3], region=path.parts[-2], view=view, label=1,
                         study=f"{path.parts[-2]}-{path.stem}", metadata={"marker": marker, "site": "A"})  # fmt: skip
            if split in (None, "all", rec.split):
                out.append(rec)
        return out


def _write_data(root: Path, n_per_region: int = 6) -> Path:
    """Wrist films have the spot top-left, hand films bottom-right; views alternate (unrelated to the spot)."""
    rng = np.random.default_rng(0)
    for region, (y, x) in (("wrist", (4, 4)), ("hand", (28, 34))):
        for i in range(n_per_region):
            img = rng.uniform(0, 0.15, size=(40, 48))
            img[y : y + 8, x : x + 8] = 1.0
            split = "train" if i % 3 else "test"
            view = "lateral" if i % 2 else "frontal"
            marker = "L" if i < n_per_region // 2 else "R"
            write_png(root / split / region / f"{view}_{marker}_{i}.png", img)
    return root


@pytest.fixture
def plugins():  # type: ignore[no-untyped-def]
    from xray_xai.sdk.registry import datasets, models

    models.register(SpotNet)
    datasets.register(MetaFolder)
    yield
    models.unregister(SpotNet.name)
    datasets.unregister(MetaFolder.name)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_cluster_end_to_end(tmp_path: Path, plugins: None) -> None:
    from xray_xai.models.store import save_model

    data = _write_data(tmp_path / "data")
    ckpt = save_model(SpotNet())
    out = tmp_path / "out"
    args = ["cluster", "--checkpoint", str(ckpt), "--data", str(data), "--dataset", MetaFolder.name,
            "--k", "2", "--splits", "train,valid", "--out", str(out), "--json"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["splits"] == ["train", "test"]  # MURA's "valid" is our "test"
    assert summary["n_selected"] == 12 and summary["k"] == 2
    for name in ("assignments.csv", "composition.csv", "agreement.csv", "projection.png", "summary.json",
                 "summary.md", "montage_cluster_0.png", "montage_cluster_1.png"):  # fmt: skip
        assert (out / name).is_file(), name
    assert (out / "projection.png").read_bytes()[:4] == b"\x89PNG"
    rows = _rows(out / "assignments.csv")
    assert len(rows) == 12
    assert set(rows[0]) >= {"image", "study", "region", "cluster", "distance", "probability"}
    # the spot position (= region here) is what the features see: the clusters are the regions
    assert summary["agreement"]["region"]["nmi"] == pytest.approx(1.0)
    assert summary["agreement"]["view"]["nmi"] < 0.5
    assert summary["agreement"]["site"]["skipped"] == "single value"
    assert "marker" in summary["agreement"]
    assert "missing" in summary["missing_values"]
    assert summary["silhouette"] > 0.5
    assert any("100% wrist" in t for t in summary["descriptions"].values())
    assert {"0", "1"} <= set(summary["composition"])
    comp = _rows(out / "composition.csv")
    assert {"cluster", "column", "value", "count", "share"} == set(comp[0])
    assert "100% hand" in (out / "summary.md").read_text() or "100% wrist" in (out / "summary.md").read_text()
    assert json.loads((out / "summary.json").read_text())["n_selected"] == 12
    assert not list(out.glob(".*"))  # no temp files left behind

    # human output, model by name (newest stored checkpoint), K chosen by silhouette
    res = CliRunner().invoke(main, ["cluster", "--model", SpotNet.name, "--data", str(data), "--dataset",
                                    MetaFolder.name, "--select-k", "2-4", "--out", str(tmp_path / "o2")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "silhouette" in res.output and (tmp_path / "o2" / "k_selection.png").is_file()


def test_cli_errors_are_one_line(tmp_path: Path, plugins: None) -> None:
    from xray_xai.models.store import save_model

    data = _write_data(tmp_path / "data", n_per_region=2)
    ckpt = save_model(SpotNet())
    res = CliRunner().invoke(main, ["cluster", "--checkpoint", str(ckpt), "--data", str(data), "--dataset",
                                    MetaFolder.name, "--k", "9", "--out", str(tmp_path / "o")])  # fmt: skip
    assert res.exit_code == 1
    assert "cannot make 9 clusters from n_samples=4" in res.output and res.output.count("\n") == 1
    res = CliRunner().invoke(main, ["cluster", "--data", str(data)])
    assert res.exit_code == 2 and "give --model NAME or --checkpoint PATH" in res.output  # usage: no model
    res = CliRunner().invoke(main, ["cluster", "--model", "x", "--data", str(data), "--region", "wrist",
                                    "--per-region"])  # fmt: skip
    assert res.exit_code == 2 and "either --region or --per-region" in res.output
    res = CliRunner().invoke(main, ["cluster", "--model", "x", "--data", str(data), "--param", "oops"])
    assert res.exit_code == 2 and "Invalid value for '--param': 'oops': expected KEY=VALUE" in res.output
    assert res.output.strip().splitlines()[-1].startswith("Error: ")  # the problem in one line
    res = CliRunner().invoke(main, ["cluster", "--checkpoint", str(ckpt), "--data", str(data), "--dataset",
                                    MetaFolder.name, "--splits", "nope"])  # fmt: skip
    assert res.exit_code == 1 and "no split 'nope'" in res.output


def test_service_threshold_region_per_region_and_cache(tmp_path: Path, plugins: None) -> None:
    data = _write_data(tmp_path / "data", n_per_region=8)
    model = SpotNet()
    common: dict[str, Any] = {"dataset": MetaFolder.name, "progress": False, "json": True}
    res = cluster(model, data, k=2, per_region=True, out_dir=tmp_path / "per", **common)
    assert set(res["groups"]) == {"hand", "wrist"}
    assert (tmp_path / "per" / "hand" / "assignments.csv").is_file()
    assert res["groups"]["wrist"]["n"] == 8
    res = cluster(model, data, k=2, region="WRIST", out_dir=tmp_path / "one", **common)
    assert res["n_selected"] == 8 and res["features_from_cache"] is False  # another image list: another entry
    again = cluster(model, data, k=3, region="wrist", method="agglomerative", out_dir=tmp_path / "two", **common)
    assert again["features_from_cache"] is True
    with torch.no_grad():
        model.classifier.bias.fill_(-3.0)  # now nothing is predicted abnormal
    with pytest.raises(XrayXaiError, match="no film has p"):
        cluster(model, data, out_dir=tmp_path / "none", **common)
    res = cluster(model, data, k=2, threshold=None, out_dir=tmp_path / "all", **common)
    assert res["n_selected"] == 16


class SpotExplainer(Explainer):
    """Stand-in explainer: the map is the film (where the spot is)."""

    name: ClassVar[str] = "spot-explainer-test"
    description: ClassVar[str] = "test stand-in"

    def explain(self, model, images, target="abnormal"):  # type: ignore[no-untyped-def]
        maps = images[:, 0].detach().numpy().astype(np.float32)
        return Explanation(maps=maps, raw=maps, probabilities=model.predict_proba(images).numpy(), method=self.name)


def test_service_clusters_explanations(tmp_path: Path, plugins: None) -> None:
    from xray_xai.sdk.registry import explainers

    explainers.register(SpotExplainer)
    try:
        res = cluster(SpotNet(), tmp_path_data := _write_data(tmp_path / "d"), dataset=MetaFolder.name, k=2,
                      on="explanations", explainer=SpotExplainer.name, grid=8, out_dir=tmp_path / "o",
                      progress=False)  # fmt: skip
    finally:
        explainers.unregister(SpotExplainer.name)
    assert tmp_path_data.is_dir()
    assert res["feature_dim"] == 64 and res["on"] == "explanations"
    assert res["agreement"]["region"]["nmi"] == pytest.approx(1.0)
    assert res["labels"]["all"].shape == (12,)
