"""The web app's JSON API and page through FastAPI's TestClient: results, limits, bad uploads, concurrency, caching."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
pytest.importorskip("python_multipart", reason="the web extra (python-multipart) is not installed")
pytest.importorskip("httpx", reason="fastapi's TestClient needs httpx")

from fastapi.testclient import TestClient
from PIL import Image

import xray_xai
from xray_xai.models import store
from xray_xai.web.app import create_app, is_loopback
from xray_xai.web.service import ModelCache, display_name

pytestmark = pytest.mark.usefixtures("no_shipped_models")  # these tests list exactly the models they train

SIZE = 32


def radiograph(seed: int, shape: tuple[int, int] = (48, 40)) -> np.ndarray:
    """A synthetic film: dark background, a bright oblique 'bone' with a seeded position, a little noise."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, angle = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, rng.uniform(0, np.pi)
    d = np.abs((xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle))
    film = 0.15 + 0.7 * np.exp(-((d / (0.08 * w)) ** 2)) + 0.05 * rng.standard_normal(shape)
    return np.clip(film, 0, 1).astype(np.float32)


def png_bytes(film: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((film * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def dicom_bytes(film: np.ndarray) -> bytes:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("upload.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = film.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (film * 4095).round().astype(np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def tiny_model() -> Any:
    """A 32 px cnn-small saved in this test's own store ($XRAY_XAI_HOME is per test, see conftest)."""
    import torch

    torch.manual_seed(0)
    model = xray_xai.get_model("cnn-small")(image_size=SIZE)
    store.save_model(model, metadata={"dataset": "synthetic"})
    return store.load_model("cnn-small")


@pytest.fixture
def client(tiny_model: Any) -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def expected_probability(model: Any, film: np.ndarray) -> float:
    import torch

    from xray_xai.data.geometry import to_tensor

    with torch.no_grad():
        return float(model.predict_proba(to_tensor(film, model.preprocessing)[None])[0])


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


# --------------------------------------------------------------------------------------------------------- basics


def test_healthz_and_models(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    data = client.get("/api/models").json()
    assert [m["key"] for m in data["models"]] == ["cnn-small"]
    assert data["models"][0]["dataset"] == "synthetic" and "path" not in data["models"][0]
    assert data["default_method"] == "layercam" and data["methods"][0] == "layercam"
    assert set(data["methods"]) == set(xray_xai.list_explainers())


def test_openapi_schema_lists_api_and_no_cdn_docs(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/healthz", "/api/models", "/api/predict", "/api/explain"} <= set(schema["paths"])
    assert "/" not in schema["paths"]
    assert client.get("/docs").status_code == 404  # Swagger UI would load scripts from a CDN


def test_predict_single_view_matches_model(client: TestClient, tiny_model: Any) -> None:
    film = radiograph(1)
    r = client.post("/api/predict", files=files(("knee.png", png_bytes(film))))
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["n_views"] == 1 and data["images"][0] == {"index": 0, "name": "knee.png", "height": 48, "width": 40}
    (res,) = data["results"]
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(film))), dtype=np.float32) / 255
    assert res["probabilities"][0] == pytest.approx(expected_probability(tiny_model, decoded), abs=1e-5)
    assert res["study_score"] == pytest.approx(res["probabilities"][0], abs=1e-6)
    assert res["prediction"] == ("abnormal" if res["study_score"] >= 0.5 else "normal")
    assert "explanations" not in res


def test_multi_view_study_score_is_mean(client: TestClient) -> None:
    views = [("v1.png", png_bytes(radiograph(1))), ("v2.png", png_bytes(radiograph(2, (40, 56))))]
    data = client.post("/api/predict", files=files(*views), data={"models": ["cnn-small"]}).json()
    (res,) = data["results"]
    assert data["n_views"] == 2 and [im["name"] for im in data["images"]] == ["v1.png", "v2.png"]
    p = res["probabilities"]
    assert len(p) == 2 and p[0] != p[1]
    assert res["study_score"] == pytest.approx(np.mean(p), abs=1e-6)


def test_explain_returns_pngs_and_maps(client: TestClient) -> None:
    r = client.post(
        "/api/explain",
        files=files(("a.png", png_bytes(radiograph(3))), ("b.png", png_bytes(radiograph(4)))),
        data={"model": "cnn-small", "methods": ["gradcam", "saliency"], "maps": "true"},
    )
    assert r.status_code == 200, r.text
    (res,) = r.json()["results"]
    assert [e["method"] for e in res["explanations"]] == ["gradcam", "saliency"]
    for exp in res["explanations"]:
        assert "error" not in exp and len(exp["views"]) == 2
        for view in exp["views"]:
            overlay = Image.open(io.BytesIO(base64.b64decode(view["overlay_png"])))
            heat = np.asarray(Image.open(io.BytesIO(base64.b64decode(view["heatmap_png"]))), dtype=np.float32) / 255
            assert overlay.size == (SIZE, SIZE) and overlay.mode == "RGB"
            m = np.asarray(view["map"], dtype=np.float32)
            assert m.shape == (SIZE, SIZE) and m.min() >= 0 and m.max() <= 1 and m.max() > 0
            assert np.abs(heat - m).max() <= 1 / 255 + 1e-3  # the PNG is the map, 8-bit
        assert not np.array_equal(exp["views"][0]["map"], exp["views"][1]["map"])
    films = res["films"]
    assert len(films) == 2 and Image.open(io.BytesIO(base64.b64decode(films[0]))).size == (SIZE, SIZE)


def test_explain_overlays_are_the_engines(client: TestClient, tiny_model: Any) -> None:
    """The page's overlays and probabilities are xray_xai.api.explain_films' (the engine of `xray-xai explain`) and
    the overlay is blended as the report blends it."""
    from xray_xai import api
    from xray_xai.report.html import overlay_png

    data = png_bytes(radiograph(7))
    r = client.post("/api/explain", files=files(("a.png", data)), data={"methods": ["gradcam"]})
    view = r.json()["results"][0]["explanations"][0]["views"][0]
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(view["overlay_png"]))))
    (run,) = api.explain_films([api.read_image_bytes(data, "a.png")], tiny_model, ["gradcam"])
    assert r.json()["results"][0]["probabilities"][0] == pytest.approx(float(run.probabilities[0]), abs=1e-6)
    assert np.array_equal(got, np.asarray(Image.open(io.BytesIO(run.overlay_png("gradcam", 0)))))
    report = overlay_png(run.films[0], run.heatmap("gradcam", 0))
    assert np.array_equal(got, np.asarray(Image.open(io.BytesIO(report))))


