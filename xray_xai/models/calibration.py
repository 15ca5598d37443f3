"""Post-hoc calibration of a model's probability: fitted on validation, stored in the sidecar, applied everywhere.

Three maps from the model's raw probability ``p`` to a calibrated one, each a few numbers in JSON (no pickles):

* ``temperature`` (default; Guo et al. 2017): ``sigmoid(logit(p) / T)``, one parameter, monotone, so AUROC and the
  ranking of films are unchanged; it undoes the over-confidence that class weighting and long training leave.
* ``platt`` (Platt 1999): ``sigmoid(a * logit(p) + b)``; ``b`` also moves the base rate, which class-weighted
  training shifts (our FracAtlas recipe weights fractures about 4:1).
* ``isotonic`` (Zadrozny & Elkan 2002): a non-decreasing step function, stored as its breakpoints and applied by
  linear interpolation between them (what sklearn's ``IsotonicRegression.predict`` does), clipped at the ends.

:func:`calibrated` is the ONE place a loaded model's probability becomes the one shown (predict, evaluate, explain
titles and items, the web page, the report): it reads the ``calibration`` entry of ``model.sidecar``.

The logistic fits (Platt, the calibration slope/intercept of :mod:`xray_xai.models.calibration_metrics`) are a
two-parameter Newton iteration written here: sklearn's LogisticRegression penalises by default and would need
per-call care (``penalty=None``, solver tolerances) for a fit this small, and statsmodels is not a dependency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xray_xai.defaults import CALIBRATION_METHODS
from xray_xai.errors import CheckpointError

__all__ = [
    "CALIBRATION_METHODS",
    "Calibrator",
    "calibrated",
    "calibrator_of",
    "fit_calibrator",
    "logistic_fit",
    "logistic_fit_rows",
    "logit",
    "nll",
]

_EPS = 1e-7


def logit(p: Any) -> np.ndarray:
    """``log(p / (1 - p))``, ``p`` clipped to ``[1e-7, 1 - 1e-7]`` (a probability of exactly 0 or 1 stays finite)."""
    pa = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(pa) - np.log1p(-pa)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free form of 1 / (1 + exp(-z))


def nll(y: Any, p: Any) -> float:
    """Mean negative log-likelihood (binary cross-entropy) of labels ``y`` under probabilities ``p``."""
    ya = np.asarray(y, dtype=np.float64).ravel()
    pa = np.clip(np.asarray(p, dtype=np.float64).ravel(), _EPS, 1.0 - _EPS)
    return float(-np.mean(ya * np.log(pa) + (1.0 - ya) * np.log1p(-pa)))


def logistic_fit_rows(
    x: np.ndarray, y: np.ndarray, *, offset: np.ndarray | None = None, slope: bool = True, iterations: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Unpenalised maximum-likelihood ``(intercept, slope)`` of ``P(y=1) = sigmoid(b + a * x [+ offset])`` for each
    row of ``(R, N)`` matrices at once (bootstrap resamples), as two ``(R,)`` arrays.

    ``slope=False`` fits the intercept alone (``a`` = 0; with ``offset=logit(p)``, calibration-in-the-large).
    Newton-Raphson from zero with the 2x2 systems solved in closed form; the log-likelihood is concave, so it
    converges in a handful of steps unless the classes are separable, which sends a coefficient to infinity: rows
    with one class, a non-finite or a huge (> 1e3) coefficient are NaN.
    """
    xa = np.atleast_2d(np.asarray(x, dtype=np.float64))
    ya = np.atleast_2d(np.asarray(y, dtype=np.float64))
    off = np.zeros_like(xa) if offset is None else np.atleast_2d(np.asarray(offset, dtype=np.float64))
    b = np.zeros(xa.shape[0])
    a = np.zeros(xa.shape[0])
    with np.errstate(all="ignore"):
        for _ in range(iterations):
            mu = _sigmoid(b[:, None] + (a[:, None] * xa if slope else 0.0) + off)
            w = mu * (1.0 - mu)
            r = ya - mu
            g0, h00 = r.sum(axis=1), w.sum(axis=1)
            if slope:
                g1, h01, h11 = (r * xa).sum(axis=1), (w * xa).sum(axis=1), (w * xa * xa).sum(axis=1)
                det = h00 * h11 - h01 * h01
                db, da = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
            else:
                db, da = g0 / h00, np.zeros_like(g0)
            b, a = b + db, a + da
            if np.all(~np.isfinite(db) | (np.abs(db) + np.abs(da) < 1e-10)):
                break
        one_class = (ya.min(axis=1) == ya.max(axis=1)) | ~np.isfinite(a) | ~np.isfinite(b)
        bad = one_class | (np.abs(a) > 1e3) | (np.abs(b) > 1e3)
    return np.where(bad, np.nan, b), np.where(bad, np.nan, a)


