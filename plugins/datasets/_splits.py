"""Helpers shared by the built-in dataset readers: seeded, hash-based splits and image-file recognition.

Splits are computed from a stable hash of an identifier (a patient id, an image id) and a seed, never from Python's
``hash`` (salted per process) or from the order files were listed in, so the same data always splits the same way
on every machine.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from xray_xai.data.images import is_image_file
from xray_xai.errors import DataError
from xray_xai.sdk.interfaces import Problem

__all__ = [
    "holdout",
    "is_hidden",
    "looks_like_image",
    "make_problem",
    "read_csv_rows",
    "stable_unit",
    "stratified_split",
]


def stable_unit(key: str, seed: int = 0) -> float:
    """A number in [0, 1) that depends only on ``key`` and ``seed`` (blake2b; the same on every machine)."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def holdout(keys: Iterable[str], fraction: float, seed: int = 0) -> set[str]:
    """The keys held out (e.g. patients moved from train to val): those whose :func:`stable_unit` is below
    ``fraction``.

    A threshold rather than a ranking, so adding keys never moves existing ones between the two sides. If the
    threshold picks none although ``fraction > 0`` and there are at least two keys, the key with the smallest hash
    is held out, so a tiny data set still gets a non-empty validation split.
    """
    unique = sorted(set(keys))
    if fraction <= 0 or not unique:
        return set()
    if fraction >= 1:
        return set(unique)
    chosen = {k for k in unique if stable_unit(k, seed) < fraction}
    if not chosen and len(unique) >= 2:
        chosen = {min(unique, key=lambda k: stable_unit(k, seed))}
    return chosen


def stratified_split(strata: Mapping[str, str], fractions: Mapping[str, float], seed: int = 0) -> dict[str, str]:
    """Assign each key of ``strata`` (key -> stratum name) to a split, with ``fractions`` (split -> share) kept
    within every stratum.

    Inside a stratum, keys are ordered by :func:`stable_unit` and cut into consecutive blocks whose sizes follow the
    largest-remainder rule, so the proportions are exact up to rounding and the result depends only on the keys,
    their strata and the seed.
    """
    names = list(fractions)
    total = sum(fractions.values())
    if total <= 0 or any(v < 0 for v in fractions.values()):
        raise ValueError(f"split fractions must be non-negative with a positive sum, got {dict(fractions)}")
    by_stratum: dict[str, list[str]] = {}
    for key, stratum in strata.items():
        by_stratum.setdefault(stratum, []).append(key)
    out: dict[str, str] = {}
    for members in by_stratum.values():
        members.sort(key=lambda k: (stable_unit(k, seed), k))
        sizes = _largest_remainder(len(members), [fractions[n] / total for n in names])
        start = 0
        for name, size in zip(names, sizes, strict=True):
            for key in members[start : start + size]:
                out[key] = name
            start += size
    return out


def _largest_remainder(n: int, shares: Sequence[float]) -> list[int]:
    raw = [n * s for s in shares]
    sizes = [math.floor(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - sizes[i]), i))
    for i in order[: n - sum(sizes)]:
        sizes[i] += 1
    return sizes


def is_hidden(path: Path) -> bool:
    """Hidden files and macOS resource forks (``._image1.png`` ships inside the real MURA zip), ``__MACOSX``."""
    return path.name.startswith(".") or path.name == "__MACOSX" or path.name == "Thumbs.db"


def looks_like_image(path: Path) -> bool:
    """Whether a listed file is an image the readers keep: :func:`xray_xai.data.images.is_image_file`
    (a known suffix, or a suffix-less DICOM file), hidden files and macOS ``._`` forks excluded."""
    return not is_hidden(path) and is_image_file(path)


def read_csv_rows(path: Path) -> list[list[str]]:
    """Rows of a small CSV file, blank lines dropped, cells stripped (UTF-8 with or without BOM).

    A file that is not UTF-8 text or not CSV raises :class:`DataError` naming it (found by tests/test_fuzz.py)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [[cell.strip() for cell in row] for row in csv.reader(fh) if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not a UTF-8 text file (byte {exc.start}: {exc.reason}); is it really a CSV?") from None
    except csv.Error as exc:
        raise DataError(path, f"not a readable CSV file ({exc})") from None


def make_problem(path: Path | str, problem: str, severity: str = "error", base: Path | None = None) -> Problem:
    """A :class:`Problem` whose path is shown relative to ``base`` when it lies below it (shorter messages)."""
    where = str(path)
    if isinstance(path, Path) and base is not None and path.is_relative_to(base):
        where = str(path.relative_to(base))
    return Problem(where, problem, "warning" if severity == "warning" else "error")
