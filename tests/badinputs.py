"""Generators of bad inputs for the reliability tests: each function writes one malformed file (or tree) into a
folder and returns its path. Nothing binary is committed; every file is made here from a few lines of code, so the
catalogue stays reviewable and the fuzz tests can start from the same seeds.

The catalogue :data:`BAD_IMAGES` maps a short name to (writer, words the error message must contain); the tests
parametrize over it, so adding a case here adds it to every command's test.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "BAD_IMAGES",
    "GOOD_ODD_IMAGES",
    "KEPT_DAMAGED_IMAGES",
    "PickleBomb",
    "cmyk_jpeg",
    "corrupt_dicom",
    "decompression_bomb",
    "dicom_bytes",
    "dicom_compressed",
    "dicom_multiframe",
    "dicom_no_pixels",
    "fracatlas_missing_columns",
    "mura_empty_study",
    "mura_label_mismatch",
    "mura_missing_csv",
    "nan_features",
    "one_pixel",
    "other_arch_checkpoint",
    "palette_png",
    "pickle_checkpoint",
    "png16",
    "png_bytes",
    "poison",
    "rgba_png",
    "slightly_cut_film",
    "text_as_png",
    "tiny_checkpoint",
    "torch_pickle_checkpoint",
    "truncated_jpeg",
    "truncated_png",
    "truncated_safetensors",
    "valid_dicom",
    "zero_byte",
]


def _film(size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth gradient with noise: compresses badly enough that truncating the file loses pixel data."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    return ((x + y) / (2 * size) * 200 + rng.integers(0, 55, (size, size))).astype(np.uint8)


def png_bytes(size: int = 64, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_film(size, seed)).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(size: int = 64, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_film(size, seed)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ raster images


def truncated_png(folder: Path, name: str = "truncated.png") -> Path:
    """A PNG cut in the middle of its IDAT chunk (header intact, so only decoding finds out)."""
    data = png_bytes()
    path = folder / name
    path.write_bytes(data[: len(data) // 2])
    return path


def truncated_jpeg(folder: Path, name: str = "truncated.jpg") -> Path:
    """A JPEG cut in the middle of its entropy-coded data."""
    data = _jpeg_bytes()
    path = folder / name
    path.write_bytes(data[: len(data) // 2])
    return path


def slightly_cut_film(folder: Path, name: str = "slightly_cut.jpg", *, size: int = 256, cut: int = 40) -> Path:
    """A film (PNG or JPEG by ``name``) whose last ``cut`` bytes are gone: end marker lost, a few rows missing.

    Kept with a warning by default, refused with ``strict``: :mod:`xray_xai.data.damaged` measures the damage."""
    data = png_bytes(size) if name.lower().endswith(".png") else _jpeg_bytes(size)
    path = folder / name
    path.write_bytes(data[:-cut])
    return path


def zero_byte(folder: Path, name: str = "empty.png") -> Path:
    path = folder / name
    path.write_bytes(b"")
    return path


def text_as_png(folder: Path, name: str = "notes.png") -> Path:
    """A text file with an image extension (a renamed CSV, a README saved as .png)."""
    path = folder / name
    path.write_text("image_id,label\nthis is not an image,1\n")
    return path


def png16(folder: Path, name: str = "sixteen.png") -> Path:
    """A valid 16-bit grayscale PNG (DICOM exports often are); must be read, not refused."""
    arr = (_film().astype(np.uint16) * 257).astype(np.uint16)
    path = folder / name
    Image.fromarray(arr).save(path, format="PNG")
    return path


def one_pixel(folder: Path, name: str = "one.png") -> Path:
    """A valid 1x1 image: decodable, but nothing a CNN could use; must not crash resizing or cropping."""
    path = folder / name
    Image.fromarray(np.array([[128]], dtype=np.uint8)).save(path, format="PNG")
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def decompression_bomb(folder: Path, name: str = "bomb.png", side: int = 100_000) -> Path:
    """A 100 000 x 100 000 grayscale PNG header (10 gigapixels) followed by a few hundred bytes of zlib data that
    would inflate to gigabytes: must be refused from the header, before any decoding."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale, no interlace
    # a compressor fed zeros row by row; we stop after a few rows (the decoder would ask for 10 GB more)
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    idat = b"".join(comp.compress(row) for _ in range(4)) + comp.flush(zlib.Z_SYNC_FLUSH)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    path = folder / name
    path.write_bytes(data)
    return path


def rgba_png(folder: Path, name: str = "rgba.png") -> Path:
    """A valid RGBA PNG (screenshots); must be read as gray."""
    g = _film()
    arr = np.stack([g, g, g, np.full_like(g, 255)], axis=-1)
    path = folder / name
    Image.fromarray(arr, mode="RGBA").save(path, format="PNG")
    return path


def palette_png(folder: Path, name: str = "palette.png") -> Path:
    """A valid palette (mode P) PNG."""
    path = folder / name
    Image.fromarray(_film()).convert("P").save(path, format="PNG")
    return path


