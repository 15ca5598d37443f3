"""Prepared films: each film decoded once, in model geometry, as 8-bit shards on disk, for every later epoch and run.

Decoding a radiograph (JPEG/PNG/DICOM, EXIF turn, size guard, damaged-stream policy) costs 15-60 ms per film on one
core; reading the same film back from a prepared shard costs well under a millisecond (``benchmarks/bench_loader.py``).
:func:`prepare` writes the films of some records as :func:`~xray_xai.data.geometry.geometry` gives them (resize/crop,
before augmentation and normalisation), rounded to 8 bits; :func:`open_cache` finds them again for a preprocessing.
Layout under a root (default ``$XRAY_XAI_HOME/cache/films``, chosen by the API, since this layer knows no home)::

    ROOT/<key>/                 one folder per geometry; key: :func:`cache_key` (format, geometry fields, Pillow)
      <pack>/index.json         the films of one prepare: path, size, mtime_ns, sha256, shard, row, warning
      <pack>/films-00000.npy    uint8 (n, S, S), read as numpy memory maps (pages shared by DataLoader workers)
      <pack>/skipped.csv        films that could not be read (and warnings.csv: films kept despite damage)

A pack is built in a hidden temporary folder beside it and renamed into place, so a reader never sees half a pack.

Staleness is never silent. The key holds every geometry field of the preprocessing (not its name or normalisation,
which act after the cache), so another size, crop or orientation rule looks in another folder. Each film is looked up
by absolute path and used only while the file's size and modification time (ns) are those recorded; with
``verify=True`` the file's SHA-256 must also match (catches a file replaced by one of equal size and mtime, e.g.
``cp -p`` or ``rsync -t``, at the price of reading every file). ``prepare`` always records the SHA-256: it costs about
1 % of a decode. A film that fails the check is decoded as if there were no cache.

The 8-bit rounding: ``round(film * 255)``, at most half a grey level (0.002 of the [0, 1] range, 0.0087 after
ImageNet normalisation). For preprocessings with ``eight_bit`` set the film already is k/255 and the round trip is
exact. Otherwise the resize averages 8-bit source levels into fractions, and these are rounded (16-bit or DICOM
sources also lose their extra bits). The in-memory cache of training keeps float16 (error up to 0.00024).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xray_xai._util.fsutil import make_shareable, sha256_file, write_skipped_csv
from xray_xai.errors import DataError, XrayXaiError
from xray_xai.sdk.interfaces import Preprocessing, Problem, Record

__all__ = [
    "FORMAT_VERSION",
    "FilmCache",
    "Location",
    "Prepared",
    "cache_key",
    "dequantize",
    "geometry_fields",
    "open_cache",
    "prepare",
    "quantize",
]

#: bump when the content or layout of a pack changes: older packs then live under another key and are not found
FORMAT_VERSION = 1
#: fields of a Preprocessing that act after the cached film (normalisation, channel replication) or only name it
POST_GEOMETRY_FIELDS = ("name", "channels", "normalize", "mean", "std")
#: films per shard: about this many bytes (1337 films at 224 px, 256 at 512 px)
SHARD_BYTES = 64 * 2**20
INDEX = "index.json"


# -------------------------------------------------------------------------------------------------------- the key
def geometry_fields(pre: Preprocessing) -> dict[str, Any]:
    """The fields of ``pre`` that decide the cached pixels: every field but those in :data:`POST_GEOMETRY_FIELDS`
    (a field added to Preprocessing later is part of the key unless listed there: the safe default)."""
    return {k: v for k, v in asdict(pre).items() if k not in POST_GEOMETRY_FIELDS}


def cache_key(pre: Preprocessing) -> str:
    """The folder name of ``pre``'s films: a hash of the format version, :func:`geometry_fields` and the Pillow
    version (another decoder build may decode a JPEG a level differently)."""
    import PIL

    spec = {"format": FORMAT_VERSION, "bits": 8, "geometry": geometry_fields(pre), "pillow": PIL.__version__}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def quantize(film: np.ndarray) -> np.ndarray:
    """A film in [0, 1] as uint8 levels (rounded to the nearest of 256)."""
    return np.round(np.clip(np.asarray(film, dtype=np.float32), 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


def dequantize(levels: np.ndarray) -> np.ndarray:
    """uint8 levels back to a float32 film in [0, 1], with the arithmetic of :func:`geometry`'s ``eight_bit`` path
    (so that an 8-bit preprocessing reads back bit-identical)."""
    return np.asarray(levels, dtype=np.float32) / np.float32(255.0)


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns)


# ------------------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class Location:
    """Where a fresh film lies: its shard (index into :attr:`FilmCache.shards`), row, and the warning recorded when
    it was decoded (a film kept despite damage), if any."""

    shard: int
    row: int
    warning: str | None = None


@dataclass
class _Entry:
    size: int
    mtime_ns: int
    sha256: str
    location: Location | None  #: None: the film could not be read (``problem`` says why)
    problem: str | None = None


class FilmCache:
    """The prepared films of one geometry under a root (every pack of its key folder).

    Cheap to pickle (DataLoader workers): the memory maps are opened on first read in each process.
    """

    def __init__(self, root: str | Path, pre: Preprocessing, *, verify: bool = False) -> None:
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise DataError(self.root, "is not a folder: a film cache is a folder")
        self.pre = pre
        self.key = cache_key(pre)
        self.folder = self.root / self.key
        self.size = int(pre.input_size)
        self.verify = verify
        self.shards: list[Path] = []
        self.packs: list[Path] = []
        self._entries: dict[str, list[_Entry]] = {}
        self._arrays: dict[int, np.ndarray] = {}
        self._hashes: dict[str, str | None] = {}
        for pack in sorted(self.folder.glob("*/" + INDEX)):
            if not pack.parent.name.startswith("."):
                self._load_pack(pack.parent)

    def _load_pack(self, pack: Path) -> None:
        try:
            index = json.loads((pack / INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # unreadable index: the pack is ignored (its films are prepared again)
        if index.get("format") != FORMAT_VERSION or index.get("key") != self.key or index.get("size") != self.size:
            return
        shards = [pack / name for name in index["shards"]]
        if not all(p.is_file() for p in shards):
            return  # a shard deleted by hand: the pack is ignored
        base = len(self.shards)
        self.shards += shards
        self.packs.append(pack)
        for f in index["films"]:
            loc = Location(base + int(f["shard"]), int(f["row"]), f.get("warning"))
            entry = _Entry(int(f["size"]), int(f["mtime_ns"]), str(f["sha256"]), loc)
            self._entries.setdefault(f["path"], []).append(entry)
        for f in index.get("skipped", []):
            entry = _Entry(int(f["size"]), int(f["mtime_ns"]), str(f["sha256"]), None, str(f["problem"]))
            self._entries.setdefault(f["path"], []).append(entry)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    def __len__(self) -> int:
        """Films held (fresh or not), counted once per source path."""
        return sum(1 for entries in self._entries.values() if any(e.location for e in entries))

    def _fresh(self, path: str) -> _Entry | None:
        """The entry of ``path`` whose recorded size and mtime (and, with ``verify``, SHA-256) match the file now."""
        entries = self._entries.get(path)
        if not entries:
            return None
        stamp = _stamp(path)
        for e in entries:
            if (e.size, e.mtime_ns) != stamp:
                continue
            if self.verify:
                if path not in self._hashes:
                    self._hashes[path] = sha256_file(Path(path)) if stamp else None
                if self._hashes[path] != e.sha256:
                    continue
            return e
        return None

    def locate(self, path: str | Path) -> Location | None:
        """Where the film of ``path`` lies, or None when it is not prepared, could not be read, or is stale."""
        entry = self._fresh(os.path.abspath(path))
        return entry.location if entry is not None else None

    def known_bad(self, path: str | Path) -> str | None:
        """The recorded problem of a film that could not be read (and has not changed since), else None."""
        entry = self._fresh(os.path.abspath(path))
        return entry.problem if entry is not None and entry.location is None else None

    def locate_all(self, records: Sequence[Record], *, strict: bool = False) -> list[Location | None]:
        """:meth:`locate` for each record; with ``strict`` a film kept despite damage counts as not prepared (reading
        it again refuses it with the usual error)."""
        found = [self.locate(r.path) for r in records]
        return [None if (loc is not None and strict and loc.warning) else loc for loc in found]

    def read(self, loc: Location) -> np.ndarray:
        """The uint8 ``(S, S)`` film at ``loc`` (a read-only view of the memory map)."""
        arr = self._arrays.get(loc.shard)
        if arr is None:
            arr = self._arrays[loc.shard] = np.load(self.shards[loc.shard], mmap_mode="r", allow_pickle=False)
        return arr[loc.row]

    def film(self, loc: Location) -> np.ndarray:
        """The float32 ``(S, S)`` film in [0, 1] at ``loc``, as :func:`~xray_xai.data.geometry.geometry` gave it up
        to the 8-bit rounding."""
        return dequantize(self.read(loc))

    def read_many(self, locs: Iterable[Location]) -> np.ndarray:
        """uint8 ``(B, S, S)`` films (e.g. to normalise on a GPU)."""
        rows = [self.read(loc) for loc in locs]
        return np.stack(rows) if rows else np.zeros((0, self.size, self.size), dtype=np.uint8)

    def describe(self) -> dict[str, Any]:
        """Key, folder, geometry and counts, JSON-ready."""
        return {
            "key": self.key,
            "folder": str(self.folder),
            "geometry": geometry_fields(self.pre),
            "films": len(self),
            "packs": len(self.packs),
            "bytes": sum(p.stat().st_size for p in self.shards if p.exists()),
        }


def open_cache(pre: Preprocessing, root: str | Path, *, verify: bool = False) -> FilmCache:
    """The prepared films of ``pre``'s geometry under ``root`` (none yet: an empty cache)."""
    return FilmCache(root, pre, verify=verify)


