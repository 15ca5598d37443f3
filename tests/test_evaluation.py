from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_training import OPTS, make_tiny_mura

from xray_xai.models.evaluation import evaluate, predict
from xray_xai.models.metrics import METRIC_NAMES, MURA_PUBLISHED_KAPPA
from xray_xai.models.training import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = make_tiny_mura(tmp_path_factory.mktemp("mura"))
    res = train(
        "cnn-small",
        root,
        dataset="mura",
        epochs=3,
        image_size=32,
        optimizer="adam",
        lr=3e-3,
        augment=False,
        progress=False,
        dataset_options=OPTS,
        out_dir=tmp_path_factory.mktemp("run"),
    )
    return root, res.checkpoint


def test_evaluate_reports_image_and_study_metrics_per_region(trained: tuple[Path, Path], tmp_path: Path) -> None:
    root, ckpt = trained
    out = evaluate(ckpt, root, dataset="mura", bootstrap=100, out_dir=tmp_path, dataset_options=OPTS)
    assert out["split"] == "test" and out["n_images"] == 2 * out["n_studies"]  # two views per study
    for level in ("image", "study"):
        overall = out[level]["overall"]
        for name in (*METRIC_NAMES, "sensitivity", "tn", "fp", "fn", "tp"):
            assert name in overall
        assert overall["tn"] + overall["fp"] + overall["fn"] + overall["tp"] == overall["n"]
        assert set(out[level]["per_region"]) == {"hand", "wrist"}
        ci = overall["ci95"]["accuracy"]
        assert ci[0] <= overall["accuracy"] <= ci[1]
    assert out["study"]["overall"]["n"] == out["n_studies"]
    table = {row["region"]: row for row in out["kappa_table"]}
    assert set(table) == set(MURA_PUBLISHED_KAPPA)
    assert table["overall"]["ours"] == out["study"]["overall"]["kappa"] and table["elbow"]["ours"] is None
    for name in ("roc.png", "confusion.png", "metrics.json"):
        assert (tmp_path / name).stat().st_size > 0
    # deterministic for a seed
    again = evaluate(ckpt, root, dataset="mura", bootstrap=100, dataset_options=OPTS)
    assert again["study"]["overall"]["ci95"] == out["study"]["overall"]["ci95"]


def test_evaluate_by_store_name(trained: tuple[Path, Path]) -> None:
    from xray_xai.models.store import load_model, save_model

    root, ckpt = trained
    save_model(load_model(ckpt))  # into this test's own store
    out = evaluate("cnn-small", root, dataset="mura", bootstrap=0, dataset_options=OPTS)
    assert out["image"]["overall"]["ci95"] is None and out["image"]["overall"]["auroc"] is not None


def test_predict_folders_without_labels_skips_bad_files(trained: tuple[Path, Path], tmp_path: Path) -> None:
    root, ckpt = trained
    study = next((root / "MURA-v1.1" / "valid").rglob("study1_*"))
    films = tmp_path / "films" / "s1"
    shutil.copytree(study, films)
    (films / "broken.png").write_bytes(b"garbage")
    lone = tmp_path / "lone.png"
    shutil.copy(films / "image1.png", lone)
    rows, problems = predict(ckpt, [tmp_path / "films", lone, tmp_path / "missing.png"])
    assert [Path(r["path"]).name for r in rows] == ["image1.png", "image2.png", "lone.png"]
    assert {Path(p.path).name for p in problems} == {"broken.png", "missing.png"}
    s1 = [r for r in rows if r["study"]]
    assert s1[0]["study_probability"] == pytest.approx((s1[0]["probability"] + s1[1]["probability"]) / 2)
    assert rows[2]["study_probability"] is None and rows[2]["label"] is None
    assert all(r["prediction"] == ("abnormal" if r["probability"] >= 0.5 else "normal") for r in rows)
    rows, problems = predict(ckpt, data_root=root, split="test", dataset="mura", dataset_options=OPTS)
    assert rows and not problems and all(r["label"] in (0, 1) for r in rows)


