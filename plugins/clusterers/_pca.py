"""The step every built-in clusterer shares: validate the features, reduce them with PCA, cluster the projection.

Deep features are 1,000-2,000 dimensional and strongly correlated; distances in the first few dozen principal
components are both faster and less noisy than in the raw space. :class:`PcaClusterer` owns that flow (scikit-learn
estimator contract: parameters only stored in ``__init__``, fitted state in attributes ending in ``_``); subclasses
implement :meth:`PcaClusterer._fit_reduced` on the projection.

The projection is kept as plain arrays (``mean_``, ``components_``, ``scale_``) rather than a scikit-learn PCA
object, so that batch PCA, incremental PCA and a truncation to a share of variance all transform the same way, one
chunk at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from xray_xai.errors import XrayXaiError
from xray_xai.sdk.interfaces import Clusterer

__all__ = ["FeatureValueError", "PcaClusterer", "iter_chunks", "n_rows"]

#: rows per chunk when a large matrix is read piecewise (10,000 x 1,664 float32 = 67 MB)
CHUNK_ROWS = 10_000


class FeatureValueError(XrayXaiError, ValueError):
    """Features that cannot be clustered (NaN/inf, too few rows for the clusters asked for).

    Also a ``ValueError`` so that scikit-learn's own checks and callers catching ``ValueError`` see what they expect.
    """


def _validate(est: BaseEstimator, X: Any, *, reset: bool) -> np.ndarray:
    """scikit-learn's validation (dtype, 2-D, n_features_in_) without its NaN check, then ours with a clear message."""
    kwargs: dict[str, Any] = {"dtype": [np.float32, np.float64], "accept_sparse": False, "reset": reset}
    try:
        from sklearn.utils.validation import validate_data  # scikit-learn >= 1.6

        X = validate_data(est, X, ensure_all_finite=False, **kwargs)
    except ImportError:  # pragma: no cover - older scikit-learn
        X = est._validate_data(X, force_all_finite=False, **kwargs)
    check_finite(X)
    return np.asarray(X)


def check_finite(X: np.ndarray, what: str = "features") -> None:
    """Raise :class:`FeatureValueError` naming the first bad row if ``X`` holds NaN or inf."""
    if np.isfinite(X).all():
        return
    bad_rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
    raise FeatureValueError(
        f"{what} contain NaN or inf values in {bad_rows.size} of {X.shape[0]} rows (first: row {bad_rows[0]}); "
        "the model produced non-finite features - check the checkpoint and the input images"
    )


def check_n_samples(n_samples: int, n_clusters: int | None) -> None:
    """Refuse to cluster fewer rows than clusters, with a message that says both numbers."""
    if n_samples < 2:
        raise FeatureValueError(f"need at least 2 images to cluster, got n_samples={n_samples}")
    if n_clusters is not None and n_clusters > n_samples:
        raise FeatureValueError(
            f"cannot make {n_clusters} clusters from n_samples={n_samples} images; "
            "lower k or select more images (more splits, a lower --threshold)"
        )


def n_rows(X: Any) -> int:
    """Number of rows of an array, a memory-mapped array or a ``.npy`` path (header only)."""
    if isinstance(X, (str, Path)):
        return int(np.load(X, mmap_mode="r").shape[0])
    return int(np.shape(X)[0])