# ---------------------------------------------------------------------------------------------------- preparing
@dataclass
class Prepared:
    """What :func:`prepare` did: films decoded and written now, films already prepared, films that could not be
    read (``skipped``, also in the pack's skipped.csv) and films kept despite damage (``warnings``)."""

    cache: FilmCache
    pack: Path | None
    prepared: int
    reused: int
    skipped: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.cache.describe(),
            "pack": str(self.pack) if self.pack else None,
            "prepared": self.prepared,
            "reused": self.reused,
            "skipped": [{"path": p.path, "problem": p.problem} for p in self.skipped],
            "warnings": [{"path": p.path, "problem": p.problem} for p in self.warnings],
            "seconds": round(self.seconds, 3),
            "films_per_s": round(self.prepared / self.seconds, 2) if self.prepared and self.seconds > 0 else None,
        }


def _decode_one(path: str, pre_fields: dict[str, Any]) -> dict[str, Any]:
    """Decode one film for a pack (runs in worker processes too: plain arguments and results)."""
    from xray_xai.data.geometry import geometry
    from xray_xai.data.images import read_film

    pre = Preprocessing.from_dict(pre_fields)
    stamp = _stamp(path)  # taken first: a file changed while it is read is recorded as it was, so found stale
    out: dict[str, Any] = {"path": path, "size": stamp[0] if stamp else -1, "mtime_ns": stamp[1] if stamp else -1}
    try:
        out["sha256"] = sha256_file(Path(path))
        film, warning = read_film(path, strict=False, orient=pre.exif_orientation)
        out["levels"] = quantize(geometry(film, pre))
        out["warning"] = warning.problem if warning is not None else None
    except XrayXaiError as exc:
        out["problem"] = str(getattr(exc, "problem", exc))
    except OSError as exc:
        out["problem"] = exc.strerror or str(exc)
    out.setdefault("sha256", "")
    return out


