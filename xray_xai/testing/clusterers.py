"""Contract checks for clusterer plugins, shipped so third-party authors run the same suite as the built-ins.

Use :func:`check_clusterer` in a test (it raises ``AssertionError`` or the estimator's own error on the first
failure)::

    from xray_xai.testing.clusterers import check_clusterer
    check_clusterer(MyClusterer())

It runs scikit-learn's ``check_estimator`` (the estimator contract: parameters only stored in ``__init__``, clone,
``n_features_in_``, NaN refused, ...) and the xray-xai checks: plugin metadata, planted clusters found in 100-d,
``predict`` consistent with ``labels_``, and one-line :class:`~xray_xai.errors.XrayXaiError` messages for NaN
features and for more clusters than rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xray_xai.errors import XrayXaiError
from xray_xai.sdk.interfaces import Clusterer, Tags

__all__ = [
    "EXPECTED_FAILED_CHECKS",
    "check_clusterer",
    "check_clusterer_contract",
    "make_blobs",
]

#: plugin name -> {scikit-learn check: the reason it is expected to fail}; no built-in fails one at present
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {}


def make_blobs(
    n_samples: int = 300, n_features: int = 100, n_clusters: int = 4, *, separation: float = 10.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated isotropic Gaussian blobs (float32) and their true labels, for recovery tests."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, n_features))
    centers *= separation / np.sqrt(n_features) * np.sqrt(2.0)
    y = np.arange(n_samples) % n_clusters
    rng.shuffle(y)
    X = centers[y] + rng.normal(size=(n_samples, n_features))
    return X.astype(np.float32), y.astype(np.int64)


def _clone(est: Any, **params: Any) -> Any:
    from sklearn.base import clone

    new = clone(est)
    valid = new.get_params(deep=False)
    new.set_params(**{k: v for k, v in params.items() if k in valid})
    return new


def check_clusterer_contract(estimator: Any, *, min_ari: float = 0.95) -> None:
    """The xray-xai part of the contract (see the module docstring)."""
    from sklearn.metrics import adjusted_rand_score

    cls = type(estimator)
    assert isinstance(estimator, Clusterer), f"{cls.__name__} does not subclass xray_xai.sdk.interfaces.Clusterer"
    assert isinstance(cls.name, str) and cls.name, f"{cls.__name__} has no plugin name"
    assert cls.name == cls.name.lower() and " " not in cls.name, f"plugin name {cls.name!r} is not lower-case-hyphen"
    assert isinstance(cls.description, str) and cls.description, f"{cls.name}: no description"
    assert isinstance(cls.tags, Tags), f"{cls.name}: tags is not a Tags instance"

    X, y = make_blobs()
    est = _clone(estimator, n_clusters=4)
    labels = np.asarray(est.fit(X).labels_)
    assert labels.shape == (X.shape[0],), f"{cls.name}: labels_ has shape {labels.shape}"
    assert labels.dtype.kind == "i", f"{cls.name}: labels_ dtype {labels.dtype} is not an integer type"
    ari = adjusted_rand_score(y, labels)
    assert ari >= min_ari, f"{cls.name}: ARI {ari:.3f} < {min_ari} on well-separated 100-d blobs"
    pred = np.asarray(est.predict(X))
    assert (pred == labels).mean() >= 0.99, f"{cls.name}: predict(X) disagrees with labels_ on the training rows"

    bad = X.copy()
    bad[3, 7] = np.nan
    try:
        _clone(estimator).fit(bad)
    except XrayXaiError as exc:
        assert "nan" in str(exc).lower() and "\n" not in str(exc), f"{cls.name}: unclear NaN message: {exc}"
    else:
        raise AssertionError(f"{cls.name}: fitting NaN features did not raise XrayXaiError")

    any_est: Any = estimator  # narrowed to Clusterer above, which declares no get_params
    if "n_clusters" in any_est.get_params(deep=False):
        try:
            _clone(estimator, n_clusters=10).fit(X[:5])
        except XrayXaiError as exc:
            assert "10" in str(exc) and "5" in str(exc), f"{cls.name}: K > n message lacks the numbers: {exc}"
        else:
            raise AssertionError(f"{cls.name}: K=10 on 5 rows did not raise XrayXaiError")


def check_clusterer(estimator: Any, *, expected_failed_checks: dict[str, str] | None = None) -> None:
    """scikit-learn's ``check_estimator`` followed by :func:`check_clusterer_contract`."""
    from sklearn.utils.estimator_checks import check_estimator

    if expected_failed_checks is None:
        expected_failed_checks = EXPECTED_FAILED_CHECKS.get(getattr(estimator, "name", ""), {})
    check_estimator(estimator, expected_failed_checks=expected_failed_checks)
    check_clusterer_contract(estimator)
