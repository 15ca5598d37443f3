"""Decoding films: formats, intensity conventions, DICOM pipeline and the guards (every failure is an ImageError)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from xray_xai.data import images as xio
from xray_xai.data.images import image_size, is_image_file, read_image, read_image_bytes, write_png
from xray_xai.errors import ImageError

# ----------------------------------------------------------------------------------------------------------- helpers


def _dicom(path: Path, arr: np.ndarray, photometric: str = "MONOCHROME2", *, pixels: bool = True, **extra: Any) -> Path:
    """Write a single-frame DICOM with pydicom (Explicit VR Little Endian unless ``transfer_syntax`` is given)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ts = extra.pop("transfer_syntax", ExplicitVRLittleEndian)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    for key, value in extra.items():
        setattr(ds, key, value)
    if pixels:
        if ts == ExplicitVRLittleEndian:
            ds.PixelData = arr.tobytes()
        else:  # fake encapsulated frame: a decoder (if any) must fail on it
            ds.PixelData = encapsulate([b"\xff\x4f\xff\x51 not really a codestream" * 3])
    ds.save_as(path, enforce_file_format=True)
    return path


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width x height`` 8-bit gray, with a tiny IDAT: a decompression-bomb shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _assert_image_error(path: Path, match: str) -> ImageError:
    with pytest.raises(ImageError, match=match) as info:
        read_image(path)
    msg = str(info.value)
    assert path.name in msg and "\n" not in msg
    return info.value


RAMP16 = (np.arange(12 * 16, dtype=np.uint32).reshape(12, 16) * 300).astype(np.uint16)

# ------------------------------------------------------------------------------------------------------ raster files


def test_png_8bit_gray(tmp_path: Path) -> None:
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(arr).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.dtype == np.float32 and out.shape == (8, 8)
    np.testing.assert_allclose(out, arr / 255.0, atol=1e-6)


def test_png_16bit_uses_full_depth(tmp_path: Path) -> None:
    Image.fromarray(RAMP16).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    np.testing.assert_allclose(out, RAMP16 / 65535.0, atol=1e-6)
    assert len(np.unique(out)) == RAMP16.size  # no 8-bit quantisation on the way


def test_rgb_becomes_luminance(tmp_path: Path) -> None:
    arr = np.zeros((2, 3, 3), dtype=np.uint8)
    arr[0, 0] = (255, 0, 0)
    arr[0, 1] = (0, 255, 0)
    arr[0, 2] = (0, 0, 255)
    arr[1, :] = 255
    Image.fromarray(arr).save(tmp_path / "rgb.png")
    out = read_image(tmp_path / "rgb.png")
    np.testing.assert_allclose(out[0], [0.299, 0.587, 0.114], atol=1e-5)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-5)


def test_rgba_alpha_composited_on_black(tmp_path: Path) -> None:
    arr = np.full((2, 2, 4), 255, dtype=np.uint8)
    arr[0, 0, 3] = 0
    arr[0, 1, 3] = 128
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, [[0.0, 128 / 255], [1.0, 1.0]], atol=1e-5)


def test_palette_png(tmp_path: Path) -> None:
    img = Image.new("P", (4, 2))
    img.putpalette([0, 0, 0, 255, 255, 255, 255, 0, 0] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2, 1, 2, 0, 0, 1])
    img.save(tmp_path / "pal.png")
    out = read_image(tmp_path / "pal.png")
    np.testing.assert_allclose(out, [[0, 1, 0.299, 1], [0.299, 0, 0, 1]], atol=1e-5)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    img = Image.new("CMYK", (16, 16), (0, 0, 0, 0))  # white
    img.paste((0, 0, 0, 255), (0, 8, 16, 16))  # black bottom half
    img.save(tmp_path / "cmyk.jpg", quality=95)
    out = read_image(tmp_path / "cmyk.jpg")
    assert out.shape == (16, 16)
    assert out[:6].mean() > 0.9 and out[10:].mean() < 0.1


