"""MURA-v1.1 (Stanford musculoskeletal radiographs): upper-limb studies labelled normal/abnormal per study.

Layout (``root`` may be the ``MURA-v1.1`` folder itself or its parent)::

    MURA-v1.1/{train,valid}/XR_<REGION>/patient<ID>/study<N>_{positive,negative}/image<K>.png
    MURA-v1.1/{train,valid}_image_paths.csv      # no header: MURA-v1.1/train/XR_SHOULDER/patient00001/.../image1.png
    MURA-v1.1/{train,valid}_labeled_studies.csv  # no header: MURA-v1.1/train/XR_SHOULDER/patient00001/.../,1

Splits. MURA publishes no test set, so MURA's ``valid`` folder is our ``"test"`` split (``"valid"`` is accepted as
an alias), and MURA's ``train`` is divided at the *patient* level into ``"train"`` and ``"val"``: a patient goes to
``val`` when a seeded blake2b hash of its id falls below ``val_fraction``. Adding data never moves an existing
patient, and no patient is in two splits.

Labels. ``*_labeled_studies.csv`` is the reference label; the ``_positive``/``_negative`` suffix of the study
folder is checked against it and every disagreement is reported as a :class:`~xray_xai.sdk.interfaces.Problem`
(``label_from="folder"`` makes the folder win instead). Missing CSVs fall back to walking the folders; images in a
CSV but not on disk, images on disk but not in the CSV (kept, with a warning), empty study folders and unexpected
folder names are reported too. Hidden files such as macOS ``._image1.png`` (present in the real MURA zip) are
ignored.

Subclasses (the synthetic generator writes this exact layout) can override :meth:`MuraDataset._prepare`, called once
before the folders are read, and :meth:`MuraDataset._enrich`, called on every record, to add ground truth or
metadata.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from xray_xai._util.fsutil import atomic_write_text
from xray_xai.errors import DataError
from xray_xai.sdk.interfaces import REGIONS, DatasetPlugin, Record, Tags

from ._splits import holdout, is_hidden, looks_like_image, make_problem, read_csv_rows

__all__ = ["MURA_FOLDER", "MURA_SPLITS", "MuraDataset", "find_mura_dir", "write_mura_csvs"]

#: the name of MURA's top folder, which prefixes every path in its CSVs
MURA_FOLDER = "MURA-v1.1"
#: MURA's own split folders, and the split each becomes here
MURA_SPLITS: dict[str, str] = {"train": "train", "valid": "test"}

_STUDY_RE = re.compile(r"^study(\d+)_(positive|negative)$")
_DIGITS = re.compile(r"(\d+)")


def find_mura_dir(root: str | Path) -> Path:
    """The folder holding ``train/``, ``valid/`` and the CSVs: ``root/MURA-v1.1`` if present, else ``root``."""
    root = Path(root)
    inner = root / MURA_FOLDER
    return inner if inner.is_dir() else root


def _natural(text: str) -> tuple[Any, ...]:
    """Sort key that orders ``image2`` before ``image10``."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(text))


def _relative_to_split(csv_path: str, mura_split: str) -> tuple[str, ...] | None:
    """``MURA-v1.1/train/XR_X/p/s/image1.png`` -> ``('train', 'XR_X', 'p', 's', 'image1.png')``."""
    parts = tuple(p for p in csv_path.replace("\\", "/").split("/") if p)
    if mura_split in parts:
        return parts[parts.index(mura_split) :]
    return None


