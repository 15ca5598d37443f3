"""End to end: ``xray-xai serve``'s app on a loopback port, driven by headless Chromium through playwright.

Skips (with the reason) when playwright or a Chromium binary is missing. Chromium is the system's
(``apt-get install chromium``; or set ``XRAY_XAI_CHROMIUM``): ``playwright install`` downloads browsers, which the
tests never do. The screenshot is kept in ``tmp_path`` and copied to ``$XRAY_XAI_ARTIFACTS`` when that is set.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
pytest.importorskip("uvicorn", reason="the web extra (uvicorn) is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")

from PIL import Image  # noqa: E402
from test_web_load import running_server  # noqa: E402  (tests/ is on sys.path: pytest's rootdir-relative import)

import xray_xai  # noqa: E402
from xray_xai.models import store  # noqa: E402
from xray_xai.web.app import create_app  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_shipped_models")  # these tests list exactly the models they train

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("XRAY_XAI_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    exe = chromium_path()
    if exe is None:
        pytest.skip("no Chromium binary (apt-get install chromium, or set XRAY_XAI_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, timeout=60_000)
        except Exception as exc:  # a Chromium that cannot start here (missing libraries...) is an environment issue
            pytest.skip(f"Chromium at {exe} does not start: {str(exc).splitlines()[0]}")
        try:
            yield b
        finally:
            b.close()


def radiograph(seed: int, shape: tuple[int, int] = (96, 80)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.abs((xx - 0.5 * w) * np.sin(0.6) - (yy - 0.5 * h) * np.cos(0.6))
    film = 0.1 + 0.7 * np.exp(-((d / (0.1 * w)) ** 2)) + 0.04 * rng.standard_normal(shape)
    return np.clip(film, 0, 1).astype(np.float32)


def png_bytes(film: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((film * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_upload_in_browser_shows_probability_and_heatmap(browser: Any, tmp_path: Path) -> None:
    import torch

    from xray_xai.data.geometry import to_tensor
    from xray_xai.data.images import read_image_bytes

    torch.manual_seed(0)
    store.save_model(xray_xai.get_model("cnn-small")(image_size=64))
    model = store.load_model("cnn-small")
    data = png_bytes(radiograph(0))
    with torch.no_grad():
        expected = float(model.predict_proba(to_tensor(read_image_bytes(data), model.preprocessing)[None])[0])

    with running_server(create_app()) as base:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(base + "/")
        assert page.is_checked('input[name="models"][value="cnn-small"]')
        assert page.is_checked('input[name="methods"][value="layercam"]')
        page.set_input_files(
            'input[type="file"]', files=[{"name": "wrist.png", "mimeType": "image/png", "buffer": data}]
        )
        page.click('button[type="submit"]')
        page.wait_for_selector("#results .probability", timeout=60_000)

        shown = page.inner_text("#results .probability")
        assert re.fullmatch(r"\d\.\d{3}", shown) and float(shown) == pytest.approx(expected, abs=6e-4)
        assert "wrist.png" in page.inner_text("#results")
        heat = page.locator("#results img.heatmap").first
        heat.wait_for(state="visible")
        page.wait_for_function("() => [...document.images].every(i => i.complete)")
        natural = heat.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert natural == [64, 64]
        assert page.locator("#results img.film").first.evaluate("img => img.naturalWidth") == 64

        shot = tmp_path / "web-result.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 1000
        if os.environ.get("XRAY_XAI_ARTIFACTS"):
            out = Path(os.environ["XRAY_XAI_ARTIFACTS"])
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, out / shot.name)

        # a bad upload comes back as a readable error on the page, not a stack trace
        page.goto(base + "/")
        page.set_input_files(
            'input[type="file"]',
            files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"plain text, not a film"}],
        )
        page.click('button[type="submit"]')
        alert = page.wait_for_selector(".error", timeout=30_000)
        assert alert is not None
        text = alert.inner_text()
        assert "notes.png" in text and "not an image" in text and "Traceback" not in page.content()
        page.close()
