"""PCA then HDBSCAN: clusters of any shape and number, and a noise label (-1) for films that belong nowhere."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from xray_xai.sdk.interfaces import Tags

from ._pca import PcaClusterer

__all__ = ["Hdbscan"]


class Hdbscan(PcaClusterer):
    """PCA to ``n_components`` (default 20: density estimates degrade in many dimensions) then ``HDBSCAN``.

    The number of clusters is found, not given (the CLI's ``--k`` is ignored). Noise gets the label -1.
    ``predict`` gives a new row the label of its nearest training row (HDBSCAN has no native ``predict``).
    """

    name: ClassVar[str] = "hdbscan"
    description: ClassVar[str] = "PCA then HDBSCAN (finds the number of clusters; noise labelled -1)"
    tags: ClassVar[Tags] = Tags(deterministic=True)

    def __init__(
        self,
        min_cluster_size: int = 5,
        n_components: int | float | None = 20,
        *,
        min_samples: int | None = None,
        cluster_selection_epsilon: float = 0.0,
        whiten: bool = False,
        random_state: Any = 0,
    ) -> None:
        self.min_cluster_size = min_cluster_size
        self.n_components = n_components
        self.min_samples = min_samples
        self.cluster_selection_epsilon = cluster_selection_epsilon
        self.whiten = whiten
        self.random_state = random_state

    def _fit_reduced(self, Z: np.ndarray) -> None:
        from sklearn.cluster import HDBSCAN

        n = Z.shape[0]
        kwargs: dict[str, Any] = {
            "min_cluster_size": max(2, min(int(self.min_cluster_size), n)),
            "min_samples": None if self.min_samples is None else max(1, min(int(self.min_samples), n)),
            "cluster_selection_epsilon": float(self.cluster_selection_epsilon),
        }
        if "copy" in HDBSCAN().get_params():  # scikit-learn >= 1.5 warns unless told; Z is ours to overwrite
            kwargs["copy"] = False
        hdb = HDBSCAN(**kwargs).fit(Z.astype(np.float64))
        self.labels_ = hdb.labels_.astype(np.int64)
        self.probabilities_ = hdb.probabilities_
        self._fit_nearest(Z)
        ids = [c for c in np.unique(self.labels_) if c >= 0]
        if ids:
            centers = np.stack([Z[self.labels_ == c].mean(axis=0) for c in ids])
            self.cluster_centers_ = self._centers_to_input(centers)
        else:
            self.cluster_centers_ = np.empty((0, self.n_features_in_))

    def _predict_reduced(self, Z: np.ndarray) -> np.ndarray:
        return self._nearest_training_label(Z)