def test_web_face_imports_only_the_api() -> None:
    """The web face calls xray_xai.api (and errors, __version__); no service, sdk, data or _util import."""
    import ast

    allowed = {"xray_xai", "xray_xai.api", "xray_xai.errors"}
    for path in (Path(xray_xai.__file__).parent / "web").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xray_xai"):
                mod = node.module
                assert mod in allowed or mod.startswith("xray_xai.web"), f"{path.name} imports {mod}"
                if mod == "xray_xai":
                    assert {a.name for a in node.names} <= {"__version__", "api"}, path.name
            elif isinstance(node, ast.Import):
                bad = [a.name for a in node.names if a.name.startswith("xray_xai.") and a.name not in allowed]
                assert not bad, f"{path.name} imports {bad}"


def test_explain_defaults_to_layercam_without_maps(client: TestClient) -> None:
    r = client.post("/api/explain", files=files(("a.png", png_bytes(radiograph(3)))))
    (res,) = r.json()["results"]
    (exp,) = res["explanations"]
    assert exp["method"] == "layercam" and "map" not in exp["views"][0]


def test_dicom_upload(client: TestClient, tiny_model: Any) -> None:
    film = radiograph(5, (40, 44))
    r = client.post("/api/predict", files=files(("study.dcm", dicom_bytes(film))))
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["images"][0]["height"] == 40 and data["images"][0]["width"] == 44
    from xray_xai.data.images import read_image_bytes

    expected = expected_probability(tiny_model, read_image_bytes(dicom_bytes(film), "x.dcm"))
    assert data["results"][0]["probabilities"][0] == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------------------------------------------- bad uploads


def test_oversized_upload_is_413(tiny_model: Any) -> None:
    big = png_bytes(np.random.default_rng(0).random((200, 200)).astype(np.float32))  # ~40 kB of noise
    with TestClient(create_app(max_upload_mb=0.01)) as c:
        r = c.post("/api/predict", files=files(("big.png", big)))
        assert r.status_code == 413 and "limit is 0.01 MB" in r.json()["detail"]
        page = c.post("/", files=files(("big.png", big)), data={"models": ["cnn-small"]})
        assert page.status_code == 413 and "upload too large" in page.text and "<form" in page.text
        assert c.post("/api/predict", files=files(("ok.png", png_bytes(radiograph(1))))).status_code == 200


