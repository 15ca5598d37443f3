"""Clusterer plugins beyond the contract (tests/test_contract_clusterers.py): recovery, streaming, metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import xray_xai
from xray_xai.cluster.service import agreement, composition, describe_clusters, select_k
from xray_xai.errors import XrayXaiError
from xray_xai.testing.clusterers import make_blobs

#: the clusterers told how many clusters to make (``n_clusters``); the others (hdbscan) find the number themselves
WITH_K = [n for n in xray_xai.list_clusterers() if "n_clusters" in xray_xai.get_clusterer(n)().get_params()]


@pytest.mark.parametrize("name", WITH_K)
def test_planted_clusters_recovered_in_100d(name: str) -> None:
    X, y = make_blobs(n_samples=400, n_features=100, n_clusters=5, seed=3)
    est = xray_xai.get_clusterer(name)(n_clusters=5)
    assert adjusted_rand_score(y, est.fit(X).labels_) > 0.95
    assert est.cluster_centers_.shape == (5, 100)  # centres mapped back to the input space


def test_hdbscan_finds_the_number_and_marks_noise() -> None:
    X, y = make_blobs(n_samples=300, n_features=100, n_clusters=3, seed=1)
    far = np.full((2, 100), 60.0, dtype=np.float32)
    far[1] *= -1
    est = xray_xai.get_clusterer("hdbscan")().fit(np.vstack([X, far]))
    assert adjusted_rand_score(y, est.labels_[:300]) > 0.95
    assert (est.labels_[300:] == -1).all()


def test_share_of_variance_components() -> None:
    X, y = make_blobs(n_samples=300, n_features=100, n_clusters=3, seed=2)
    est = xray_xai.get_clusterer("pca-kmeans")(n_clusters=3, n_components=0.5).fit(X)
    assert est.explained_variance_ratio_.sum() >= 0.5
    assert est.components_.shape[0] < 100
    assert adjusted_rand_score(y, est.labels_) > 0.95


def test_k_larger_than_n_samples_is_a_clear_error() -> None:
    X, _ = make_blobs(n_samples=3)
    with pytest.raises(XrayXaiError, match=r"cannot make 4 clusters from n_samples=3"):
        xray_xai.get_clusterer("pca-kmeans")(n_clusters=4).fit(X)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_a_clear_error(bad: float) -> None:
    X, _ = make_blobs(n_samples=40)
    X[5, 3] = bad
    with pytest.raises(XrayXaiError, match=r"NaN or inf values in 1 of 40 rows \(first: row 5\)"):
        xray_xai.get_clusterer("pca-kmeans")().fit(X)


# ----------------------------------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("pca_max_rows", [1000, None])  # sampled randomized SVD, IncrementalPCA on every chunk
def test_streaming_agrees_with_batch_mode(tmp_path: Path, pca_max_rows: int | None) -> None:
    X, y = make_blobs(n_samples=3000, n_features=100, n_clusters=4, seed=5)
    cls = xray_xai.get_clusterer("pca-kmeans")
    batch = cls(n_clusters=4, n_components=20).fit(X)
    stream = cls(n_clusters=4, n_components=20, streaming=True, chunk_size=500, pca_max_rows=pca_max_rows).fit(X)
    assert adjusted_rand_score(batch.labels_, stream.labels_) > 0.95
    assert adjusted_rand_score(y, stream.labels_) > 0.95
    assert hasattr(stream.kmeans_, "batch_size")  # MiniBatchKMeans
    # a .npy on disk, as a path and as a read-only memory map: same clusters, streamed automatically
    path = tmp_path / "features.npy"
    np.save(path, X)
    from_path = cls(n_clusters=4, n_components=20, chunk_size=700).fit(str(path))
    mm = np.load(path, mmap_mode="r")
    from_map = cls(n_clusters=4, n_components=20, chunk_size=700).fit(mm)
    assert adjusted_rand_score(from_path.labels_, from_map.labels_) == 1.0
    assert adjusted_rand_score(y, from_map.labels_) > 0.95
    assert from_map.predict(mm).shape == (3000,)


def test_streaming_auto_threshold() -> None:
    X, y = make_blobs(n_samples=600, n_features=50, n_clusters=3, seed=6)
    est = xray_xai.get_clusterer("pca-kmeans")(n_clusters=3, n_components=10, streaming_threshold=500).fit(X)
    assert hasattr(est.kmeans_, "batch_size")
    assert adjusted_rand_score(y, est.labels_) > 0.95


@pytest.mark.parametrize("pca_max_rows", [20_000, None])
def test_streaming_share_of_variance(pca_max_rows: int | None) -> None:
    X, y = make_blobs(n_samples=1000, n_features=60, n_clusters=3, seed=8)
    cls = xray_xai.get_clusterer("pca-kmeans")
    est = cls(n_clusters=3, n_components=0.5, streaming=True, chunk_size=250, pca_max_rows=pca_max_rows).fit(X)
    batch = cls(n_clusters=3, n_components=0.5).fit(X)
    assert 1 <= est.components_.shape[0] < 60
    assert abs(est.components_.shape[0] - batch.components_.shape[0]) <= 1
    assert adjusted_rand_score(y, est.labels_) > 0.95


def test_partial_fit_over_an_iterator_of_chunks() -> None:
    X, y = make_blobs(n_samples=4000, n_features=100, n_clusters=4, seed=7)
    est = xray_xai.get_clusterer("pca-kmeans")(n_clusters=4, n_components=10, warmup_rows=1000)
    for start in range(0, 4000, 400):
        est.partial_fit(X[start : start + 400])
    assert est.labels_.shape == (4000,)
    assert adjusted_rand_score(y, est.labels_) > 0.95
    assert adjusted_rand_score(y, est.predict(X)) > 0.95


def test_partial_fit_warmup_finished_by_predict() -> None:
    X, y = make_blobs(n_samples=200, n_features=30, n_clusters=3, seed=9)
    est = xray_xai.get_clusterer("pca-kmeans")(n_clusters=3, n_components=5)
    est.partial_fit(X[:100]).partial_fit(X[100:])  # fewer rows than warmup_rows: still buffering
    assert adjusted_rand_score(y, est.predict(X)) > 0.95


def test_iter_chunks_reads_memmaps_piecewise(tmp_path: Path) -> None:
    from xray_xai_plugins.clusterers._pca import iter_chunks

    X = np.arange(70 * 3, dtype=np.float32).reshape(70, 3)
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    np.testing.assert_array_equal(np.concatenate(list(iter_chunks(mm, 16))), X)
    np.testing.assert_array_equal(np.concatenate(list(iter_chunks(mm[10:], 16))), X[10:])
    np.testing.assert_array_equal(np.concatenate(list(iter_chunks(tmp_path / "x.npy", 100))), X)


# ------------------------------------------------------------------------------------------------------- metrics
def test_agreement_perfect_permuted_and_missing() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    cols = {
        "region": ["wrist", "wrist", "hand", "hand", "elbow", "elbow", "wrist", "hand"],  # same partition
        "view": ["ap", "lat", "ap", "lat", "ap", "lat", "ap", "lat"],  # independent-ish
        "mostly_missing": ["a", None, None, None, None, None, "b", None],
        "constant": ["x"] * 8,
        "partly": ["w", "w", "h", "h", "e", "e", None, None],
    }
    agree = agreement(labels, cols)
    assert agree["region"]["nmi"] == pytest.approx(1.0)
    assert agree["region"]["ari"] == pytest.approx(1.0)
    assert agree["view"]["nmi"] < 0.5
    assert agree["mostly_missing"]["skipped"] == "mostly missing"
    assert agree["constant"]["skipped"] == "single value"
    assert agree["partly"] == {"n_used": 6, "n_missing": 2, "n_values": 3, "nmi": pytest.approx(1.0), "ari": 1.0}


def test_composition_and_description() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1])
    cols = {"region": ["wrist"] * 3 + ["hand", "hand", "hand"], "view": ["lateral"] * 4 + [None, "ap"]}
    comp = composition(labels, cols)
    assert comp["0"]["region"]["wrist"] == {"count": 3, "share": 0.75}
    assert comp["1"]["view"]["(missing)"]["count"] == 1
    text = describe_clusters(comp, {"0": 4, "1": 2}, cols)
    assert text["0"] == "cluster 0 (n=4): 100% lateral, 75% wrist"
    assert text["1"].startswith("cluster 1 (n=2): 100% hand")
    # other columns are named only when over-represented, with their overall share
    cols["hardware"] = ["1", "1", "1", "1", "0", "0"]
    cols["site"] = ["A", "A", "A", "B", "A", "A"]  # cluster 0: 75% A, below the 83% overall
    text = describe_clusters(composition(labels, cols), {"0": 4, "1": 2}, cols)
    assert "100% hardware=1 (67% overall)" in text["0"] and "site" not in text["0"]


def test_select_k_finds_planted_k(tmp_path: Path) -> None:
    X, _ = make_blobs(n_samples=300, n_features=40, n_clusters=4, seed=4)
    res = select_k(X, range(2, 8), plot=tmp_path / "k.png")
    assert res["best_k"] == 4
    assert res["ks"] == [2, 3, 4, 5, 6, 7] and len(res["silhouette"]) == 6
    assert (tmp_path / "k.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(XrayXaiError, match="finds its own number"):
        select_k(X, range(2, 4), method="hdbscan")
