"""The web face of xray-xai: ``xray-xai serve`` (a FastAPI app with one server-rendered page and a JSON API).

FastAPI is an optional dependency (``pip install xray-xai[web]``), so nothing here is imported with :mod:`xray_xai`;
:func:`create_app` and :func:`run_server` import it on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "run_server"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """Build the FastAPI app; see :func:`xray_xai.web.app.create_app`."""
    from xray_xai.web.app import create_app as _create_app

    return _create_app(*args, **kwargs)


def run_server(*args: Any, **kwargs: Any) -> None:
    """Serve the app with uvicorn; see :func:`xray_xai.web.app.run_server`."""
    from xray_xai.web.app import run_server as _run_server

    _run_server(*args, **kwargs)