def logistic_fit(x: Any, y: Any, *, offset: Any = None, slope: bool = True) -> tuple[float, float] | None:
    """:func:`logistic_fit_rows` on one sample: ``(intercept, slope)``, or None when the fit is undefined."""
    b, a = logistic_fit_rows(
        np.asarray(x, dtype=np.float64).ravel()[None, :], np.asarray(y, dtype=np.float64).ravel()[None, :],
        offset=None if offset is None else np.asarray(offset, dtype=np.float64).ravel()[None, :], slope=slope,
    )  # fmt: skip
    if np.isnan(b[0]) or (not np.asarray(y).size):
        return None
    return float(b[0]), float(a[0])


@dataclass
class Calibrator:
    """A fitted map from raw to calibrated probability; ``to_dict``/``from_dict`` are its sidecar JSON form."""

    method: str
    params: dict[str, Any] = field(default_factory=dict)

    def __call__(self, p: Any) -> np.ndarray:
        pa = np.asarray(p, dtype=np.float64)
        if self.method == "temperature":
            return _sigmoid(logit(pa) / float(self.params["temperature"]))
        if self.method == "platt":
            return _sigmoid(float(self.params["a"]) * logit(pa) + float(self.params["b"]))
        if self.method == "isotonic":
            xs = np.asarray(self.params["x"], dtype=np.float64)
            ys = np.asarray(self.params["y"], dtype=np.float64)
            return np.interp(pa, xs, ys)  # constant beyond the ends = sklearn's out_of_bounds="clip"
        if self.method == "none":
            return pa.copy()
        raise ValueError(f"unknown calibration method {self.method!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Any, where: Any = None) -> Calibrator:
        """The calibrator a sidecar's ``calibration`` entry describes; a malformed one is a CheckpointError."""
        try:
            method = str(data["method"])
            params = dict(data.get("params") or {})
            need = {"temperature": ("temperature",), "platt": ("a", "b"), "isotonic": ("x", "y"), "none": ()}[method]
            missing = [k for k in need if k not in params]
            if missing:
                raise KeyError(missing[0])
            cal = cls(method, params)
            if method == "temperature" and not float(params["temperature"]) > 0:
                raise ValueError("temperature must be > 0")
            if method == "isotonic":
                xs = np.asarray(params["x"], dtype=np.float64)
                if xs.ndim != 1 or xs.size == 0 or xs.size != len(params["y"]) or np.any(np.diff(xs) < 0):
                    raise ValueError("isotonic breakpoints must be two equal-length lists, x non-decreasing")
            return cal
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(where, f"malformed 'calibration' entry in the sidecar ({exc!r})") from None


def fit_calibrator(method: str, y: Any, p: Any) -> Calibrator:
    """Fit ``method`` (:data:`CALIBRATION_METHODS`) on validation labels ``y`` and raw probabilities ``p``."""
    ya = np.asarray(y, dtype=np.float64).ravel()
    pa = np.asarray(p, dtype=np.float64).ravel()
    if method == "none":
        return Calibrator("none")
    if ya.size == 0 or ya.min() == ya.max():
        raise ValueError("calibration needs both classes in the validation split")
    if method == "temperature":
        from scipy.optimize import minimize_scalar

        z = logit(pa)
        # NLL is convex in 1/T; search log T in [-5, 5] (T from 0.007 to 148)
        res = minimize_scalar(lambda lt: nll(ya, _sigmoid(z / np.exp(lt))), bounds=(-5.0, 5.0), method="bounded")
        return Calibrator("temperature", {"temperature": float(np.exp(res.x))})
    if method == "platt":
        fit = logistic_fit(logit(pa), ya)
        if fit is None:
            raise ValueError("Platt scaling did not converge (validation classes separable?)")
        return Calibrator("platt", {"a": fit[1], "b": fit[0]})
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(pa, ya)
        return Calibrator("isotonic", {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})
    raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(CALIBRATION_METHODS)}")


def calibrator_of(model: Any) -> Calibrator | None:
    """The calibrator stored in a loaded model's sidecar (``model.sidecar["calibration"]``), or None."""
    sidecar = getattr(model, "sidecar", None)
    entry = sidecar.get("calibration") if isinstance(sidecar, dict) else None
    if not entry:
        return None
    cal = Calibrator.from_dict(entry, getattr(model, "checkpoint_path", None))
    return None if cal.method == "none" else cal


def calibrated(model: Any, p: Any, *, raw: bool = False) -> np.ndarray:
    """The probability shown for ``model``: its raw probability ``p`` through the sidecar's calibrator (none stored,
    or ``raw``: ``p`` unchanged). Every command routes the model's probability through here."""
    pa = np.asarray(p, dtype=np.float64)
    cal = None if raw else calibrator_of(model)
    return pa.copy() if cal is None else cal(pa)
