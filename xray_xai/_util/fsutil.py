"""Atomic output: every file xray-xai writes appears whole or not at all (temp file in the same folder + rename)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.sdk.interfaces import Problem

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "json_default",
    "make_shareable",
    "sha256_file",
    "warnings_csv_path",
    "write_skipped_csv",
]


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed onto ``target``, on error removed.

    Use it for libraries that want a file name (``plt.savefig``, ``np.save``, ``safetensors.torch.save_file``)::

        with atomic_path(out / "overlay.png") as tmp:
            fig.savefig(tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{target.name}.",
        suffix=suffix if suffix is not None else target.suffix + ".tmp",
        dir=target.parent,
    )
    os.close(fd)
    tmp = Path(name)
    make_shareable(tmp)  # mkstemp makes 0600 files; outputs get the permissions open() would give
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows (``os.umask`` can only be read by setting
    it, and a file another thread creates in that instant would get mode 0666)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o077)
    os.umask(current)
    return current


def make_shareable(path: str | Path) -> Path:
    """Give ``path`` the permissions the umask allows: files ``0o666 & ~umask``, folders ``0o777 & ~umask``.

    For outputs whose writer creates them private (``tempfile.mkstemp``/``mkdtemp`` make 0600/0700, and so does
    ``safetensors``), so that a model store or run folder shared by a lab is readable by colleagues exactly as far as
    the umask says, like a file made by ``open()``.
    """
    p = Path(path)
    base = 0o777 if p.is_dir() else 0o666
    os.chmod(p, base & ~_umask())
    return p


def atomic_write_bytes(target: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically (fsync before the rename)."""
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(target)


def atomic_write_text(target: str | Path, text: str) -> Path:
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (numpy values and paths converted) atomically."""

    return atomic_write_text(target, json.dumps(data, indent=2, default=json_default) + "\n")


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for numpy values and paths, shared by every JSON writer and ``--json`` output."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def warnings_csv_path(skipped_csv: str | Path) -> Path:
    """Where the warnings go beside a skipped list: ``skipped.csv`` -> ``warnings.csv``,
    ``preds.skipped.csv`` -> ``preds.warnings.csv``, any other ``NAME.csv`` -> ``NAME.warnings.csv``."""
    path = Path(skipped_csv)
    name = path.name
    if "skipped" in name:
        head, _, tail = name.rpartition("skipped")
        return path.with_name(f"{head}warnings{tail}")
    return path.with_name(f"{path.stem}.warnings.csv")


def write_skipped_csv(
    target: str | Path, problems: Iterable[Problem], warnings: Iterable[Problem] | None = None
) -> Path:
    """Write the files a batch command skipped as CSV (``path,problem``) atomically, so every command lists them alike,
    and beside it (:func:`warnings_csv_path`) the films it kept with a warning (films whose stream ends a little
    early, see :func:`xray_xai.data.images.read_film`), in the same columns.

    Problems of severity "warning" in ``problems`` go to the warnings file too. Both headers are written even when
    nothing was skipped or warned about, so a script can always read the files. Returns the skipped list's path.
    """
    problems = list(problems)
    kept = [p for p in problems if p.severity == "warning"] + list(warnings or [])
    _write_problems(warnings_csv_path(target), kept)
    return _write_problems(target, [p for p in problems if p.severity != "warning"])


def _write_problems(target: str | Path, problems: Iterable[Problem]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "problem"])
    for p in problems:
        writer.writerow([p.path, p.problem])
    return atomic_write_text(target, buf.getvalue())


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks (checkpoints are hundreds of MB)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
