"""Provenance everywhere: each model's name, training data and AUROC in the CLI, the figures, the report and the web
page, and a loud warning when a model trained on synthetic phantoms is applied to films that are not phantoms."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import xray_xai
from xray_xai import api
from xray_xai.cli import main
from xray_xai.models import store
from xray_xai.sdk.provenance import films_are_phantoms, phantom_warning, provenance

PHANTOM_META = {"dataset": "synthetic", "metrics": {"val_auroc": 0.53}}


@pytest.fixture
def phantom_checkpoint() -> Path:
    """An untrained cnn-small whose sidecar says it was trained on synthetic phantoms (val AUROC 0.53)."""
    return store.save_model(xray_xai.get_model("cnn-small")(image_size=32), metadata=PHANTOM_META)


def test_one_line_says_name_data_and_auroc() -> None:
    phantom = provenance({"name": "cnn-small", "fingerprint": "0123456789ab", **PHANTOM_META})
    assert phantom.short == "cnn-small [01234567]: trained on synthetic (synthetic phantoms), val AUROC 0.530"
    assert phantom.synthetic and not phantom.shipped
    real = provenance({"name": "efficientnet-lite0", "dataset": "fracatlas", "metrics": {"val_auroc": 0.8726}})
    assert real.short == "efficientnet-lite0: trained on fracatlas (real films), val AUROC 0.873" and not real.synthetic
    shipped = provenance(api.load_model("fracatlas-lite0"))
    assert shipped.name == "fracatlas-lite0" and shipped.shipped and shipped.auroc_kind == "test (model card)"
    unknown = provenance(xray_xai.get_model("cnn-small")(image_size=32))  # a model object that never was stored
    assert unknown.short == "cnn-small: training data unknown, no AUROC recorded"


def test_the_warning_depends_on_the_films(tmp_path: Path, noise_film: Path) -> None:
    phantoms = api.synth(tmp_path / "phantoms", n_studies=2, seed=0, image_size=64, progress=False)
    assert films_are_phantoms(data_root=phantoms) and films_are_phantoms(dataset="synthetic")
    assert films_are_phantoms(inputs=[next(phantoms.rglob("*.png"))])
    assert not films_are_phantoms(inputs=[noise_film]) and not films_are_phantoms(dataset="fracatlas")
    prov = provenance({"name": "cnn-small", **PHANTOM_META})
    assert phantom_warning(prov, films_synthetic=True) is None
    assert "trained on synthetic phantoms" in (phantom_warning(prov, films_synthetic=False) or "")
    assert phantom_warning(provenance(api.load_model("fracatlas-lite0")), films_synthetic=False) is None


def test_cli_warns_for_a_phantom_model_on_real_films(phantom_checkpoint: Path, noise_film: Path) -> None:
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(phantom_checkpoint), "--input", str(noise_film)])
    assert res.exit_code == 0, res.output
    assert "warning: model cnn-small was trained on synthetic phantoms (val AUROC 0.530)" in res.stderr
    assert "model: cnn-small [" in res.stderr and "trained on synthetic (synthetic phantoms)" in res.stderr


def test_cli_says_nothing_for_the_shipped_model_on_a_fracatlas_film(fracatlas_root: Path) -> None:
    film = sorted((fracatlas_root / "images" / "Fractured").glob("*.jpg"))[0]
    res = CliRunner().invoke(main, ["predict", "--model", "fracatlas-lite0", "--input", str(film)])
    assert res.exit_code == 0, res.output
    assert "warning" not in res.stderr
    assert "model: fracatlas-lite0 [af59cc7c]: trained on fracatlas (real films), test (model card) AUROC" in res.stderr


def test_every_explain_figure_carries_the_provenance(
    phantom_checkpoint: Path, noise_film: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xray_xai.explain import figures

    seen: list[str] = []
    real = figures.render_overlay
    monkeypatch.setattr(figures, "render_overlay", lambda *a, **kw: (seen.append(kw["footer"]), real(*a, **kw))[1])
    result: Any = api.explain(
        phantom_checkpoint, "saliency", inputs=[noise_film], out=tmp_path / "out", show_progress=False
    )
    assert seen and all("trained on synthetic (synthetic phantoms), val AUROC 0.530" in f for f in seen)
    assert all("trained on synthetic" in item["provenance"] for item in result.items)


def test_the_explain_figure_title_names_the_model_as_its_footer_does(
    phantom_checkpoint: Path, noise_film: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shipped model is built by an architecture plugin (the shipped fracatlas-lite0 is an efficientnet-lite0):
    the overlay's title says the shipped name, as the footer does, not the architecture's."""
    from xray_xai.explain import figures

    seen: list[tuple[str, str]] = []
    real = figures.render_overlay
    monkeypatch.setattr(
        figures, "render_overlay", lambda *a, **kw: (seen.append((kw["title"], kw["footer"])), real(*a, **kw))[1]
    )
    shipped = store.save_model(
        xray_xai.get_model("cnn-small")(image_size=32),
        metadata={"dataset": "fracatlas", "shipped": {"name": "wrist-demo", "test": {"auroc": 0.8}}},
    )
    api.explain(shipped, "saliency", inputs=[noise_film], out=tmp_path / "shipped", show_progress=False)
    (title, footer), *_ = seen
    assert footer.startswith("wrist-demo") and title.startswith("saliency - wrist-demo - p(abnormal) = ")
    assert "cnn-small" not in title
    seen.clear()  # a model that is not shipped keeps its own name in both
    api.explain(phantom_checkpoint, "saliency", inputs=[noise_film], out=tmp_path / "plain", show_progress=False)
    (title, footer), *_ = seen
    assert footer.startswith("cnn-small") and title.startswith("saliency - cnn-small - ")


