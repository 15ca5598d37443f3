"""xray-xai strata: the statistics, subgroups from metadata, the predictions CSV path on FracAtlas films, the planted
phantom shortcut (generator) and the command end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from xray_xai.audit.strata.stats import adjust, auroc_difference_test, delong, fisher_test, mean_difference
from xray_xai.audit.strata.subgroups import StrataOptions, subgroup_columns, subgroup_table
from xray_xai.cli import main
from xray_xai.sdk.interfaces import Record


# -------------------------------------------------------------------------------------------------------- stats
def test_delong_auroc_and_variance_match_sklearn_and_the_bootstrap() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300) + 0.4 * y, 2)  # rounded: ties, which midranks must count a half
    auc, var = delong(y, p)  # type: ignore[misc]
    assert auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    boots = [roc_auc_score(y[i], p[i]) for i in (rng.integers(0, 300, 300) for _ in range(3000))]
    assert var == pytest.approx(np.var(boots), rel=0.15)
    assert delong([1, 0, 0], [0.9, 0.1, 0.2]) is None  # one positive: no variance


def test_auroc_difference_test_finds_a_real_gap_and_not_a_null_one() -> None:
    rng = np.random.default_rng(0)
    y_a, y_b = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    good = auroc_difference_test(y_a, y_a * 1.5 + rng.random(200), y_b, rng.random(200))
    assert good is not None and good["difference"] > 0.3 and good["p"] < 1e-6
    same = auroc_difference_test(y_a, y_a + rng.normal(0, 1, 200), y_b, y_b + rng.normal(0, 1, 200))
    assert same is not None and same["p"] > 0.01


def test_holm_and_bh_adjust_as_written_by_hand() -> None:
    ps = [0.01, 0.04, 0.03, 0.5]
    # Holm: sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1 -> 0.04, 0.09, 0.08 -> made monotone 0.09, 0.5
    assert adjust(ps, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.5])
    # BH: p_(i) m / i from the top, running minimum: 0.5, min(0.04*4/3, 0.5), min(0.03*4/2, ...), 0.01*4
    assert adjust(ps, "bh") == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    assert adjust(ps, "none") == ps
    with pytest.raises(ValueError, match="unknown correction"):
        adjust(ps, "bonferonni")


def test_fisher_and_mean_difference() -> None:
    from scipy.stats import fisher_exact

    t = fisher_test(3, 20, 18, 20)
    assert t is not None and t["difference"] == pytest.approx(-0.75)
    assert t["p"] == pytest.approx(fisher_exact([[3, 17], [18, 2]]).pvalue)
    assert fisher_test(0, 0, 3, 4) is None
    d = mean_difference([0.9, 0.8, 0.85, 0.95], [0.2, 0.3, 0.25, 0.1, 0.2], n_boot=500, seed=1)
    assert d["difference"] == pytest.approx(0.875 - 0.21)
    assert d["ci95"][0] > 0.5 and d["ci95"][1] < 0.8
    assert d == mean_difference([0.9, 0.8, 0.85, 0.95], [0.2, 0.3, 0.25, 0.1, 0.2], n_boot=500, seed=1)


# ----------------------------------------------------------------------------------------------------- subgroups
def _records(n: int, rng: np.random.Generator) -> list[Record]:
    recs = []
    for i in range(n):
        recs.append(
            Record(
                path=Path(f"/films/{i}.png"),
                label=int(rng.integers(0, 2)),
                region=("hand", "hip", "leg")[i % 3],
                metadata={"hardware": int(i % 5 == 0), "dose": float(rng.random()), "csv_fractured": 1, "uid": f"u{i}"},
            )
        )
    return recs


def test_subgroup_columns_bin_numbers_and_leave_out_labels_and_identifiers() -> None:
    recs = _records(120, np.random.default_rng(0))
    cols = subgroup_columns(recs, bins=4)
    assert set(cols) == {"region", "hardware", "dose"}  # no view (none), no csv_fractured (label), no uid
    assert len(set(cols["dose"])) == 4 and all(lv.startswith("[") for lv in cols["dose"] if lv)
    assert set(cols["hardware"]) == {"0", "1"}
    assert set(subgroup_columns(recs, columns=["region"])) == {"region"}
    with pytest.raises(KeyError, match="no column 'weight'"):
        subgroup_columns(recs, columns=["weight"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_subgroup_the_model_fails_is_flagged_and_nothing_else(seed: int) -> None:
    rng = np.random.default_rng(seed)
    recs = _records(600, rng)
    y = np.array([r.label for r in recs])
    p = np.clip(0.5 + 0.3 * (2 * y - 1) + rng.normal(0, 0.2, y.size), 0, 1)
    hip = np.array([r.region == "hip" for r in recs])
    p[hip] = rng.random(int(hip.sum()))  # the model guesses on hips
    table = subgroup_table(y, p, subgroup_columns(recs), StrataOptions(n_boot=200, seed=seed))
    flagged = {(r["column"], r["level"]) for r in table["rows"] if r["flagged"]}
    assert flagged == {("region", "hip")}
    hip_row = next(r for r in table["rows"] if r["level"] == "hip")
    assert "auroc" in hip_row["flagged"] and hip_row["auroc_ci95"][1] < table["overall"]["auroc"]
    # the numbers of a row, by hand
    from sklearn.metrics import roc_auc_score

    assert hip_row["auroc"] == pytest.approx(roc_auc_score(y[hip], p[hip]))
    assert hip_row["sensitivity"] == pytest.approx(np.mean(p[hip][y[hip] == 1] >= 0.5))
    assert hip_row["rest"]["specificity"] == pytest.approx(np.mean(p[~hip][y[~hip] == 0] < 0.5))
    # hardware has two levels: one comparison, counted once (region 3 levels x 3 metrics + 3 + dose 4 x 3)
    assert table["n_tests"] == 9 + 3 + 12


def test_correction_none_flags_more_than_holm_on_noise() -> None:
    rng = np.random.default_rng(5)
    recs = _records(300, rng)
    y = np.array([r.label for r in recs])
    p = rng.random(y.size)  # no signal anywhere: any flag is a false positive
    cols = subgroup_columns(recs)
    holm = subgroup_table(y, p, cols, StrataOptions(n_boot=0, correction="holm"))
    raw = subgroup_table(y, p, cols, StrataOptions(n_boot=0, correction="none", alpha=0.5))
    assert not any(r["flagged"] for r in holm["rows"])
    assert any(r["flagged"] for r in raw["rows"])  # at alpha 0.5 uncorrected, noise is "significant"
    assert all(t["p_adjusted"] >= t["p"] for r in holm["rows"] for t in r["tests"].values())


# ---------------------------------------------------------------------------------------------- FracAtlas + CSV
def _fracatlas_predictions(root: Path, tmp_path: Path) -> tuple[Path, dict[str, float], dict[str, Record]]:
    """A made-up model on FracAtlas's test films: good everywhere but on hips, where it guesses (seeded)."""
    from xray_xai import api

    recs = {str(r.path): r for r in api.open_dataset(root).records("test")}
    rng = np.random.default_rng(0)
    probs = {}
    for path, r in recs.items():
        good = 0.75 if r.label else 0.25
        probs[path] = float(rng.random() if r.region == "hip" else np.clip(good + rng.normal(0, 0.2), 0, 1))
    csv_path = tmp_path / "predictions.csv"
    with csv_path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "study", "region", "label", "probability", "prediction", "study_probability"])
        for path, prob in probs.items():
            w.writerow([path, "", recs[path].region, recs[path].label, prob, "", ""])
    return csv_path, probs, recs


