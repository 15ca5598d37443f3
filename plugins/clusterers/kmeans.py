"""PCA then k-means: the published recipe for clustering a model's deep features of abnormal films.

Two modes. In memory (the default up to ``streaming_threshold`` rows): randomized-SVD PCA (fitted on a seeded sample
of at most ``pca_max_rows`` rows) and ``KMeans``. Streaming (``streaming=True``, a ``.npy`` path or ``np.memmap``, or
more rows than the threshold): two passes over row chunks. Pass one checks every row and draws the PCA sample
(randomized SVD on it), or with ``pca_max_rows=None`` feeds every chunk to ``IncrementalPCA``; pass two projects
each chunk, and the projections (``n x n_components`` float32, 200 MB for a million rows) are clustered with
``MiniBatchKMeans``. Peak memory is a chunk, the PCA sample and the projections, whatever the size of the input.
``partial_fit`` consumes an iterator of chunks in one pass (see its docstring).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.utils.validation import check_is_fitted

from xray_xai.sdk.interfaces import Tags

from ._pca import (
    CHUNK_ROWS,
    FeatureValueError,
    PcaClusterer,
    _seed_of,
    _validate,
    check_finite,
    check_n_samples,
    iter_chunks,
    n_rows,
)

__all__ = ["PcaKMeans"]

#: variance components fitted incrementally before truncating to a share of variance (``n_components`` float)
_MAX_STREAMING_COMPONENTS = 256


@dataclass
class _StreamState:
    """What ``partial_fit`` keeps between chunks: the warm-up buffer and the labels given so far."""

    buffer: list[np.ndarray] = field(default_factory=list)
    rows: int = 0
    labels: list[np.ndarray] = field(default_factory=list)


class PcaKMeans(PcaClusterer):
    """PCA to ``n_components`` (int, or float share of variance) then k-means with ``n_clusters`` clusters.

    Parameters: ``n_clusters`` (k), ``n_components``, ``whiten`` (scale components to unit variance), ``n_init``
    (k-means restarts; 4 is plenty after PCA), ``max_iter``, ``random_state``, ``streaming`` (``"auto"``, True or
    False), ``streaming_threshold`` (rows above which "auto" streams), ``chunk_size`` (rows per chunk when
    streaming), ``warmup_rows`` (rows ``partial_fit`` buffers to fit the PCA before it starts updating k-means),
    ``pca_max_rows`` (the PCA is fitted on a seeded sample of at most this many rows; None: all rows).
    """

    name: ClassVar[str] = "pca-kmeans"
    description: ClassVar[str] = (
        "PCA (randomized SVD) then k-means; streams IncrementalPCA + MiniBatchKMeans on big sets"
    )
    tags: ClassVar[Tags] = Tags(deterministic=True, supports_batch=True)

    def __init__(
        self,
        n_clusters: int = 4,
        n_components: int | float | None = 50,
        *,
        whiten: bool = False,
        n_init: int = 4,
        max_iter: int = 300,
        random_state: Any = 0,
        streaming: bool | str = "auto",
        streaming_threshold: int = 200_000,
        chunk_size: int = CHUNK_ROWS,
        warmup_rows: int = 20_000,
        pca_max_rows: int | None = 20_000,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_components = n_components
        self.whiten = whiten
        self.n_init = n_init
        self.max_iter = max_iter
        self.random_state = random_state
        self.streaming = streaming
        self.streaming_threshold = streaming_threshold
        self.chunk_size = chunk_size
        self.warmup_rows = warmup_rows
        self.pca_max_rows = pca_max_rows

    # -- mode choice -------------------------------------------------------------------------------------------
    def _use_streaming(self, X: Any) -> bool:
        if isinstance(self.streaming, bool):
            return self.streaming
        if isinstance(X, (str, Path, np.memmap)):
            return True
        if hasattr(X, "shape") and len(X.shape) == 2:
            return bool(X.shape[0] > self.streaming_threshold)
        return False

    def fit(self, X: Any, y: Any = None) -> PcaKMeans:
        """Cluster ``X`` (array, ``np.memmap`` or ``.npy`` path); sets ``labels_`` and ``cluster_centers_``."""
        for attr in ("_stream_state_",):
            self.__dict__.pop(attr, None)
        if self._use_streaming(X):
            return self._fit_streaming(X)
        if isinstance(X, (str, Path)):
            X = np.load(X, allow_pickle=False)
        super().fit(X, y)
        return self

    # -- in memory ---------------------------------------------------------------------------------------------
    def _fit_reduced(self, Z: np.ndarray) -> None:
        from sklearn.cluster import KMeans

        km = KMeans(
            n_clusters=int(self.n_clusters),
            n_init=int(self.n_init),
            max_iter=int(self.max_iter),
            random_state=self.random_state,
        ).fit(Z)
        self.kmeans_ = km
        self.labels_ = km.labels_.astype(np.int64)
        self.inertia_ = float(km.inertia_)
        self.n_iter_ = int(km.n_iter_)
        self.cluster_centers_ = self._centers_to_input(km.cluster_centers_)

    def _predict_reduced(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(self.kmeans_.predict(Z.astype(self.kmeans_.cluster_centers_.dtype, copy=False)))

    # -- streaming, two passes ---------------------------------------------------------------------------------
    def _fit_streaming(self, X: Any) -> PcaKMeans:
        if not isinstance(X, (str, Path, np.memmap)):
            X = _validate(self, X, reset=True)
        n = n_rows(X)
        first = next(iter_chunks(X, 1))
        n_features = first.shape[1]
        self.n_features_in_ = n_features
        check_n_samples(n, int(self.n_clusters))
        chunk = max(int(self.chunk_size), 1)

        target = self._target_components(n, n_features)
        if target is None:
            self.mean_ = self.components_ = self.scale_ = self.explained_variance_ratio_ = None
        elif self.pca_max_rows is not None:
            # Every row is read (and checked for NaN), but the projection is fitted on a seeded sample of about
            # pca_max_rows rows with randomized SVD: the subspace is as good, and it costs seconds where
            # IncrementalPCA's full SVD of every chunk costs minutes (~1 min of CPU per 10,000 x 1,664 chunk).
            frac = min(1.0, self.pca_max_rows / n)
            rng = np.random.default_rng(_seed_of(self.random_state))
            parts: list[np.ndarray] = []
            for i, block in enumerate(iter_chunks(X, chunk)):
                check_finite(block, what=f"features (chunk {i})")
                parts.append(block[rng.random(block.shape[0]) < frac] if frac < 1.0 else block)
            sample = np.concatenate(parts)
            del parts
            if sample.shape[0] < 2:
                sample = next(iter_chunks(X, max(2, int(self.pca_max_rows))))
            self._fit_pca(sample)
            del sample
        else:
            self._fit_incremental_pca(X, n, n_features, target, chunk)
        m = n_features if self.components_ is None else self.components_.shape[0]
        Z = np.empty((n, m), dtype=np.float32)  # filled in place: no list of chunks plus a concatenated copy
        start = 0
        for block in iter_chunks(X, chunk):
            Z[start : start + block.shape[0]] = self._project(block)
            start += block.shape[0]
        check_finite(Z)
        self._fit_minibatch(Z)
        self.labels_ = self.kmeans_.labels_.astype(np.int64)
        return self

    def _fit_incremental_pca(self, X: Any, n: int, n_features: int, target: int | float, chunk: int) -> None:
        """Exact-in-the-limit PCA over every row (``pca_max_rows=None``): IncrementalPCA, one chunk at a time."""
        from sklearn.decomposition import IncrementalPCA

        n_fit = min(_MAX_STREAMING_COMPONENTS, n_features, n) if isinstance(target, float) else int(target)
        chunk = max(chunk, n_fit)
        ipca = IncrementalPCA(n_components=n_fit)
        fitted = False
        for i, block in enumerate(iter_chunks(X, chunk)):
            check_finite(block, what=f"features (chunk {i})")
            if block.shape[0] >= n_fit:  # IncrementalPCA needs a batch at least as tall as the components
                ipca.partial_fit(block)
                fitted = True
        if not fitted:
            raise FeatureValueError(f"too few rows ({n}) to fit {n_fit} principal components in streaming mode")
        keep = n_fit
        if isinstance(target, float):
            keep = min(n_fit, int(np.searchsorted(np.cumsum(ipca.explained_variance_ratio_), target) + 1))
        self._set_projection(
            ipca.mean_,
            ipca.components_[:keep],
            ipca.explained_variance_[:keep],
            ipca.explained_variance_ratio_[:keep],
            np.float32,
        )

    def _fit_minibatch(self, Z: np.ndarray) -> None:
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(
            n_clusters=int(self.n_clusters),
            n_init=int(self.n_init),
            max_iter=int(self.max_iter),
            batch_size=4096,
            random_state=self.random_state,
        ).fit(Z)
        self.kmeans_ = km
        self.inertia_ = float(km.inertia_)
        self.n_iter_ = int(km.n_iter_)
        self.cluster_centers_ = self._centers_to_input(km.cluster_centers_)

    # -- streaming, one pass over an iterator ------------------------------------------------------------------
    def partial_fit(self, X: Any, y: Any = None) -> PcaKMeans:
        """Update the model with one chunk of rows (for data arriving as an iterator).

        The first ``warmup_rows`` rows are buffered; once that many have arrived the PCA is fitted on them and
        frozen (a basis that kept changing would make earlier centres meaningless) and k-means is initialised;
        every later chunk is projected and updates ``MiniBatchKMeans``. ``labels_`` holds the label each row got
        when it arrived, in arrival order. ``predict`` finishes the warm-up early if fewer rows ever arrive.
        """
        state: _StreamState | None = getattr(self, "_stream_state_", None)
        X = _validate(self, X, reset=state is None)
        if state is None:
            state = self._stream_state_ = _StreamState()
            for attr in ("labels_", "kmeans_", "cluster_centers_"):
                self.__dict__.pop(attr, None)
        if "kmeans_" not in self.__dict__:
            state.buffer.append(X)
            state.rows += X.shape[0]
            if state.rows >= self.warmup_rows:
                self._finish_warmup()
            return self
        Z = self._project(X).astype(np.float32, copy=False)
        self.kmeans_.partial_fit(Z)
        self.cluster_centers_ = self._centers_to_input(self.kmeans_.cluster_centers_)
        state.labels.append(self.kmeans_.predict(Z).astype(np.int64))
        self.labels_ = np.concatenate(state.labels)
        return self

    def _finish_warmup(self) -> None:
        state: _StreamState = self._stream_state_
        B = np.concatenate(state.buffer)
        state.buffer = []
        check_n_samples(B.shape[0], int(self.n_clusters))
        self._fit_pca(B)
        Z = self._project(B).astype(np.float32, copy=False)
        self._fit_minibatch(Z)
        state.labels = [self.kmeans_.labels_.astype(np.int64)]
        self.labels_ = state.labels[0]

    def predict(self, X: Any) -> np.ndarray:
        state: _StreamState | None = getattr(self, "_stream_state_", None)
        if state is not None and state.buffer:
            self._finish_warmup()
        check_is_fitted(self, "labels_")
        if isinstance(X, (str, Path, np.memmap)):
            return np.concatenate([self._predict_reduced(self._project(b)) for b in iter_chunks(X, self.chunk_size)])
        return super().predict(X)
