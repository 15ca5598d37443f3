"""Calibration metrics against closed forms, the calibrators, operating points and study aggregation."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import pytest

from xray_xai.errors import CheckpointError
from xray_xai.models.calibration import (
    Calibrator,
    calibrated,
    fit_calibrator,
    logistic_fit,
    logit,
    nll,
)
from xray_xai.models.calibration_metrics import (
    brier,
    calibration_error,
    calibration_metrics,
    reliability,
    sensitivity_at_specificity,
    specificity_at_sensitivity,
)
from xray_xai.models.metrics import aggregate_views, auroc, bootstrap_ci, study_scores
from xray_xai.models.operating import choose_threshold, parse_rule, resolve_threshold


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# -- metrics against closed forms --------------------------------------------------------------------------------
def test_a_perfectly_calibrated_predictor_has_ece_zero() -> None:
    # in each of 10 bins, probability (b + 0.5) / 10 and exactly that share of positives among 20 films
    p, y = [], []
    for b in range(10):
        share = (b + 0.5) / 10
        p += [share] * 20
        y += [1] * round(20 * share) + [0] * (20 - round(20 * share))
    p_arr, y_arr = np.array(p), np.array(y)
    ece, mce = calibration_error(y_arr, p_arr)
    assert ece == pytest.approx(0.0, abs=1e-12) and mce == pytest.approx(0.0, abs=1e-12)
    # sampled: y ~ Bernoulli(p) gives ECE near 0 (sampling noise only), a distorted p does not
    rng = np.random.default_rng(0)
    q = rng.random(200_000)
    yq = (rng.random(q.size) < q).astype(int)
    assert calibration_error(yq, q)[0] < 0.005
    assert calibration_error(yq, q**2)[0] > 0.1
    assert calibration_error(yq, q, adaptive=True)[0] < 0.005


def test_a_constant_predictor_at_the_prevalence_has_brier_p_times_1_minus_p() -> None:
    for p, n_pos in ((0.3, 30), (0.1, 10), (0.5, 50)):
        y = np.array([1] * n_pos + [0] * (100 - n_pos))
        probs = np.full(100, p)
        assert brier(y, probs) == pytest.approx(p * (1 - p), abs=1e-12)
        ece, mce = calibration_error(y, probs)
        assert ece == pytest.approx(0.0, abs=1e-12) and mce == pytest.approx(0.0, abs=1e-12)
    # a constant 0.5 on prevalence 0.2: Brier = 0.2 * 0.25 + 0.8 * 0.25 = 0.25, ECE = |0.5 - 0.2| = 0.3
    y = np.array([1] * 20 + [0] * 80)
    assert brier(y, np.full(100, 0.5)) == pytest.approx(0.25)
    assert calibration_error(y, np.full(100, 0.5))[0] == pytest.approx(0.3)


def test_ece_and_mce_by_hand_on_two_bins() -> None:
    # bin [0.1, 0.2): p=0.15 x 4, 1 positive (gap 0.1); bin [0.8, 0.9): p=0.85 x 6, 3 positives (gap 0.35)
    p = np.array([0.15] * 4 + [0.85] * 6)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0, 0, 0])
    ece, mce = calibration_error(y, p)
    assert ece == pytest.approx(0.4 * 0.1 + 0.6 * 0.35) and mce == pytest.approx(0.35)
    rows = reliability(y, p)
    assert [(r["bin"], r["n"], r["observed"]) for r in rows] == [(1, 4, 0.25), (8, 6, 0.5)]


def test_calibration_slope_and_intercept_recover_a_known_distortion() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.02, 0.98, 100_000)
    true_b, true_a = -1.0, 0.5  # outcome ~ sigmoid(-1 + 0.5 logit(p)): p is over-confident and too high
    y = (rng.random(p.size) < _sigmoid(true_b + true_a * logit(p))).astype(int)
    b, a = logistic_fit(logit(p), y)  # type: ignore[misc]
    assert a == pytest.approx(true_a, abs=0.03) and b == pytest.approx(true_b, abs=0.03)
    # the unpenalised maximum-likelihood fit equals sklearn's to many digits on the same data
    from sklearn.linear_model import LogisticRegression

    sk = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(logit(p)[:, None], y)
    assert a == pytest.approx(float(sk.coef_[0, 0]), abs=1e-5) and b == pytest.approx(float(sk.intercept_[0]), abs=1e-5)
    # calibrated outcomes: slope 1, intercept 0
    yc = (rng.random(p.size) < p).astype(int)
    m = calibration_metrics(yc, p)
    assert m["slope"] == pytest.approx(1.0, abs=0.03) and m["intercept"] == pytest.approx(0.0, abs=0.03)
    assert m["citl"] == pytest.approx(0.0, abs=0.03)


def test_logistic_fit_is_undefined_with_one_class() -> None:
    assert logistic_fit(np.array([0.1, 0.2]), np.array([1, 1])) is None
    m = calibration_metrics([1, 1, 1], [0.2, 0.5, 0.9], bootstrap=20)
    assert m["slope"] is None and m["sensitivity_at_specificity_0.90"] is None and m["brier"] is not None


def test_sensitivity_at_specificity_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    p = np.round(np.clip(0.3 * y + rng.normal(0.4, 0.2, 300), 0, 1), 2)  # ties on purpose
    for level in (0.5, 0.9, 0.95):
        best_sens, best_spec = 0.0, 0.0
        for t in np.r_[np.unique(p), np.inf]:
            sens, spec = np.mean(p[y == 1] >= t), np.mean(p[y == 0] < t)
            if spec >= level:
                best_sens = max(best_sens, sens)
            if sens >= level:
                best_spec = max(best_spec, spec)
        assert sensitivity_at_specificity(y, p, level) == pytest.approx(best_sens)
        assert specificity_at_sensitivity(y, p, level) == pytest.approx(best_spec)


def test_bootstrap_intervals_are_seeded_and_the_same_resamples_as_bootstrap_ci() -> None:
    rng = np.random.default_rng(3)
    p = rng.random(200)
    y = (rng.random(200) < p).astype(int)
    a = calibration_metrics(y, p, bootstrap=200, seed=5)
    b = calibration_metrics(y, p, bootstrap=200, seed=5)
    assert a["ci95"] == b["ci95"]
    assert a["ci95"]["brier"] == pytest.approx(list(bootstrap_ci(y, p, brier, n=200, seed=5)))  # type: ignore[arg-type]
    assert a["ci95"]["brier"][0] <= a["brier"] <= a["ci95"]["brier"][1]
    # (no such check for ECE: the binned estimator is biased upwards, more so on resamples with repeated films, so
    # its percentile interval can lie above the point estimate on well-calibrated data)


# -- calibrators -------------------------------------------------------------------------------------------------
def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < _sigmoid(z)).astype(int)
    return y, _sigmoid(3.0 * z)  # logits three times too large


def test_temperature_scaling_keeps_auroc_and_lowers_validation_nll() -> None:
    y, p = _overconfident(4000, 0)
    cal = fit_calibrator("temperature", y, p)
    q = cal(p)
    assert cal.params["temperature"] == pytest.approx(3.0, rel=0.1)
    assert auroc(y, q) == pytest.approx(auroc(y, p), abs=1e-12)
    assert nll(y, q) < nll(y, p) - 0.05
    # and on held-out films drawn the same way it helps too
    y2, p2 = _overconfident(4000, 1)
    assert nll(y2, cal(p2)) < nll(y2, p2) and calibration_error(y2, cal(p2))[0] < calibration_error(y2, p2)[0]


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic", "none"])
def test_calibrators_round_trip_through_json(method: str) -> None:
    y, p = _overconfident(2000, 2)
    cal = fit_calibrator(method, y, p)
    back = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    grid = np.linspace(0.0, 1.0, 1001)
    np.testing.assert_array_equal(back(grid), cal(grid))
    assert np.all(np.diff(back(grid)) >= -1e-12)  # every calibrator is monotone
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
        np.testing.assert_allclose(back(grid), iso.predict(grid), atol=1e-12)
    if method == "platt":
        assert nll(y, cal(p)) < nll(y, p)


def test_a_malformed_calibration_entry_is_a_one_line_checkpoint_error() -> None:
    bads = [{"method": "temperature"}, {"method": "zap"}, {"method": "isotonic", "params": {"x": [2, 1], "y": [0, 1]}},
            {"method": "temperature", "params": {"temperature": -1}}, "nonsense"]  # fmt: skip
    for bad in bads:
        with pytest.raises(CheckpointError, match="malformed 'calibration'") as info:
            Calibrator.from_dict(bad, "model.json")
        assert "\n" not in str(info.value)


def test_calibrated_reads_the_models_sidecar_and_raw_bypasses_it() -> None:
    class Stub:
        sidecar: ClassVar[dict[str, Any]] = {"calibration": {"method": "temperature", "params": {"temperature": 2.0}}}

    p = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(calibrated(Stub(), p), _sigmoid(logit(p) / 2.0))
    np.testing.assert_array_equal(calibrated(Stub(), p, raw=True), p)
    np.testing.assert_array_equal(calibrated(object(), p), p)  # a model without a sidecar


# -- operating points --------------------------------------------------------------------------------------------
def test_rules_choose_thresholds_that_hold_on_the_data_they_were_chosen_on() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.25 * y + rng.normal(0.4, 0.2, 500), 0, 1)
    cands = np.unique(p)
    t = choose_threshold(y, p, "sensitivity=0.9")  # the highest candidate that keeps sensitivity >= 0.9
    assert np.mean(p[y == 1] >= t) >= 0.9 and np.mean(p[y == 1] >= cands[cands > t].min()) < 0.9
    t = choose_threshold(y, p, "specificity=0.95")  # the lowest candidate that keeps specificity >= 0.95
    assert np.mean(p[y == 0] < t) >= 0.95 and np.mean(p[y == 0] < cands[cands < t].max()) < 0.95
    t = choose_threshold(y, p, "youden")
    j = np.mean(p[y == 1] >= t) + np.mean(p[y == 0] < t) - 1
    assert all(j >= np.mean(p[y == 1] >= c) + np.mean(p[y == 0] < c) - 1 - 1e-12 for c in np.unique(p))
    assert choose_threshold(y, p, "fixed=0.3") == 0.3


@pytest.mark.parametrize("bad", ["youden=1", "sensitivity", "sensitivity=1.5", "specificity=x", "best"])
def test_bad_rules_are_refused(bad: str) -> None:
    from xray_xai._util.params import ParamError

    with pytest.raises(ParamError):
        parse_rule(bad)


def test_resolve_threshold_prefers_the_option_then_the_sidecar_then_the_default() -> None:
    class Stub:
        sidecar: ClassVar[dict[str, Any]] = {
            "calibration": {"method": "temperature", "params": {"temperature": 2.0}},
            "operating_points": [{"rule": "youden", "threshold": 0.3, "threshold_raw": 0.2, "split": "val"}],
        }

    assert resolve_threshold(Stub(), 0.7)[0] == 0.7
    assert resolve_threshold(Stub())[0] == 0.3
    assert resolve_threshold(Stub(), raw=True)[0] == 0.2
    assert resolve_threshold(object()) == (0.5, "default")


# -- study aggregation -------------------------------------------------------------------------------------------
def test_study_aggregations() -> None:
    p = [0.2, 0.5, 0.9]
    assert aggregate_views(p, "mean") == pytest.approx(1.6 / 3)
    assert aggregate_views(p, "max") == 0.9
    assert aggregate_views(p, "noisy-or") == pytest.approx(1 - 0.8 * 0.5 * 0.1)
    assert aggregate_views([0.4], "noisy-or") == pytest.approx(0.4)
    with pytest.raises(ValueError, match="unknown study aggregation"):
        aggregate_views(p, "median")

    from pathlib import Path

    from xray_xai.sdk.interfaces import Record

    recs = [Record(path=Path(f"{i}.png"), study=s, label=lab) for i, (s, lab) in enumerate(
        [("a", 1), ("a", 1), ("b", 0)])]  # fmt: skip
    ids, labels, scores = study_scores(recs, [0.2, 0.6, 0.3], "noisy-or")
    assert ids == ["a", "b"] and labels.tolist() == [1, 0]
    np.testing.assert_allclose(scores, [1 - 0.8 * 0.4, 0.3])
    assert study_scores(recs, [0.2, 0.6, 0.3], "max")[2].tolist() == [0.6, 0.3]
