"""Decode radiographs (PNG, JPEG, TIFF, BMP, WebP, PNM, DICOM) into one float32 grayscale array in [0, 1].

Every film that enters xray-xai goes through :func:`read_image` (or :func:`read_image_bytes` for uploads), so the
guards live here once:

* the format is sniffed from the content, never trusted from the extension (a text file named ``.png`` is refused);
* the pixel count is checked from the header *before* decoding (:data:`MAX_PIXELS`, overridable with the environment
  variable ``XRAY_XAI_MAX_PIXELS``), so a decompression bomb costs a few bytes of reading, not gigabytes of memory;
* PIL only opens the formats listed in :data:`PIL_FORMATS` (no EPS/PDF plugins that would start external programs);
* anything that goes wrong is an :class:`~xray_xai.errors.ImageError` whose one-line message names the file;
* a JPEG or PNG whose stream ends early (a file cut short) is decoded as far as its bytes go and kept, with a
  warning that names the file and the damage, when at least 90 % of its rows came from the file
  (:mod:`xray_xai.data.damaged` says how that is measured); a larger loss, or any loss with ``strict=True``, is an
  :class:`~xray_xai.errors.ImageError`. :func:`read_film` returns the warning (batch commands list it in
  ``warnings.csv``), :func:`read_image` issues it as a :class:`DamagedImageWarning`.

Intensity conventions: 8-bit data is divided by 255, 16-bit by 65535; colour films become luminance (ITU-R 601-2,
the weights of PIL's ``"L"`` mode, without its rounding); alpha is composited onto black (the background of a
radiograph). DICOM follows the standard pipeline: modality LUT (RescaleSlope/Intercept), then the VOI LUT or the
window (WindowCenter/WindowWidth) if the file declares one, else a min-max stretch; MONOCHROME1 is inverted so that
bone is always bright.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import numpy as np

from xray_xai.data.damaged import MIN_ROWS_DECODED, SALVAGE_FORMATS, Damage, is_truncation, salvage
from xray_xai.errors import ImageError
from xray_xai.sdk.interfaces import Problem

if TYPE_CHECKING:  # pragma: no cover - typing only
    from PIL import Image as PILImage

__all__ = [
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "PIL_FORMATS",
    "DamagedImageWarning",
    "Film",
    "image_size",
    "is_image_file",
    "max_pixels",
    "read_film",
    "read_film_bytes",
    "read_image",
    "read_image_bytes",
    "write_png",
]

#: Default limit on width x height; :func:`max_pixels` reads ``XRAY_XAI_MAX_PIXELS`` first.
MAX_PIXELS: int = 100_000_000

DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
#: File name endings that :func:`is_image_file` accepts (lower case). Reading still sniffs the content.
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".webp",
    ".pgm",
    ".ppm",
    ".pnm",
    *DICOM_SUFFIXES,
)
#: The only PIL decoders :func:`read_image` lets run (MPO is how PIL names some camera JPEGs).
PIL_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "MPO", "TIFF", "BMP", "WEBP", "PPM")

_LUMA = (0.299, 0.587, 0.114)
_HEAD = 132  # DICOM: 128-byte preamble + b"DICM"


def max_pixels() -> int:
    """The pixel-count limit in force: ``$XRAY_XAI_MAX_PIXELS`` if set (and a positive integer), else MAX_PIXELS."""
    env = os.environ.get("XRAY_XAI_MAX_PIXELS", "").strip().replace("_", "")
    if env:
        try:
            value = int(float(env))
        except ValueError:
            value = 0
        if value > 0:
            return value
    return int(MAX_PIXELS)


def is_image_file(path: str | Path) -> bool:
    """Cheap filter for folder listings: a regular file with an image suffix (or an extension-less DICOM file).

    macOS resource forks (``._name.png``) and hidden files are skipped. This does not decode anything; a file that
    passes may still be refused by :func:`read_image`.
    """
    p = Path(path)
    if p.name.startswith(".") or not p.is_file():
        return False
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    if suffix == "":
        try:
            with open(p, "rb") as fh:
                return _is_dicom_head(fh.read(_HEAD))
        except OSError:
            return False
    return False


class DamagedImageWarning(UserWarning):
    """Issued by :func:`read_image` for a film kept despite damage (its stream ends early, little is missing)."""


class Film(NamedTuple):
    """A decoded film: float32 ``(H, W)`` pixels in [0, 1], and the warning when it was kept despite damage."""

    pixels: np.ndarray
    warning: Problem | None = None


def read_film(path: str | Path, *, strict: bool = False, orient: bool = True) -> Film:
    """Decode the film at ``path`` (see the module docstring), or raise :class:`ImageError` naming it.

    A JPEG/PNG whose stream ends early is kept when at least :data:`~xray_xai.data.damaged.MIN_ROWS_DECODED` of its
    rows are in the file (the rest black); ``Film.warning`` then says so, e.g. ``IMG0004256.jpg: JPEG stream ends
    early (no end marker), 414 of 454 rows decoded (91.2 %), the last 40 black: kept``. With ``strict=True`` any such
    film is refused. ``orient=False`` keeps the pixels as stored, ignoring an EXIF orientation tag (what PIL's
    ``Image.open`` and so torchvision's transforms do; a model trained that way sees its films so).
    """
    with _open_source(path) as fh:
        return _film(_decode(fh, str(path), Path(path).suffix.lower(), strict, orient), str(path))


def read_film_bytes(data: bytes, name: str = "upload", *, strict: bool = False) -> Film:
    """:func:`read_film` for an in-memory file (a web upload); ``name`` is used in messages and as a DICOM
    extension hint."""
    return _film(_decode(io.BytesIO(bytes(data)), name, Path(name).suffix.lower(), strict), name)


def read_image(path: str | Path, *, strict: bool = False, orient: bool = True) -> np.ndarray:
    """Decode the film at ``path`` to float32 ``(H, W)`` in [0, 1], or raise :class:`ImageError` naming it.

    A film kept despite damage (see :func:`read_film`) also issues a :class:`DamagedImageWarning`.
    """
    return _warned(read_film(path, strict=strict, orient=orient))


def read_image_bytes(data: bytes, name: str = "upload", *, strict: bool = False) -> np.ndarray:
    """Decode an in-memory file (a web upload); ``name`` is used in messages and as a DICOM extension hint."""
    return _warned(read_film_bytes(data, name, strict=strict))


def _film(decoded: tuple[np.ndarray, Damage | None], name: str) -> Film:
    arr, damage = decoded
    if damage is None:
        return Film(arr)
    return Film(arr, Problem(name, f"{damage.describe()}: kept", severity="warning"))


def _warned(film: Film) -> np.ndarray:
    if film.warning is not None:
        import warnings

        warnings.warn(DamagedImageWarning(str(film.warning)), stacklevel=3)
    return film.pixels


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of the film as :func:`read_image` would return it, read from the header only (EXIF rotation
    included)."""
    name = str(path)
    with _open_source(path) as fh:
        head = _read_head(fh, name)
        if _looks_dicom(head, Path(path).suffix.lower()):
            ds = _read_dicom(fh, name, header_only=True, force=not _is_dicom_head(head))
            rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
            if rows <= 0 or cols <= 0:
                raise ImageError(name, "DICOM header has no image size (Rows/Columns missing or zero)")
            return rows, cols
        img = _pil_open(fh, name)
        try:
            w, h = img.size
            orientation = _exif_orientation(img)
        finally:
            img.close()
        return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def write_png(path: str | Path, array: np.ndarray, bits: int = 8) -> Path:
    """Write a 2-D array in [0, 1] as an 8- or 16-bit grayscale PNG, atomically (values are clipped)."""
    from PIL import Image

    from xray_xai._util.fsutil import atomic_path

    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, not {bits}")
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"write_png expects a 2-D array, got shape {arr.shape}")
    scale = 255 if bits == 8 else 65535
    ints = np.rint(np.clip(np.nan_to_num(arr), 0.0, 1.0) * scale).astype(np.uint8 if bits == 8 else np.uint16)
    img = Image.fromarray(ints)
    with atomic_path(path, suffix=".png.tmp") as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