def test_grayscale_jpeg(tmp_path: Path) -> None:
    Image.new("L", (20, 10), 200).save(tmp_path / "g.jpeg")
    out = read_image(tmp_path / "g.jpeg")
    assert out.shape == (10, 20)
    assert abs(float(out.mean()) - 200 / 255) < 0.02


def test_exif_orientation_applied(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(arr).save(tmp_path / "rot.png", exif=exif)
    out = read_image(tmp_path / "rot.png")
    assert out.shape == (3, 2)
    np.testing.assert_allclose(out, np.rot90(arr, k=-1) / 255.0, atol=1e-6)
    assert image_size(tmp_path / "rot.png") == (3, 2)


def test_one_pixel_image(tmp_path: Path) -> None:
    Image.new("L", (1, 1), 255).save(tmp_path / "one.png")
    assert read_image(tmp_path / "one.png").tolist() == [[1.0]]


def test_read_image_bytes_matches_file(tmp_path: Path) -> None:
    Image.fromarray(RAMP16).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    np.testing.assert_array_equal(read_image_bytes(data, "a.png"), read_image(tmp_path / "a.png"))
    with pytest.raises(ImageError, match=r"^upload\.png: .*truncated"):
        read_image_bytes(data[: len(data) // 2], "upload.png")


def test_image_size_from_header(tmp_path: Path) -> None:
    Image.new("L", (30, 20)).save(tmp_path / "a.png")
    assert image_size(tmp_path / "a.png") == (20, 30)
    _dicom(tmp_path / "a.dcm", np.zeros((5, 7), np.uint16))
    assert image_size(tmp_path / "a.dcm") == (5, 7)
    (tmp_path / "big.png").write_bytes(_png_header_only(50_000, 40_000))
    with pytest.raises(ImageError, match="too large"):
        image_size(tmp_path / "big.png")


def test_write_png_roundtrip(tmp_path: Path) -> None:
    arr = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    write_png(tmp_path / "out8.png", arr)
    write_png(tmp_path / "out16.png", arr, bits=16)
    np.testing.assert_allclose(read_image(tmp_path / "out8.png"), arr, atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "out16.png"), arr, atol=0.5 / 65535 + 1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out16.png", "out8.png"]  # no temp files left


def test_is_image_file(tmp_path: Path) -> None:
    Image.new("L", (2, 2)).save(tmp_path / "a.PNG")
    (tmp_path / "._a.png").write_bytes(b"\0" * 10)  # macOS resource fork
    (tmp_path / "notes.txt").write_text("x")
    _dicom(tmp_path / "IM0001", np.zeros((2, 2), np.uint16))  # extension-less DICOM, as on many CDs
    (tmp_path / "sub.png").mkdir()
    assert is_image_file(tmp_path / "a.PNG")
    assert is_image_file(tmp_path / "IM0001")
    assert not is_image_file(tmp_path / "._a.png")
    assert not is_image_file(tmp_path / "notes.txt")
    assert not is_image_file(tmp_path / "sub.png")
    assert not is_image_file(tmp_path / "missing.png")
    assert ".dcm" in xio.IMAGE_SUFFIXES and ".jpg" in xio.IMAGE_SUFFIXES


# ------------------------------------------------------------------------------------------------------------- DICOM


def test_dicom_monochrome2_and_monochrome1_inverted(tmp_path: Path) -> None:
    m2 = read_image(_dicom(tmp_path / "m2.dcm", RAMP16))
    m1 = read_image(_dicom(tmp_path / "m1.dcm", RAMP16, "MONOCHROME1"))
    assert m2.dtype == np.float32 and m2.shape == RAMP16.shape
    assert m2.min() == 0.0 and m2.max() == 1.0  # no window: min-max
    np.testing.assert_allclose(m2, (RAMP16 - RAMP16.min()) / float(np.ptp(RAMP16)), atol=1e-6)
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)


def test_dicom_8bit(tmp_path: Path) -> None:
    arr = np.array([[0, 50], [100, 200]], dtype=np.uint8)
    out = read_image(_dicom(tmp_path / "a.dcm", arr))
    np.testing.assert_allclose(out, arr / 200.0, atol=1e-6)


def test_dicom_window_applied(tmp_path: Path) -> None:
    arr = np.array([[0, 1000, 2000, 3000, 4000]], dtype=np.uint16)
    out = read_image(_dicom(tmp_path / "w.dcm", arr, WindowCenter=2000, WindowWidth=2000))
    assert out[0, 0] == 0.0 and out[0, 1] == 0.0  # below the window
    assert out[0, 3] == 1.0 and out[0, 4] == 1.0  # above
    assert 0.45 < out[0, 2] < 0.55  # the centre maps to mid-gray, not re-stretched


def test_dicom_rescale_then_window(tmp_path: Path) -> None:
    """Window values are in rescaled (modality) units: a window written for HU-like values must work."""
    arr = np.array([[0, 1000, 2000, 3000]], dtype=np.uint16)
    # stored -> 2 * v - 1000: [-1000, 1000, 3000, 5000]; window [0, 4000] centre 2000
    out = read_image(
        _dicom(tmp_path / "r.dcm", arr, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=2000, WindowWidth=4000)
    )
    assert out[0, 0] == 0.0 and out[0, 3] == 1.0
    assert 0.2 < out[0, 1] < 0.3 and 0.7 < out[0, 2] < 0.8


def test_dicom_rescale_negative_slope_without_window(tmp_path: Path) -> None:
    arr = np.array([[0, 100, 200]], dtype=np.uint16)
    out = read_image(_dicom(tmp_path / "n.dcm", arr, RescaleSlope=-1, RescaleIntercept=0))
    np.testing.assert_allclose(out, [[1.0, 0.5, 0.0]], atol=1e-6)  # the slope's sign is honoured


def test_dicom_voi_lut_applied(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.add_new(0x00283002, "US", [4, 0, 16])  # LUTDescriptor: 4 entries, first mapped value 0, 16 bits
    item.add_new(0x00283006, "US", [0, 1000, 3000, 65535])  # LUTData
    arr = np.array([[0, 1, 2, 3, 10]], dtype=np.uint16)
    out = read_image(_dicom(tmp_path / "lut.dcm", arr, VOILUTSequence=Sequence([item])))
    np.testing.assert_allclose(out, [[0, 1000 / 65535, 3000 / 65535, 1, 1]], atol=1e-6)


def test_dicom_bad_window_falls_back_to_minmax(tmp_path: Path) -> None:
    arr = np.array([[0, 10, 20]], dtype=np.uint16)
    out = read_image(_dicom(tmp_path / "w0.dcm", arr, WindowCenter=0, WindowWidth=0))
    np.testing.assert_allclose(out, [[0, 0.5, 1]], atol=1e-6)


def test_dicom_signed_and_rgb(tmp_path: Path) -> None:
    signed = np.array([[-100, 0, 100]], dtype=np.int16)
    out = read_image(_dicom(tmp_path / "s.dcm", signed, PixelRepresentation=1))
    np.testing.assert_allclose(out, [[0, 0.5, 1]], atol=1e-6)
    ds = pytest.importorskip("pydicom").dcmread(tmp_path / "s.dcm")
    if not hasattr(ds, "set_pixel_data"):  # pydicom < 3
        pytest.skip("needs pydicom >= 3 to write an RGB dataset")
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (0, 255, 0)
    ds.set_pixel_data(rgb, "RGB", 8)
    ds.save_as(tmp_path / "rgb.dcm")
    np.testing.assert_allclose(read_image(tmp_path / "rgb.dcm"), [[0.299, 0], [0, 0.587]], atol=1e-5)


def test_dicom_detected_by_content_not_extension(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "film.png", RAMP16)  # a DICOM misnamed .png
    assert read_image(path).shape == RAMP16.shape
    Image.fromarray(RAMP16).save(tmp_path / "film.dcm", format="PNG")  # and a PNG misnamed .dcm
    np.testing.assert_allclose(read_image(tmp_path / "film.dcm"), RAMP16 / 65535.0, atol=1e-6)
    assert image_size(tmp_path / "film.dcm") == RAMP16.shape


def test_dicom_multiframe_refused(tmp_path: Path) -> None:
    _dicom(tmp_path / "mf.dcm", np.zeros((4, 4), np.uint16), NumberOfFrames=3)
    _assert_image_error(tmp_path / "mf.dcm", "multi-frame")


def test_dicom_without_pixels_refused(tmp_path: Path) -> None:
    _dicom(tmp_path / "np.dcm", np.zeros((4, 4), np.uint16), pixels=False)
    _assert_image_error(tmp_path / "np.dcm", "no pixel data")


def test_dicom_compressed_without_decoder(tmp_path: Path) -> None:
    from pydicom.uid import JPEG2000Lossless

    _dicom(tmp_path / "j2k.dcm", np.zeros((4, 4), np.uint16), transfer_syntax=JPEG2000Lossless)
    _assert_image_error(tmp_path / "j2k.dcm", r"compressed DICOM \(JPEG 2000.*decoder")


def test_dicom_truncated(tmp_path: Path) -> None:
    data = _dicom(tmp_path / "full.dcm", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 4000])
    _assert_image_error(tmp_path / "cut.dcm", "DICOM")


def test_dicom_bomb_refused_from_header(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "huge.dcm", np.zeros((2, 2), np.uint16))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 60_000, 60_000  # header claims 3.6 G pixels; the data is 8 bytes
    ds.save_as(path)
    _assert_image_error(path, "too large")


# ------------------------------------------------------------------------------------------------------------ guards


def test_missing_file_and_directory(tmp_path: Path) -> None:
    _assert_image_error(tmp_path / "nope.png", "not found")
    (tmp_path / "dir.png").mkdir()
    _assert_image_error(tmp_path / "dir.png", "directory")


def test_zero_byte(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    _assert_image_error(tmp_path / "empty.png", "empty file")


def test_text_named_png(tmp_path: Path) -> None:
    (tmp_path / "fake.png").write_text("this is not an image\n" * 20)
    _assert_image_error(tmp_path / "fake.png", r"not an image \(")


def test_text_named_dcm(tmp_path: Path) -> None:
    (tmp_path / "fake.dcm").write_text("this is not a DICOM file either\n" * 20)
    _assert_image_error(tmp_path / "fake.dcm", "DICOM")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / f"full{suffix}")
    data = (tmp_path / f"full{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    _assert_image_error(tmp_path / f"cut{suffix}", "truncated or corrupt")


def test_bomb_header_refused_before_decoding(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))  # 10 G pixels declared, ~100 bytes
    _assert_image_error(tmp_path / "bomb.png", "too large")


def test_max_pixels_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("L", (40, 30)).save(tmp_path / "a.png")
    monkeypatch.setattr(xio, "MAX_PIXELS", 1000)
    _assert_image_error(tmp_path / "a.png", r"too large \(40 x 30 = 1,200 pixels > limit 1,000")
    monkeypatch.setenv("XRAY_XAI_MAX_PIXELS", "2000")  # the environment wins over the module default
    assert read_image(tmp_path / "a.png").shape == (30, 40)
    monkeypatch.setenv("XRAY_XAI_MAX_PIXELS", "500")
    _assert_image_error(tmp_path / "a.png", "limit 500")


_PREFIXES = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff\xe0",
    b"II*\x00",
    b"BM",
    b"P5\n4 4\n255\n",
    b"\0" * 128 + b"DICM",
]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from(_PREFIXES),
    body=st.binary(max_size=600),
    name=st.sampled_from(["x.png", "x.jpg", "x.dcm", "x"]),
)
def test_random_bytes_decode_or_image_error(prefix: bytes, body: bytes, name: str) -> None:
    try:
        out = read_image_bytes(prefix + body, name)
    except ImageError as exc:
        assert str(exc).startswith(f"{name}: ") and "\n" not in str(exc)
        return
    assert out.dtype == np.float32 and out.ndim == 2 and out.size > 0
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


