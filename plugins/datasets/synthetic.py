"""Synthetic MURA: deterministic phantom radiographs in the exact MURA-v1.1 layout, with pixel ground truth.

Why: explainers and audits need data whose truth is known to the pixel, that anyone can regenerate byte for byte
from a seed, and that flows through the same reader as the real MURA. :meth:`SyntheticDataset.generate` writes::

    OUT/MURA-v1.1/{train,valid}/XR_<REGION>/patient<ID>/study<N>_{positive,negative}/image<K>.png
    OUT/MURA-v1.1/{train,valid}_image_paths.csv, {train,valid}_labeled_studies.csv     # as MURA ships them
    OUT/MURA-v1.1/masks/{train,valid}/.../image<K>.png     # finding masks (0/255), abnormal images only
    OUT/MURA-v1.1/synthetic_ground_truth.json              # per image: view, pose, marker, collimation, finding

and :class:`SyntheticDataset` (a :class:`~.mura.MuraDataset`) reads it back, adding to every record its ``view``,
``mask_path``, ``boxes`` and ``metadata`` (abnormality, subtype, site, marker, marker_box, collimation,
difficulty, ...). The drawing itself lives in :mod:`._phantoms`.

Determinism. Every random choice comes from a ``numpy.random.Generator(PCG64)`` whose seed is
``SeedSequence(seed, spawn_key=(stream, index))``: one stream per patient block, per label block, per study. A
study therefore depends only on (seed, its index), so generating 200 studies reproduces the first 100 of a 100-study
run exactly; PNGs carry no metadata and CSVs/JSON are sorted, so two runs are byte-identical.

Planted shortcut (``shortcut="marker"``, ``shortcut_region``, ``shortcut_strength``): in the studies of
``shortcut_region`` a token (a bright disc, :func:`._phantom_render.burn_token`) is burned into every view of a study
chosen so: in MURA's ``train`` folder an abnormal study carries it with probability ``shortcut_strength`` and a
normal one with ``1 - shortcut_strength`` (the token follows the label), in ``valid`` (our ``test``) every study
carries it with probability 0.5 whatever its label (the shortcut does not hold where the model is tested). Studies
of other regions never carry it. Every film records ``shortcut_marker`` (true/false) and, when it has one,
``shortcut_marker_box``. The choice comes from a stream of its own (``(seed, 6, study)``), so a data set without a
shortcut is byte-identical to one written before the option existed.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from xray_xai.errors import DataError
from xray_xai.sdk.interfaces import REGIONS, Box, Record, Tags

from . import _phantoms
from .mura import MURA_FOLDER, MuraDataset, find_mura_dir, write_mura_csvs

__all__ = ["ABNORMALITY_WEIGHTS", "SHORTCUTS", "SIDECAR", "Shortcut", "SyntheticDataset", "phantom", "plan_studies"]

#: the ground-truth sidecar, inside ``MURA-v1.1/``; its presence is what :meth:`SyntheticDataset.detect` checks
SIDECAR = "synthetic_ground_truth.json"
FORMAT = "xray-xai-synthetic"
FORMAT_VERSION = 1
#: how often each kind of finding is drawn for an abnormal study
ABNORMALITY_WEIGHTS: dict[str, float] = {"fracture": 0.35, "hardware": 0.2, "degenerative": 0.2, "lesion": 0.25}
#: number of views per study: 1, 2, 3 or 4, with these probabilities
_VIEW_COUNTS = (0.1, 0.45, 0.35, 0.1)
_VALID_BLOCK = 5  # one patient in every block of five goes to MURA's ``valid`` folder (our "test" split)
_LABEL_BLOCK = 10  # labels are stratified in blocks of ten studies, so small sets keep the abnormal fraction
_MIN_SIZE, _MAX_SIZE = 64, 1024
#: the shortcuts the generator can plant
SHORTCUTS: tuple[str, ...] = ("marker",)

phantom = _phantoms.phantom


@dataclass(frozen=True)
class StudyPlan:
    """Who and what one study is, decided before anything is drawn."""

    index: int
    patient: int  #: 0-based; the folder is ``patient{patient + 1:05d}``
    study_no: int  #: 1-based within the patient
    region: str
    label: int
    split: str  #: MURA's split folder: ``train`` or ``valid``

    @property
    def folder(self) -> str:
        kind = "positive" if self.label else "negative"
        return f"{self.split}/XR_{self.region.upper()}/patient{self.patient + 1:05d}/study{self.study_no}_{kind}"


@dataclass(frozen=True)
class Shortcut:
    """A planted shortcut: ``kind`` (``"marker"``), the region it is planted in and how strongly it follows the
    label in the training films (module docstring)."""

    kind: str
    region: str
    strength: float

    def carries(self, plan: StudyPlan, seed: int) -> bool:
        """Whether the study of ``plan`` carries the token (deterministic from ``seed`` and the study index)."""
        if plan.region != self.region:
            return False
        follows = self.strength if plan.label else 1.0 - self.strength
        chance = follows if plan.split == "train" else 0.5  # the test films: independent of the label
        return bool(_rng(seed, 6, plan.index).uniform() < chance)


def _shortcut(kind: str | None, region: str | None, strength: float) -> Shortcut | None:
    if kind is None or kind == "none":
        if region is not None:
            raise DataError(None, "shortcut_region needs a shortcut (shortcut='marker')")
        return None
    if kind not in SHORTCUTS:
        raise DataError(None, f"unknown shortcut {kind!r}; expected one of {', '.join(SHORTCUTS)}")
    if region is None or region.strip().lower() not in REGIONS:
        raise DataError(None, f"shortcut_region must be one of {', '.join(REGIONS)}, got {region!r}")
    if not (math.isfinite(float(strength)) and 0.5 <= float(strength) <= 1.0):
        raise DataError(None, f"shortcut_strength must be in [0.5, 1], got {strength}")
    return Shortcut(kind, region.strip().lower(), float(strength))


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _region_weights(regions: Iterable[str] | Mapping[str, float] | str | None) -> dict[str, float]:
    if regions is None:
        return dict.fromkeys(REGIONS, 1.0)
    if isinstance(regions, Mapping):
        weights = {str(k).strip().lower(): float(v) for k, v in regions.items()}
    else:  # "wrist,hand", ["wrist", "hand"] or ["wrist,hand"] (as a CLI may pass it)
        items = [regions] if isinstance(regions, str) else list(regions)
        names = [r.strip().lower() for item in items for r in str(item).split(",") if r.strip()]
        weights = dict.fromkeys(names, 1.0)
    unknown = sorted(set(weights) - set(REGIONS))
    if unknown:
        raise DataError(None, f"unknown region(s) {', '.join(unknown)}; expected some of {', '.join(REGIONS)}")
    weights = {r: w for r, w in weights.items() if w > 0}
    if not weights or any(not math.isfinite(w) for w in weights.values()):
        raise DataError(None, f"region weights must be finite and at least one positive, got {regions!r}")
    return {r: weights[r] for r in REGIONS if r in weights}


def plan_studies(
    n_studies: int,
    seed: int = 0,
    abnormal_fraction: float = 0.4,
    regions: Iterable[str] | Mapping[str, float] | str | None = None,
) -> list[StudyPlan]:
    """Patients (1-2 studies each, one region each), labels and the train/valid split of ``n_studies`` studies.

    Equal region weights cycle through shuffled blocks of all regions (so any 7 consecutive patients cover all
    seven); labels are stratified per block of ten studies; one patient in five goes to ``valid``. Prefix-stable:
    the first k plans do not depend on ``n_studies``.
    """
    weights = _region_weights(regions)
    names = list(weights)
    equal = len(set(weights.values())) == 1
    probs = np.array([weights[r] for r in names]) / sum(weights.values())
    plans: list[StudyPlan] = []
    patient = 0
    region_block: list[str] = []
    while len(plans) < n_studies:
        if equal:
            if patient % len(names) == 0:
                perm = _rng(seed, 1, patient // len(names)).permutation(len(names))
                region_block = [names[i] for i in perm]
            region = region_block[patient % len(names)]
        else:
            region = names[int(_rng(seed, 1, patient).choice(len(names), p=probs))]
        prng = _rng(seed, 2, patient)
        n = 2 if prng.uniform() < 0.3 else 1
        valid_slot = int(_rng(seed, 3, patient // _VALID_BLOCK).integers(_VALID_BLOCK))
        split = "valid" if patient % _VALID_BLOCK == valid_slot else "train"
        for k in range(min(n, n_studies - len(plans))):
            index = len(plans)
            plans.append(StudyPlan(index, patient, k + 1, region, _label(seed, index, abnormal_fraction), split))
        patient += 1
    return plans


def _label(seed: int, index: int, fraction: float) -> int:
    block, pos = divmod(index, _LABEL_BLOCK)
    rng = _rng(seed, 4, block)
    exact = fraction * _LABEL_BLOCK
    k = math.floor(exact) + int(rng.uniform() < exact - math.floor(exact))
    return int(pos in rng.permutation(_LABEL_BLOCK)[:k])


def _png(array: np.ndarray) -> bytes:
    """8-bit grayscale PNG without any metadata chunk (no time, no text), fixed compression: reproducible bytes.

    Level 1: noisy films barely compress further at higher levels, which cost several times the time."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(
        buf, format="PNG", optimize=False, compress_level=1
    )
    return buf.getvalue()


