"""Long fuzz run over everything that parses untrusted bytes: image reader, DICOM, MURA and FracAtlas CSV readers.

The property is the one of ``tests/test_fuzz.py``: any exception other than :class:`xray_xai.errors.XrayXaiError`
is a bug. With atheris installed (``pip install atheris``) each target runs coverage-guided under libFuzzer in its own
process, seeded with valid and bad files from ``tests/badinputs.py``; without it, hypothesis runs the same properties
with many examples. Crashing inputs are written to ``--out`` so they can be replayed::

    python benchmarks/fuzz.py --seconds 300                 # every target, time split between them
    python benchmarks/fuzz.py --target dicom --seconds 120
    python benchmarks/fuzz.py --engine hypothesis --seconds 60
    python benchmarks/fuzz.py --replay fuzz-out/crash-1234  # rerun one crashing input on its target

Prints one line per target: engine, inputs tried, seconds, crashes; exits 1 if any target crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

TARGETS = ("image", "dicom", "mura", "fracatlas")


# ------------------------------------------------------------------------------------------------- properties


def _check_image(data: bytes, name: str) -> None:
    import numpy as np

    from xray_xai.data.images import read_image_bytes
    from xray_xai.errors import XrayXaiError

    try:
        arr = read_image_bytes(data, name)
    except XrayXaiError as exc:
        if name not in str(exc) or "\n" in str(exc):
            raise AssertionError(f"error message does not name the file in one line: {exc!r}") from None
        return
    if arr.dtype != np.float32 or arr.ndim != 2 or not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise AssertionError(f"bad array: {arr.dtype} {arr.shape} [{arr.min()}, {arr.max()}]")


_NAMES = ("fuzz.png", "fuzz.jpg", "fuzz.dcm", "fuzz")


def target_image(data: bytes) -> None:
    """First byte picks the file name (extension hint); the rest is the file."""
    if not data:
        return
    _check_image(data[1:], _NAMES[data[0] % len(_NAMES)])


def target_dicom(data: bytes) -> None:
    _check_image(data, "fuzz.dcm")


class _Tree:
    """A tiny data set written once; each input replaces one CSV and the reader opens the tree."""

    def __init__(self, kind: str) -> None:
        from xray_xai.testing.datasets import write_tiny_fracatlas, write_tiny_mura

        self.dir = Path(tempfile.mkdtemp(prefix=f"xray-xai-fuzz-{kind}-"))
        self.kind = kind
        if kind == "mura":
            mura = write_tiny_mura(self.dir, size=16)
            self.files = [mura / f"{s}_{n}.csv" for s in ("train", "valid") for n in ("image_paths", "labeled_studies")]
            self.root = self.dir
        else:
            self.root = write_tiny_fracatlas(self.dir / "fa", n_images=6, size=16)
            self.files = [self.root / "dataset.csv"]
        self.originals = [f.read_bytes() for f in self.files]

    def run(self, data: bytes) -> None:
        from xray_xai.data.datasets import open_dataset, summarize
        from xray_xai.errors import XrayXaiError

        if not data:
            return
        k = data[0] % len(self.files)
        target = self.files[k]
        try:
            target.write_bytes(data[1:])
            try:
                summarize(open_dataset(self.root, self.kind), progress=False)
            except XrayXaiError as exc:
                if "\n" in str(exc):
                    raise AssertionError(f"multi-line error: {exc!r}") from None
        finally:
            target.write_bytes(self.originals[k])


_TREES: dict[str, _Tree] = {}


def target_csv(kind: str, data: bytes) -> None:
    if kind not in _TREES:
        _TREES[kind] = _Tree(kind)
    _TREES[kind].run(data)


def run_target(target: str, data: bytes) -> None:
    if target == "image":
        target_image(data)
    elif target == "dicom":
        target_dicom(data)
    else:
        target_csv(target, data)


# ------------------------------------------------------------------------------------------------------- seeds


def seeds(target: str) -> list[bytes]:
    """Valid files and every bad case of tests/badinputs.py, as the target expects them."""
    import badinputs as bad

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if target in ("image", "dicom"):
            files = [w(folder) for w, _ in bad.BAD_IMAGES.values()] + [w(folder) for w in bad.GOOD_ODD_IMAGES.values()]
            blobs = [f.read_bytes() for f in files if f.stat().st_size < 200_000]
            blobs += [bad.png_bytes(16), bad.dicom_bytes(rows=8, cols=8)]
            if target == "dicom":
                return [b for b in blobs if b[128:132] == b"DICM"]
            return [bytes([i % len(_NAMES)]) + b for i, b in enumerate(blobs)]
        tree = _Tree(target)
        out = [bytes([k]) + blob for k, blob in enumerate(tree.originals)]
        shutil.rmtree(tree.dir, ignore_errors=True)
        return out


# ------------------------------------------------------------------------------------------------------ atheris


def _atheris_child(target: str, seconds: int, out: Path) -> None:
    """Runs inside the child process: instrument our parsers, then hand over to libFuzzer (which exits)."""
    import atheris

    with atheris.instrument_imports(include=["xray_xai", "xray_xai_plugins", "pydicom", "PIL"]):
        import importlib

        for module in ("PIL.PngImagePlugin", "PIL.JpegImagePlugin", "pydicom", "xray_xai.data.images",
                       "xray_xai.data.datasets",
                       "xray_xai_plugins.datasets.mura", "xray_xai_plugins.datasets.fracatlas"):  # fmt: skip
            importlib.import_module(module)
    import warnings

    warnings.simplefilter("ignore")
    corpus = out / f"corpus-{target}"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, blob in enumerate(seeds(target)):
        (corpus / f"seed-{i}").write_bytes(blob)
    if target in ("mura", "fracatlas"):
        _TREES[target] = _Tree(target)

    def one(data: bytes) -> None:
        run_target(target, data)

    atheris.Setup(
        [
            sys.argv[0],
            f"-max_total_time={seconds}",
            f"-artifact_prefix={out}/crash-{target}-",
            "-max_len=65536",
            "-rss_limit_mb=3072",
            "-timeout=30",
            "-print_final_stats=1",
            str(corpus),
        ],
        one,
    )
    atheris.Fuzz()


def run_atheris(target: str, seconds: int, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", target, "--seconds", str(seconds), "--out", str(out)]
    env = {**os.environ, "XRAY_XAI_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 600)
    elapsed = time.monotonic() - start
    log = proc.stdout + proc.stderr
    (out / f"atheris-{target}.log").write_text(log)
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log) or re.findall(r"Done (\d+) runs", log)
    crashes = sorted(p.name for p in out.glob(f"crash-{target}-*"))
    return {
        "target": target,
        "engine": "atheris",
        "inputs": int(runs[-1]) if runs else None,
        "seconds": round(elapsed, 1),
        "crashes": crashes,
        "returncode": proc.returncode,
        "tail": "" if proc.returncode == 0 else log[-3000:],
    }


# --------------------------------------------------------------------------------------------------- hypothesis


def run_hypothesis(target: str, seconds: int, out: Path) -> dict[str, Any]:
    import warnings

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    warnings.simplefilter("ignore")
    seed_blobs = seeds(target)
    count = 0
    crashes: list[str] = []
    deadline = time.monotonic() + seconds

    @st.composite
    def inputs(draw: st.DrawFn) -> bytes:
        base = bytearray(draw(st.sampled_from(seed_blobs)) if draw(st.booleans()) else draw(st.binary(max_size=256)))
        for _ in range(draw(st.integers(0, 6))):
            pos = draw(st.integers(0, max(0, len(base) - 1)))
            op = draw(st.integers(0, 3))
            if op == 0 and base:
                base[pos] = draw(st.integers(0, 255))
            elif op == 1:
                del base[pos:]
            elif op == 2:
                del base[pos : pos + draw(st.integers(1, 64))]
            else:
                base[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        return bytes(base)

    start = time.monotonic()
    while time.monotonic() < deadline:

        @settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(inputs())
        def prop(data: bytes) -> None:
            nonlocal count
            count += 1
            try:
                run_target(target, data)
            except Exception:
                name = out / f"crash-{target}-{len(crashes)}"
                name.write_bytes(data)
                crashes.append(name.name)
                raise

        try:
            prop()
        except Exception as exc:  # keep going after recording the (shrunk) failure
            print(f"{target}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
    return {
        "target": target,
        "engine": "hypothesis",
        "inputs": count,
        "seconds": round(time.monotonic() - start, 1),
        "crashes": sorted(set(crashes)),
        "returncode": 0,
    }


# ------------------------------------------------------------------------------------------------------------ cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    parser.add_argument("--seconds", type=int, default=240, help="total budget, split between the targets")
    parser.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    parser.add_argument("--out", type=Path, default=Path("fuzz-out"), help="crashing inputs and logs go here")
    parser.add_argument("--replay", type=Path, help="run one saved input (its name says the target) and show errors")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    if args.child:
        _atheris_child(args.child, args.seconds, args.out.resolve())
        return 0
    if args.replay:
        target = next(t for t in TARGETS if f"-{t}-" in args.replay.name)
        run_target(target, args.replay.read_bytes())
        print(f"{args.replay}: no error on replay ({target})")
        return 0

    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    targets = list(TARGETS) if args.target == "all" else [args.target]
    per = max(5, args.seconds // len(targets))
    results = []
    for t in targets:
        res = (run_atheris if engine == "atheris" else run_hypothesis)(t, per, args.out.resolve())
        results.append(res)
        print(
            f"{t:10s} {res['engine']:10s} inputs={res['inputs']} seconds={res['seconds']} crashes={len(res['crashes'])}"
        )
        if res.get("tail"):
            print(res["tail"], file=sys.stderr)
    (args.out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any(r["crashes"] or r["returncode"] not in (0, None) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
