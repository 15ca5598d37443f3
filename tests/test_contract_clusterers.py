"""Every registered clusterer passes scikit-learn's estimator checks and the xray-xai contract (planted clusters,
one-line errors). Checks a clusterer is known to fail are listed with a reason in
``xray_xai.testing.clusterers.EXPECTED_FAILED_CHECKS`` (none at present)."""

from __future__ import annotations

from typing import Any

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import xray_xai
from xray_xai.testing.clusterers import EXPECTED_FAILED_CHECKS, check_clusterer_contract


@parametrize_with_checks(
    [xray_xai.get_clusterer(n)() for n in xray_xai.list_clusterers()],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS.get(est.name, {}),
)
def test_sklearn_estimator_contract(estimator: Any, check: Any) -> None:
    check(estimator)


@pytest.mark.parametrize("name", xray_xai.list_clusterers())
def test_clusterer_recovers_planted_clusters(name: str) -> None:
    check_clusterer_contract(xray_xai.get_clusterer(name)())


def test_published_clusterer_names_are_registered() -> None:
    assert {"pca-kmeans", "pca-gmm", "agglomerative", "hdbscan"} <= set(xray_xai.list_clusterers())