def cmyk_jpeg(folder: Path, name: str = "cmyk.jpg") -> Path:
    """A valid CMYK JPEG (print workflows)."""
    g = _film()
    path = folder / name
    Image.fromarray(np.stack([g, g, g], axis=-1)).convert("CMYK").save(path, format="JPEG")
    return path


# ------------------------------------------------------------------------------------------------------- DICOM


def dicom_bytes(
    *,
    rows: int = 32,
    cols: int = 32,
    frames: int = 1,
    pixels: bool = True,
    transfer_syntax: str | None = None,
    pixel_data: bytes | None = None,
) -> bytes:
    """A small MONOCHROME2 16-bit DICOM file (explicit VR little endian by default) as bytes."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["xray-xai-badinputs"])
    meta.TransferSyntaxUID = UID(transfer_syntax) if transfer_syntax else ExplicitVRLittleEndian
    ds = FileDataset("bad.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientID = "BAD0001"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if pixels:
        if pixel_data is not None:
            ds.PixelData = pixel_data
        elif transfer_syntax is not None:  # encapsulated (compressed) syntax: one fragment of junk "codestream"
            ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)] * max(frames, 1))
            ds["PixelData"].VR = "OB"
        else:
            arr = (np.arange(rows * cols * frames, dtype=np.uint16) % 4096).reshape(frames, rows, cols)
            ds.PixelData = arr.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def valid_dicom(folder: Path, name: str = "valid.dcm") -> Path:
    path = folder / name
    path.write_bytes(dicom_bytes())
    return path


def corrupt_dicom(folder: Path, name: str = "corrupt.dcm") -> Path:
    """Preamble and ``DICM`` magic, then a data element that claims 4 GB and garbage after it."""
    good = dicom_bytes()
    body = bytearray(good)
    # keep the preamble, DICM and the first (group length) meta element; overwrite the rest with junk
    body[144:] = (b"\xe0\x7f\x10\x00OW\x00\x00\xff\xff\xff\xfe" + bytes(range(256)) * 4)[: len(body) - 144]
    path = folder / name
    path.write_bytes(bytes(body[: len(body) // 2]))
    return path


def dicom_no_pixels(folder: Path, name: str = "nopixels.dcm") -> Path:
    """A well-formed DICOM header (a structured report, say) without a PixelData element."""
    path = folder / name
    path.write_bytes(dicom_bytes(pixels=False))
    return path


def dicom_compressed(folder: Path, name: str = "jpegls.dcm") -> Path:
    """Pixel data in JPEG-LS (1.2.840.10008.1.2.4.80), for which no decoder is installed here."""
    path = folder / name
    path.write_bytes(dicom_bytes(transfer_syntax="1.2.840.10008.1.2.4.80"))
    return path


def dicom_multiframe(folder: Path, name: str = "multiframe.dcm") -> Path:
    """Three frames of 32 x 32 (a cine or a tomosynthesis stack), not a single film."""
    path = folder / name
    path.write_bytes(dicom_bytes(frames=3))
    return path


# ------------------------------------------------------------------------------------------------- catalogues

Writer = Callable[[Path], Path]

#: name -> (writer, words the one-line error must contain besides the file name). Every entry must be refused.
BAD_IMAGES: dict[str, tuple[Writer, tuple[str, ...]]] = {
    "truncated-png": (truncated_png, ("truncated",)),
    "truncated-jpeg": (truncated_jpeg, ("truncated",)),
    "zero-byte": (zero_byte, ("empty",)),
    "text-as-png": (text_as_png, ("not an image",)),
    "decompression-bomb": (decompression_bomb, ("too large",)),
    "corrupt-dicom": (corrupt_dicom, ("dicom",)),
    "dicom-no-pixels": (dicom_no_pixels, ("no pixel data",)),
    "dicom-compressed": (dicom_compressed, ("compressed",)),
    "dicom-multiframe": (dicom_multiframe, ("multi-frame",)),
}

#: unusual but valid images: every command must read them (no error, values in [0, 1]).
GOOD_ODD_IMAGES: dict[str, Writer] = {
    "png16": png16,
    "one-pixel": one_pixel,
    "rgba": rgba_png,
    "palette": palette_png,
    "cmyk-jpeg": cmyk_jpeg,
    "valid-dicom": valid_dicom,
}

#: films whose stream ends a little early: read (with a warning naming the damage), refused only with ``strict``.
KEPT_DAMAGED_IMAGES: dict[str, Writer] = {
    "slightly-cut-png": lambda folder: slightly_cut_film(folder, "slightly_cut.png"),
    "slightly-cut-jpeg": lambda folder: slightly_cut_film(folder, "slightly_cut.jpg"),
}


def poison(root: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Replace the first images (sorted) of a data set tree with bad files of the same name (same extension, so
    readers list them) and return {case name: path}. The tree keeps its CSVs: only decoding can find the damage."""
    names = list(names or BAD_IMAGES)
    images = sorted(
        p for p in root.rglob("*.png") if not p.name.startswith(".") and "masks" not in p.relative_to(root).parts
    )
    if len(images) < len(names) + 4:
        raise ValueError(f"need at least {len(names) + 4} PNGs under {root}, found {len(images)}")
    out: dict[str, Path] = {}
    tmp = root / ".badinputs-tmp"
    tmp.mkdir(exist_ok=True)
    for case, target in zip(names, images, strict=False):
        writer = BAD_IMAGES[case][0]
        made = writer(tmp)
        target.write_bytes(made.read_bytes())
        made.unlink()
        out[case] = target
    shutil.rmtree(tmp)
    return out


