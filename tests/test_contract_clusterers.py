"""Every registered clusterer follows the scikit-learn estimator contract and recovers planted clusters."""

from __future__ import annotations

import pytest

import xray_xai
from xray_xai.testing.clusterers import check_clusterer_contract


@pytest.mark.parametrize("name", xray_xai.list_clusterers())
def test_clusterer_recovers_planted_clusters(name: str) -> None:
    check_clusterer_contract(xray_xai.get_clusterer(name)())


def test_published_clusterer_names_are_registered() -> None:
    assert {"pca-kmeans", "pca-gmm", "agglomerative", "hdbscan"} <= set(xray_xai.list_clusterers())