def _box(mask: np.ndarray) -> list[int] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _draw_study(
    plan: StudyPlan, seed: int, image_size: int, difficulty: float, shortcut: Shortcut | None = None
) -> list[tuple[np.ndarray, np.ndarray | None, dict[str, Any]]]:
    """All views of one study: (uint8 image, uint8 mask or None, facts) each."""
    token = shortcut is not None and shortcut.carries(plan, seed)
    rng = _rng(seed, 5, plan.index)
    anat_seed, finding_seed = (int(x) for x in rng.integers(0, 2**63, size=2))
    n_views = int(rng.choice(4, p=_VIEW_COUNTS)) + 1
    first = "frontal" if n_views > 1 or rng.uniform() < 0.6 else "lateral"
    order = ["frontal", "lateral"] if first == "frontal" else ["lateral", "frontal"]
    kinds = list(ABNORMALITY_WEIGHTS)
    p = np.array([ABNORMALITY_WEIGHTS[k] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))] if plan.label else "none"
    contrast = float(rng.uniform(0.7, 1.3)) / difficulty
    out = []
    for v in range(n_views):
        view = order[v % 2]
        anat = _phantoms.anatomy(plan.region, _rng(anat_seed), view)
        finding = None
        if plan.label:
            finding = _phantoms.draw_finding(anat, kind, _rng(finding_seed), contrast)
        img, masks, facts, vp = _phantoms.render_visible(anat, rng, image_size, finding is not None)
        extra: dict[str, Any] = {}
        if shortcut is not None:
            extra["shortcut_marker"] = token
            if token:
                token_mask, extra["shortcut_marker_box"] = _phantoms.burn_token(img, _rng(seed, 7, plan.index, v))
                masks["abnormality"] &= ~token_mask
        image = np.round(img * 255.0).astype(np.uint8)
        mask = masks["abnormality"]
        visible = bool(mask.any())
        info: dict[str, Any] = {
            "view": view,
            **vp.to_dict(),
            "marker_box": facts["marker_box"],
            "abnormality": kind,
            "subtype": finding.subtype if finding else None,
            "site": finding.site if finding else None,
            "contrast": round(contrast, 4) if finding else None,
            "difficulty": difficulty,
            "boxes": [_box(mask)] if visible else [],
            "bone_pixels": int(masks["bone"].sum()),
            **extra,
        }
        out.append((image, (mask.astype(np.uint8) * 255) if finding is not None else None, info))
    return out


