"""FracAtlas: musculoskeletal radiographs (hand, leg, hip, shoulder) labelled fractured / not, with fracture boxes
and polygons. Cite Abedeen et al., Scientific Data 10, 521 (2023); licence CC BY 4.0.

Layout (the original one; ``root`` may be the ``FracAtlas`` folder itself or its parent)::

    images/{Fractured,Non_fractured}/IMG*.jpg
    dataset.csv                      # image_id, hand, leg, hip, shoulder, mixed, hardware, multiscan, fractured,
                                     # fracture_count, frontal, lateral, oblique
    Annotations/PASCAL VOC/IMG*.xml  # fracture boxes           -> Record.boxes (label "fracture")
    Annotations/COCO JSON/COCO_fracture_masks.json  # polygons  -> Record.polygons (matched by file_name)
    Utilities/Fracture Split/{train,valid,test}.csv  # official split of the *fractured* images only

Records: ``label`` 1 = fractured; ``region`` is ``hand``, ``leg``, ``hip`` or ``shoulder`` from the one-hot columns,
``"mixed"`` when ``mixed`` is set or several are; ``view`` is ``frontal``, ``lateral`` or ``oblique``, or
``"multiple"`` when several flags are set. ``metadata`` keeps every column (``hardware``, ``multiscan``,
``fracture_count``, the view and body-part flags) so results can be broken down by them. FracAtlas has no patient
or study ids: every image stands alone.

Label rule: the folder (``Fractured/`` or ``Non_fractured/``) wins, because in the original data it agrees with the
fracture annotations; a disagreeing ``fractured`` column is reported as a Problem. The known case is
``IMG0003298.jpg``: in ``Fractured/``, annotated with a fracture and ``fracture_count=1``, but ``fractured=0``; it is
read as fractured. ``label_from="csv"`` makes the CSV win instead.

Splits: a seeded, hash-based split stratified by (label, region), 70/10/20 into ``train``/``val``/``test`` by
default (``fractions=(train, val, test)``, ``seed``). ``official_split=True`` puts the images listed in
``Utilities/Fracture Split`` (fractured only; ``valid`` -> ``val``) into their official split and splits the rest
as above. Rows of ``dataset.csv`` whose image is not on disk are reported (one summary Problem plus one per image)
and left out; images on disk but not in the CSV are kept with a warning.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from xray_xai.errors import DataError
from xray_xai.sdk.interfaces import Box, DatasetPlugin, Record, Tags

from ._splits import looks_like_image, make_problem, read_csv_rows, stratified_split

__all__ = ["BODY_PARTS", "COLUMNS", "FracAtlasDataset"]

#: the columns dataset.csv must have
COLUMNS: tuple[str, ...] = (
    "image_id",
    "hand",
    "leg",
    "hip",
    "shoulder",
    "mixed",
    "hardware",
    "multiscan",
    "fractured",
    "fracture_count",
    "frontal",
    "lateral",
    "oblique",
)
BODY_PARTS: tuple[str, ...] = ("hand", "leg", "hip", "shoulder")
VIEWS: tuple[str, ...] = ("frontal", "lateral", "oblique")
_FOLDERS: dict[str, int] = {"Fractured": 1, "Non_fractured": 0}
_VOC_DIR = ("Annotations", "PASCAL VOC")
_COCO_FILE = ("Annotations", "COCO JSON", "COCO_fracture_masks.json")
_SPLIT_DIR = ("Utilities", "Fracture Split")
_OFFICIAL: dict[str, str] = {"train": "train", "valid": "val", "test": "test"}


def _find_root(root: Path) -> Path:
    if (root / "dataset.csv").is_file():
        return root
    inner = root / "FracAtlas"
    return inner if (inner / "dataset.csv").is_file() else root


class FracAtlasDataset(DatasetPlugin):
    """FracAtlas in its original layout; see the module docstring for label, region, view and split rules.

    Options: ``fractions`` (train, val, test shares; default 0.7, 0.1, 0.2), ``seed`` (default 0),
    ``official_split`` (default False), ``label_from`` (``"folder"``, the default, or ``"csv"``), ``regions``
    (keep only these regions, e.g. ``("hand",)``), ``annotations`` (default True: read boxes and polygons).
    """

    name: ClassVar[str] = "fracatlas"
    description: ClassVar[str] = (
        "FracAtlas radiographs (hand, leg, hip, shoulder), fractured or not, with fracture boxes and polygons"
    )
    tags: ClassVar[Tags] = Tags(has_ground_truth=True)
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    aliases: ClassVar[dict[str, str]] = {"valid": "val", "validation": "val"}

    def __init__(
        self,
        root: str | Path,
        *,
        fractions: Sequence[float] = (0.7, 0.1, 0.2),
        seed: int = 0,
        official_split: bool = False,
        label_from: str = "folder",
        regions: Iterable[str] | str | None = None,
        annotations: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(
            root,
            fractions=tuple(fractions),
            seed=seed,
            official_split=official_split,
            label_from=label_from,
            regions=regions,
            annotations=annotations,
            **options,
        )
        if not self.root.is_dir():
            raise DataError(self.root, "no such folder")
        self.data_dir = _find_root(self.root).absolute()
        self.csv_path = self.data_dir / "dataset.csv"
        if not self.csv_path.is_file():
            raise DataError(self.root, "not a FracAtlas layout (no dataset.csv)")
        if len(tuple(fractions)) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
            raise DataError(None, f"fractions must be three non-negative shares (train, val, test), got {fractions}")
        if label_from not in ("folder", "csv"):
            raise DataError(None, f"label_from must be 'folder' or 'csv', got {label_from!r}")
        if isinstance(regions, str):
            regions = (regions,)
        self.regions: tuple[str, ...] | None = tuple(r.lower() for r in regions) if regions else None
        if self.regions:
            unknown = sorted(set(self.regions) - {*BODY_PARTS, "mixed"})
            if unknown:
                raise DataError(
                    None,
                    f"unknown FracAtlas region(s) {', '.join(unknown)}; expected hand, leg, hip, shoulder or mixed",
                )
        self.fractions = tuple(float(f) for f in fractions)
        self.seed = int(seed)
        self.official_split = bool(official_split)
        self.label_from = label_from
        self.annotations = bool(annotations)
        self._records = self._read()

    @classmethod
    def detect(cls, root: str | Path) -> bool:
        data_dir = _find_root(Path(root))
        return (data_dir / "dataset.csv").is_file() and (data_dir / "images").is_dir()

    def records(self, split: str | None = None) -> list[Record]:
        wanted = self.resolve_split(split)
        if wanted == "all":
            return list(self._records)
        return [r for r in self._records if r.split == wanted]

    # -- internals ---------------------------------------------------------------------------------------------
    def _problem(self, path: Path | str, problem: str, severity: str = "error") -> None:
        self.problems.append(make_problem(path, problem, severity, self.data_dir))

    def _read_table(self) -> list[dict[str, str]]:
        rows = read_csv_rows(self.csv_path)
        if not rows:
            raise DataError(self.csv_path, "empty file (expected a header and one row per image)")
        header = [h.strip().lower() for h in rows[0]]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise DataError(self.csv_path, f"missing column(s) {', '.join(missing)}")
        table = []
        for row in rows[1:]:
            if len(row) < len(header):
                self._problem(self.csv_path, f"short row {','.join(row)!r}; skipped")
                continue
            table.append(dict(zip(header, row[: len(header)], strict=True)))
        return table

    def _on_disk(self) -> dict[str, tuple[Path, int]]:
        found: dict[str, tuple[Path, int]] = {}
        for folder, label in _FOLDERS.items():
            base = self.data_dir / "images" / folder
            if not base.is_dir():
                self._problem(base, "folder missing")
                continue
            with os.scandir(base) as it:
                for entry in sorted(it, key=lambda e: e.name):
                    path = Path(entry.path)
                    if not entry.is_file() or not looks_like_image(path):
                        continue
                    if entry.name in found:
                        self._problem(path, f"also in {found[entry.name][0].parent.name}/; this copy ignored")
                        continue
                    found[entry.name] = (path, label)
        return found

    def _flag(self, row: dict[str, str], column: str, image_id: str) -> int | None:
        value = row.get(column, "").strip()
        try:
            return int(float(value))
        except ValueError:
            self._problem(self.csv_path, f"{image_id}: column {column!r} is {value!r}, not a number", "warning")
            return None

    def _read(self) -> list[Record]:
        table = self._read_table()
        on_disk = self._on_disk()
        polygons = self._read_coco() if self.annotations else {}
        records: list[Record] = []
        missing: list[str] = []
        seen: set[str] = set()
        for row in table:
            image_id = row["image_id"].strip()
            if image_id in seen:
                self._problem(self.csv_path, f"{image_id}: listed twice; second row ignored")
                continue
            seen.add(image_id)
            if image_id not in on_disk:
                missing.append(image_id)
                continue
            path, folder_label = on_disk[image_id]
            flags = {c: self._flag(row, c, image_id) for c in COLUMNS[1:]}
            records.append(self._record(image_id, path, folder_label, flags, polygons.get(image_id, ())))
        if missing:
            self._problem(
                self.csv_path,
                f"{len(missing)} image(s) listed here are not under images/ and were left out "
                f"(first: {', '.join(missing[:3])})",
            )
            for image_id in missing:
                self._problem(Path("images") / image_id, "listed in dataset.csv but missing on disk")
        for image_id in sorted(set(on_disk) - seen):
            path, folder_label = on_disk[image_id]
            self._problem(path, "on disk but not in dataset.csv; kept without region/view", "warning")
            records.append(self._record(image_id, path, folder_label, {}, polygons.get(image_id, ())))
        if self.regions is not None:
            records = [r for r in records if r.region in self.regions]
        records.sort(key=lambda r: r.path.name)
        self._assign_splits(records)
        return records

    def _record(
        self,
        image_id: str,
        path: Path,
        folder_label: int,
        flags: dict[str, int | None],
        polygons: tuple[tuple[tuple[float, float], ...], ...],
    ) -> Record:
        csv_label = flags.get("fractured")
        label: int = folder_label
        if csv_label is not None and csv_label != folder_label:
            label = folder_label if self.label_from == "folder" else int(csv_label)
            self._problem(
                path,
                f"label mismatch: in {path.parent.name}/ but dataset.csv says fractured={csv_label}; "
                f"using {label} (label_from={self.label_from!r})",
            )
        parts = [p for p in BODY_PARTS if flags.get(p)]
        region = "mixed" if flags.get("mixed") or len(parts) > 1 else (parts[0] if parts else None)
        views = [v for v in VIEWS if flags.get(v)]
        view = "multiple" if len(views) > 1 else (views[0] if views else None)
        metadata: dict[str, Any] = {k: v for k, v in flags.items() if k != "fractured"}
        metadata["body_parts"] = parts
        metadata["csv_fractured"] = csv_label
        boxes = self._read_voc(image_id) if self.annotations else ()
        if not boxes and polygons:
            boxes = tuple(_polygon_box(poly) for poly in polygons)
        return Record(
            path=path,
            split="",
            region=region,
            label=label,
            view=view,
            metadata=metadata,
            boxes=boxes,
            polygons=polygons,
        )

    def _read_voc(self, image_id: str) -> tuple[Box, ...]:
        xml_path = self.data_dir.joinpath(*_VOC_DIR, Path(image_id).stem + ".xml")
        if not xml_path.is_file():
            return ()
        try:
            tree = ET.parse(xml_path)  # local annotation files shipped with the data set
        except (ET.ParseError, OSError) as exc:
            self._problem(xml_path, f"unreadable PASCAL VOC file ({exc}); no boxes")
            return ()
        size = tree.find("size")
        width = _number(size.findtext("width")) if size is not None else None
        height = _number(size.findtext("height")) if size is not None else None
        boxes = []
        for obj in tree.iterfind("object"):
            bb = obj.find("bndbox")
            if bb is None:
                continue
            coords = [_number(bb.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")]
            if any(c is None for c in coords):
                self._problem(xml_path, "box with a missing coordinate; skipped", "warning")
                continue
            x0, y0, x1, y1 = (float(c) for c in coords if c is not None)
            if width:
                x0, x1 = max(0.0, x0), min(width, x1)
            if height:
                y0, y1 = max(0.0, y0), min(height, y1)
            if x1 <= x0 or y1 <= y0:
                self._problem(xml_path, "empty box; skipped", "warning")
                continue
            boxes.append(Box(x0, y0, x1, y1, label="fracture"))
        return tuple(boxes)

    def _read_coco(self) -> dict[str, tuple[tuple[tuple[float, float], ...], ...]]:
        coco_path = self.data_dir.joinpath(*_COCO_FILE)
        if not coco_path.is_file():
            self._problem(coco_path, "missing; no fracture polygons", "warning")
            return {}
        try:
            coco = json.loads(coco_path.read_text(encoding="utf-8"))
            names = {int(im["id"]): str(im["file_name"]) for im in coco["images"]}
            annotations = coco["annotations"]
        except (ValueError, KeyError, TypeError) as exc:
            self._problem(coco_path, f"not a readable COCO file ({type(exc).__name__}: {exc}); no polygons")
            return {}
        out: dict[str, list[tuple[tuple[float, float], ...]]] = {}
        for ann in annotations:
            name = names.get(int(ann.get("image_id", -1)))
            segmentation = ann.get("segmentation")
            if name is None or not isinstance(segmentation, list):  # RLE masks are not used by FracAtlas
                continue
            for flat in segmentation:
                if isinstance(flat, list) and len(flat) >= 6:
                    pts = tuple((float(flat[i]), float(flat[i + 1])) for i in range(0, len(flat) - 1, 2))
                    out.setdefault(name, []).append(pts)
        return {k: tuple(v) for k, v in out.items()}

    def _official(self) -> dict[str, str]:
        split_dir = self.data_dir.joinpath(*_SPLIT_DIR)
        assigned: dict[str, str] = {}
        for official, ours in _OFFICIAL.items():
            path = split_dir / f"{official}.csv"
            if not path.is_file():
                self._problem(path, "missing; official_split ignores it", "warning")
                continue
            for row in read_csv_rows(path):
                if row[0].lower() != "image_id":
                    assigned[row[0]] = ours
        return assigned

    def _assign_splits(self, records: list[Record]) -> None:
        official = self._official() if self.official_split else {}
        rest = {r.path.name: f"{r.label}/{r.region}" for r in records if r.path.name not in official}
        train, val, test = self.fractions
        split_of = stratified_split(rest, {"train": train, "val": val, "test": test}, self.seed)
        for r in records:
            r.split = official.get(r.path.name) or split_of[r.path.name]
            if r.path.name in official:
                r.metadata["official_split"] = True


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _polygon_box(poly: tuple[tuple[float, float], ...]) -> Box:
    xs = [p[0] for p in poly]
    ys = [p[1] for p in poly]
    return Box(min(xs), min(ys), max(xs), max(ys), label="fracture")