def write_mura_csvs(mura_dir: str | Path, prefix: str = MURA_FOLDER) -> list[Path]:
    """Write ``{train,valid}_image_paths.csv`` and ``{train,valid}_labeled_studies.csv`` for the images found
    under ``mura_dir`` (labels from the study folder names), exactly as MURA ships them. Returns the files written.

    Generators and tests use this so that their trees are read through the same path as the real data set.
    """
    mura_dir = Path(mura_dir)
    written: list[Path] = []
    for mura_split in MURA_SPLITS:
        base = mura_dir / mura_split
        if not base.is_dir():
            continue
        image_lines: list[str] = []
        study_lines: list[str] = []
        for region_dir in sorted(_subdirs(base), key=lambda p: p.name):
            for patient_dir in sorted(_subdirs(region_dir), key=lambda p: _natural(p.name)):
                for study_dir in sorted(_subdirs(patient_dir), key=lambda p: _natural(p.name)):
                    rel = f"{prefix}/{mura_split}/{region_dir.name}/{patient_dir.name}/{study_dir.name}/"
                    match = _STUDY_RE.match(study_dir.name)
                    if match:
                        study_lines.append(f"{rel},{1 if match.group(2) == 'positive' else 0}")
                    for image in sorted(_image_files(study_dir), key=lambda p: _natural(p.name)):
                        image_lines.append(rel + image.name)
        for name, lines in (("image_paths", image_lines), ("labeled_studies", study_lines)):
            target = mura_dir / f"{mura_split}_{name}.csv"
            atomic_write_text(target, "".join(line + "\n" for line in lines))
            written.append(target)
    return written


