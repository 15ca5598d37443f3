"""Clustering findings of issue 20 (finding 9): continuous metadata binned into quantiles, ``--select-k`` honouring a
minimum cluster size, a warning when K is large for the films, and ``summary.json`` naming the cache it clustered."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from click.testing import CliRunner
from test_cluster_cli import MetaFolder, SpotExplainer, SpotNet, _write_data, plugins  # noqa: F401 (fixture)

from xray_xai.cli import main
from xray_xai.cluster.describe import CONTINUOUS_MIN_VALUES, bin_continuous, metadata_columns
from xray_xai.cluster.service import cluster, default_min_cluster_size, select_k
from xray_xai.sdk.interfaces import Record

pytestmark = pytest.mark.usefixtures("plugins")


class ContrastFolder(MetaFolder):
    """MetaFolder whose films also carry a continuous ``contrast`` (a distinct value per film)."""

    name: ClassVar[str] = "contrast-folder-test"

    def records(self, split: str | None = None) -> list[Record]:
        from dataclasses import replace

        recs = super().records(split)
        return [replace(r, metadata={**r.metadata, "contrast": 0.5 + 0.1379 * i}) for i, r in enumerate(recs)]


def test_bin_continuous_quartiles_and_leaves_categories_alone() -> None:
    values: list[str | None] = [str(round(0.5 + 0.0731 * i, 4)) for i in range(24)] + [None]
    binned = bin_continuous(values)
    assert binned[-1] is None
    names = sorted({b for b in binned if b is not None})
    assert len(names) == 4 and all(n.startswith(f"Q{i + 1} [") for i, n in enumerate(names))
    assert [binned.count(n) for n in names] == [6, 6, 6, 6]
    few = [str(i % CONTINUOUS_MIN_VALUES) for i in range(30)]
    assert bin_continuous(few) == few  # an integer code with few values stays a category
    words = ["wrist", "1.5", "2.5", *[str(i) for i in range(20)]]
    assert bin_continuous(words) == words  # not all numbers: categories
    flags = ["true", "false"] * 12
    assert bin_continuous(flags) == flags


def test_continuous_metadata_is_described_by_quantile_bins(tmp_path: Path) -> None:
    from xray_xai.sdk.registry import datasets

    datasets.register(ContrastFolder)
    try:
        data = _write_data(tmp_path / "d", n_per_region=12)
        res = cluster(SpotNet(), data, dataset=ContrastFolder.name, k=2, out_dir=tmp_path / "o", progress=False,
                      json=True)  # fmt: skip
    finally:
        datasets.unregister(ContrastFolder.name)
    contrast = res["agreement"]["contrast"]
    assert "skipped" not in contrast and contrast["n_values"] == 4 and 0 <= contrast["nmi"] <= 1
    for table in res["composition"].values():
        assert all(v.startswith("Q") for v in table["contrast"]), table["contrast"]
    text = " ".join(res["descriptions"].values())
    assert "contrast=0." not in text and "contrast=1." not in text and "contrast=2." not in text
    recs = ContrastFolder(data).records()
    assert len({v for v in metadata_columns(recs)["contrast"]}) == 4


def _tiny_third_group() -> np.ndarray:
    """Two groups of 11 films and a tight pair near the second: silhouette prefers K=3 (the pair alone) to K=2
    (the pair with its neighbours)."""
    rng = np.random.default_rng(0)
    centres = [(0.0, 0.0)] * 11 + [(10.0, 0.0)] * 11 + [(10.0, 5.0)] * 2
    return np.array(centres) + rng.normal(0, 0.3, size=(24, 2))


def test_select_k_skips_ks_with_clusters_under_the_minimum_size() -> None:
    X = _tiny_third_group()
    assert default_min_cluster_size(24) == 3 and default_min_cluster_size(200) == 10
    free = select_k(X, range(2, 6), min_cluster_size=1)
    assert free["best_k"] == 3 and free["smallest"][free["ks"].index(3)] == 2  # what silhouette alone picks
    chosen = select_k(X, range(2, 6))
    assert chosen["best_k"] == 2 and chosen["min_cluster_size"] == 3 and chosen["warning"] is None
    assert chosen["silhouette"] == free["silhouette"]  # the same scores; only the eligible Ks differ
    none_fit = select_k(X, range(3, 6), min_cluster_size=12)
    assert none_fit["warning"] and "no K in 3-5" in none_fit["warning"]
    assert none_fit["best_k"] == 3  # the K with the largest smallest cluster


def test_k_large_for_the_films_warns_and_select_k_option_is_honoured(tmp_path: Path) -> None:
    from xray_xai.models.store import save_model

    data = _write_data(tmp_path / "d", n_per_region=2)  # 4 films
    ckpt = save_model(SpotNet())
    base = ["cluster", "--checkpoint", str(ckpt), "--data", str(data), "--dataset", MetaFolder.name,
            "--splits", "train,test"]  # fmt: skip
    res = CliRunner().invoke(main, [*base, "--k", "4", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "warning: k=4 for 4 films: the smallest cluster holds 1 film(s), under 3" in res.stderr
    quiet = CliRunner().invoke(main, [*base, "--k", "2", "--min-cluster-size", "1", "--out", str(tmp_path / "o2")])
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr


def test_summary_names_the_cache_it_clustered(tmp_path: Path) -> None:
    from xray_xai.sdk.registry import explainers

    explainers.register(SpotExplainer)
    try:
        data = _write_data(tmp_path / "d")
        common = {"dataset": MetaFolder.name, "k": 2, "progress": False, "json": True, "cache_dir": tmp_path / "c"}
        by_features = cluster(SpotNet(), data, out_dir=tmp_path / "f", **common)  # type: ignore[arg-type]
        by_maps = cluster(SpotNet(), data, on="explanations", explainer=SpotExplainer.name, grid=8,
                          out_dir=tmp_path / "e", **common)  # type: ignore[arg-type]  # fmt: skip
    finally:
        explainers.unregister(SpotExplainer.name)
    assert by_features["feature_cache"] == by_features["deep_feature_cache"]
    assert by_maps["deep_feature_cache"] == by_features["feature_cache"]
    assert by_maps["feature_cache"] != by_features["feature_cache"] and Path(by_maps["feature_cache"]).is_file()
    assert by_maps["feature_dim"] == 64


@pytest.mark.parametrize("n", [4, 24, 100, 1000])
def test_default_minimum_is_five_percent_at_least_three(n: int) -> None:
    assert default_min_cluster_size(n) == max(3, -(-n * 5 // 100))
