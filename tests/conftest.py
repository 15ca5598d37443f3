"""Shared fixtures. Every test runs offline: any attempt to open a network connection fails loudly."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("XRAY_XAI_NO_PROGRESS", "1")

REPO = Path(__file__).resolve().parents[1]
FRACATLAS = REPO.parent / "shared" / "data" / "fracatlas"


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch

        torch.set_num_threads(1)  # CI machines have 2 cores; tests are tiny, threads only add overhead
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every outbound connection except to loopback (the web tests' own server)."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if (
            isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1"))
        ) or self.family == socket.AF_UNIX:
            return real_connect(self, address)
        raise RuntimeError(f"tests must not use the network (tried to connect to {address!r})")

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own model store ($XRAY_XAI_HOME), so tests never see a user's trained models."""
    home = tmp_path_factory.mktemp("xray_xai_home")
    monkeypatch.setenv("XRAY_XAI_HOME", str(home))
    return home


@pytest.fixture
def fracatlas_root() -> Path:
    if not (FRACATLAS / "dataset.csv").exists():
        pytest.skip("../shared/data/fracatlas is not beside the repository")
    return FRACATLAS


@pytest.fixture
def tiny_checkpoint() -> Path:
    """An untrained cnn-small at 32 px saved in the (per-test) store: a real checkpoint folder in milliseconds."""
    import xray_xai
    from xray_xai.models.store import save_model

    return save_model(xray_xai.get_model("cnn-small")(image_size=32), metadata={})


@pytest.fixture
def noise_film(tmp_path: Path) -> Path:
    """A 40 x 40 grey-noise PNG (seeded)."""
    import numpy as np
    from PIL import Image

    path = tmp_path / "film.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def no_shipped_models(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the models that ship with xray-xai (fracatlas-lite0), for tests about a store-only world (the web page
    listing exactly the models a test trained)."""
    from xray_xai.models import shipped

    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path_factory.mktemp("no_shipped"))
