"""Films whose JPEG or PNG stream ends early: how much is missing, and whether the film is worth keeping.

Real data sets hold films whose file was cut short (a copy interrupted, a transfer tool that dropped the tail): 47
of the 3,258 FracAtlas films in ``../shared/data/fracatlas`` end before the JPEG end marker. PIL refuses them
("image file is truncated (N bytes not processed)"; N counts bytes of an incomplete row of blocks that PIL held when
the data ran out, not the bytes missing, which no one can know). :func:`salvage` decodes such a stream as far as its
bytes go and measures the damage in **rows decoded from the file's own bytes**:

* PIL's decoder is run twice over the same bytes, once into an image pre-filled with 0 and once into one pre-filled
  with 255; a row that comes out the same in both was written by the decoder, the first row that differs is where
  the data ran out. This is exact (no guess from pixel values). An interlaced PNG row that only some passes reached
  counts as not decoded; a progressive JPEG, which libjpeg only outputs once every scan is in, counts 0 rows.
* The rows never reached are black (0), the background of a radiograph, as if the film had been collimated there;
  no decoder fill (libjpeg's flat mid-gray blocks would look like soft tissue to a model).

A film is kept when at least :data:`MIN_ROWS_DECODED` of its rows came from the file, else refused with the
measurement in the message (and always refused under ``strict``: see :func:`xray_xai.data.images.read_film`).
"""

from __future__ import annotations

import contextlib
import io
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from PIL import Image as PILImage
    from PIL.ImageFile import ImageFile

__all__ = ["MIN_ROWS_DECODED", "SALVAGE_FORMATS", "Damage", "is_truncation", "salvage"]

#: Smallest fraction of a cut film's rows that must be decoded from its own bytes for it to be kept: at most a tenth
#: of the film black. A tenth is "small": less than the black collimation borders many films carry anyway, and too
#: little to hide most of the anatomy its label is about. On the 47 cut FracAtlas films (all labelled normal) the
#: decoded share is 45-98 %: 27 are kept (91-98 %, 8 to 40 rows of 373-454 missing), 20 refused (45-88 %).
MIN_ROWS_DECODED: float = 0.90

#: Formats :func:`salvage` knows how to finish (PIL's names).
SALVAGE_FORMATS: tuple[str, ...] = ("JPEG", "MPO", "PNG")

#: Modes :func:`salvage` pre-fills, with the fill value for each (gray, 16-bit gray, colour, palette).
_MODES: dict[str, Any] = {
    "L": lambda v: v,
    "I;16": lambda v: v * 257,
    "I": lambda v: v * 257,
    "P": lambda v: v,
    "LA": lambda v: (v, v),
    "RGB": lambda v: (v, v, v),
    "RGBA": lambda v: (v, v, v, v),
    "CMYK": lambda v: (v, v, v, v),
}


@dataclass(frozen=True)
class Damage:
    """What is missing from a film whose stream ends early."""

    kind: str  # "JPEG" or "PNG"
    rows_decoded: int
    height: int
    bytes_unused: int  # bytes at the end of the file the decoder could not use (an incomplete row of blocks)

    @property
    def fraction(self) -> float:
        return self.rows_decoded / self.height if self.height else 0.0

    @property
    def keep(self) -> bool:
        return self.height > 0 and self.fraction >= MIN_ROWS_DECODED

    def describe(self) -> str:
        """E.g. ``JPEG stream ends early (no end marker), 414 of 454 rows decoded (91.2 %), the last 40 black``."""
        kind = "JPEG" if self.kind in ("JPEG", "MPO") else self.kind
        marker = "no end marker" if kind == "JPEG" else "image data cut short"
        head = f"{kind} stream ends early ({marker})"
        if self.rows_decoded >= self.height:
            return f"{head}, all {self.height} rows decoded"
        missing = self.height - self.rows_decoded
        return (
            f"{head}, {self.rows_decoded} of {self.height} rows decoded ({100 * self.fraction:.1f} %), "
            f"the last {missing} black"
        )


def is_truncation(exc: BaseException) -> bool:
    """Whether PIL's exception means "the data ran out" (as opposed to data that is there but wrong)."""
    if isinstance(exc, (struct.error, EOFError)):
        return True
    text = str(exc)
    return isinstance(exc, (OSError, SyntaxError, ValueError)) and (
        "truncated" in text.lower() or "Truncated File Read" in text
    )


def salvage(data: bytes) -> tuple[PILImage.Image, Damage] | None:
    """Decode a JPEG/PNG stream that ends early as far as its bytes go (the rows beyond black, see the module
    docstring): the loaded PIL image and its :class:`Damage`. None when the stream is not cut after all or cannot be
    measured (another format, several tiles, a decoder error that is not the end of the data)."""
    low, high = _start(data, 0), _start(data, 255)
    if low is None or high is None:
        for run in (low, high):
            if run is not None:
                run.close()
        return None
    a, b = _pixels(low.img), _pixels(high.img)
    high.close()
    same = np.all(a == b, axis=tuple(range(1, a.ndim)))
    rows = int(same.size) if same.all() else int(np.argmin(same))
    low.finish()
    if rows < a.shape[0]:  # black below, whatever the decoder left there when it was shut
        low.img.paste(0, (0, rows, a.shape[1], a.shape[0]))
    return low.img, Damage(low.kind, rows, int(a.shape[0]), low.unused)


@dataclass
class _Run:
    img: ImageFile
    decoder: Any
    kind: str
    unused: int = 0

    def finish(self) -> None:
        """Leave ``img`` loaded with what was decoded (PIL then treats it as any loaded image)."""
        with contextlib.suppress(Exception):
            self.decoder.cleanup()
        self.img.tile = []

    def close(self) -> None:
        self.finish()
        self.img.close()


def _pixels(img: PILImage.Image) -> np.ndarray:
    from PIL import Image

    return np.array(Image.Image()._new(img.im))


def _start(data: bytes, fill: int) -> _Run | None:
    """PIL's decoder run over ``data`` into an image pre-filled with ``fill`` until the bytes run out (None if the
    stream cannot be salvaged or is not cut)."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data), formats=[f for f in SALVAGE_FORMATS if f in Image.OPEN])
        if img.format not in SALVAGE_FORMATS or len(img.tile) != 1 or img.mode not in _MODES:
            img.close()
            return None
        img.im = Image.core.fill(img.mode, img.size, _MODES[img.mode](fill))
        img.load_prepare()
        codec, extents, offset, args = img.tile[0]
        decoder = Image._getdecoder(img.mode, codec, args, img.decoderconfig)
        decoder.setimage(img.im, extents)
        run = _Run(img, decoder, str(img.format))
        unused = _feed(img, decoder, offset)
    except Exception:
        return None
    if unused is None:  # the decoder finished: this stream is not cut
        run.close()
        return None
    run.unused = unused
    return run


def _feed(img: ImageFile, decoder: Any, offset: int) -> int | None:
    """Feed the stream to ``decoder`` as ``ImageFile.load`` does; None when the decoder finished, else the number of
    bytes left over (an incomplete row of blocks) when the data ran out."""
    assert img.fp is not None
    read: Any = getattr(img, "load_read", img.fp.read)
    img.fp.seek(offset)
    pending = b""
    while True:
        try:
            chunk = read(img.decodermaxblock)
        except (IndexError, struct.error, EOFError, OSError):
            return len(pending)
        if not chunk:
            return len(pending)
        pending += chunk
        consumed, err = decoder.decode(pending)
        if consumed < 0:
            if err < 0:
                raise OSError(f"decoder error {err}")
            return None
        pending = pending[consumed:]
