"""Any folder of radiographs (PNG, JPEG, TIFF, DICOM; searched recursively) for inference, optionally labelled.

Every image becomes one record of split ``"all"`` (the only split), in sorted path order. Labels are optional:
``labels=path/to/labels.csv`` with a header naming an image column (``path``, ``image``, ``filename``, ``file``,
``image_id``, ``image_path``, ``file_name`` or ``name``: a path relative to the folder, or a bare file name) and a
label column (``label``, ``abnormal``, ``fractured``, ``positive``, ``target``, ``y`` or ``class``; values 1/0,
true/false, yes/no, abnormal/normal, positive/negative, fractured/non_fractured, or empty for unknown). Images
without a row get ``label=None``. A region is inferred when a folder on the way is named after a MURA region
(``wrist/``, ``XR_WRIST/``). Hidden files are ignored; other non-image files are skipped and counted in one warning.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from xray_xai.errors import DataError
from xray_xai.sdk.interfaces import REGIONS, DatasetPlugin, Problem, Record, Tags

from ._splits import is_hidden, looks_like_image, read_csv_rows

__all__ = ["LABEL_COLUMNS", "PATH_COLUMNS", "FolderDataset", "parse_label"]

PATH_COLUMNS: tuple[str, ...] = ("path", "image", "filename", "file", "image_id", "image_path", "file_name", "name")
LABEL_COLUMNS: tuple[str, ...] = ("label", "abnormal", "fractured", "positive", "target", "y", "class")
_TRUE = {"1", "1.0", "true", "yes", "y", "abnormal", "positive", "fractured", "fracture"}
_FALSE = {"0", "0.0", "false", "no", "n", "normal", "negative", "non_fractured", "non-fractured", "not_fractured"}


def parse_label(value: str) -> int | None:
    """``"1"``, ``"abnormal"``, ``"true"``... -> 1; ``"0"``, ``"normal"``... -> 0; empty -> None; else ValueError."""
    text = value.strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    raise ValueError(f"not a label: {value!r}")


def _walk(root: Path) -> Iterator[Path]:
    """Files under ``root``, hidden files and folders skipped (callers sort)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            if is_hidden(path):
                continue
            if entry.is_dir():
                subdirs.append(path)
            elif entry.is_file():
                yield path
        stack.extend(reversed(subdirs))


class FolderDataset(DatasetPlugin):
    """A plain folder of images; options ``labels`` (CSV path) and ``recursive`` (default True)."""

    name: ClassVar[str] = "folder"
    description: ClassVar[str] = "Any folder of PNG/JPEG/DICOM radiographs (recursive), optional labels CSV"
    tags: ClassVar[Tags] = Tags()
    splits: ClassVar[tuple[str, ...]] = ("all",)

    def __init__(
        self, root: str | Path, *, labels: str | Path | None = None, recursive: bool = True, **options: Any
    ) -> None:
        super().__init__(root, labels=labels, recursive=recursive, **options)
        if not self.root.is_dir():
            raise DataError(self.root, "no such folder")
        self.recursive = bool(recursive)
        self.labels_path = self._find_labels(labels)
        self._records = self._read()

    @classmethod
    def detect(cls, root: str | Path) -> bool:
        root = Path(root)
        return root.is_dir() and any(looks_like_image(p) for p in _walk(root))

    def records(self, split: str | None = None) -> list[Record]:
        self.resolve_split(split)  # "all" is the only split: anything else is a DataError
        return list(self._records)

    # -- internals ---------------------------------------------------------------------------------------------
    def _find_labels(self, labels: str | Path | None) -> Path | None:
        if labels is None:
            return None
        path = Path(labels)
        if not path.is_file() and not path.is_absolute() and (self.root / path).is_file():
            path = self.root / path
        if not path.is_file():
            raise DataError(path, "labels file not found")
        return path

    def _read(self) -> list[Record]:
        images: list[Path] = []
        skipped: list[Path] = []
        listed = _walk(self.root) if self.recursive else (p for p in self.root.iterdir() if p.is_file())
        for path in sorted(listed, key=lambda p: p.relative_to(self.root).as_posix()):
            if self.labels_path is not None and path.absolute() == self.labels_path.absolute():
                continue
            if looks_like_image(path):
                images.append(path)
            elif not is_hidden(path):
                skipped.append(path)
        if skipped:
            examples = ", ".join(p.relative_to(self.root).as_posix() for p in skipped[:3])
            self.problems.append(
                Problem(str(self.root), f"skipped {len(skipped)} non-image file(s) (e.g. {examples})", "warning")
            )
        if not images:
            self.problems.append(Problem(str(self.root), "no images found"))
        labels = self._read_labels(images) if self.labels_path is not None else {}
        records = []
        for path in images:
            rel = path.relative_to(self.root)
            region = next((_region(part) for part in rel.parts[:-1] if _region(part)), None)
            records.append(
                Record(
                    path=path.absolute(),
                    split="all",
                    region=region,
                    label=labels.get(path),
                    metadata={"relative_path": rel.as_posix()},
                )
            )
        return records

    def _read_labels(self, images: list[Path]) -> dict[Path, int | None]:
        assert self.labels_path is not None
        rows = read_csv_rows(self.labels_path)
        if not rows:
            raise DataError(self.labels_path, "empty labels file")
        header = [h.strip().lower() for h in rows[0]]
        path_col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
        label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
        if path_col is None or label_col is None:
            raise DataError(
                self.labels_path,
                f"needs an image column ({'/'.join(PATH_COLUMNS)}) and a label column ({'/'.join(LABEL_COLUMNS)}); "
                f"header is {','.join(rows[0])}",
            )
        by_rel = {p.relative_to(self.root).as_posix(): p for p in images}
        by_name: dict[str, list[Path]] = {}
        for p in images:
            by_name.setdefault(p.name, []).append(p)
        out: dict[Path, int | None] = {}
        unmatched = []
        for row in rows[1:]:
            if len(row) <= max(path_col, label_col):
                self.problems.append(Problem(str(self.labels_path), f"short row {','.join(row)!r}; skipped"))
                continue
            key = row[path_col].replace("\\", "/").removeprefix("./")
            try:
                label = parse_label(row[label_col])
            except ValueError as exc:
                self.problems.append(Problem(str(self.labels_path), f"{row[path_col]}: {exc}; left unlabelled"))
                continue
            target = by_rel.get(key)
            if target is None:
                matches = by_name.get(Path(key).name, [])
                if len(matches) > 1:
                    self.problems.append(
                        Problem(str(self.labels_path), f"{key}: file name matches {len(matches)} images; ambiguous")
                    )
                    continue
                target = matches[0] if matches else None
            if target is None:
                unmatched.append(key)
                continue
            out[target] = label
        if unmatched:
            self.problems.append(
                Problem(
                    str(self.labels_path),
                    f"{len(unmatched)} row(s) name no image in the folder (first: {', '.join(unmatched[:3])})",
                    "warning",
                )
            )
        return out


def _region(folder_name: str) -> str | None:
    name = folder_name.lower()
    name = name[3:] if name.startswith("xr_") else name
    return name if name in REGIONS else None
