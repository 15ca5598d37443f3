"""Records as a torch dataset: films read, checked and preprocessed for a DataLoader, bad ones skipped.

Training, evaluation and feature extraction read films through :class:`RecordDataset`; a file that cannot be decoded
does not kill the DataLoader, and a film kept despite damage (its stream ends early, little is missing: see
:func:`xray_xai.data.images.read_film`) is reported as a warning::

    ds = RecordDataset(records, model.preprocessing, augment=Augment.default(), strict=False)
    loader = DataLoader(ds, batch_size=16, shuffle=True, collate_fn=collate_skip_bad, num_workers=2)
    for images, labels, indices, problems in loader:
        ds.add_skipped(problems)  # needed with num_workers > 0: workers hold their own copy of ``ds``
        if len(indices) == 0:
            continue  # every film of this batch was unreadable
        ...
    ds.skipped   # the films left out (Problem, severity "error"): write them with write_skipped_csv
    ds.warnings  # the films kept despite damage (Problem, severity "warning"): listed in warnings.csv
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from xray_xai.data.geometry import geometry, geometry_to_tensor, to_tensor
from xray_xai.data.images import read_film, read_image
from xray_xai.errors import ImageError
from xray_xai.sdk.interfaces import Preprocessing, Problem, Record

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch.utils.data import Dataset as _DatasetBase

    from xray_xai.data.augment import Augment
    from xray_xai.data.film_cache import FilmCache
else:  # DataLoader only needs __getitem__/__len__; avoids importing torch with this module
    _DatasetBase = object

__all__ = ["Batch", "RecordDataset", "Skipped", "Warned", "collate_skip_bad", "load_batch"]

#: The guidance channel of a film without ground truth (xray_xai.models.guidance.NO_MASK).
NO_MASK = -1.0


def _guide_mask(record: Record, shape: Sequence[int], pre: Preprocessing) -> np.ndarray:
    """The record's ground truth in model geometry, float32 ``(S, S)`` of 0 and 1."""
    from xray_xai.data.geometry import geometry_mask
    from xray_xai.data.masks import ground_truth_mask

    return geometry_mask(ground_truth_mask(record, shape), pre, any_overlap=True).astype(np.float32)


def load_batch(paths: Iterable[str | Path], pre: Preprocessing, *, strict: bool = False) -> torch.Tensor:
    """Read and preprocess films into ``(B, C, S, S)``; an unreadable file raises :class:`ImageError`, a film kept
    despite damage issues a :class:`~xray_xai.data.images.DamagedImageWarning` (refused with ``strict``)."""
    import torch

    orient = getattr(pre, "exif_orientation", True)
    tensors = [to_tensor(read_image(p, strict=strict, orient=orient), pre) for p in paths]
    if not tensors:
        return torch.zeros((0, int(pre.channels), int(pre.input_size), int(pre.input_size)))
    return torch.stack(tensors)


@dataclass(frozen=True)
class Skipped:
    """What :class:`RecordDataset` returns for an unreadable film; :func:`collate_skip_bad` drops it."""

    index: int
    problem: Problem
    channels: int
    size: int


class Warned(tuple[Any, ...]):
    """What :class:`RecordDataset` returns for a film kept despite damage: the usual ``(image, label, index)``, and
    its ``warning`` (a :class:`Problem` of severity "warning"), which :func:`collate_skip_bad` reports."""

    warning: Problem


