"""The data service: open a data set folder with the right reader, summarise it, check its images, generate one.

Readers are dataset plugins found through the registry (never imported directly). When no reader is named,
:func:`open_dataset` asks each registered plugin's ``detect()`` in :func:`detection_order`: the specific layouts first
(``synthetic``, whose sidecar JSON sits in a MURA tree, before ``mura``; then ``fracatlas``), then third-party
readers by name, and ``folder`` (any folder holding images) last.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xray_xai.errors import DataError, PluginError, XrayXaiError
from xray_xai.sdk.interfaces import DatasetPlugin, Problem, Record

__all__ = [
    "DETECT_FIRST",
    "DETECT_LAST",
    "check_images",
    "detect_dataset",
    "detection_order",
    "open_dataset",
    "summarize",
    "synth",
]

#: built-in readers asked first, in this order (most specific layout first)
DETECT_FIRST: tuple[str, ...] = ("synthetic", "mura", "fracatlas")
#: readers asked last: they accept almost any folder
DETECT_LAST: tuple[str, ...] = ("folder",)


def detection_order() -> list[str]:
    """Names of the registered dataset plugins in the order :func:`open_dataset` tries their ``detect()``."""
    from xray_xai.sdk.registry import datasets

    names = datasets.names()
    first = [n for n in DETECT_FIRST if n in names]
    last = [n for n in DETECT_LAST if n in names]
    middle = [n for n in names if n not in first and n not in last]
    return [*first, *middle, *last]


def _check_root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(path, "no such folder")
    if not path.is_dir():
        raise DataError(path, "not a folder")
    return path


def detect_dataset(root: str | Path) -> str:
    """The name of the first dataset plugin whose ``detect()`` accepts ``root``; :class:`DataError` if none does."""
    from xray_xai.sdk.registry import datasets

    path = _check_root(root)
    order = detection_order()
    for name in order:
        try:
            if datasets.get(name).detect(path):
                return name
        except Exception:  # a broken third-party detect() must not stop the others
            continue
    raise DataError(path, f"no known data set layout and no images found (tried: {', '.join(order) or 'none'})")


def open_dataset(root: str | Path, name: str | None = None, **options: Any) -> DatasetPlugin:
    """Open ``root`` with the dataset plugin ``name`` (auto-detected when None), passing ``options`` to it.

    Raises :class:`DataError` for a missing folder or an unrecognised layout and
    :class:`~xray_xai.errors.UnknownPluginError` for an unknown ``name``.
    """
    from xray_xai.sdk.registry import datasets

    path = _check_root(root)
    cls = datasets.get(name) if name else datasets.get(detect_dataset(path))
    try:
        return cls(path, **options)
    except TypeError as exc:
        if "keyword argument" not in str(exc):  # a bug in the plugin, not a wrong option
            raise
        raise PluginError(f"dataset {cls.name!r}: {exc}") from None


def synth(out: str | Path, n_studies: int, seed: int = 0, **options: Any) -> Path:
    """Write a synthetic data set with the registered ``synthetic`` generator; returns its root folder.

    ``options`` go to the generator unchanged (e.g. ``abnormal_fraction``, ``image_size``, ``regions``).
    """
    from xray_xai.sdk.registry import datasets

    if n_studies < 1:
        raise DataError(None, f"n_studies must be at least 1, got {n_studies}")
    cls = datasets.get("synthetic")
    if not cls.tags.generator:
        raise PluginError(f"dataset {cls.name!r} is not tagged as a generator")
    return Path(cls.generate(Path(out), n_studies=n_studies, seed=seed, **options))


def check_images(
    ds: DatasetPlugin, split: str | None = None, progress: bool = True, *, strict: bool = False
) -> list[Problem]:
    """Decode every image as the commands will (:func:`xray_xai.data.images.read_film`: format sniffed, size guard,
    damaged-film policy) and return one :class:`Problem` per unreadable file, and one warning per film that a
    command would read despite a stream that ends early (with ``strict`` those are errors too). Readers only list
    files; this finds the broken ones."""
    from xray_xai._util.progress import progress as bar
    from xray_xai.data.images import read_film

    records = ds.records(split)
    found: list[Problem] = []
    for rec in bar(records, "checking images", total=len(records), enabled=progress):
        try:
            warning = read_film(rec.path, strict=strict).warning
        except XrayXaiError as exc:
            found.append(Problem(str(rec.path), getattr(exc, "problem", str(exc))))
        except OSError as exc:
            found.append(Problem(str(rec.path), exc.strerror or str(exc)))
        else:
            if warning is not None:
                found.append(warning)
    return found


def _label_key(label: int | None) -> str:
    return {1: "abnormal", 0: "normal"}.get(label, "unknown") if label is not None else "unknown"


def _study_label(group: list[Record]) -> int | None:
    labels = [r.label for r in group if r.label is not None]
    return max(labels) if labels else None


def _counts(records: Iterable[Record]) -> dict[str, Any]:
    recs = list(records)
    images = {"total": len(recs), "abnormal": 0, "normal": 0, "unknown": 0}
    for r in recs:
        images[_label_key(r.label)] += 1
    grouped: dict[str, list[Record]] = {}
    for r in recs:
        grouped.setdefault(r.study or r.image_id, []).append(r)
    studies = {"total": len(grouped), "abnormal": 0, "normal": 0, "unknown": 0}
    for group in grouped.values():
        studies[_label_key(_study_label(group))] += 1
    return {
        "images": images,
        "studies": studies,
        "patients": len({r.patient for r in recs if r.patient}),
        "with_ground_truth": sum(1 for r in recs if r.has_ground_truth),
    }


def summarize(
    ds: DatasetPlugin, *, images: bool = False, progress: bool = True, strict: bool = False
) -> dict[str, Any]:
    """Counts of images and studies (total, abnormal, normal, unknown label) overall, by split, by region and by
    split x region, plus the problems the reader found (and, with ``images=True``, every image decoded: unreadable
    ones as errors, damaged ones kept as warnings, or errors with ``strict``; see :func:`check_images`).

    The result is JSON-ready; ``xray-xai data`` prints it. Regions and views that are ``None`` count as
    ``"unknown"``.
    """
    records = ds.records()
    split_names = [s for s in ds.splits if s != "all"] or list(ds.splits)
    split_names += sorted({r.split for r in records} - set(split_names))
    regions = sorted({r.region or "unknown" for r in records})
    problems = list(ds.problems)
    if images:
        problems += check_images(ds, progress=progress, strict=strict)
    by_split = {s: [r for r in records if r.split == s] for s in split_names}
    table = []
    for s in split_names:
        for region in regions:
            cell = [r for r in by_split[s] if (r.region or "unknown") == region]
            if cell:
                table.append({"split": s, "region": region, **_counts(cell)})
    views: dict[str, int] = {}
    for r in records:
        views[r.view or "unknown"] = views.get(r.view or "unknown", 0) + 1
    return {
        "dataset": ds.name,
        "root": str(ds.root),
        "options": {k: v for k, v in ds.options.items() if v is not None},
        "splits_offered": list(ds.splits),
        **_counts(records),
        "splits": {s: _counts(by_split[s]) for s in split_names},
        "regions": {g: _counts(r for r in records if (r.region or "unknown") == g) for g in regions},
        "views": dict(sorted(views.items())),
        "table": table,
        "problem_count": len(problems),
        "error_count": sum(1 for p in problems if p.severity == "error"),
        "warning_count": sum(1 for p in problems if p.severity == "warning"),
        "problems": [{"path": p.path, "problem": p.problem, "severity": p.severity} for p in problems],
        "images_checked": images,
    }
