"""``xray-xai calibrate`` end to end on phantoms: the sidecar entry, the weights untouched, the threshold chosen on
validation carried to test (never re-tuned there), the calibrated probability everywhere it is shown."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from xray_xai.cli import main


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xray_xai import api

    # 80 studies: the seeded val split holds 13 films of both classes, test 38
    return api.synth(tmp_path_factory.mktemp("cal") / "ph", n_studies=80, seed=0, image_size=64, progress=False)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    import torch

    import xray_xai
    from xray_xai.models.store import save_model

    torch.manual_seed(0)
    return save_model(xray_xai.get_model("cnn-small")(image_size=32), tmp_path / "ckpt")


def _run(*args: str) -> Any:
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _sidecar(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / "model.json").read_text())


def test_calibrate_records_in_the_sidecar_and_leaves_the_weights_alone(phantoms: Path, checkpoint: Path) -> None:
    from xray_xai._util.fsutil import sha256_file
    from xray_xai.models.store import load_model

    before = _sidecar(checkpoint)
    digest = sha256_file(checkpoint / "model.safetensors")
    out = _run("calibrate", "--checkpoint", str(checkpoint), "--data", str(phantoms), "--method", "platt",
               "--rule", "youden", "--rule", "sensitivity=0.9", "--json")  # fmt: skip
    side = _sidecar(checkpoint)
    assert out["sidecar"] == str(checkpoint / "model.json")
    assert side["calibration"]["method"] == "platt" and side["calibration"]["split"] == "val"
    assert side["calibration"]["n"] == 13
    assert [p["rule"] for p in side["operating_points"]] == ["youden", "sensitivity=0.9"]
    assert side["operating_points"][1]["validation"]["sensitivity"] >= 0.9
    for key in ("fingerprint", "weights_sha256", "created", "config"):
        assert side[key] == before[key]
    assert sha256_file(checkpoint / "model.safetensors") == digest
    assert load_model(checkpoint).sidecar["calibration"]["method"] == "platt"  # the checksum still holds
    assert not [p for p in checkpoint.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    # calibrating again replaces the entry; --dry-run reports without writing
    _run("calibrate", "--checkpoint", str(checkpoint), "--data", str(phantoms), "--method", "isotonic", "--json")
    assert _sidecar(checkpoint)["calibration"]["method"] == "isotonic"
    dry = _run("calibrate", "--checkpoint", str(checkpoint), "--data", str(phantoms), "--dry-run", "--json")
    assert dry["sidecar"] is None and _sidecar(checkpoint)["calibration"]["method"] == "isotonic"


def test_calibrate_refuses_the_test_split(phantoms: Path, checkpoint: Path) -> None:
    res = CliRunner().invoke(main, ["calibrate", "--checkpoint", str(checkpoint), "--data", str(phantoms),
                                    "--split", "test"])  # fmt: skip
    assert res.exit_code == 2 and "test split" in res.output
    res = CliRunner().invoke(main, ["calibrate", "--checkpoint", str(checkpoint), "--data", str(phantoms),
                                    "--split", "valid"])  # MURA's valid is this package's test set  # fmt: skip
    assert res.exit_code == 1 and "is the test set" in res.output and len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(main, ["calibrate", "--checkpoint", str(checkpoint), "--data", str(phantoms),
                                    "--rule", "sensitivity=2"])  # fmt: skip
    assert res.exit_code == 2 and "--rule" in res.output
    assert "model.json" in str(checkpoint / "model.json") and "calibration" not in _sidecar(checkpoint)


def test_the_threshold_chosen_on_validation_is_the_one_used_on_test(
    phantoms: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from xray_xai.models import metrics, operating

    _run("calibrate", "--checkpoint", str(checkpoint), "--data", str(phantoms), "--rule", "specificity=0.75",
         "--rule", "youden", "--json")  # fmt: skip
    point = _sidecar(checkpoint)["operating_points"][0]
    used: list[float] = []
    real = metrics.binary_metrics

    def spy(y: Any, p: Any, threshold: float = 0.5) -> dict[str, Any]:
        used.append(threshold)
        return real(y, p, threshold)

    def never(*_: Any, **__: Any) -> float:
        raise AssertionError("a threshold was tuned on the test split")

    monkeypatch.setattr(metrics, "binary_metrics", spy)
    monkeypatch.setattr(operating, "choose_threshold", never)
    out = _run("evaluate", "--checkpoint", str(checkpoint), "--data", str(phantoms), "--bootstrap", "20",
               "--out", str(tmp_path / "ev"), "--json")  # fmt: skip
    assert out["threshold"] == point["threshold"] and "specificity=0.75 on val" in out["threshold_source"]
    assert used[0] == point["threshold"]  # image level, overall: the recorded threshold
    assert set(used) <= {p["threshold"] for p in _sidecar(checkpoint)["operating_points"]} | {0.5}
    assert out["operating_points"][0]["name"] == "specificity=0.75" and out["operating_points"][0]["in_use"]
    assert out["probability"] == "calibrated (temperature)"
    # predict and the raw scale use the same recorded point; --threshold overrides it
    rows = _run("predict", "--checkpoint", str(checkpoint), "--data", str(phantoms), "--split", "test", "--json")
    assert {r["threshold"] for r in rows} == {point["threshold"]}
    assert all((r["prediction"] == "abnormal") == (r["probability"] >= point["threshold"]) for r in rows)
    plain = _run("predict", "--checkpoint", str(checkpoint), "--data", str(phantoms), "--split", "test",
                 "--uncalibrated", "--json")  # fmt: skip
    assert all(r["probability"] == r["probability_raw"] for r in plain)
    assert [r["probability_raw"] for r in plain] == [r["probability_raw"] for r in rows]
    assert {r["threshold"] for r in plain} == {point["threshold_raw"]}
    raw = _run("evaluate", "--checkpoint", str(checkpoint), "--data", str(phantoms), "--bootstrap", "0",
               "--uncalibrated", "--json")  # fmt: skip
    assert raw["threshold"] == point["threshold_raw"] and raw["probability"] == "uncalibrated"
    given = _run("evaluate", "--checkpoint", str(checkpoint), "--data", str(phantoms), "--bootstrap", "0",
                 "--threshold", "0.7", "--json")  # fmt: skip
    assert given["threshold"] == 0.7 and given["image"]["overall"]["tp"] + given["image"]["overall"]["fp"] == sum(
        1 for r in rows if r["probability"] >= 0.7
    )


def test_evaluate_reports_calibration_before_and_after_with_its_figures(
    phantoms: Path, checkpoint: Path, tmp_path: Path
) -> None:
    from xray_xai.models.calibration import Calibrator

    _run("calibrate", "--checkpoint", str(checkpoint), "--data", str(phantoms), "--json")
    out = _run("evaluate", "--checkpoint", str(checkpoint), "--data", str(phantoms), "--bootstrap", "30",
               "--specificities", "0.8", "--adaptive-bins", "--calibration-bins", "5", "--out", str(tmp_path / "ev"),
               "--json")  # fmt: skip
    for name in ("reliability.png", "pr.png", "roc.png", "predictions.csv", "metrics.json"):
        assert (tmp_path / "ev" / name).stat().st_size > 0
    after, before = out["calibration"]["image"]["overall"], out["calibration_uncalibrated"]["image"]["overall"]
    assert "sensitivity_at_specificity_0.80" in after and "sensitivity_at_specificity_0.90" not in after
    assert len(after["reliability"]) == 5 and set(after["ci95"]) >= {"brier", "ece", "slope"}
    assert set(out["calibration"]["study"]["per_region"]) == set(out["study"]["per_region"])
    # the figures in metrics.json are computed from the probabilities in predictions.csv, independently here
    with open(tmp_path / "ev" / "predictions.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    y = np.array([int(r["label"]) for r in table])
    p = np.array([float(r["probability"]) for r in table])
    p_raw = np.array([float(r["probability_raw"]) for r in table])
    assert after["brier"] == pytest.approx(np.mean((p - y) ** 2)) and before["brier"] == pytest.approx(
        np.mean((p_raw - y) ** 2)
    )
    cal = Calibrator.from_dict(_sidecar(checkpoint)["calibration"])
    np.testing.assert_allclose(p, cal(p_raw), atol=1e-12)
    # equal-mass bins: 5 groups of (nearly) the same size, ECE their weighted gap
    order = np.argsort(p, kind="stable")
    gaps = [(len(g), abs(p[g].mean() - y[g].mean())) for g in np.array_split(order, 5)]
    assert after["ece"] == pytest.approx(sum(n * g for n, g in gaps) / len(y))


def test_explained_films_show_the_calibrated_probability(phantoms: Path, checkpoint: Path) -> None:
    from xray_xai import api
    from xray_xai.models.calibration import logit

    side = _sidecar(checkpoint)
    side["calibration"] = {"method": "temperature", "params": {"temperature": 0.25}}  # sharpens: easy to tell
    side["operating_points"] = [{"rule": "fixed=0.4", "threshold": 0.4, "threshold_raw": 0.45}]
    (checkpoint / "model.json").write_text(json.dumps(side))
    model = api.resolve_model(checkpoint)
    film = api.read_image_bytes((next(phantoms.rglob("*.png"))).read_bytes())
    (run,) = api.explain_films([film], model, ["gradcam"])
    raw = run.probabilities_raw
    np.testing.assert_allclose(run.probabilities, 1 / (1 + np.exp(-logit(raw) / 0.25)))
    assert run.threshold == 0.4
    exp = run.explanation("gradcam")
    np.testing.assert_allclose(exp.probabilities, run.probabilities)
    np.testing.assert_allclose(exp.extras["probabilities_raw"], raw)


def test_help_of_calibrate_has_an_example() -> None:
    res = CliRunner().invoke(main, ["calibrate", "--help"])
    assert res.exit_code == 0 and "Example:" in res.output and "xray-xai calibrate" in res.output


def test_a_copied_checkpoint_calibrates_without_touching_the_original(phantoms: Path, checkpoint: Path) -> None:
    copy = checkpoint.with_name("copy")
    shutil.copytree(checkpoint, copy)
    _run("calibrate", "--checkpoint", str(copy), "--data", str(phantoms), "--json")
    assert "calibration" in _sidecar(copy) and "calibration" not in _sidecar(checkpoint)
