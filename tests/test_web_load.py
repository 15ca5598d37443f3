"""A loopback load test: 200 requests, 8 at a time, against uvicorn in this process; no error, flat memory.

The server runs in a thread of the test process, so the process's resident set size (``VmRSS`` in
``/proc/self/status``) is the server's. After a warm-up of 50 requests it must not grow by more than 50 MB over the
next 150 (the result cache is bounded; nothing per request may be kept).
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web extra (fastapi) is not installed")
pytest.importorskip("uvicorn", reason="the web extra (uvicorn) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx is not installed")

from PIL import Image  # noqa: E402

import xray_xai  # noqa: E402
from xray_xai.models import store  # noqa: E402
from xray_xai.web.app import create_app  # noqa: E402

N_REQUESTS = 200
CONCURRENCY = 8
WARMUP = 50


@contextmanager
def running_server(app: Any) -> Iterator[str]:
    """uvicorn serving ``app`` in a thread on a free loopback port; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    film = np.clip(0.3 + 0.2 * rng.standard_normal((64, 56)), 0, 1)
    buf = io.BytesIO()
    Image.fromarray((film * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the resident set size")
@pytest.mark.usefixtures("no_shipped_models")  # the page's default model is the one this test trains
def test_200_requests_8_at_a_time_flat_memory() -> None:
    import torch

    torch.manual_seed(0)
    store.save_model(xray_xai.get_model("cnn-small")(image_size=32))
    images = [png(i) for i in range(8)]
    app = create_app(result_cache_size=16)

    def one(i: int, base: str, client: Any) -> tuple[int, int]:
        k = i % len(images)
        upload = {"files": (f"film{k}.png", images[k], "image/png")}
        kind = i % 4
        if kind == 0:
            r = client.post(base + "/api/explain", files=upload, data={"methods": "gradcam"})
        elif kind == 1:
            r = client.post(base + "/", files=upload, data={"models": "cnn-small", "methods": "gradcam"})
        else:
            r = client.post(base + "/api/predict", files=upload)
        if kind != 1:
            assert r.json()["images"][0]["name"] == f"film{k}.png"
        return i, r.status_code

    with running_server(app) as base:
        clients = [httpx.Client(timeout=60) for _ in range(CONCURRENCY)]
        try:

            def run(rng: range) -> list[tuple[int, int]]:
                with ThreadPoolExecutor(CONCURRENCY) as pool:
                    return list(pool.map(lambda i: one(i, base, clients[i % CONCURRENCY]), rng))

            t0 = time.perf_counter()
            first = run(range(WARMUP))
            rss_warm = rss_mb()
            t1 = time.perf_counter()
            rest = run(range(WARMUP, N_REQUESTS))
            t2 = time.perf_counter()
            rss_end = rss_mb()
        finally:
            for c in clients:
                c.close()

    codes = [code for _, code in first + rest]
    assert codes == [200] * N_REQUESTS
    growth = rss_end - rss_warm
    report = (
        f"load: {N_REQUESTS} requests, {CONCURRENCY} at a time, {t2 - t0:.1f} s "
        f"({(N_REQUESTS - WARMUP) / (t2 - t1):.1f} req/s after warm-up); "
        f"RSS {rss_warm:.0f} MB after {WARMUP}, {rss_end:.0f} MB after {N_REQUESTS} (growth {growth:+.1f} MB); "
        f"{len(app.state.results)} results cached; model loads {app.state.models.loads}"
    )
    print(report)
    if os.environ.get("XRAY_XAI_ARTIFACTS"):
        out = Path(os.environ["XRAY_XAI_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "web-load.txt").write_text(report + "\n")
    assert growth < 50, report
    assert app.state.models.loads == 1 and len(app.state.results) <= 16
