"""Progress of long work, on stderr (so that ``--json`` on stdout stays clean).

On a terminal: a rich bar. When stderr is a file or a pipe (``xray-xai audit ... 2> log``, CI, a job scheduler): plain
lines ``auditing: 12/40 images (30%), 25 s, about 58 s left``, flushed as written and throttled (the first after
2 s, then at most one every 10 s; ``XRAY_XAI_PROGRESS_SECONDS`` sets the interval, 0 writes every step), and a last
line when the work ends. ``XRAY_XAI_NO_PROGRESS`` (any value) turns both off.

:class:`Ticker` is the one object: ``advance(n)`` as work is done (a fraction is fine), ``describe(text)`` for the
current phase; :func:`progress` wraps an iterable with one. Rich is used on terminals because it is already a
dependency (tables); the plain lines are ours since no library in use writes throttled lines to a non-terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

__all__ = ["Ticker", "progress", "ticker"]

T = TypeVar("T")

FIRST_LINE_S = 2.0
EVERY_S = 10.0


def _interval() -> float:
    raw = os.environ.get("XRAY_XAI_PROGRESS_SECONDS")
    try:
        return max(0.0, float(raw)) if raw not in (None, "") else EVERY_S
    except ValueError:
        return EVERY_S


def _seconds(s: float) -> str:
    s = max(0.0, s)
    return f"{s:.0f} s" if s < 120 else f"{int(s // 60)} min {int(s % 60)} s"


class Ticker:
    """Counts work done out of ``total`` (``None``: unknown) and shows it: a rich bar on a terminal, throttled plain
    lines otherwise, nothing when disabled."""

    def __init__(
        self,
        total: float | None,
        description: str,
        *,
        enabled: bool = True,
        unit: str = "",
        stream: IO[str] | None = None,
    ) -> None:
        self.total = total
        self.description = description
        self.unit = unit
        self.done = 0.0
        self.phase = ""
        self._stream = stream if stream is not None else sys.stderr
        self._start = time.monotonic()
        self._every = _interval()
        self._next = self._start + min(FIRST_LINE_S, self._every)
        self._lines = 0
        self._rich: Any = None
        self._task: Any = None
        self.mode = "off"
        if enabled and not os.environ.get("XRAY_XAI_NO_PROGRESS"):
            is_tty = getattr(self._stream, "isatty", lambda: False)()
            self.mode = "bar" if is_tty else "lines"
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import Progress

            self._rich = Progress(console=Console(file=self._stream), transient=True)
            self._rich.start()
            self._task = self._rich.add_task(description, total=total)

    # -- what callers use ---------------------------------------------------------------------------------------
    def advance(self, n: float = 1) -> None:
        self.done += n
        self._show()

    def update(self, done: float) -> None:
        """Set the amount done (never backwards)."""
        self.done = max(self.done, done)
        self._show()

    def set_total(self, total: float | None) -> None:
        """The amount of work, once known better (e.g. after unreadable films were skipped)."""
        self.total = total
        if self.mode == "bar":
            self._rich.update(self._task, total=total)

    def describe(self, phase: str) -> None:
        """The current phase, shown after the description (``auditing cnn-small x gradcam: sanity``)."""
        self.phase = phase
        self._show()

    def close(self) -> None:
        if self.mode == "bar" and self._rich is not None:
            self._rich.stop()
        elif self.mode == "lines" and self._lines:
            self._write(f"{self.description}: {self._count()}, done in {_seconds(time.monotonic() - self._start)}")
        self.mode = "off"

    # -- showing ------------------------------------------------------------------------------------------------
    def _label(self) -> str:
        return f"{self.description} {self.phase}".rstrip() if self.phase else self.description

    def _count(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if not self.total:
            return f"{self.done:g}{unit}"
        return f"{int(self.done)}/{int(self.total)}{unit} ({100 * min(self.done / self.total, 1):.0f}%)"

    def _show(self) -> None:
        if self.mode == "bar":
            self._rich.update(self._task, completed=self.done, description=self._label())
        elif self.mode == "lines":
            now = time.monotonic()
            if now < self._next or (self.total and self.done >= self.total):  # the end has its own line
                return
            self._next = now + self._every
            elapsed = now - self._start
            line = f"{self._label()}: {self._count()}, {_seconds(elapsed)}"
            if self.total and 0 < self.done < self.total:
                line += f", about {_seconds(elapsed * (self.total - self.done) / self.done)} left"
            self._write(line)

    def _write(self, line: str) -> None:
        self._lines += 1
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not stop the work
            self.mode = "off"


@contextlib.contextmanager
def ticker(
    total: float | None, description: str, *, enabled: bool = True, unit: str = "", stream: IO[str] | None = None
) -> Iterator[Ticker]:
    """A :class:`Ticker` closed at the end of the block (on error too)."""
    t = Ticker(total, description, enabled=enabled, unit=unit, stream=stream)
    try:
        yield t
    finally:
        t.close()


def progress(
    items: Iterable[T],
    description: str,
    total: int | None = None,
    enabled: bool = True,
    unit: str = "",
    stream: IO[str] | None = None,
) -> Iterator[T]:
    """Iterate over ``items``, one step of progress per item (see :class:`Ticker` for what is shown where)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with ticker(total, description, enabled=enabled, unit=unit, stream=stream) as t:
        for item in items:
            yield item
            t.advance()
