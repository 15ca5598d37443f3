"""Helpers shared by the command modules: error reporting, JSON output, progress bars."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from xray_xai._util.fsutil import json_default
from xray_xai.errors import XrayXaiError

__all__ = ["STRICT_HELP", "echo_json", "handle_errors"]

#: ``--strict`` of the commands that read films (train, evaluate, predict, explain, cluster, audit).
STRICT_HELP = (
    "Skip films whose JPEG/PNG stream ends early even when little is missing (by default such a film is read, "
    "its missing rows black, and listed with the damage in warnings.csv)."
)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn :class:`XrayXaiError` (and a few OS errors) into one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except XrayXaiError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            where = getattr(exc, "filename", None)
            click.echo(f"error: {where}: {exc.strerror}" if where else f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (numpy scalars and paths become plain values)."""
    click.echo(json.dumps(data, indent=2, default=json_default))