def test_ensembles_train_from_the_store(trained: tuple[Path, Path], tmp_path: Path) -> None:
    from xray_xai.models.store import load_model, read_sidecar

    root, ckpt = trained
    other = train(
        "cnn-small",
        root,
        dataset="mura",
        epochs=1,
        image_size=32,
        seed=1,
        progress=False,
        dataset_options=OPTS,
        out_dir=tmp_path / "other",
    )
    members = f"{ckpt},{other.checkpoint}"
    res = train("ensemble-mean", root, dataset="mura", members=members, dataset_options=OPTS, progress=False)
    side = read_sidecar(res.checkpoint)
    assert len(side["members"]) == 2 and res.best_metrics["val_accuracy"] is not None
    ens = load_model(res.checkpoint)
    assert ens.tags.ensemble and len(ens.members) == 2  # type: ignore[attr-defined]
    out = evaluate(res.checkpoint, root, dataset="mura", bootstrap=0, dataset_options=OPTS)
    assert out["model"] == "ensemble-mean"

    cal = train(
        "ensemble-calibrated",
        root,
        dataset="mura",
        members=members,
        epochs=1,
        dataset_options=OPTS,
        progress=False,
        out_dir=tmp_path / "cal",
    )
    model = load_model(cal.checkpoint)
    assert set(model.routes) == {"hand", "wrist"}  # type: ignore[attr-defined]
    assert (tmp_path / "cal" / "region-hand" / "history.csv").exists()
    out = evaluate(cal.checkpoint, root, dataset="mura", bootstrap=0, dataset_options=OPTS)
    assert out["image"]["overall"]["n"] == out["n_images"]


def test_synthetic_data_gets_the_mura_kappa_table(tmp_path: Path) -> None:
    import xray_xai

    root = xray_xai.get_dataset("synthetic").generate(
        tmp_path / "synth", n_studies=16, seed=0, image_size=64, progress=False
    )
    opts = {"val_fraction": 0.3}
    res = train("cnn-small", root, epochs=1, image_size=32, progress=False, dataset_options=opts)
    out = evaluate(res.checkpoint, root, bootstrap=20, dataset_options=opts)
    assert out["dataset"] == "synthetic" and "kappa_table" in out
    assert out["study"]["overall"]["n"] == out["n_studies"] <= out["n_images"]
    assert {row["region"] for row in out["kappa_table"]} >= set(out["study"]["per_region"])


def test_flip_tta_averages_the_film_and_its_two_flips(trained: tuple[Path, Path]) -> None:
    import numpy as np
    import torch

    from xray_xai.data.datasets import open_dataset
    from xray_xai.data.geometry import to_tensor
    from xray_xai.data.images import read_image
    from xray_xai.models.evaluation import predict_records
    from xray_xai.models.store import load_model

    root, ckpt = trained
    model = load_model(ckpt)
    recs = open_dataset(root, "mura", **OPTS).records("test")[:6]
    _, plain, _ = predict_records(model, recs)
    _, tta, _ = predict_records(model, recs, tta=True)
    x = torch.stack([to_tensor(read_image(r.path), model.preprocessing) for r in recs])
    with torch.no_grad():
        views = [model.predict_proba(v).numpy() for v in (x, x.flip(3), x.flip(2))]
    np.testing.assert_allclose(tta, np.mean(views, axis=0), atol=1e-6)
    np.testing.assert_allclose(plain, views[0], atol=1e-6)
    assert not np.allclose(tta, plain)  # the flips are not the film: TTA changes the scores
    out = evaluate(ckpt, root, dataset="mura", bootstrap=0, dataset_options=OPTS, tta=True)
    assert out["tta"] is True


def test_evaluation_plots_leave_the_matplotlib_backend_alone(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import matplotlib

    root, ckpt = trained
    backend = matplotlib.get_backend()
    matplotlib.use("svg")  # a library call that switched to Agg would show
    try:
        evaluate(ckpt, root, dataset="mura", bootstrap=0, out_dir=tmp_path, dataset_options=OPTS)
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(backend)
    for name in ("roc.png", "confusion.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
