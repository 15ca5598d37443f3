"""Progress bars for long work (rich, on stderr, so that ``--json`` on stdout stays clean)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def progress(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar; silent when disabled, when stderr is not a terminal,
    or when ``XRAY_XAI_NO_PROGRESS`` is set (CI logs)."""
    if not enabled or os.environ.get("XRAY_XAI_NO_PROGRESS") or not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(items, description=description, total=total, console=Console(stderr=True), transient=True)
