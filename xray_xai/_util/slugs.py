"""File-name slugs: one rule for every file xray-xai names after a model, a method, a study or an image id."""

from __future__ import annotations

import re

__all__ = ["output_stem", "slug"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
_SUFFIX = re.compile(r"\.(png|jpe?g|dcm|dicom|tiff?|bmp|gif|webp)$", re.IGNORECASE)


def slug(text: str) -> str:
    """A file-name-safe token: runs of characters other than letters, digits and ``._+-`` become ``_``
    (``gradcam++`` and ``efficientnet-lite0`` are kept as they are, so file names match the names users type)."""
    return _UNSAFE.sub("_", str(text)).strip("_") or "x"


def output_stem(image_id: str) -> str:
    """A file-name stem from an image id: the image suffix dropped, ``/`` becomes ``__``, other unsafe characters
    ``_`` (stable, readable; ``patient1/study1/view1.png`` -> ``patient1__study1__view1``)."""
    parts = [p for p in str(image_id).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if parts:
        parts[-1] = _SUFFIX.sub("", parts[-1]) or parts[-1]
    parts = [_UNSAFE.sub("_", p) for p in parts]
    stem = "__".join(parts) or "image"
    return stem[:200]