def test_evaluation_figures_and_report_name_the_training_data(phantom_checkpoint: Path, tmp_path: Path) -> None:
    from xray_xai.models import evaluation_figures as evaluation

    feet: list[str] = []
    real_roc = evaluation.plot_roc
    root = api.synth(tmp_path / "phantoms", n_studies=4, seed=0, image_size=64, progress=False)
    evaluation.plot_roc = lambda path, curves, footer="": (feet.append(footer), real_roc(path, curves, footer))[1]
    try:
        result = api.evaluate(phantom_checkpoint, root, split="train", bootstrap=0, out_dir=tmp_path / "ev")
    finally:
        evaluation.plot_roc = real_roc
    assert feet and "trained on synthetic" in feet[0]
    # the same phantom model in a report about FracAtlas films: a loud note; about phantoms: none
    html = api.write_report(tmp_path / "r1", evaluation={**result, "dataset": "fracatlas"})
    page = Path(html).read_text(encoding="utf-8")
    assert "<h2>Models</h2>" in page and "trained on synthetic (synthetic phantoms)" in page
    assert "applied here to fracatlas films, which are not phantoms" in page
    quiet = Path(api.write_report(tmp_path / "r2", evaluation=result)).read_text(encoding="utf-8")
    assert "<h2>Models</h2>" in quiet and "which are not phantoms" not in quiet


# ------------------------------------------------------------------------------------------------------ web page
def _web_client() -> Any:
    pytest.importorskip("fastapi")
    pytest.importorskip("python_multipart")
    from fastapi.testclient import TestClient

    from xray_xai.web.app import create_app

    return TestClient(create_app())


def _checked(page: str) -> list[str]:
    return re.findall(r'name="models" value="([^"]+)" checked', page)


def test_the_page_preselects_the_best_real_data_model(phantom_checkpoint: Path) -> None:
    # a phantom model with a higher validation AUROC than the card's, and first in alphabetical order
    store.save_model(
        xray_xai.get_model("convnet")(image_size=32), metadata={"dataset": "synthetic", "metrics": {"val_auroc": 0.99}}
    )
    with _web_client() as client:
        listed = client.get("/api/models").json()
        # the shipped models' cards give their test AUROC: the box-guided one (0.895) beats the labels-only (0.881)
        assert listed["default_model"] == "fracatlas-lite0-guided"
        by_key = {m["key"]: m for m in listed["models"]}
        assert by_key["fracatlas-lite0"]["provenance"].startswith("fracatlas-lite0 [af59cc7c]: trained on fracatlas")
        assert by_key["cnn-small"]["synthetic"] is True
        page = client.get("/").text
        assert _checked(page) == ["fracatlas-lite0-guided"]
        assert "phantoms only: not for real films" in page and "trained on fracatlas (real films)" in page


def test_the_page_without_real_data_models_takes_the_first(phantom_checkpoint: Path, no_shipped_models: None) -> None:
    with _web_client() as client:
        assert client.get("/api/models").json()["default_model"] == "cnn-small"
        assert _checked(client.get("/").text) == ["cnn-small"]


def test_a_banner_for_a_phantom_model_on_an_upload(phantom_checkpoint: Path, noise_film: Path) -> None:
    upload = [("files", ("film.png", noise_film.read_bytes(), "image/png"))]
    with _web_client() as client:
        page = client.post("/", files=upload, data={"models": "cnn-small"}).text
        assert 'class="error phantom-warning"' in page and "trained on synthetic phantoms" in page
        shown = client.post("/api/predict", files=upload, data={"models": "fracatlas-lite0"}).json()["results"][0]
        assert shown["warning"] is None and shown["provenance"].startswith("fracatlas-lite0 [af59cc7c]")
        phantom = client.post("/api/predict", files=upload, data={"models": "cnn-small"}).json()["results"][0]
        assert "trained on synthetic phantoms" in phantom["warning"]
