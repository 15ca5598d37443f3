"""Exceptions that the CLI turns into one line on stderr and exit code 1.

Every error a user can cause should be an :class:`XrayXaiError` whose message is one line that names the file (if
any) and the problem. Anything else escaping to the CLI is a bug in xray-xai.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CheckpointError",
    "DataError",
    "ImageError",
    "PluginError",
    "UnknownPluginError",
    "XrayXaiError",
    "one_line",
]


class XrayXaiError(Exception):
    """Base class: an error caused by input or configuration, reported in one line."""


class PluginError(XrayXaiError):
    """A plugin could not be registered, imported or used."""


class UnknownPluginError(PluginError, KeyError):
    """A plugin name that no registry holds; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DataError(XrayXaiError):
    """A data set, CSV or folder is malformed."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


class ImageError(DataError):
    """One image could not be decoded or was refused by a guard."""


class CheckpointError(DataError):
    """A weights file is missing, truncated, untrusted or for another architecture."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The one line a user sees for ``exc`` (CLI, web page, skipped-file lists): the message with its whitespace
    folded, an OS error as ``file: reason``, cut at ``limit`` characters."""
    is_os = isinstance(exc, OSError) and bool(exc.filename) and bool(exc.strerror)
    text = f"{exc.filename}: {exc.strerror}" if is_os else str(exc)  # type: ignore[attr-defined]
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