def iter_chunks(X: Any, chunk_rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    """Yield consecutive row blocks of ``X`` as float32 arrays, never holding more than one block in memory.

    ``X`` may be an array, a ``np.memmap`` or a path to a ``.npy`` file. Memory maps are read with ordinary file
    reads rather than through the map, so pages already processed do not stay resident (peak memory stays at one
    chunk even for a file larger than RAM).
    """
    if isinstance(X, (str, Path)):
        X = np.load(X, mmap_mode="r")
    filename = getattr(X, "filename", None)
    if isinstance(X, np.memmap) and filename and X.flags.c_contiguous and X.ndim == 2:
        offset = int(getattr(X, "offset", 0))
        # a view into the map (e.g. X[1000:]) starts later in the file than the map itself
        base = X.base if isinstance(X.base, np.ndarray) else None
        if base is None or base.ctypes.data == X.ctypes.data:
            row_bytes = X.shape[1] * X.dtype.itemsize
            with open(filename, "rb") as fh:
                for start in range(0, X.shape[0], chunk_rows):
                    count = min(chunk_rows, X.shape[0] - start)
                    fh.seek(offset + start * row_bytes)
                    block = np.fromfile(fh, dtype=X.dtype, count=count * X.shape[1])
                    yield block.reshape(count, X.shape[1]).astype(np.float32, copy=False)
            return
    for start in range(0, X.shape[0], chunk_rows):
        yield np.asarray(X[start : start + chunk_rows], dtype=np.float32)


def _seed_of(random_state: Any) -> int | None:
    """An int seed for numpy's Generator from a scikit-learn ``random_state`` (int, None or RandomState)."""
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return None if random_state is None else int(random_state)
    return int(random_state.randint(0, 2**31 - 1))


class PcaClusterer(ClusterMixin, BaseEstimator, Clusterer):
    """Shared flow: validate -> PCA (optional) -> ``_fit_reduced``; ``predict`` projects then ``_predict_reduced``.

    Subclasses define ``__init__`` with their parameters (at least ``n_components``, ``whiten``, ``random_state``)
    and the two ``_reduced`` hooks. ``n_components``: an int (number of components), a float in (0, 1) (share of
    variance to keep) or ``None`` (no PCA: cluster the features as they are).
    """

    n_components: int | float | None
    whiten: bool
    random_state: Any
    #: fit the PCA on at most this many rows (seeded sample; every row is still projected and clustered). The
    #: principal subspace of ~1,700-d features is estimated as well from 20,000 rows as from a million, and the SVD
    #: is the slow step. Subclasses that take it as a parameter override this class default (None: all rows).
    pca_max_rows: int | None = None
    # fitted projection (None when n_components is None: no PCA)
    mean_: np.ndarray | None
    components_: np.ndarray | None
    scale_: np.ndarray | None
    explained_variance_ratio_: np.ndarray | None

    # -- PCA ---------------------------------------------------------------------------------------------------
    def _target_components(self, n_samples: int, n_features: int) -> int | float | None:
        nc = self.n_components
        if nc is None:
            return None
        if isinstance(nc, float) and nc < 1.0:
            if nc <= 0.0:
                raise FeatureValueError(f"n_components={nc!r}: a float must be a share of variance in (0, 1)")
            return float(nc)
        n = int(nc)
        if n < 1:
            raise FeatureValueError(f"n_components={nc!r} must be at least 1")
        return min(n, n_samples, n_features)

    def _fit_pca(self, X: np.ndarray) -> None:
        """Fit the projection on an in-memory matrix (randomized SVD for an int, covariance eigh for a share)."""
        from sklearn.decomposition import PCA

        target = self._target_components(*X.shape)
        self.n_features_pca_ = X.shape[1]
        if target is None:
            self.mean_ = None
            self.components_ = None
            self.scale_ = None
            self.explained_variance_ratio_ = None
            return
        if isinstance(target, float):
            solver = "covariance_eigh" if X.shape[0] >= X.shape[1] else "full"
        elif target < 0.8 * min(X.shape) and min(X.shape) > 64:
            solver = "randomized"
        else:
            solver = "full"
        sample = X
        if self.pca_max_rows is not None and X.shape[0] > self.pca_max_rows:
            rows = np.random.default_rng(_seed_of(self.random_state)).choice(X.shape[0], self.pca_max_rows, False)
            sample = X[np.sort(rows)]
        pca = PCA(n_components=target, svd_solver=solver, random_state=self.random_state, iterated_power=2)
        try:
            pca.fit(sample)
        except ValueError:  # "covariance_eigh" needs scikit-learn >= 1.5
            if solver != "covariance_eigh":
                raise
            pca = PCA(n_components=target, svd_solver="full").fit(sample)
        self._set_projection(
            pca.mean_, pca.components_, pca.explained_variance_, pca.explained_variance_ratio_, X.dtype
        )

    def _set_projection(
        self,
        mean: np.ndarray,
        components: np.ndarray,
        explained_variance: np.ndarray,
        ratio: np.ndarray,
        dtype: Any,
    ) -> None:
        self.mean_ = mean_ = np.asarray(mean, dtype=dtype)
        self.components_ = comps = np.asarray(components, dtype=dtype)
        self.explained_variance_ratio_ = np.asarray(ratio, dtype=np.float64)
        if self.whiten:
            ev = np.asarray(explained_variance, dtype=np.float64)
            self.scale_ = np.sqrt(np.maximum(ev, np.finfo(np.float32).eps)).astype(dtype)
        else:
            self.scale_ = None
        # X @ C.T - mean @ C.T avoids a centred copy of X (266 MB for 40,000 x 1,664 float32)
        self._offset_ = (mean_ @ comps.T).astype(dtype)

    def _project(self, X: np.ndarray) -> np.ndarray:
        comps = getattr(self, "components_", None)
        if comps is None:
            return X
        Z = X @ comps.T.astype(X.dtype, copy=False)
        Z -= self._offset_.astype(X.dtype, copy=False)
        if self.scale_ is not None:
            Z /= self.scale_.astype(X.dtype, copy=False)
        return Z

    def reduce(self, X: Any) -> np.ndarray:
        """The features in the space the clusters were found in (the PCA projection), shape ``(n, m)``."""
        check_is_fitted(self, "labels_")
        X = _validate(self, X, reset=False)
        return self._project(X)

    def transform_2d(self, X: Any) -> np.ndarray:
        """First two principal components (the leading PCA axes already computed), for plots."""
        Z = self.reduce(X)
        if Z.shape[1] >= 2 and getattr(self, "components_", None) is not None:
            out = Z[:, :2]
            return np.asarray(out * self.scale_[:2] if self.scale_ is not None else out)
        return Clusterer.transform_2d(self, Z) if Z.shape[1] >= 2 else np.column_stack([Z[:, 0], np.zeros(len(Z))])

    def _centers_to_input(self, centers: np.ndarray) -> np.ndarray:
        """Map centres found in the projection back to the input space (scikit-learn's ``cluster_centers_``)."""
        comps = getattr(self, "components_", None)
        if comps is None:
            return centers
        c = centers * self.scale_ if self.scale_ is not None else centers
        return np.asarray(c @ comps + self.mean_)

    # -- estimator API -----------------------------------------------------------------------------------------
    def _n_clusters_param(self) -> int | None:
        k = getattr(self, "n_clusters", None)
        return None if k is None else int(k)

    def fit(self, X: Any, y: Any = None) -> PcaClusterer:
        X = _validate(self, X, reset=True)
        check_n_samples(X.shape[0], self._n_clusters_param())
        self._fit_pca(X)
        Z = self._project(X)
        self._fit_reduced(Z)
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "labels_")
        X = _validate(self, X, reset=False)
        return np.asarray(self._predict_reduced(self._project(X)), dtype=np.int64)

    # -- hooks -------------------------------------------------------------------------------------------------
    def _fit_reduced(self, Z: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict_reduced(self, Z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _nearest_training_label(self, Z: np.ndarray) -> np.ndarray:
        """Label of the nearest training row (for methods without a native ``predict``: exact on training data)."""
        idx = self.nn_.kneighbors(Z.astype(self.nn_._fit_X.dtype, copy=False), return_distance=False)[:, 0]
        return np.asarray(self.labels_[idx])

    def _fit_nearest(self, Z: np.ndarray) -> None:
        from sklearn.neighbors import NearestNeighbors

        self.nn_ = NearestNeighbors(n_neighbors=1).fit(Z)
