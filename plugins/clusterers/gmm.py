"""PCA then a Gaussian mixture: soft clusters of different spread, for when k-means' equal spheres do not fit."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from xray_xai.sdk.interfaces import Tags

from ._pca import PcaClusterer

__all__ = ["PcaGMM"]


class PcaGMM(PcaClusterer):
    """PCA to ``n_components`` then ``GaussianMixture`` with ``n_clusters`` components.

    ``covariance_type`` defaults to ``"diag"``: a full covariance in 50 dimensions has 1,275 parameters per cluster,
    more than a few hundred abnormal films can estimate. ``predict_proba`` gives the soft memberships.
    """

    name: ClassVar[str] = "pca-gmm"
    description: ClassVar[str] = "PCA then a Gaussian mixture model (soft clusters, unequal spread)"
    tags: ClassVar[Tags] = Tags(deterministic=True)

    def __init__(
        self,
        n_clusters: int = 4,
        n_components: int | float | None = 50,
        *,
        covariance_type: str = "diag",
        whiten: bool = False,
        n_init: int = 2,
        max_iter: int = 200,
        reg_covar: float = 1e-5,
        random_state: Any = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.whiten = whiten
        self.n_init = n_init
        self.max_iter = max_iter
        self.reg_covar = reg_covar
        self.random_state = random_state

    def _fit_reduced(self, Z: np.ndarray) -> None:
        from sklearn.mixture import GaussianMixture

        gmm = GaussianMixture(
            n_components=int(self.n_clusters),
            covariance_type=self.covariance_type,
            n_init=int(self.n_init),
            max_iter=int(self.max_iter),
            reg_covar=float(self.reg_covar),
            random_state=self.random_state,
        ).fit(Z)
        self.gmm_ = gmm
        self.n_iter_ = int(gmm.n_iter_)
        self.labels_ = gmm.predict(Z).astype(np.int64)
        self.cluster_centers_ = self._centers_to_input(gmm.means_)

    def _predict_reduced(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(self.gmm_.predict(Z))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Membership probability of each row in each cluster, shape ``(n, n_clusters)``."""
        Z = self.reduce(X)
        return np.asarray(self.gmm_.predict_proba(Z))
