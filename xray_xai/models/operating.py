"""Operating points: a decision threshold chosen on validation by a named rule, and the one threshold resolver.

Rules (``xray-xai calibrate --rule``):

* ``youden``: the threshold maximising sensitivity + specificity - 1 (Youden's J) on validation;
* ``sensitivity=0.90``: the highest threshold whose validation sensitivity reaches 0.90 (screening: miss few);
* ``specificity=0.95``: the lowest threshold whose validation specificity reaches 0.95 (rule-in: few false alarms);
* ``fixed=0.5``: that threshold as such (recorded so the sidecar says what was used and what it gave on validation).

A film is called abnormal when its probability is at or above the threshold. The candidates are the validation
probabilities themselves, so the rule holds exactly on validation; it is then carried, unchanged, to test data.

:func:`resolve_threshold` is the ONE place a command's threshold comes from: ``--threshold`` when given, else the
first operating point recorded in the checkpoint's sidecar (on the scale of the probability shown: calibrated, or
raw with ``--uncalibrated``), else :data:`xray_xai.defaults.DECISION_THRESHOLD`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xray_xai._util.params import ParamError
from xray_xai.defaults import DECISION_THRESHOLD

__all__ = ["RULE_HELP", "choose_threshold", "metrics_at", "operating_points_of", "parse_rule", "resolve_threshold"]

RULE_HELP = "youden, sensitivity=X, specificity=X or fixed=X (X in (0, 1))"


def parse_rule(text: str) -> tuple[str, float | None]:
    """``"youden"`` -> ``("youden", None)``; ``"sensitivity=0.9"`` -> ``("sensitivity", 0.9)``; else ParamError."""
    name, _, value = str(text).strip().lower().partition("=")
    aliases = {"sens": "sensitivity", "spec": "specificity", "j": "youden"}
    name = aliases.get(name, name)
    if name == "youden" and not value:
        return "youden", None
    if name in ("sensitivity", "specificity", "fixed") and value:
        try:
            level = float(value)
        except ValueError:
            level = float("nan")
        if 0.0 < level < 1.0:
            return name, level
        raise ParamError(f"rule {text!r}: the value must be a number in (0, 1)")
    raise ParamError(f"unknown operating-point rule {text!r}; use {RULE_HELP}")


def rule_name(rule: tuple[str, float | None]) -> str:
    return rule[0] if rule[1] is None else f"{rule[0]}={rule[1]:g}"


def choose_threshold(y: Any, p: Any, rule: str | tuple[str, float | None]) -> float:
    """The threshold ``rule`` picks on labels ``y`` and probabilities ``p`` (validation); ValueError without both
    classes."""
    name, value = parse_rule(rule) if isinstance(rule, str) else rule
    level = 0.0 if value is None else float(value)
    if name == "fixed":
        return level
    ya = np.asarray(y, dtype=np.int64).ravel() == 1
    pa = np.asarray(p, dtype=np.float64).ravel()
    if ya.all() or not ya.any():
        raise ValueError("choosing a threshold needs both classes in the validation split")
    cands = np.unique(pa)  # ascending; threshold t calls p >= t positive
    sens = np.array([np.mean(pa[ya] >= t) for t in cands])
    spec = np.array([np.mean(pa[~ya] < t) for t in cands])
    if name == "youden":
        return float(cands[int(np.argmax(sens + spec - 1.0))])  # first (lowest) of equal maxima
    if name == "sensitivity":
        ok = np.nonzero(sens >= level - 1e-12)[0]
        return float(cands[ok.max()])  # the lowest candidate always reaches sensitivity 1
    ok = np.nonzero(spec >= level - 1e-12)[0]
    return float(cands[ok.min()]) if ok.size else float(np.nextafter(cands[-1], np.inf))


def metrics_at(y: Any, p: Any, threshold: float) -> dict[str, Any]:
    """At ``threshold``: sensitivity, specificity, precision (PPV), NPV, accuracy, kappa, the confusion counts and
    ``share_positive`` (the share of films called abnormal)."""
    from xray_xai.models.metrics import binary_metrics

    m = binary_metrics(y, p, threshold)
    pa = np.asarray(p, dtype=np.float64).ravel()
    npv = m["tn"] / (m["tn"] + m["fn"]) if (m["tn"] + m["fn"]) else None
    keep = ("sensitivity", "specificity", "precision", "accuracy", "kappa", "f1", "tn", "fp", "fn", "tp")
    return {
        "threshold": float(threshold),
        **{k: m.get(k) for k in keep},
        "npv": npv,
        "share_positive": float(np.mean(pa >= threshold)) if pa.size else None,
    }


def operating_points_of(model: Any) -> list[dict[str, Any]]:
    """The operating points recorded in a loaded model's sidecar (first = the one in use), or []."""
    sidecar = getattr(model, "sidecar", None)
    points = sidecar.get("operating_points") if isinstance(sidecar, dict) else None
    return [p for p in (points or []) if isinstance(p, dict) and "threshold" in p]


def resolve_threshold(model: Any, threshold: float | None = None, *, raw: bool = False) -> tuple[float, str]:
    """``(threshold, where it came from)`` for ``model``: ``threshold`` when given (``--threshold``); else the
    sidecar's first operating point on the scale shown (calibrated, or ``raw``); else the default 0.5."""
    if threshold is not None:
        return float(threshold), "given (--threshold)"
    points = operating_points_of(model)
    if points:
        point = points[0]
        from xray_xai.models.calibration import calibrator_of

        value = point["threshold_raw"] if (raw or calibrator_of(model) is None) else point["threshold"]
        fitted = point.get("split", "validation")
        scale = "uncalibrated" if raw and calibrator_of(model) is not None else "as shown"
        return float(value), f"{point.get('rule', 'recorded')} on {fitted} (sidecar, {scale})"
    return DECISION_THRESHOLD, "default"
