"""``xray-xai serve``: the web page and JSON API on a local port.

The one place where one face starts the other: the command line launches :mod:`xray_xai.web` (itself a face over
:mod:`xray_xai.api`); nothing a script would want happens here.
"""

from __future__ import annotations

import click

from xray_xai import api
from xray_xai.cli._common import handle_errors
from xray_xai.errors import XrayXaiError

__all__ = ["serve"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; anything but loopback warns.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option(
    "--models",
    default=None,
    metavar="A,B",
    help=(
        "Comma-separated model names (shipped, or the newest stored checkpoint) or checkpoint paths; default: the "
        "shipped models and every stored model."
    ),
)
@click.option(
    "--max-upload-mb",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Largest upload per request (all files together); larger requests get HTTP 413.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    help="uvicorn's log level.",
)
@handle_errors
def serve(host: str, port: int, models: str | None, max_upload_mb: float, log_level: str) -> None:
    """Serve a page to upload radiographs and see probabilities and heatmaps, plus a JSON API.

    Binds 127.0.0.1 unless --host says otherwise. The page is at http://HOST:PORT/, the API under /api/
    (schema at /openapi.json). Each model is loaded once, on first use.

    \b
    Example:
      xray-xai serve
      xray-xai serve --models cnn-small,densenet-full --port 8080
    """
    import importlib.util

    needed = {"fastapi": "fastapi", "uvicorn": "uvicorn", "jinja2": "jinja2", "python_multipart": "python-multipart"}
    missing = [pkg for mod, pkg in needed.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise XrayXaiError(f"the web server needs {', '.join(missing)}: pip install 'xray-xai[web]'")
    from xray_xai.web import run_server

    click.echo(f"xray-xai: serving on http://{host}:{port}/ (Ctrl+C to stop)", err=True)
    run_server(
        host,
        port,
        api.split_names(models) or None,
        max_upload_mb=max_upload_mb,
        log_level=log_level,
        warn=lambda msg: click.secho(msg, err=True, fg="red", bold=True),
    )
