"""The in-memory explain engine (``xray_xai.explain.engine``, ``api.explain_films``): one engine for the command and
the web page, one heatmap blend for explain, the web page and the report, one default method and threshold."""

from __future__ import annotations

import ast
import inspect
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xray_xai import api
from xray_xai.defaults import DECISION_THRESHOLD, DEFAULT_METHOD
from xray_xai.errors import PluginError
from xray_xai.explain import overlays
from xray_xai.explain.engine import method_list, model_labels
from xray_xai.explain.service import explain
from xray_xai.report.html import overlay_png
from xray_xai.testing.explainers import LinearModel, tiny_convnet

PACKAGE = Path(__file__).resolve().parents[1] / "xray_xai"


def _film(seed: int = 0, shape: tuple[int, int] = (40, 36)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random(shape).astype(np.float32)


def _write_png(path: Path, film: np.ndarray) -> Path:
    Image.fromarray(np.rint(film * 255).astype(np.uint8)).save(path)
    return path


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


# ------------------------------------------------------------------------------------------ defaults (issue bug 6)


def test_explain_service_defaults_to_the_shared_method_and_threshold(tmp_path: Path) -> None:
    """Called with no method, the service explains with the default method (layercam), as the CLI, API and web do."""
    film = _write_png(tmp_path / "film.png", _film())
    res = explain(tiny_convnet(), inputs=[film], out=None)
    assert DEFAULT_METHOD == "layercam"
    assert res.methods == [DEFAULT_METHOD] and [it["method"] for it in res.items] == [DEFAULT_METHOD]
    assert res.items[0]["threshold"] == DECISION_THRESHOLD
    # None: the model's operating point recorded by `xray-xai calibrate`, else the shared default (this model has none)
    assert inspect.signature(explain).parameters["threshold"].default is None
    (run,) = api.explain_films([_film()], tiny_convnet())
    assert list(run.methods) == [DEFAULT_METHOD] and run.threshold == DECISION_THRESHOLD


def test_method_list_and_labels() -> None:
    assert method_list(None) == [DEFAULT_METHOD]
    assert method_list(()) == []
    assert method_list(["gradcam, saliency", "gradcam"]) == ["gradcam", "saliency"]
    assert model_labels([tiny_convnet(), tiny_convnet(), LinearModel()]) == [
        "tiny-convnet",
        "tiny-convnet-2",
        "tiny-linear",
    ]


# ------------------------------------------------------------------------------------------------- one engine


def test_command_and_in_memory_engine_agree(tmp_path: Path) -> None:
    """The command (records in, items out) and api.explain_films run the same engine: same films, maps, p."""
    film = _film(1)
    path = _write_png(tmp_path / "f.png", film)
    decoded = api.read_image_bytes(path.read_bytes(), "f.png")
    model = tiny_convnet()
    res = explain(model, ["gradcam", "saliency"], inputs=[path], out=None, params={"saliency": {"n_segments": 20}})
    (run,) = api.explain_films(
        [decoded], model, ["gradcam", "saliency"], params={"saliency": {"n_segments": 20}}, predict=False
    )
    assert [it["method"] for it in res.items] == ["gradcam", "saliency"]
    for item in res.items:
        method = item["method"]
        assert np.array_equal(item["film"], run.films[0])
        assert np.allclose(item["explanation"].maps[0], run.heatmap(method, 0), atol=1e-6)
        assert item["probability"] == pytest.approx(float(run.probabilities[0]), abs=1e-6)


def test_explain_films_probabilities_study_score_and_kept_errors() -> None:
    """Several views: one probability each (from a forward pass without gradients), the study score is their mean;
    a method the model cannot support is reported, not raised, with keep_errors."""
    import torch

    model = tiny_convnet()
    films = [_film(2), _film(3, (30, 50))]
    (run,) = api.explain_films(films, model, ["cam", "gradcam"], keep_errors=True)
    from xray_xai.data.geometry import to_tensor

    with torch.no_grad():
        expected = model.predict_proba(torch.stack([to_tensor(f, model.preprocessing) for f in films]))
    assert np.allclose(run.probabilities, expected.numpy(), atol=1e-6)
    assert run.study_probability == pytest.approx(float(np.mean(run.probabilities)))
    assert run.prediction == ("abnormal" if run.study_probability >= DECISION_THRESHOLD else "normal")
    assert run.methods["gradcam"].error is None and run.heatmap("gradcam", 1).shape == (32, 32)

    (lin,) = api.explain_films(films, LinearModel(), ["gradcam", "saliency"], keep_errors=True)
    assert "target layer" in (lin.methods["gradcam"].error or "") and lin.methods["gradcam"].maps is None
    assert lin.methods["saliency"].error is None and len(lin.probabilities) == 2
    with pytest.raises(PluginError, match="target layer"):
        api.explain_films(films, LinearModel(), ["gradcam"])
    (only_p,) = api.explain_films(films, model, ())
    assert only_p.methods == {} and np.allclose(only_p.probabilities, run.probabilities)


def test_a_plugin_bug_is_one_line_naming_the_film(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_convnet()

    def boom(x: object) -> object:
        raise RuntimeError("shape mismatch\nsecond line")

    monkeypatch.setattr(model, "predict_proba", boom)
    with pytest.raises(PluginError) as info:
        api.explain_films([_film()], model, (), names=["knee.png"])
    message = str(info.value)
    assert "RuntimeError: shape mismatch second line" in message and "knee.png" in message and "\n" not in message


# ---------------------------------------------------------------------------------------------- one blend rule


def test_report_web_and_explain_overlays_are_the_same_pixels() -> None:
    """The report's overlay, the web page's overlay and explain's figure panel of one film and map are identical."""
    (run,) = api.explain_films([_film(4)], tiny_convnet(), "gradcam")
    film, heat = run.films[0], run.heatmap("gradcam", 0)
    report = _pixels(overlay_png(film, heat))
    web = _pixels(run.overlay_png("gradcam", 0))
    assert report.shape == (32, 32, 3) and np.array_equal(report, web)
    assert np.array_equal(report, np.rint(overlays.blend(film, heat) * 255).astype(np.uint8))

    from matplotlib.figure import Figure

    ax = Figure().subplots()
    overlays._draw(ax, overlays.Panel(film, heat), overlays.DEFAULT_CMAP, overlays.DEFAULT_ALPHA)
    drawn = np.asarray(ax.images[-1].get_array())
    assert len(ax.images) == 1 and np.allclose(drawn, overlays.blend(film, heat))


def test_blend_leaves_the_film_untouched_where_there_is_no_evidence() -> None:
    film = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    out = overlays.blend(film, heat)
    assert np.allclose(out[1:, :, 0], film[1:]) and np.allclose(out[..., 1][1:], film[1:])
    assert not np.allclose(out[0, 0], film[0, 0])
    report = _pixels(overlay_png(film, heat))
    assert np.array_equal(report[2, 2], np.rint(np.repeat(film[2, 2], 3) * 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------- no process-wide effect


def test_explain_modules_never_switch_the_matplotlib_backend(tmp_path: Path) -> None:
    import matplotlib

    before = matplotlib.get_backend()
    overlays.render_overlay(_film(), _film(1), tmp_path / "o.png", title="t")
    assert matplotlib.get_backend() == before
    for folder in ("explain", "web"):
        for path in (PACKAGE / folder).glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr == "use":
                    assert not (isinstance(node.value, ast.Name) and node.value.id == "matplotlib"), path
                if isinstance(node, ast.ImportFrom | ast.Import):
                    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                    assert not any(n.startswith("matplotlib.pyplot") for n in names), path
