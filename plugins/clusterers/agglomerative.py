"""PCA then Ward agglomerative clustering: a hierarchy, no random initialisation, good up to ~20,000 films."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from xray_xai.sdk.interfaces import Tags

from ._pca import FeatureValueError, PcaClusterer

__all__ = ["Agglomerative"]


class Agglomerative(PcaClusterer):
    """PCA to ``n_components`` then ``AgglomerativeClustering(linkage=...)`` (Ward by default).

    The hierarchy needs memory quadratic in the number of rows, so more than ``max_samples`` rows are refused with
    a message pointing to ``pca-kmeans``. ``predict`` gives each new row the cluster of its nearest training row
    (Ward has no native ``predict``; on the training rows this reproduces ``labels_`` exactly).
    """

    name: ClassVar[str] = "agglomerative"
    description: ClassVar[str] = "PCA then Ward agglomerative clustering (hierarchical, deterministic)"
    tags: ClassVar[Tags] = Tags(deterministic=True)

    def __init__(
        self,
        n_clusters: int = 4,
        n_components: int | float | None = 50,
        *,
        linkage: str = "ward",
        whiten: bool = False,
        random_state: Any = 0,
        max_samples: int = 20_000,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_components = n_components
        self.linkage = linkage
        self.whiten = whiten
        self.random_state = random_state
        self.max_samples = max_samples

    def _fit_reduced(self, Z: np.ndarray) -> None:
        from sklearn.cluster import AgglomerativeClustering

        if Z.shape[0] > self.max_samples:
            raise FeatureValueError(
                f"agglomerative clustering of {Z.shape[0]} images needs memory quadratic in the count "
                f"(max_samples={self.max_samples}); use method 'pca-kmeans' for large sets"
            )
        agg = AgglomerativeClustering(n_clusters=int(self.n_clusters), linkage=self.linkage)
        self.labels_ = agg.fit_predict(Z).astype(np.int64)
        self.children_ = agg.children_
        self._fit_nearest(Z)
        centers = np.stack([Z[self.labels_ == c].mean(axis=0) for c in range(int(self.n_clusters))])
        self.cluster_centers_ = self._centers_to_input(centers)

    def _predict_reduced(self, Z: np.ndarray) -> np.ndarray:
        return self._nearest_training_label(Z)
