"""``xray-xai serve``: the web page and JSON API on a local port."""

from __future__ import annotations

import click

from xray_xai import api
from xray_xai.cli._common import handle_errors

__all__ = ["serve"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; anything but loopback warns.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option(
    "--models",
    default=None,
    metavar="A,B",
    help="Comma-separated model names (newest stored checkpoint) or checkpoint paths; default: every stored model.",
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
    specs = api.split_names(models) or None
    api.serve(
        host,
        port,
        specs,
        max_upload_mb=max_upload_mb,
        log_level=log_level,
        warn=lambda msg: click.secho(msg, err=True, fg="red", bold=True),
        log=lambda msg: click.echo(f"xray-xai: {msg}", err=True),
    )