class Batch(NamedTuple):
    """A collated batch: ``images (B, C, S, S)``, ``labels (B,)`` float32 (NaN = unknown), ``indices (B,)`` into
    the dataset, and the problems of the films dropped from this batch (severity "error") followed by the warnings
    of the films kept in it despite damage (severity "warning"); :meth:`RecordDataset.add_skipped` sorts them."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    problems: list[Problem]


def collate_skip_bad(items: Sequence[Any]) -> Batch:
    """DataLoader ``collate_fn`` that drops :class:`Skipped` items and reports them, and the warnings of
    :class:`Warned` ones, in ``Batch.problems``."""
    import torch

    good = [it for it in items if not isinstance(it, Skipped)]
    bad = [it for it in items if isinstance(it, Skipped)]
    if good:
        images = torch.stack([it[0] for it in good])
        labels = torch.stack([torch.as_tensor(it[1], dtype=torch.float32) for it in good])
    else:
        c, s = (bad[0].channels, bad[0].size) if bad else (0, 0)
        images = torch.zeros((0, c, s, s))
        labels = torch.zeros((0,), dtype=torch.float32)
    indices = torch.tensor([int(it[2]) for it in good], dtype=torch.long)
    warned = [it.warning for it in good if isinstance(it, Warned)]
    return Batch(images, labels, indices, [it.problem for it in bad] + warned)


class RecordDataset(_DatasetBase):
    """Records as a map-style torch dataset: ``ds[i] -> (image (C, S, S), label float32 scalar, i)``.

    The label is NaN when unknown. An unreadable film yields a :class:`Skipped` item instead of raising, and its
    problem is added to ``.skipped``; a film kept despite damage (:func:`xray_xai.data.images.read_film`) yields a
    :class:`Warned` item and its warning is added to ``.warnings``; with ``strict=True`` such a film is skipped
    instead. Use :func:`collate_skip_bad` as the DataLoader's ``collate_fn`` (see the module docstring for the loop,
    including ``add_skipped`` with worker processes). ``films`` (a :class:`~xray_xai.data.film_cache.FilmCache`):
    read each prepared, unchanged film from it instead of decoding it, as 8-bit levels (see that module).
    """

    def __init__(
        self,
        records: Sequence[Record],
        pre: Preprocessing,
        augment: Augment | None = None,
        *,
        cache: bool = False,
        strict: bool = False,
        guided: Iterable[int] | None = None,
        films: FilmCache | None = None,
    ) -> None:
        self.records = list(records)
        # box-guided training: every item gets one more channel, the ground-truth mask of the films listed here
        # (the others: -1); see xray_xai.models.guidance
        self.guided = None if guided is None else frozenset(int(i) for i in guided)
        self._masks: dict[int, np.ndarray] = {}
        self.pre = pre
        self.augment = augment
        self.strict = strict
        self.skipped: list[Problem] = []
        self.warnings: list[Problem] = []
        # Decoding dominates an epoch on real films (a 1024 px JPEG: ~55 ms; geometry + tensor: ~2 ms), so training
        # keeps each film in model geometry, as float16 (S*S*2 bytes: 100 KB at 224 px), after its first epoch.
        self.cache = cache
        self._films: dict[int, np.ndarray] = {}
        # prepared films (xray_xai.data.film_cache, 8-bit on disk): where each record's film lies, found once;
        # None: decode it (not prepared, changed since, unreadable, or kept despite damage while ``strict``)
        self.prepared = films
        self._where = films.locate_all(self.records, strict=strict) if films is not None else []

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> np.ndarray:
        """float32 ``(N,)`` labels, NaN where unknown (for class weights and samplers; reads no image)."""
        return np.array([np.nan if r.label is None else float(r.label) for r in self.records], dtype=np.float32)

    def add_skipped(self, problems: Iterable[Problem]) -> None:
        """Record problems (once each), e.g. those a DataLoader worker reported through ``Batch.problems``: errors
        in ``.skipped``, warnings (films kept despite damage) in ``.warnings``."""
        for prob in problems:
            into = self.warnings if prob.severity == "warning" else self.skipped
            if prob not in into:
                into.append(prob)

    def _prepared_film(self, index: int) -> tuple[np.ndarray, Problem | None] | None:
        """The film from the prepared films with its recorded warning, or None when it must be decoded."""
        loc = self._where[index] if self.prepared is not None else None
        if loc is None or self.prepared is None:
            return None
        warning = Problem(str(self.records[index].path), loc.warning, severity="warning") if loc.warning else None
        return self.prepared.film(loc), warning

    def __getitem__(self, index: int) -> Any:
        import torch

        rec = self.records[index]
        film = self._films.get(index)
        warning = None
        hit = self._prepared_film(index) if film is None else None
        if hit is not None:
            film, warning = hit  # not kept in RAM again: the shard's pages stay in the OS page cache
        elif film is None:
            try:
                film, warning = read_film(rec.path, strict=self.strict, orient=self.pre.exif_orientation)
                if self.guided is not None and index in self.guided:
                    self._masks[index] = _guide_mask(rec, film.shape[:2], self.pre)
                film = geometry(film, self.pre)
            except ImageError as exc:
                prob = Problem(str(rec.path), exc.problem)
                self.add_skipped([prob])
                return Skipped(int(index), prob, int(self.pre.channels), int(self.pre.input_size))
            if self.cache:  # the rounded film is used from the first epoch on, so a resumed run sees the same pixels
                film = self._films[index] = film.astype(np.float16)
        extra = None
        if self.guided is not None:
            extra = self._masks.get(index)
            if extra is None and index in self.guided and hit is not None:
                # a prepared film lost its original size: the ground truth needs it, so the film is decoded once
                shape = read_film(rec.path, strict=False, orient=self.pre.exif_orientation)[0].shape[:2]
                extra = self._masks[index] = _guide_mask(rec, shape, self.pre)
            if extra is None:
                extra = np.full(film.shape[:2], NO_MASK, dtype=np.float32)
            if not self.cache:
                self._masks.pop(index, None)
        x = geometry_to_tensor(film, self.pre, augment=self.augment, extra=extra)
        label = torch.tensor(math.nan if rec.label is None else float(rec.label), dtype=torch.float32)
        if warning is None:
            return x, label, int(index)
        self.add_skipped([warning])
        item = Warned((x, label, int(index)))
        item.warning = warning
        return item