# --------------------------------------------------------------------------------------------------------- internal


@contextmanager
def _open_source(path: str | Path) -> Iterator[IO[bytes]]:
    p = Path(path)
    try:
        fh = open(p, "rb")  # noqa: SIM115 - closed below, errors mapped to ImageError
    except FileNotFoundError:
        raise ImageError(p, "file not found") from None
    except IsADirectoryError:
        raise ImageError(p, "is a directory, not an image file") from None
    except OSError as exc:
        raise ImageError(p, f"cannot open ({exc.strerror or exc})") from None
    with fh:
        yield fh


def _read_head(fh: IO[bytes], name: str) -> bytes:
    try:
        head = fh.read(_HEAD)
        fh.seek(0)
    except OSError as exc:
        raise ImageError(name, f"cannot read ({exc.strerror or exc})") from None
    if not head:
        raise ImageError(name, "empty file (0 bytes)")
    return head


def _is_dicom_head(head: bytes) -> bool:
    return len(head) >= _HEAD and head[128:132] == b"DICM"


def _has_raster_signature(head: bytes) -> bool:
    """Magic numbers of the PIL formats we accept (so a PNG misnamed ``.dcm`` is still read as a PNG)."""
    return (
        head.startswith((b"\x89PNG", b"\xff\xd8", b"II*\x00", b"MM\x00*", b"BM"))
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or (len(head) > 2 and head[:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace())
    )


def _looks_dicom(head: bytes, suffix: str) -> bool:
    """DICOM by content (preamble + ``DICM``), or a DICOM suffix on content that is no known raster format
    (preamble-less DICOM files exist); the content wins over the extension."""
    return _is_dicom_head(head) or (suffix in DICOM_SUFFIXES and not _has_raster_signature(head))


def _oneline(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _decode(
    fh: IO[bytes], name: str, suffix: str, strict: bool = False, orient: bool = True
) -> tuple[np.ndarray, Damage | None]:
    head = _read_head(fh, name)
    damage = None
    if _looks_dicom(head, suffix):
        arr = _decode_dicom(fh, name, force=not _is_dicom_head(head))
    else:
        arr, damage = _decode_pil(fh, name, strict, orient)
    arr = np.nan_to_num(np.asarray(arr, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.ascontiguousarray(np.clip(arr, 0.0, 1.0, out=arr)), damage


def _check_pixels(name: str, h: int, w: int) -> None:
    if h <= 0 or w <= 0:
        raise ImageError(name, f"image has no pixels ({w} x {h})")
    limit = max_pixels()
    if h * w > limit:
        raise ImageError(
            name,
            f"image too large ({w} x {h} = {h * w:,} pixels > limit {limit:,}; "
            "set XRAY_XAI_MAX_PIXELS to raise it) - refused before decoding",
        )


# ------------------------------------------------------------------------------------------------------------- PIL


def _pil_open(fh: IO[bytes], name: str) -> PILImage.Image:
    import warnings

    from PIL import Image, UnidentifiedImageError

    _register_pil_plugins()
    try:
        with warnings.catch_warnings():
            # our own limit (checked right after) replaces PIL's warning; PIL's hard error is still mapped below
            warnings.simplefilter("ignore")  # PIL warns on odd headers (corrupt EXIF...); we raise or carry on
            img = Image.open(fh, formats=[f for f in PIL_FORMATS if f in Image.OPEN])
    except UnidentifiedImageError:
        raise ImageError(name, "not an image (content is not PNG, JPEG, TIFF, BMP, WebP, PNM or DICOM)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"image too large, refused before decoding ({_oneline(exc)})") from None
    except Exception as exc:  # a corrupt header can raise nearly anything inside a PIL plugin
        raise ImageError(name, f"corrupt image header ({_oneline(exc)})") from None
    w, h = img.size
    try:
        _check_pixels(name, h, w)
    except ImageError:
        img.close()
        raise
    return img


def _register_pil_plugins() -> None:
    """Import the decoders of :data:`PIL_FORMATS` (``Image.open(formats=...)`` only sees registered ones) without
    ``Image.init()``, which would load every PIL plugin."""
    import importlib

    for module in (
        "PngImagePlugin",
        "JpegImagePlugin",
        "MpoImagePlugin",
        "TiffImagePlugin",
        "BmpImagePlugin",
        "WebPImagePlugin",
        "PpmImagePlugin",
    ):
        try:
            importlib.import_module(f"PIL.{module}")
        except ImportError:  # pragma: no cover - e.g. a PIL built without WebP
            continue


def _exif_orientation(img: PILImage.Image) -> int:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # broken EXIF is not worth refusing a film for
        return 1


def _decode_pil(
    fh: IO[bytes], name: str, strict: bool = False, orient: bool = True
) -> tuple[np.ndarray, Damage | None]:
    import warnings

    from PIL import ImageOps

    img = _pil_open(fh, name)
    opened, damage = [img], None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": the pixels are what we care about
            try:
                img.load()
            except Exception as exc:
                if not (is_truncation(exc) and img.format in SALVAGE_FORMATS):
                    raise
                img, damage = _salvage(fh, name, exc, strict)
                opened.append(img)
            if orient and _exif_orientation(img) != 1:
                img = ImageOps.exif_transpose(img)
            return _pil_to_gray(img), damage
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(name, "not enough memory to decode this image") from None
    except Exception as exc:  # OSError "image file is truncated", SyntaxError "broken PNG file", zlib errors...
        raise ImageError(name, f"truncated or corrupt image ({_oneline(exc)})") from None
    finally:
        for each in opened:
            each.close()


def _salvage(fh: IO[bytes], name: str, exc: BaseException, strict: bool) -> tuple[PILImage.Image, Damage]:
    """A stream that ends early, decoded as far as it goes (:func:`xray_xai.data.damaged.salvage`), if little is
    missing and not ``strict``; else :class:`ImageError` with the measured damage."""
    fh.seek(0)
    found = salvage(fh.read())
    if found is None:  # not measurable: the old message
        raise ImageError(name, f"truncated or corrupt image ({_oneline(exc)})") from None
    img, damage = found
    if strict or not damage.keep:
        img.close()
        why = (
            f"refused: under {MIN_ROWS_DECODED:.0%} of the rows decoded"
            if not damage.keep
            else "refused: strict reading"
        )
        raise ImageError(name, f"truncated or corrupt image ({damage.describe()}; {why})")
    return img, damage


def _luminance(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    return np.asarray(_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b, dtype=np.float32)


def _pil_to_gray(img: PILImage.Image) -> np.ndarray:
    """Any PIL mode to float32 gray in [0, 1]."""
    mode = img.mode
    if mode.startswith("I;16"):
        return np.asarray(img, dtype=np.uint16).astype(np.float32) / 65535.0
    if mode == "I":  # 32-bit integers: 16-bit data from older PIL or TIFF; scale by the range the values fit
        arr = np.asarray(img, dtype=np.float64)
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return (arr / (255.0 if arr.max() <= 255 else 65535.0)).astype(np.float32)
        return _minmax(arr)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        if finite.size and finite.min() >= 0 and finite.max() <= 1:
            return arr.astype(np.float32)
        return _minmax(np.nan_to_num(arr))
    if mode == "L":
        return np.asarray(img, dtype=np.uint8).astype(np.float32) / 255.0
    if mode in ("LA", "La"):
        la = np.asarray(img.convert("LA"), dtype=np.float32) / 255.0
        return np.asarray(la[..., 0] * la[..., 1], dtype=np.float32)
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return np.asarray(_luminance(rgba) * rgba[..., 3], dtype=np.float32)
    if mode != "RGB":  # "1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"...
        img = img.convert("L") if mode == "1" else img.convert("RGB")
        if img.mode == "L":
            return np.asarray(img, dtype=np.uint8).astype(np.float32) / 255.0
    return _luminance(np.asarray(img, dtype=np.uint8)) / 255.0


def _minmax(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if arr.size == 0:
        return arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------- DICOM


def _read_dicom(fh: IO[bytes], name: str, *, header_only: bool, force: bool) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(fh, stop_before_pixels=header_only, force=force)
    except Exception as exc:
        raise ImageError(name, f"not a readable DICOM file ({_oneline(exc)})") from None


def _decode_dicom(fh: IO[bytes], name: str, *, force: bool) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about every odd-but-harmless value
        ds = _read_dicom(fh, name, header_only=False, force=force)
        try:
            return _dicom_pixels(ds, name)
        except ImageError:
            raise
        except MemoryError:
            raise ImageError(name, "not enough memory to decode this DICOM image") from None
        except Exception as exc:
            raise ImageError(name, f"corrupt DICOM image ({_oneline(exc)})") from None


def _dicom_pixels(ds: Any, name: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageError(name, "DICOM file has no pixel data (PixelData element missing)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageError(name, f"multi-frame DICOM ({frames} frames) is not supported; export a single frame")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_pixels(name, rows, cols)

    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        raw = ds.pixel_array
    except Exception as exc:
        if tsyntax is not None and getattr(tsyntax, "is_compressed", False):
            raise ImageError(
                name,
                f"compressed DICOM ({tsyntax.name}) could not be decoded ({_oneline(exc)}); if the file is valid, "
                "a decoder is missing: pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg (or python-gdcm)",
            ) from None
        raise ImageError(name, f"cannot decode DICOM pixel data ({_oneline(exc)})") from None

    arr = np.asarray(raw)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # colour DICOM (pydicom already converted YBR to RGB)
        luma = _luminance(arr[..., :3])
        bits = int(ds.get("BitsStored", 8) or 8)
        return luma / float(2**bits - 1) if arr.dtype.kind == "u" and 1 <= bits <= 16 else _minmax(luma)
    if arr.ndim != 2:
        raise ImageError(name, f"unsupported DICOM pixel array shape {arr.shape}")

    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    voi = _voi_range(values, ds)
    if voi is not None:
        windowed, lo, hi = voi
        out = np.clip((windowed - lo) / (hi - lo), 0.0, 1.0) if hi > lo else _minmax(windowed)
    else:
        out = _minmax(values)
    out = np.asarray(out, dtype=np.float32)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        out = 1.0 - out  # MONOCHROME1: low values are bright; flip so that bone is bright as in MONOCHROME2
    return out


def _voi_range(values: np.ndarray, ds: Any) -> tuple[np.ndarray, float, float] | None:
    """Apply the file's VOI LUT or window; return the result and its declared output range, or None if absent."""
    seq = ds.get("VOILUTSequence")
    has_lut = bool(seq) and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]
    has_window = "WindowCenter" in ds and "WindowWidth" in ds and ds.WindowCenter is not None
    if not (has_lut or has_window):
        return None
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            out, probe = _apply_voi(values, ds, seq if has_lut else None)
    except Exception:  # a malformed window (width 0, text values) or LUT: fall back to min-max
        return None
    lo, hi = float(np.min(probe)), float(np.max(probe))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return out, lo, hi


def _apply_voi(values: np.ndarray, ds: Any, seq: Any) -> tuple[np.ndarray, np.ndarray]:
    """pydicom's VOI step, plus a probe through the same step that reveals its output range (the window's or
    LUT's full scale), so that a film which does not saturate its window is not re-stretched."""
    from pydicom.pixels import apply_voi_lut

    if seq is not None:
        nr, first = int(seq[0].LUTDescriptor[0]) or 65536, int(seq[0].LUTDescriptor[1])
        lut_in = np.rint(values).astype(np.int64)
        out = np.asarray(apply_voi_lut(lut_in, ds, prefer_lut=True), dtype=np.float64)
        probe = np.asarray(apply_voi_lut(np.arange(first, first + nr, dtype=np.int64), ds, prefer_lut=True))
    else:
        out = np.asarray(apply_voi_lut(values, ds, prefer_lut=False), dtype=np.float64)
        probe = np.asarray(apply_voi_lut(np.array([-1e12, 1e12]), ds, prefer_lut=False), dtype=np.float64)
    return out, probe