def _subdirs(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as it:
            return [Path(e.path) for e in it if e.is_dir() and not is_hidden(Path(e.name))]
    except OSError:
        return []


def _image_files(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as it:
            return [Path(e.path) for e in it if e.is_file() and looks_like_image(Path(e.path))]
    except OSError:
        return []


class MuraDataset(DatasetPlugin):
    """MURA-v1.1 read from its CSVs and folders; see the module docstring for splits and label rules.

    Options: ``regions`` (e.g. ``("wrist",)``: keep only these regions), ``val_fraction`` (share of MURA-train
    patients held out as ``"val"``, default 0.1), ``seed`` (of that split, default 0), ``label_from`` (``"csv"``,
    the default, or ``"folder"``: which label wins when they disagree).
    """

    name: ClassVar[str] = "mura"
    description: ClassVar[str] = (
        "MURA-v1.1 upper-limb radiographs, normal/abnormal per study; MURA valid = test, train split by patient"
    )
    tags: ClassVar[Tags] = Tags(has_studies=True)
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    #: extra split names accepted by :meth:`records`
    aliases: ClassVar[dict[str, str]] = {"valid": "test", "validation": "test"}

    def __init__(
        self,
        root: str | Path,
        *,
        regions: Iterable[str] | str | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        label_from: str = "csv",
        **options: Any,
    ) -> None:
        super().__init__(root, regions=regions, val_fraction=val_fraction, seed=seed, label_from=label_from, **options)
        if not self.root.is_dir():
            raise DataError(self.root, "no such folder")
        self.mura_dir = find_mura_dir(self.root).absolute()
        if not self._has_layout(self.mura_dir):
            raise DataError(self.root, f"not a MURA layout (no {MURA_FOLDER}/, train/XR_*/ or *_image_paths.csv found)")
        if isinstance(regions, str):
            regions = (regions,)
        self.regions: tuple[str, ...] | None = tuple(r.lower() for r in regions) if regions else None
        if self.regions:
            unknown = sorted(set(self.regions) - set(REGIONS))
            if unknown:
                raise DataError(None, f"unknown MURA region(s) {', '.join(unknown)}; expected {', '.join(REGIONS)}")
        if not 0 <= val_fraction < 1:
            raise DataError(None, f"val_fraction must be in [0, 1), got {val_fraction}")
        if label_from not in ("csv", "folder"):
            raise DataError(None, f"label_from must be 'csv' or 'folder', got {label_from!r}")
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.label_from = label_from
        self._prepare()
        self._records = self._read()

    # -- hooks for subclasses ----------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Called once before the folders are read (e.g. to load a ground-truth sidecar). Default: nothing."""

    def _enrich(self, record: Record) -> Record:
        """Called on every record before it is stored; return it with added ground truth/metadata. Default: as is."""
        return record

    # -- DatasetPlugin -----------------------------------------------------------------------------------------
    @classmethod
    def detect(cls, root: str | Path) -> bool:
        root = Path(root)
        return root.is_dir() and cls._has_layout(find_mura_dir(root))

    def records(self, split: str | None = None) -> list[Record]:
        wanted = self._normalise_split(split)
        if wanted is None:
            return list(self._records)
        return [r for r in self._records if r.split == wanted]

    # -- internals ---------------------------------------------------------------------------------------------
    @staticmethod
    def _has_layout(mura_dir: Path) -> bool:
        for mura_split in MURA_SPLITS:
            for name in ("image_paths", "labeled_studies"):
                if (mura_dir / f"{mura_split}_{name}.csv").is_file():
                    return True
            if any(d.name.startswith("XR_") for d in _subdirs(mura_dir / mura_split)):
                return True
        return False

    def _normalise_split(self, split: str | None) -> str | None:
        wanted = self.resolve_split(split)
        return None if wanted == "all" else wanted

    def _problem(self, path: Path | str, problem: str, severity: str = "error") -> None:
        self.problems.append(make_problem(path, problem, severity, self.mura_dir.parent))

    def _read(self) -> list[Record]:
        records: list[Record] = []
        for mura_split in MURA_SPLITS:
            records.extend(self._read_split(mura_split))
        records.sort(key=lambda r: (list(MURA_SPLITS).index(r.metadata["mura_split"]), _natural(r.image_id)))
        self._assign_splits(records)
        return [self._enrich(r) for r in records]

    def _read_split(self, mura_split: str) -> list[Record]:
        base = self.mura_dir / mura_split
        paths_csv = self.mura_dir / f"{mura_split}_image_paths.csv"
        studies_csv = self.mura_dir / f"{mura_split}_labeled_studies.csv"
        if not base.is_dir() and not paths_csv.is_file() and not studies_csv.is_file():
            return []  # this MURA split is simply not there (e.g. only train/ was unpacked)
        on_disk = self._on_disk(base, mura_split)
        csv_images, csv_labels = self._listed(paths_csv, studies_csv, mura_split)
        return self._reconcile(mura_split, on_disk, csv_images, csv_labels, paths_csv)

    def _on_disk(self, base: Path, mura_split: str) -> dict[tuple[str, ...], list[Path]]:
        """1. What is on disk: study folder (relative parts) -> image files."""
        on_disk: dict[tuple[str, ...], list[Path]] = {}
        if base.is_dir():
            for region_dir in _subdirs(base):
                if not region_dir.name.startswith("XR_"):
                    self._problem(region_dir, "unexpected folder (expected XR_<REGION>); skipped", "warning")
                    continue
                for patient_dir in _subdirs(region_dir):
                    for study_dir in _subdirs(patient_dir):
                        on_disk[(mura_split, region_dir.name, patient_dir.name, study_dir.name)] = _image_files(
                            study_dir
                        )
        else:
            self._problem(base, "folder missing although its CSVs exist")

        return on_disk

    def _listed(
        self, paths_csv: Path, studies_csv: Path, mura_split: str
    ) -> tuple[dict[tuple[str, ...], list[str]] | None, dict[tuple[str, ...], int] | None]:
        """2. What the CSVs say: study -> image names, study -> label (None for a missing CSV)."""
        csv_images: dict[tuple[str, ...], list[str]] | None = None
        if paths_csv.is_file():
            csv_images = {}
            for row in read_csv_rows(paths_csv):
                parts = _relative_to_split(row[0], mura_split)
                if parts is None or len(parts) != 5:
                    self._problem(paths_csv, f"unexpected path {row[0]!r}; skipped")
                    continue
                csv_images.setdefault(parts[:4], []).append(parts[4])
        else:
            self._problem(paths_csv, "missing; images found by walking the folders", "warning")
        csv_labels: dict[tuple[str, ...], int] | None = None
        if studies_csv.is_file():
            csv_labels = {}
            for row in read_csv_rows(studies_csv):
                parts = _relative_to_split(row[0], mura_split)
                if parts is None or len(parts) != 4 or len(row) < 2 or row[1] not in ("0", "1"):
                    self._problem(studies_csv, f"unexpected row {','.join(row)!r}; skipped")
                    continue
                csv_labels[parts] = int(row[1])
        else:
            self._problem(studies_csv, "missing; labels taken from the study folder names", "warning")

        return csv_images, csv_labels

    def _reconcile(
        self,
        mura_split: str,
        on_disk: dict[tuple[str, ...], list[Path]],
        csv_images: dict[tuple[str, ...], list[str]] | None,
        csv_labels: dict[tuple[str, ...], int] | None,
        paths_csv: Path,
    ) -> list[Record]:
        """3. Disk and CSVs reconciled into records, problems noted."""
        study_keys: set[tuple[str, ...]] = set(on_disk) | set(csv_images or {}) | set(csv_labels or {})
        out: list[Record] = []
        for key in sorted(study_keys, key=lambda k: _natural("/".join(k))):  # keys have 4 parts
            _, region_folder, patient, _ = key
            region = region_folder[3:].lower()
            if self.regions is not None and region not in self.regions:
                continue
            study_dir = self.mura_dir.joinpath(*key)
            study_id = "/".join(key)
            if key not in on_disk:
                listed = len((csv_images or {}).get(key, []))
                self._problem(study_dir, f"study in the CSVs but its folder is missing ({listed} image(s) listed)")
                continue
            disk_names = {p.name: p for p in on_disk[key]}
            if not disk_names:
                self._problem(study_dir, "empty study folder (no images); skipped")
                continue
            if region not in REGIONS:
                self._problem(study_dir, f"unknown region {region_folder!r}; kept", "warning")
            label = self._study_label(key, study_dir, csv_labels)
            names = sorted(disk_names, key=_natural)
            if csv_images is not None:
                listed_names = csv_images.get(key, [])
                for missing in sorted(set(listed_names) - set(disk_names), key=_natural):
                    self._problem(study_dir / missing, f"listed in {paths_csv.name} but missing on disk")
                for extra in sorted(set(disk_names) - set(listed_names), key=_natural):
                    self._problem(study_dir / extra, f"on disk but not in {paths_csv.name}; kept", "warning")
            for image_name in names:
                out.append(
                    Record(
                        path=disk_names[image_name],
                        split="",  # assigned in _assign_splits
                        region=region,
                        patient=patient,
                        study=study_id,
                        label=label,
                        view=None,
                        metadata={"study_type": region_folder, "mura_split": mura_split},
                    )
                )
        return out

    def _study_label(
        self, key: tuple[str, ...], study_dir: Path, csv_labels: dict[tuple[str, ...], int] | None
    ) -> int | None:
        match = _STUDY_RE.match(key[3])
        folder_label = None if match is None else int(match.group(2) == "positive")
        if match is None:
            self._problem(study_dir, "study folder name is not study<N>_{positive,negative}", "warning")
        csv_label = None if csv_labels is None else csv_labels.get(key)
        if csv_labels is not None and csv_label is None:
            self._problem(
                study_dir, "study not in the labeled_studies CSV; label taken from the folder name", "warning"
            )
        if csv_label is not None and folder_label is not None and csv_label != folder_label:
            winner = csv_label if self.label_from == "csv" else folder_label
            self._problem(
                study_dir,
                f"label mismatch: labeled_studies CSV says {csv_label}, folder name says {folder_label}; "
                f"using {winner} (label_from={self.label_from!r})",
            )
            return winner
        return csv_label if csv_label is not None else folder_label

    def _assign_splits(self, records: list[Record]) -> None:
        train_patients = {r.patient for r in records if r.metadata["mura_split"] == "train" and r.patient}
        test_patients = {r.patient for r in records if r.metadata["mura_split"] == "valid" and r.patient}
        for patient in sorted(train_patients & test_patients):
            self._problem(
                patient, "patient appears in both MURA train and valid; its train studies are moved to test", "warning"
            )
        held_out = holdout(train_patients - test_patients, self.val_fraction, self.seed)
        for r in records:
            if r.metadata["mura_split"] == "valid" or r.patient in test_patients:
                r.split = "test"
            else:
                r.split = "val" if r.patient in held_out else "train"