# -------------------------------------------------------------------------------------------------- data sets


def mura_missing_csv(root: Path) -> Path:
    """A tiny MURA tree whose ``train_labeled_studies.csv`` is gone (labels must come from folder names)."""
    from xray_xai.testing.datasets import write_tiny_mura

    mura = write_tiny_mura(root)
    (mura / "train_labeled_studies.csv").unlink()
    return root


def mura_label_mismatch(root: Path) -> Path:
    """A tiny MURA tree whose CSV labels the first ``study1_positive`` study 0."""
    from xray_xai.testing.datasets import write_tiny_mura

    mura = write_tiny_mura(root)
    csv = mura / "train_labeled_studies.csv"
    lines = csv.read_text().splitlines()
    for i, line in enumerate(lines):
        if "study1_positive" in line:
            lines[i] = line.rsplit(",", 1)[0] + ",0"
            break
    csv.write_text("\n".join(lines) + "\n")
    return root


def mura_empty_study(root: Path) -> Path:
    """A tiny MURA tree with one study folder listed in the CSV that holds no images."""
    from xray_xai.testing.datasets import write_tiny_mura

    mura = write_tiny_mura(root)
    study = mura / "train" / "XR_WRIST" / "patient00002" / "study1_negative"
    for f in study.iterdir():
        f.unlink()
    return root


def fracatlas_missing_columns(root: Path, drop: tuple[str, ...] = ("fractured", "hand")) -> Path:
    """A tiny FracAtlas tree whose dataset.csv lacks some columns."""
    from xray_xai.testing.datasets import write_tiny_fracatlas

    write_tiny_fracatlas(root)
    csv = root / "dataset.csv"
    lines = [line.split(",") for line in csv.read_text().splitlines()]
    keep = [i for i, h in enumerate(lines[0]) if h not in drop]
    csv.write_text("\n".join(",".join(row[i] for i in keep) for row in lines) + "\n")
    return root


def nan_features(n: int = 12, d: int = 8, seed: int = 0) -> np.ndarray:
    """Features with a NaN row and an inf cell (a model that diverged): clusterers must refuse or drop them."""
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    x[2, :] = np.nan
    x[5, 3] = np.inf
    return x


# ------------------------------------------------------------------------------------------------- checkpoints


def tiny_checkpoint(folder: Path, name: str = "cnn-small", **config: Any) -> Path:
    """An untrained model saved through the store (safetensors + sidecar); returns the checkpoint folder."""
    from xray_xai import get_model
    from xray_xai.models.store import save_model

    model = get_model(name)(**config)
    return save_model(model, folder, metadata={"dataset": "badinputs"})


def other_arch_checkpoint(folder: Path) -> Path:
    """cnn-small weights under a sidecar that says ``convnet``: the weights do not fit the architecture."""
    ckpt = tiny_checkpoint(folder)
    side = ckpt / "model.json"
    data = json.loads(side.read_text())
    data["name"] = "convnet"
    data["class"] = "xray_xai_plugins.models.small_cnns:ConvNet"
    data["config"] = {}
    side.write_text(json.dumps(data))
    return ckpt


def truncated_safetensors(folder: Path, keep_checksum: bool = False) -> Path:
    """A store checkpoint whose weights file lost its second half. Without ``keep_checksum`` the sidecar's
    checksum is removed too, so the safetensors reader itself must notice."""
    ckpt = tiny_checkpoint(folder)
    weights = ckpt / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    if not keep_checksum:
        side = ckpt / "model.json"
        meta = json.loads(side.read_text())
        meta.pop("weights_sha256", None)
        side.write_text(json.dumps(meta))
    return ckpt


class PickleBomb:
    """Unpickling this object creates the file ``marker`` (harmless stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def pickle_checkpoint(folder: Path, marker: Path, name: str = "model.pt") -> Path:
    """A raw pickle named like a checkpoint; unpickling it would create ``marker``."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"state_dict": PickleBomb(marker)}))
    return path


def torch_pickle_checkpoint(folder: Path, marker: Path, name: str = "model.pt") -> Path:
    """A ``torch.save`` zip whose pickle would create ``marker``: what a malicious .pt download looks like."""
    import torch

    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": PickleBomb(marker)}, path)
    return path
