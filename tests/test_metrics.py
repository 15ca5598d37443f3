from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from xray_xai.models.metrics import (
    MURA_PUBLISHED_KAPPA,
    auroc,
    binary_metrics,
    bootstrap_ci,
    bootstrap_metrics,
    cohen_kappa,
    confusion,
    kappa_table,
    per_region,
    study_scores,
)
from xray_xai.sdk.interfaces import Record


@pytest.fixture
def yp() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    p[:20] = 0.5  # ties and exactly-at-threshold values
    return y, p


def test_binary_metrics_match_sklearn(yp: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = yp
    m = binary_metrics(y, p, threshold=0.5)
    pred = (p >= 0.5).astype(int)
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["sensitivity"] == m["recall"]
    assert m["specificity"] == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
    assert m["notes"] == []


def test_hand_computed_case() -> None:
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    pred = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    assert confusion(y, pred) == {"tn": 5, "fp": 1, "fn": 1, "tp": 3}
    # po = 0.8; pe = (4*4 + 6*6) / 100 = 0.52; kappa = 0.28 / 0.48
    assert cohen_kappa(y, pred) == pytest.approx(0.28 / 0.48)
    m = binary_metrics(y, np.array(pred, dtype=float))
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["precision"] == pytest.approx(0.75)
    assert auroc([0, 1], [0.2, 0.9]) == 1.0
    assert auroc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_single_class_is_explained_not_crashing() -> None:
    m = binary_metrics([0, 0, 0], [0.1, 0.7, 0.2])
    assert m["auroc"] is None and m["recall"] is None
    assert m["specificity"] == pytest.approx(2 / 3)
    assert any("AUROC undefined" in n for n in m["notes"])
    assert auroc([1, 1], [0.3, 0.4]) is None
    assert cohen_kappa([0, 0], [0, 0]) is None
    ci = bootstrap_metrics([0, 0, 0], [0.1, 0.7, 0.2], n=50)
    assert ci["auroc"] is None and ci["specificity"] is not None


def test_bootstrap_contains_estimate_and_is_deterministic(yp: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = yp
    ci = bootstrap_ci(y, p, auroc, n=200, seed=1)
    assert ci is not None
    assert ci[0] <= auroc(y, p) <= ci[1]  # type: ignore[operator]
    assert ci == bootstrap_ci(y, p, auroc, n=200, seed=1)
    assert ci != bootstrap_ci(y, p, auroc, n=200, seed=2)
    # the vectorised intervals use the same resamples as the loop
    fast = bootstrap_metrics(y, p, n=200, seed=1)
    assert fast["auroc"] == pytest.approx(list(ci))
    kappa_ci = bootstrap_ci(y, p, lambda a, b: cohen_kappa(a, b >= 0.5), n=200, seed=1)
    assert fast["kappa"] == pytest.approx(list(kappa_ci))  # type: ignore[arg-type]
    m = binary_metrics(y, p)
    for name, interval in fast.items():
        assert interval is not None
        assert interval[0] <= m[name] <= interval[1], name


def _rec(study: str, label: int, region: str, i: int) -> Record:
    return Record(path=Path(f"/x/{study}/image{i}.png"), study=study, label=label, region=region)


def test_study_scores_mean_over_views() -> None:
    recs = [_rec("s1", 1, "hand", 1), _rec("s2", 0, "wrist", 1), _rec("s1", 1, "hand", 2), _rec("s1", 1, "hand", 3)]
    ids, labels, probs = study_scores(recs, [0.9, 0.2, 0.3, 0.6])
    assert ids == ["s1", "s2"]
    assert labels.tolist() == [1, 0]
    assert probs == pytest.approx([0.6, 0.2])
    with pytest.raises(ValueError):
        study_scores(recs, [0.1])


def test_per_region_and_kappa_table() -> None:
    y = [1, 0, 1, 0, 0]
    p = [0.9, 0.1, 0.8, 0.7, 0.2]
    res = per_region(y, p, ["hand", "hand", "wrist", "wrist", None], bootstrap=20)
    assert set(res) == {"hand", "unknown", "wrist"}
    assert res["hand"]["accuracy"] == 1.0 and res["wrist"]["accuracy"] == 0.5
    assert res["unknown"]["auroc"] is None
    assert "ci95" in res["hand"]
    rows = kappa_table({"hand": 0.5, "overall": 0.6})
    assert [r["region"] for r in rows][-1] == "overall"
    hand = next(r for r in rows if r["region"] == "hand")
    assert hand["ours"] == 0.5 and hand["radiologist_2"] == 0.927 and hand["model"] == 0.851
    assert next(r for r in rows if r["region"] == "elbow")["ours"] is None
    assert MURA_PUBLISHED_KAPPA["overall"] == {
        "radiologist_1": 0.731,
        "radiologist_2": 0.763,
        "radiologist_3": 0.778,
        "model": 0.705,
    }