def test_oversized_stream_without_length_is_413(tiny_model: Any) -> None:
    """A chunked body (no Content-Length) is counted while it arrives."""
    big = png_bytes(np.random.default_rng(0).random((700, 700)).astype(np.float32))  # > limit + form allowance
    boundary = "xrayboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + big
        + f"\r\n--{boundary}--\r\n".encode()
    )
    chunks = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    with TestClient(create_app(max_upload_mb=0.01)) as c:
        r = c.post(
            "/api/predict",
            content=iter(chunks),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
    assert r.status_code == 413, r.text
    assert "upload too large" in r.json()["detail"]


def test_non_image_is_415_naming_the_file(client: TestClient) -> None:
    r = client.post("/api/predict", files=files(("notes.png", b"this is not an image, just text\n" * 4)))
    assert r.status_code == 415
    assert "notes.png" in r.json()["detail"] and "not an image" in r.json()["detail"]


def test_truncated_image_is_400(client: TestClient) -> None:
    data = png_bytes(radiograph(6))
    r = client.post("/api/predict", files=files(("cut.png", data[: len(data) // 2])))
    assert r.status_code == 400
    assert r.json()["detail"].startswith("cut.png:") and "truncated" in r.json()["detail"]


def test_empty_file_and_no_file(client: TestClient) -> None:
    r = client.post("/api/predict", files=files(("empty.png", b"")))
    assert r.status_code == 400 and "empty.png" in r.json()["detail"]
    assert client.post("/api/predict").status_code == 422  # FastAPI's validation: files are required


def test_pixel_guard_is_4xx(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XRAY_XAI_MAX_PIXELS", "1000")
    r = client.post("/api/predict", files=files(("huge.png", png_bytes(radiograph(1)))))
    assert r.status_code == 413 and "huge.png" in r.json()["detail"] and "too large" in r.json()["detail"]


def test_unknown_model_and_method_are_400(client: TestClient) -> None:
    up = files(("a.png", png_bytes(radiograph(1))))
    r = client.post("/api/predict", files=up, data={"models": ["../../etc/passwd"]})
    assert r.status_code == 400 and "unknown model" in r.json()["detail"] and "cnn-small" in r.json()["detail"]
    r = client.post("/api/explain", files=up, data={"methods": ["gradcamm"]})
    assert r.status_code == 400 and "unknown explanation method" in r.json()["detail"]


def test_too_many_views_is_400(client: TestClient) -> None:
    one = png_bytes(radiograph(1, (16, 16)))
    r = client.post("/api/predict", files=files(*[(f"v{i}.png", one) for i in range(17)]))
    assert r.status_code == 400 and "at most 16 views" in r.json()["detail"]


def test_no_model_in_store(monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(create_app()) as c:
        assert c.get("/api/models").json()["models"] == []
        assert "No trained model" in c.get("/").text
        r = c.post("/api/predict", files=files(("a.png", png_bytes(radiograph(1)))))
        assert r.status_code == 400 and "xray-xai train" in r.json()["detail"]


def test_display_name_is_never_a_path() -> None:
    assert display_name("../../etc/passwd", 0) == "passwd"
    assert display_name("C:\\Users\\x\\film.dcm", 0) == "film.dcm"
    assert display_name("a\x00b\nc.png", 0) == "abc.png"
    assert display_name("", 2) == "upload-3"
    assert len(display_name("x" * 500, 0)) == 120


# ------------------------------------------------------------------------------------------------------------ page


def test_page_form_and_results(client: TestClient) -> None:
    home = client.get("/")
    assert home.status_code == 200 and 'type="file"' in home.text and 'value="cnn-small"' in home.text
    assert "<script" not in home.text and "http://" not in home.text and "https://" not in home.text
    assert "default-src 'none'" in home.headers["content-security-policy"]
    assert home.headers["x-content-type-options"] == "nosniff"

    r = client.post(
        "/",
        files=files(("v1.png", png_bytes(radiograph(1))), ("v2.png", png_bytes(radiograph(2)))),
        data={"models": ["cnn-small"], "methods": ["gradcam"]},
    )
    assert r.status_code == 200, r.text
    assert "Study score" in r.text and 'class="heatmap"' in r.text
    links = sorted(set(_links(r.text, "/results/")))
    pngs = [u for u in links if u.endswith(".png")]
    assert len(pngs) == 6  # 2 films, 2 overlays, 2 bare maps
    for url in pngs:
        got = client.get(url)
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        Image.open(io.BytesIO(got.content)).verify()
    (json_url,) = [u for u in links if u.endswith("result.json")]
    result = client.get(json_url).json()
    (res,) = result["results"]
    assert f"{res['study_score']:.3f}" in r.text
    assert res["explanations"][0]["views"][1]["overlay_png"] in pngs
    assert client.get(json_url.rsplit("/", 2)[0] + "/nope/result.json").status_code == 404
    assert client.get(json_url.replace("result.json", "../../etc/passwd")).status_code == 404


def test_page_shows_errors_escaped(client: TestClient) -> None:
    evil = "<img src=x onerror=alert(1)>.png"
    r = client.post("/", files=files((evil, b"GIF89a not really")), data={"models": ["cnn-small"]})
    assert r.status_code == 415
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in r.text and evil not in r.text
    assert "Traceback" not in r.text and 'role="alert"' in r.text
    r = client.post("/", data={"models": ["cnn-small"]})
    assert r.status_code == 400 and "no file uploaded" in r.text
    # what a browser sends when no file was chosen: an empty part with an empty file name
    r = client.post("/", files=[("files", ("", b"", "application/octet-stream"))], data={"models": ["cnn-small"]})
    assert r.status_code == 400 and "no file uploaded" in r.text
    r = client.post("/", files=files(("a.png", png_bytes(radiograph(1)))))
    assert r.status_code == 400 and "choose at least one model" in r.text


def _links(html: str, prefix: str) -> list[str]:
    import re

    return re.findall(r'(?:src|href)="(' + re.escape(prefix) + r'[^"]+)"', html)


# ----------------------------------------------------------------------------------------------------- concurrency


def test_model_loaded_once_under_concurrent_requests(tiny_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = store.load_model
    gate = threading.Lock()

    def counting(name_or_path: Any, **kw: Any) -> Any:
        with gate:
            calls.append(str(name_or_path))
        return real(name_or_path, **kw)

    monkeypatch.setattr(store, "load_model", counting)
    app = create_app()
    with TestClient(app) as c:
        body = files(("a.png", png_bytes(radiograph(1))))
        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(lambda _: c.post("/api/predict", files=body).status_code, range(12)))
    assert codes == [200] * 12
    assert calls == ["cnn-small"] and app.state.models.loads == 1


def test_concurrent_requests_keep_their_own_results(client: TestClient, tiny_model: Any) -> None:
    images = [radiograph(10 + i) for i in range(4)]
    blobs = [png_bytes(im) for im in images]
    serial = [
        client.post("/api/explain", files=files((f"{i}.png", b)), data={"maps": "true"}).json()
        for i, b in enumerate(blobs)
    ]
    probs = [s["results"][0]["probabilities"][0] for s in serial]
    assert len({round(p, 6) for p in probs}) == 4, probs  # distinct, so a mix-up would show

    def one(i: int) -> tuple[int, dict[str, Any]]:
        k = i % 4
        r = client.post("/api/explain", files=files((f"{k}.png", blobs[k])), data={"maps": "true"})
        return k, r.json()

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(24)))
    for k, data in got:
        res = data["results"][0]
        assert data["images"][0]["name"] == f"{k}.png"
        assert res["probabilities"][0] == pytest.approx(probs[k], abs=1e-6)
        assert np.allclose(
            res["explanations"][0]["views"][0]["map"],
            serial[k]["results"][0]["explanations"][0]["views"][0]["map"],
            atol=1e-4,
        )


def test_model_instances_and_paths(tiny_model: Any, tmp_path: Path) -> None:
    ckpt = store.save_model(tiny_model, tmp_path / "ckpt")
    cache = ModelCache([tiny_model, str(ckpt)])
    assert [e.source for e in cache.entries().values()] == ["instance", "path"]
    with TestClient(create_app([str(ckpt)])) as c:
        data = c.post("/api/predict", files=files(("a.png", png_bytes(radiograph(1))))).json()
    assert data["results"][0]["model"] == str(ckpt) and data["results"][0]["name"] == "cnn-small"


def test_result_cache_is_bounded(tiny_model: Any) -> None:
    app = create_app(result_cache_size=3)
    with TestClient(app) as c:
        for i in range(5):
            r = c.post("/", files=files(("a.png", png_bytes(radiograph(i)))), data={"models": ["cnn-small"]})
            assert r.status_code == 200
    assert len(app.state.results) == 3


# ---------------------------------------------------------------------------------------------------------- the CLI


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")


def test_cli_serve_warns_off_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from click.testing import CliRunner

    from xray_xai.cli import main

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    r = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--port", "8123", "--max-upload-mb", "5"])
    assert r.exit_code == 0, r.output
    assert "WARNING" in r.output and "0.0.0.0:8123" in r.output
    assert seen["host"] == "0.0.0.0" and seen["port"] == 8123 and seen["app"].state.max_upload_bytes == 5 * 2**20
    r = CliRunner().invoke(main, ["serve", "--models", "cnn-small, convnet"])
    assert r.exit_code == 0 and "WARNING" not in r.output
    assert seen["host"] == "127.0.0.1" and seen["app"].state.models.keys() == ["cnn-small", "convnet"]
    assert "Example:" in CliRunner().invoke(main, ["serve", "--help"]).output


def test_result_json_is_valid_json_file(client: TestClient) -> None:
    r = client.post("/", files=files(("a.png", png_bytes(radiograph(1)))), data={"models": ["cnn-small"]})
    (json_url,) = [u for u in _links(r.text, "/results/") if u.endswith("result.json")]
    assert json.loads(client.get(json_url).content)["n_views"] == 1