def _decoded(paths: list[str], pre: Preprocessing, workers: int) -> Iterable[dict[str, Any]]:
    """The films of ``paths`` decoded in order, in this process or in ``workers`` others, started the platform's
    default way, as DataLoader starts its workers (fork on Linux: no re-import of the caller's script; the children
    only decode with PIL and numpy, never torch's thread pools)."""
    fields = asdict(pre)
    if workers <= 1 or len(paths) < 2:
        for p in paths:
            yield _decode_one(p, fields)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_decode_one, paths, [fields] * len(paths), chunksize=4)


def _pack_name(films: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for f in films:
        h.update(f"{f['path']}\0{f['size']}\0{f['mtime_ns']}\n".encode())
    return h.hexdigest()[:16]


def _write_pack(
    tmp: Path, paths: list[str], pre: Preprocessing, cache: FilmCache, *, workers: int, progress: bool, shard: int
) -> dict[str, Any]:
    """Decode ``paths`` into shards in ``tmp`` and return the pack's index (not yet written)."""
    from xray_xai._util.progress import progress as bar

    s = int(pre.input_size)
    buf = np.empty((min(shard, len(paths)), s, s), dtype=np.uint8)
    index: dict[str, Any] = {"format": FORMAT_VERSION, "key": cache.key, "size": s, "geometry": geometry_fields(pre)}
    index.update({"shards": [], "films": [], "skipped": []})

    def flush(n: int) -> None:
        name = f"films-{len(index['shards']):05d}.npy"
        np.save(tmp / name, buf[:n], allow_pickle=False)
        index["shards"].append(name)

    n = 0
    for got in bar(_decoded(paths, pre, workers), "preparing films", total=len(paths), enabled=progress):
        stamp = {"path": got["path"], "size": got["size"], "mtime_ns": got["mtime_ns"], "sha256": got["sha256"]}
        if "problem" in got:
            index["skipped"].append({**stamp, "problem": got["problem"]})
            continue
        buf[n] = got["levels"]
        index["films"].append({**stamp, "shard": len(index["shards"]), "row": n, "warning": got["warning"]})
        n += 1
        if n == len(buf):
            flush(n)
            n = 0
    if n:
        flush(n)
    return index


def prepare(
    records: Iterable[Record],
    pre: Preprocessing,
    root: str | Path,
    *,
    verify: bool = False,
    workers: int = 0,
    progress: bool = True,
    shard_films: int | None = None,
) -> Prepared:
    """Decode the films of ``records`` not yet prepared for ``pre`` under ``root`` into a new pack; returns what it
    did and the cache, ready to read. Films already prepared (and unchanged: see the module docstring; ``verify``
    also compares SHA-256) are not decoded again; nor are films recorded as unreadable that have not changed.
    ``workers`` > 1 decodes in that many processes; ``shard_films`` films per shard (default about 64 MiB)."""
    t0 = time.perf_counter()
    cache = open_cache(pre, root, verify=verify)
    paths = list(dict.fromkeys(os.path.abspath(r.path) for r in records))
    todo = [p for p in paths if cache.locate(p) is None and cache.known_bad(p) is None]
    pack = None
    if todo:
        pack = _build_pack(todo, pre, cache, workers=workers, progress=progress, shard=shard_films)
        _prune(cache.folder, keep=pack)
        cache = open_cache(pre, root, verify=verify)
    skipped, warnings = [], []
    for p in paths:
        loc, bad = cache.locate(p), cache.known_bad(p)
        if bad is not None:
            skipped.append(Problem(p, bad))
        elif loc is not None and loc.warning:
            warnings.append(Problem(p, loc.warning, severity="warning"))
    n_new = len(todo) - sum(1 for p in todo if cache.known_bad(p) is not None)
    reused = len(paths) - len(todo)
    return Prepared(cache, pack, n_new, reused, skipped, warnings, time.perf_counter() - t0)


def _build_pack(
    todo: list[str], pre: Preprocessing, cache: FilmCache, *, workers: int, progress: bool, shard: int | None
) -> Path:
    """Write a pack of ``todo`` in a temporary folder, then rename it into the key folder (atomic)."""
    cache.folder.mkdir(parents=True, exist_ok=True)
    s = int(pre.input_size)
    tmp = Path(tempfile.mkdtemp(prefix=".prepare-", dir=cache.folder))
    try:
        index = _write_pack(
            tmp, todo, pre, cache, workers=workers, progress=progress, shard=shard or max(1, SHARD_BYTES // (s * s))
        )
        index["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        problems = [Problem(f["path"], f["problem"]) for f in index["skipped"]]
        warned = [Problem(f["path"], f["warning"], severity="warning") for f in index["films"] if f["warning"]]
        write_skipped_csv(tmp / "skipped.csv", problems, warnings=warned)
        (tmp / INDEX).write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")  # last: marks it complete
        for f in tmp.iterdir():
            make_shareable(f)
        make_shareable(tmp)
        target = cache.folder / _pack_name(index["films"] + index["skipped"])
        try:
            os.rename(tmp, target)
        except OSError:  # the same pack, written meanwhile by another process: keep theirs
            if not (target / INDEX).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        return target
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _prune(folder: Path, keep: Path) -> None:
    """Remove packs none of whose films is fresh any more (every source changed or gone): nothing would read them."""
    for index_path in folder.glob("*/" + INDEX):
        pack = index_path.parent
        if pack == keep or pack.name.startswith("."):
            continue
        with contextlib.suppress(OSError, ValueError, KeyError):
            index = json.loads(index_path.read_text(encoding="utf-8"))
            films = index["films"] + index.get("skipped", [])
            if all(_stamp(f["path"]) != (f["size"], f["mtime_ns"]) for f in films):
                shutil.rmtree(pack, ignore_errors=True)
