"""The ``--cache`` setting of the training and evaluation services: where prepared films are, and preparing those
missing (:mod:`xray_xai.data.film_cache` holds the cache itself; this layer knows ``$XRAY_XAI_HOME``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xray_xai.errors import DataError
from xray_xai.models.store import home

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.data.film_cache import FilmCache
    from xray_xai.sdk.interfaces import Preprocessing, Record

__all__ = ["films_dir", "prepared_films"]


def films_dir() -> Path:
    """Where prepared films go by default: ``$XRAY_XAI_HOME/cache/films``."""
    return home() / "cache" / "films"


def prepared_films(
    setting: str | Path | None,
    records: Sequence[Record],
    pre: Preprocessing,
    *,
    workers: int = 0,
    progress: bool = False,
) -> FilmCache | None:
    """None for ``"off"`` (or None): every film is decoded, as always. ``"auto"``: the cache under :func:`films_dir`;
    any other value: that cache folder, which must exist. The films of ``records`` not yet in it are prepared now (a
    first epoch or a first evaluation would decode them anyway); later epochs and runs read them back."""
    if setting is None or str(setting) == "off":
        return None
    from xray_xai.data.film_cache import prepare

    root = films_dir() if str(setting) == "auto" else Path(setting).expanduser()
    if str(setting) != "auto" and not root.is_dir():  # a typo of off/auto must not become a new cache folder
        raise DataError(root, "no such cache folder; give off, auto, or a folder (`xray-xai prepare --out` makes one)")
    return prepare(records, pre, root, workers=workers, progress=progress).cache