def test_strata_on_fracatlas_from_a_predictions_csv(fracatlas_root: Path, tmp_path: Path) -> None:
    csv_path, probs, recs = _fracatlas_predictions(fracatlas_root, tmp_path)
    out = tmp_path / "strata"
    res = CliRunner().invoke(
        main,
        ["strata", "--data", str(fracatlas_root), "--predictions", str(csv_path), "--out", str(out),
         "--bootstrap", "200", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads(res.output)
    assert {"region", "view", "hardware", "multiscan", "fracture_count", "hand", "frontal"} <= set(result["columns"])
    assert {"column": "region", "level": "hip", "metrics": ["auroc"]} in result["flagged"] or any(
        f["column"] == "region" and f["level"] == "hip" for f in result["flagged"]
    )
    assert not any(f["column"] == "region" and f["level"] != "hip" for f in result["flagged"])
    # an independent computation of one row from the same predictions
    from sklearn.metrics import roc_auc_score

    hand = [p for p in probs if recs[p].region == "hand"]
    y = np.array([recs[p].label for p in hand])
    p = np.array([probs[q] for q in hand])
    row = next(r for r in result["subgroups"]["rows"] if r["column"] == "region" and r["level"] == "hand")
    assert row["n"] == len(hand) and row["n_positive"] == int(y.sum())
    assert row["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert row["specificity"] == pytest.approx(np.mean(p[y == 0] < 0.5))
    hw = result["shortcuts"][0]
    assert hw["column"] == "hardware" and hw["present"] == "1" and "concept_test" not in hw  # no model: no TCAV
    for name in ("strata.json", "predictions.csv", "forest.png", "report.html"):
        assert (out / name).is_file()
    page = (out / "report.html").read_text()
    assert "Subgroups and shortcuts" in page and "region=hip" in page and "data:image/png;base64" in page


def test_bad_predictions_csv_is_one_line_naming_the_file(fracatlas_root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "preds.csv"
    bad.write_text("path,score\na.jpg,0.3\n")
    res = CliRunner().invoke(main, ["strata", "--data", str(fracatlas_root), "--predictions", str(bad)])
    assert res.exit_code == 1
    assert str(bad) in res.output and "no column probability" in res.output
    assert res.output.count("\n") == 1
    res = CliRunner().invoke(main, ["strata", "--data", str(fracatlas_root)])
    assert res.exit_code == 2 and "--predictions" in res.output


# ------------------------------------------------------------------------------------------ the planted shortcut
def test_synth_plants_a_marker_that_follows_the_label_in_training_films_only(tmp_path: Path) -> None:
    from xray_xai import api
    from xray_xai.data.datasets import synth

    root = synth(tmp_path / "sc", 60, seed=4, image_size=64, progress=False, regions=["wrist", "elbow"],
                 shortcut="marker", shortcut_region="wrist", shortcut_strength=1.0)  # fmt: skip
    recs = api.open_dataset(root).records("all")
    wrist_train = [r for r in recs if r.region == "wrist" and r.split == "train"]
    assert wrist_train and all(bool(r.metadata["shortcut_marker"]) == bool(r.label) for r in wrist_train)
    assert not any(r.metadata["shortcut_marker"] for r in recs if r.region != "wrist")
    marked = next(r for r in wrist_train if r.label)
    x0, y0, x1, y1 = marked.metadata["shortcut_marker_box"]
    from PIL import Image

    film = np.asarray(Image.open(marked.path), dtype=np.float32) / 255.0
    assert film[(y0 + y1) // 2, (x0 + x1) // 2] > 0.95  # the disc is there, bright
    plain = synth(tmp_path / "plain", 60, seed=4, image_size=64, progress=False, regions=["wrist", "elbow"])
    again = synth(tmp_path / "again", 60, seed=4, image_size=64, progress=False, regions=["wrist", "elbow"],
                  shortcut="marker", shortcut_region="wrist", shortcut_strength=1.0)  # fmt: skip
    sidecar = "MURA-v1.1/synthetic_ground_truth.json"
    assert (again / sidecar).read_bytes() == (root / sidecar).read_bytes()  # deterministic from the seed
    assert "shortcut" not in (plain / sidecar).read_text()  # without a shortcut the sidecar is as before
    unmarked = [r for r in recs if r.region != "wrist"]
    plain_recs = {r.image_id: r for r in api.open_dataset(plain).records("all")}
    assert all(Path(r.path).read_bytes() == Path(plain_recs[r.image_id].path).read_bytes() for r in unmarked[:10])


def test_synth_rejects_a_bad_shortcut(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main, ["synth", str(tmp_path / "x"), "--n-studies", "3", "--shortcut", "marker", "--shortcut-region", "knee"]
    )
    assert res.exit_code == 1 and "shortcut_region must be one of" in res.output


# ------------------------------------------------------------------- the command on planted phantoms, from a CSV
def _leaning_predictions(root: Path, out: Path, seed: int, lean: bool) -> Path:
    """A predictions CSV of a model that is right most of the time and, with ``lean``, reads the planted token
    (p = 0.9 on every film that carries it, whatever its label): what a model that learned the shortcut does on the
    test films, where the token no longer follows the label."""
    from xray_xai import api

    rng = np.random.default_rng(seed)
    rows = ["path,probability"]
    for r in api.open_dataset(root).records("test"):
        p = float(np.clip(0.5 + 0.3 * (2 * int(r.label or 0) - 1) + rng.normal(0, 0.15), 0, 1))
        if lean and r.metadata.get("shortcut_marker"):
            p = 0.9
        rows.append(f"{r.path},{p}")
    out.write_text("\n".join(rows) + "\n")
    return out


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_strata_flags_the_region_of_a_planted_shortcut_and_nothing_without(tmp_path: Path, seed: int) -> None:
    from xray_xai import api

    planted = api.synth(tmp_path / "planted", 300, seed, image_size=64, regions=["wrist", "elbow"], progress=False,
                        shortcut="marker", shortcut_region="wrist", shortcut_strength=0.9)  # fmt: skip
    csv_path = _leaning_predictions(planted, tmp_path / "lean.csv", seed, lean=True)
    result = api.strata(None, planted, predictions=csv_path, n_boot=100, seed=seed, out_dir=tmp_path / "s1",
                        progress=False)  # fmt: skip
    flagged = {(f["column"], f["level"]): f["metrics"] for f in result["flagged"]}
    assert "specificity" in flagged.get(("region", "wrist"), []), result["flagged"]
    assert "specificity" in flagged.get(("shortcut_marker", "true"), [])
    assert not any(col == "region" and lv != "wrist" for col, lv in flagged)
    marker = next(s for s in result["shortcuts"] if s["column"] == "shortcut_marker")
    assert marker["dependence_normal"]["ci95"][0] > 0.2  # normal films with the token: scored far higher
    # the same films without the lean, and a phantom set without a shortcut: nothing flagged
    honest = api.strata(None, planted, predictions=_leaning_predictions(planted, tmp_path / "h.csv", seed, False),
                        n_boot=100, seed=seed, out_dir=tmp_path / "s2", progress=False)  # fmt: skip
    assert honest["flagged"] == []
    plain = api.synth(tmp_path / "plain", 100, seed, image_size=64, regions=["wrist", "elbow"], progress=False)
    none = api.strata(None, plain, predictions=_leaning_predictions(plain, tmp_path / "p.csv", seed, lean=True),
                      n_boot=100, seed=seed, out_dir=tmp_path / "s3", progress=False)  # fmt: skip
    assert none["flagged"] == [] and none["shortcuts"] == []


# ---------------------------------------------------------------------------------- end to end on planted phantoms
def _trained_on_phantoms(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    """Phantoms of wrists and elbows with the token planted in the wrists' training films, and a cnn-small trained on
    them at 64 px: the data root and the checkpoint."""
    from xray_xai import api

    root = api.synth(tmp_path / "phantoms", 200, seed, image_size=64, regions=["wrist", "elbow"], progress=False,
                     difficulty=0.25, shortcut="marker", shortcut_region="wrist", shortcut_strength=1.0)  # fmt: skip
    run = api.train("cnn-small", root, epochs=8, image_size=64, batch_size=16, seed=seed, optimizer="adam", lr=3e-3,
                    augment=False, early_stop=8, monitor="loss", progress=False, out_dir=tmp_path / "run")  # fmt: skip
    return root, Path(run.checkpoint)


@pytest.mark.slow
def test_a_trained_model_leans_on_the_planted_marker_and_tcav_finds_it(tmp_path: Path) -> None:
    from xray_xai import api

    root, checkpoint = _trained_on_phantoms(tmp_path, 1)
    result = api.strata(checkpoint, root, split="test", n_boot=200, seed=1, tcav_runs=8, tcav_concept_size=20,
                        tcav_inputs=20, out_dir=tmp_path / "strata", progress=False)  # fmt: skip
    flagged = {(f["column"], f["level"]): f["metrics"] for f in result["flagged"]}
    assert "specificity" in flagged.get(("region", "wrist"), []), result["flagged"]
    marker = next(s for s in result["shortcuts"] if s["column"] == "shortcut_marker")
    assert marker["present"] == "true"
    assert marker["dependence_normal"]["ci95"][0] > 0  # normal films with the token are scored higher
    # significant; its sign at this layer was "lowers" in the one run made (docs/audit.md), so it is not asserted
    assert marker["concept_test"]["significant"], marker["concept_test"]