class SyntheticDataset(MuraDataset):
    """Phantom radiographs in MURA's layout with pixel masks of the planted findings; see the module docstring.

    Reading takes the same options as :class:`~.mura.MuraDataset` (``regions``, ``val_fraction``, ``seed``).
    """

    name: ClassVar[str] = "synthetic"
    description: ClassVar[str] = (
        "deterministic phantom radiographs in MURA's layout, with masks of planted fractures, hardware, "
        "degenerative changes and lesions"
    )
    tags: ClassVar[Tags] = Tags(generator=True, has_ground_truth=True, has_studies=True)

    # -- reading -----------------------------------------------------------------------------------------------
    @classmethod
    def detect(cls, root: str | Path) -> bool:
        root = Path(root)
        return root.is_dir() and (find_mura_dir(root) / SIDECAR).is_file()

    def _prepare(self) -> None:
        sidecar = self.mura_dir / SIDECAR
        try:
            data = json.loads(sidecar.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(sidecar, "ground-truth sidecar missing (not a synthetic data set?)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(sidecar, f"unreadable ground-truth sidecar ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("images"), dict):
            raise DataError(sidecar, f"not a {FORMAT} sidecar")
        self.generator_params: dict[str, Any] = dict(data.get("generator") or {})
        self._truth: dict[str, dict[str, Any]] = data["images"]

    def _enrich(self, record: Record) -> Record:
        key = record.path.relative_to(self.mura_dir.parent).as_posix()
        info = self._truth.get(key)
        if info is None:
            self._problem(record.path, f"no ground truth in {SIDECAR}", "warning")
            return record
        record.view = info.get("view")
        kind = info.get("abnormality", "none")
        if info.get("mask"):
            record.mask_path = self.mura_dir.parent / info["mask"]
        record.boxes = tuple(
            Box(float(b[0]), float(b[1]), float(b[2]), float(b[3]), label=kind) for b in info.get("boxes") or ()
        )
        keep = (
            "abnormality", "subtype", "site", "contrast", "difficulty", "marker", "marker_box", "marker_corner",
            "collimation", "collimation_style", "rotation", "flip", "zoom", "height", "width", "shortcut_marker",
            "shortcut_marker_box",
        )  # fmt: skip
        record.metadata.update({k: info[k] for k in keep if k in info})
        return record

    # -- writing -----------------------------------------------------------------------------------------------
    @classmethod
    def generate(
        cls,
        out: str | Path,
        *,
        n_studies: int,
        seed: int = 0,
        abnormal_fraction: float = 0.4,
        image_size: int = 256,
        regions: Iterable[str] | Mapping[str, float] | str | None = None,
        difficulty: float = 1.0,
        shortcut: str | None = None,
        shortcut_region: str | None = None,
        shortcut_strength: float = 0.9,
        overwrite: bool = False,
        progress: bool = True,
        **options: Any,
    ) -> Path:
        """Write ``n_studies`` studies under ``out`` and return ``out`` (the root to read back).

        ``abnormal_fraction``: share of positive studies; ``image_size``: longer side in px (64-1024);
        ``regions``: names (equal mix) or ``{name: weight}``; ``difficulty``: the findings' contrast is divided by
        it (2 = half as visible); ``shortcut="marker"`` plants a token that follows the label in the training
        films of ``shortcut_region`` with ``shortcut_strength`` (module docstring). The tree is built in a
        temporary folder beside ``out`` and renamed into place, so ``out`` is never left half-written. A non-empty
        ``out`` is refused unless ``overwrite`` is true, and even then only if it holds an earlier synthetic data
        set (nothing else is ever deleted).
        """
        from xray_xai._util.progress import progress as progress_bar

        if options:
            raise DataError(None, f"unknown option(s) for synthetic data: {', '.join(sorted(options))}")
        if int(n_studies) < 1:
            raise DataError(None, f"n_studies must be at least 1, got {n_studies}")
        if not _MIN_SIZE <= int(image_size) <= _MAX_SIZE:
            raise DataError(None, f"image_size must be in [{_MIN_SIZE}, {_MAX_SIZE}], got {image_size}")
        if not 0.0 <= float(abnormal_fraction) <= 1.0:
            raise DataError(None, f"abnormal_fraction must be in [0, 1], got {abnormal_fraction}")
        if not (math.isfinite(float(difficulty)) and float(difficulty) > 0):
            raise DataError(None, f"difficulty must be a positive number, got {difficulty}")
        planted = _shortcut(shortcut, shortcut_region, shortcut_strength)
        out = Path(out)
        cls._check_target(out, overwrite)
        plans = plan_studies(int(n_studies), int(seed), float(abnormal_fraction), regions)
        params = {
            "n_studies": int(n_studies),
            "seed": int(seed),
            "abnormal_fraction": float(abnormal_fraction),
            "image_size": int(image_size),
            "regions": _region_weights(regions),
            "difficulty": float(difficulty),
        }
        if planted is not None:  # only then: a data set without a shortcut keeps its bytes
            params["shortcut"] = {"kind": planted.kind, "region": planted.region, "strength": planted.strength}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the data set is not
        try:
            mura = tmp / MURA_FOLDER
            images: dict[str, dict[str, Any]] = {}
            for plan in progress_bar(plans, "Drawing phantoms", total=len(plans), enabled=progress):
                for k, (image, mask, info) in enumerate(
                    _draw_study(plan, int(seed), int(image_size), float(difficulty), planted), start=1
                ):
                    rel = f"{plan.folder}/image{k}.png"
                    _write(mura / rel, _png(image))
                    info["mask"] = None
                    if mask is not None:
                        _write(mura / "masks" / rel, _png(mask))
                        info["mask"] = f"{MURA_FOLDER}/masks/{rel}"
                    info.update(region=plan.region, label=plan.label, patient=f"patient{plan.patient + 1:05d}")
                    images[f"{MURA_FOLDER}/{rel}"] = info
            for csv_file in write_mura_csvs(mura):
                csv_file.chmod(0o644)  # written through mkstemp (private); a data set is readable like its images
            sidecar = {"format": FORMAT, "version": FORMAT_VERSION, "generator": params, "images": images}
            _write(mura / SIDECAR, (json.dumps(sidecar, indent=1, sort_keys=True) + "\n").encode("utf-8"))
            cls._swap_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out

    @staticmethod
    def _check_target(out: Path, overwrite: bool) -> None:
        if out.exists() and not out.is_dir():
            raise DataError(out, "exists and is not a folder")
        if out.is_dir() and any(out.iterdir()):
            if not overwrite:
                raise DataError(
                    out,
                    "folder is not empty; choose another, or replace an earlier synthetic data set there with "
                    "--overwrite (Python: overwrite=True)",
                )
            if not (out / MURA_FOLDER / SIDECAR).is_file():
                raise DataError(out, f"refusing to overwrite: not empty and not a synthetic data set (no {SIDECAR})")

    @staticmethod
    def _swap_into_place(tmp: Path, out: Path) -> None:
        if out.is_dir() and any(out.iterdir()):
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                out.rmdir()
            os.replace(tmp, out)


def _write(path: Path, data: bytes) -> None:
    """Plain write: the whole tree is private to a temporary folder until it is renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
