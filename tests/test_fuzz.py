"""Property tests over everything that parses untrusted bytes: the image reader, DICOM, and the MURA and FracAtlas
CSV readers. Any exception other than :class:`XrayXaiError` is a bug. The budgets keep this module well under 30 s;
``benchmarks/fuzz.py`` runs the same properties for longer (and with atheris when it is installed)."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import badinputs as bad
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xray_xai.data.images import read_image_bytes
from xray_xai.errors import XrayXaiError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

SEEDS: dict[str, bytes] = {
    "png": bad.png_bytes(size=16),
    "dcm": bad.dicom_bytes(rows=8, cols=8),
}


def _jpeg(size: int = 16) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.arange(size * size).reshape(size, size) % 256).astype(np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


SEEDS["jpg"] = _jpeg()


def check_image_bytes(data: bytes, name: str) -> None:
    """The property: either a float32 (H, W) array in [0, 1] or an XrayXaiError naming the upload."""
    try:
        arr = read_image_bytes(data, name)
    except XrayXaiError as exc:
        assert name in str(exc)
        assert "\n" not in str(exc)
        return
    assert arr.dtype == np.float32 and arr.ndim == 2 and arr.size > 0
    assert np.isfinite(arr).all() and float(arr.min()) >= 0.0 and float(arr.max()) <= 1.0


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """The seed with a few bytes overwritten, a slice removed or inserted, or cut short."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "delete", "insert"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            data = data[:pos]
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@FAST
@given(st.binary(max_size=512), st.sampled_from(["x.png", "x.dcm", "x", "x.jpg"]))
def test_random_bytes(data: bytes, name: str) -> None:
    check_image_bytes(data, name)


@FAST
@given(mutated(SEEDS["png"]))
def test_mutated_png(data: bytes) -> None:
    check_image_bytes(data, "fuzz.png")


@FAST
@given(mutated(SEEDS["jpg"]))
def test_mutated_jpeg(data: bytes) -> None:
    check_image_bytes(data, "fuzz.jpg")


@FAST
@given(mutated(SEEDS["dcm"]), st.sampled_from(["fuzz.dcm", "fuzz"]))
def test_mutated_dicom(data: bytes, name: str) -> None:
    check_image_bytes(data, name)


@FAST
@given(
    rows=st.integers(-2, 70000),
    cols=st.integers(-2, 70000),
    frames=st.integers(0, 3),
    pixel_data=st.one_of(st.none(), st.binary(max_size=64)),
)
def test_dicom_header_lies(rows: int, cols: int, frames: int, pixel_data: bytes | None) -> None:
    """Headers that disagree with their pixel data (size, frame count)."""
    try:
        data = bad.dicom_bytes(rows=max(rows, 0) % 65536, cols=max(cols, 0) % 65536, frames=frames or 1,
                               pixel_data=pixel_data if pixel_data is not None else b"\0" * 8)  # fmt: skip
    except Exception:  # pydicom refused to write such a header: nothing to read
        return
    check_image_bytes(data, "lies.dcm")


# ------------------------------------------------------------------------------------------------- CSV readers

_cell = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)
_mura_line = st.one_of(
    st.lists(_cell, max_size=4).map(",".join),
    st.builds(
        lambda split, region, pat, study, tail: f"MURA-v1.1/{split}/{region}/{pat}/{study}/{tail}",
        st.sampled_from(["train", "valid", "test", ""]),
        st.sampled_from(["XR_WRIST", "XR_ELBOW", "XR_X", "", ".."]),
        st.sampled_from(["patient00001", "patient00002", "p", ""]),
        st.sampled_from(["study1_positive", "study2_negative", "study1_negative", "studyX", ""]),
        st.sampled_from(["", "image1.png", "image9.png", ",1", ",0", ",2", ",", "image1.png,1"]),
    ),
)


@pytest.fixture(scope="module")
def mura_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xray_xai.testing.datasets import write_tiny_mura

    return write_tiny_mura(tmp_path_factory.mktemp("fuzz_mura"), size=16)


@FAST
@given(
    which=st.sampled_from(["train_image_paths", "train_labeled_studies", "valid_image_paths", "valid_labeled_studies"]),
    lines=st.lists(_mura_line, max_size=8),
    raw=st.one_of(st.none(), st.binary(max_size=64)),
)
def test_mura_csvs_with_random_lines(mura_tree: Path, which: str, lines: list[str], raw: bytes | None) -> None:
    from xray_xai.data.datasets import open_dataset, summarize

    path = mura_tree / f"{which}.csv"
    original = path.read_bytes()
    try:
        path.write_bytes(raw if raw is not None else ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))
        try:
            ds = open_dataset(mura_tree.parent, "mura")
            summarize(ds, progress=False)
        except XrayXaiError as exc:
            assert "\n" not in str(exc)
    finally:
        path.write_bytes(original)


@pytest.fixture(scope="module")
def fracatlas_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xray_xai.testing.datasets import write_tiny_fracatlas

    return write_tiny_fracatlas(tmp_path_factory.mktemp("fuzz_fa") / "fa", n_images=6, size=16)


@FAST
@given(
    edits=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 14), _cell), max_size=6),
    drop_header=st.booleans(),
    extra=st.lists(_cell, max_size=5),
)
def test_fracatlas_csv_with_random_cells(
    fracatlas_tree: Path, edits: list[tuple[int, int, str]], drop_header: bool, extra: list[str]
) -> None:
    from xray_xai.data.datasets import open_dataset, summarize

    path = fracatlas_tree / "dataset.csv"
    original = path.read_text()
    rows = list(csv.reader(io.StringIO(original)))
    for r, c, value in edits:
        if r < len(rows):
            row = rows[r]
            if c < len(row):
                row[c] = value
            else:
                row.append(value)
    if drop_header:
        rows = rows[1:]
    if extra:
        rows.append(extra)
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    try:
        path.write_text(buf.getvalue(), encoding="utf-8", errors="surrogatepass")
        try:
            ds = open_dataset(fracatlas_tree, "fracatlas")
            summarize(ds, progress=False)
        except XrayXaiError as exc:
            assert "\n" not in str(exc)
    finally:
        path.write_text(original)


def test_fuzz_trees_are_restored(mura_tree: Path, fracatlas_tree: Path, tmp_path: Path) -> None:
    """The CSV properties put the files back: a later test reading these trees sees them intact."""
    from xray_xai.data.datasets import open_dataset

    assert len(open_dataset(mura_tree.parent, "mura").records()) > 0
    assert len(open_dataset(fracatlas_tree, "fracatlas").records()) == 6
    shutil.rmtree(tmp_path, ignore_errors=True)
