"""The classical baseline: local binary patterns -> PCA -> logistic regression (no torch module, no gradients).

Each preprocessed film (centre crop 224 px, one channel, raw [0, 1] intensities) becomes its uniform LBP code image
(``skimage.feature.local_binary_pattern``, P=8, R=1, ``"uniform"``: codes 0..P+1), flattened; PCA keeps
``min(n_components, n_samples, n_pixels)`` components (these are the model's ``features``); a scikit-learn logistic
regression on them gives the probability of abnormal.

After :meth:`LbpLogReg.fit` the fitted arrays (PCA mean and components, regression coefficients and intercept) are
kept as float32 and used directly for prediction, so saving them as safetensors (no pickle) and loading them back
gives bit-identical outputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from xray_xai.errors import CheckpointError, PluginError
from xray_xai.sdk import Model, Preprocessing, Tags

__all__ = ["LbpLogReg", "lbp_codes"]

_KEYS = ("pca_mean", "pca_components", "coef", "intercept")


def lbp_codes(images: torch.Tensor | np.ndarray, points: int = 8, radius: float = 1.0) -> np.ndarray:
    """Uniform LBP codes of a batch ``(B, H, W)`` or ``(B, 1, H, W)`` in [0, 1], flattened to ``(B, H*W)``."""
    from skimage.feature import local_binary_pattern

    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim == 4:
        arr = arr.mean(axis=1)  # channels are copies of the grey film; average keeps this valid for 3-channel input
    if arr.ndim != 3:
        raise PluginError(f"lbp-logreg expects a batch (B, [C,] H, W), got shape {arr.shape}")
    # LBP compares neighbours; on floats it is noise-sensitive (skimage warns), so quantise to 8 bits first
    u8 = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    out = np.stack([local_binary_pattern(im, points, radius, method="uniform") for im in u8])
    return out.reshape(len(out), -1).astype(np.float32)


class LbpLogReg(Model):
    """Local binary patterns + PCA + logistic regression, fitted with :meth:`fit` (not by gradient descent)."""

    name = "lbp-logreg"
    description = "Classical baseline: uniform LBP (P=8, R=1) -> PCA (500) -> logistic regression"
    tags: ClassVar[Tags] = Tags(differentiable=False, deterministic=True, supports_batch=True)
    default_preprocessing: ClassVar[Preprocessing] = Preprocessing(
        name="center-crop-224-raw",
        input_size=224,
        mode="center-crop",
        crop=224,
        channels=1,
        normalize="none",
        mean=(0.0,),
        std=(1.0,),
    )
    target_layer = ""
    feature_layer = ""

    def __init__(
        self,
        *,
        n_components: int = 500,
        points: int = 8,
        radius: float = 1.0,
        C: float = 1.0,
        seed: int = 0,
        image_size: int | None = None,
    ) -> None:
        super().__init__(image_size=image_size)  # the crop follows the input size (crop = input here)
        self.n_components = int(n_components)
        self.points = int(points)
        self.radius = float(radius)
        self.C = float(C)
        self.seed = int(seed)
        self._arrays: dict[str, np.ndarray] = {}

    def config(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "points": self.points,
            "radius": self.radius,
            "C": self.C,
            "seed": self.seed,
            "image_size": self.preprocessing.input_size,
        }

    @property
    def fitted(self) -> bool:
        return bool(self._arrays)

    # -- fitting -------------------------------------------------------------------------------------------------
    def fit(self, images: torch.Tensor | np.ndarray, labels: Any) -> LbpLogReg:
        """Fit PCA and the logistic regression on preprocessed images ``(N, [C,] S, S)`` and 0/1 ``labels``."""
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression

        y = np.asarray(labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels).astype(int).ravel()
        X = lbp_codes(images, self.points, self.radius).astype(np.float64)
        if len(X) != len(y):
            raise PluginError(f"lbp-logreg: {len(X)} images but {len(y)} labels")
        if len(np.unique(y)) < 2:
            raise PluginError("lbp-logreg: the training labels hold one class only")
        k = max(1, min(self.n_components, X.shape[0], X.shape[1]))
        pca = PCA(n_components=k, random_state=self.seed).fit(X)
        mean = pca.mean_.astype(np.float32)
        comps = pca.components_.astype(np.float32)
        Z = (X - mean.astype(np.float64)) @ comps.astype(np.float64).T
        reg = LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed).fit(Z, y)
        self._arrays = {
            "pca_mean": mean,
            "pca_components": comps,
            "coef": reg.coef_.ravel().astype(np.float32),
            "intercept": reg.intercept_.astype(np.float32),
        }
        return self

    # -- the contract --------------------------------------------------------------------------------------------
    def _need_fit(self) -> None:
        if not self._arrays:
            raise PluginError("model 'lbp-logreg' is not fitted: call fit(images, labels) or train it first")

    def _z(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        self._need_fit()
        X = lbp_codes(images, self.points, self.radius).astype(np.float64)
        mean = self._arrays["pca_mean"].astype(np.float64)
        if X.shape[1] != mean.shape[0]:
            raise PluginError(f"lbp-logreg was fitted on {mean.shape[0]} pixels per image, got {X.shape[1]}")
        return np.asarray((X - mean) @ self._arrays["pca_components"].astype(np.float64).T)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._z(images).astype(np.float32))

    def decision_function(self, images: torch.Tensor) -> torch.Tensor:
        """The logit of abnormal, ``(B,)``."""
        z = self._z(images) @ self._arrays["coef"].astype(np.float64) + float(self._arrays["intercept"][0])
        return torch.from_numpy(z.astype(np.float32))

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decision_function(images))

    __call__ = decision_function

    # -- storage (no pickle) -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v.copy()) for k, v in self._arrays.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        keys = set(state)
        if keys != set(_KEYS):
            raise CheckpointError(None, f"lbp-logreg weights need {', '.join(_KEYS)}; got {', '.join(sorted(keys))}")
        arrays = {k: state[k].detach().cpu().numpy().astype(np.float32) for k in _KEYS}
        k, f = arrays["pca_components"].shape
        if arrays["pca_mean"].shape != (f,) or arrays["coef"].shape != (k,) or arrays["intercept"].shape != (1,):
            raise CheckpointError(None, "lbp-logreg weights have inconsistent shapes")
        self._arrays = arrays

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for key in sorted(self._arrays):
            h.update(key.encode())
            h.update(self._arrays[key].tobytes())
        return h.hexdigest()[:16]
