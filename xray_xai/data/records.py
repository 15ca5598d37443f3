"""Records from input paths (``--input`` of ``predict`` and ``explain``): one study rule for files and folders.

Data set readers (MURA, FracAtlas, folder...) name studies their own way; this module is for paths given one by one.
Folders are searched recursively, files sorted; missing paths and folders without images become problems. The study
of each film:

1. **MURA layout**: a film whose folder is ``study<N>_{positive,negative}`` inside ``patient<ID>`` (e.g.
   ``.../XR_WRIST/patient00001/study1_positive/image1.png``) belongs to that study, named by its MURA parts
   (``XR_WRIST/patient00001/study1_positive``, from the ``XR_`` folder when there is one); the folder names also give
   its label (positive = 1), patient and region (``wrist``), as the MURA reader would.
2. **Sub-folders**: a film in a sub-folder of a given folder belongs to the study named by that sub-folder's path
   relative to the given folder (``patient1/study1``): a sub-folder holds the views of one study. When several
   folders are given, the study name starts with the folder as given (``a/patient1/study1``, ``b/patient1/study1``),
   so equal sub-folder names in different folders stay different studies.
3. **Loose films**: a film given as a file, or lying directly in a given folder, is a study of its own
   (``Record.study`` is None, so a study probability is never averaged over unrelated films).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from xray_xai.sdk.interfaces import Problem, Record

__all__ = ["mura_study", "records_from_paths"]

_MURA_STUDY = re.compile(r"^study\d+_(positive|negative)$")
_MURA_PATIENT = re.compile(r"^patient\d+$")


def mura_study(path: str | Path) -> Record | None:
    """A record for ``path`` with study, label, patient and region from its MURA-layout folders, or None when the
    path is not laid out as MURA (``patient<ID>/study<N>_{positive,negative}/<film>``)."""
    p = Path(path)
    study_dir, patient_dir = p.parent, p.parent.parent
    match = _MURA_STUDY.match(study_dir.name)
    if match is None or not _MURA_PATIENT.match(patient_dir.name):
        return None
    region_dir = patient_dir.parent
    has_region = region_dir.name.startswith("XR_")
    parts = [region_dir.name] if has_region else []
    return Record(
        path=p,
        study="/".join([*parts, patient_dir.name, study_dir.name]),
        label=1 if match.group(1) == "positive" else 0,
        patient=patient_dir.name,
        region=region_dir.name[3:].lower() if has_region else None,
    )


def records_from_paths(inputs: Iterable[str | Path]) -> tuple[list[Record], list[Problem]]:
    """Records for image files and folders, with the study rule of the module docstring; missing paths and folders
    without images are returned as problems."""
    from xray_xai.data.images import is_image_file

    records: list[Record] = []
    problems: list[Problem] = []
    paths = [Path(raw) for raw in inputs]
    several = sum(p.is_dir() for p in paths) > 1
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not found:
                problems.append(Problem(str(path), "folder holds no images"))
            for p in found:
                parent = p.parent.relative_to(path)
                study = None if parent == Path(".") else (path / parent if several else parent).as_posix()
                records.append(mura_study(p) or Record(path=p, study=study))
        elif path.is_file():
            records.append(mura_study(path) or Record(path=path))
        else:
            problems.append(Problem(str(path), "no such file or folder"))
    return records, problems