def test_fracatlas_film(fracatlas_root: Path) -> None:
    path = next(iter(sorted((fracatlas_root / "images" / "Fractured").glob("*.jpg"))))
    film = read_image(path)
    assert film.shape == image_size(path) and max(film.shape) <= 1024
    assert film.dtype == np.float32 and 0.0 <= film.min() < film.max() <= 1.0


# ------------------------------------------------------------------------------------------ films cut short (item 7)


def _cut(tmp_path: Path, suffix: str, cut: int | None) -> tuple[Path, np.ndarray]:
    """A 256 px noisy film saved as ``suffix``, then its last ``cut`` bytes removed (None: half the file)."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:256, 0:256]
    film = ((x + y) / 512 * 200 + rng.integers(0, 55, (256, 256))).astype(np.uint8)
    full = tmp_path / f"full{suffix}"
    Image.fromarray(film).save(full, **({"quality": 90} if suffix == ".jpg" else {}))
    data = full.read_bytes()
    cut_path = tmp_path / f"cut{suffix}"
    cut_path.write_bytes(data[: len(data) // 2] if cut is None else data[:-cut])
    return cut_path, read_image(full)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_slightly_cut_film_is_kept_with_a_warning_naming_file_and_damage(tmp_path: Path, suffix: str) -> None:
    path, whole = _cut(tmp_path, suffix, 40)
    film = xio.read_film(path)
    assert film.warning is not None and film.warning.severity == "warning"
    text = str(film.warning)
    kind = "PNG" if suffix == ".png" else "JPEG"
    assert text.startswith(f"{path}: {kind} stream ends early") and text.endswith(": kept"), text
    rows = int(text.split(" rows decoded")[0].split(", ")[-1].split(" of ")[0])
    assert 0.9 * 256 <= rows < 256 and f"the last {256 - rows} black" in text
    # the rows in the file decode as in the whole file; the rest is black
    np.testing.assert_array_equal(film.pixels[:rows], whole[:rows])
    assert not film.pixels[rows:].any()
    with pytest.warns(xio.DamagedImageWarning, match="stream ends early"):
        np.testing.assert_array_equal(read_image(path), film.pixels)
    with pytest.warns(xio.DamagedImageWarning):
        read_image_bytes(path.read_bytes(), name=path.name)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_slightly_cut_film_is_refused_when_strict(tmp_path: Path, suffix: str) -> None:
    path, _ = _cut(tmp_path, suffix, 40)
    with pytest.raises(ImageError, match=r"truncated or corrupt image \(.* stream ends early .*refused: strict"):
        xio.read_film(path, strict=True)
    with pytest.raises(ImageError, match="refused: strict"):
        read_image_bytes(path.read_bytes(), name=path.name, strict=True)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_badly_cut_film_is_refused_with_the_measured_damage(tmp_path: Path, suffix: str) -> None:
    path, _ = _cut(tmp_path, suffix, None)
    for strict in (False, True):
        with pytest.raises(ImageError, match=r"stream ends early .* of 256 rows decoded \(\d+\.\d %\)") as info:
            xio.read_film(path, strict=strict)
        assert str(info.value).startswith(f"{path}: truncated or corrupt image (")


def test_whole_films_carry_no_warning(tmp_path: Path) -> None:
    _, whole = _cut(tmp_path, ".jpg", 40)
    film = xio.read_film(tmp_path / "full.jpg")
    assert film.warning is None
    np.testing.assert_array_equal(film.pixels, whole)


def test_damage_threshold_is_the_documented_one() -> None:
    from xray_xai.data.damaged import MIN_ROWS_DECODED, Damage

    assert MIN_ROWS_DECODED == 0.90
    assert Damage("JPEG", 414, 454, 66).keep and not Damage("JPEG", 398, 454, 22).keep
    assert Damage("PNG", 9, 10, 0).keep and not Damage("PNG", 0, 0, 0).keep
    assert Damage("JPEG", 454, 454, 0).describe() == "JPEG stream ends early (no end marker), all 454 rows decoded"
