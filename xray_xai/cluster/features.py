"""Deep features (and explanation maps) of many films, computed once and cached on disk.

Clustering is exploratory: people re-run it with another K, method, threshold or region many times. The forward pass
over thousands of films is the slow part, so its result is cached under ``$XRAY_XAI_HOME/cache/features/<key>.npz``
(+ a ``.json`` sidecar for people), keyed by

* the model: ``fingerprint()`` (a hash of every weight) or, failing that, a hash of its checkpoint file;
* the image list: a hash of the sorted absolute paths with each file's size and modification time;
* the preprocessing (a model may be used at another input size) and, for maps, the explainer and its parameters.

The arrays are plain ``np.savez`` (paths as a unicode array, no pickle; loaded with ``allow_pickle=False``), written
atomically. The probability of "abnormal" comes from the same forward pass as the features (features -> classifier
-> sigmoid) for torch models, so selecting abnormal films needs no second pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xray_xai._util.device import model_device
from xray_xai._util.fsutil import sha256_file
from xray_xai.defaults import CLUSTER_EXPLAINER
from xray_xai.errors import XrayXaiError
from xray_xai.sdk.interfaces import Model, Problem, Record

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = [
    "CACHE_VERSION",
    "FeatureSet",
    "cache_key",
    "default_cache_dir",
    "extract_explanation_features",
    "extract_features",
    "feature_batch_fn",
    "model_fingerprint",
]

#: bump when the content or layout of cached arrays changes; old entries are then simply not found
CACHE_VERSION = 1


@dataclass
class FeatureSet:
    """Features of the films that could be read, in the order of the records given.

    ``features``: float32 ``(N, D)``; ``probabilities``: float32 ``(N,)`` probability of abnormal; ``records``: the
    N records those rows belong to; ``skipped``: films that could not be read (not in the rows); ``warnings``: films
    read despite a stream that ends early (in the rows; :func:`xray_xai.data.images.read_film`).
    """

    features: np.ndarray
    probabilities: np.ndarray
    records: list[Record]
    skipped: list[Problem] = field(default_factory=list)
    key: str = ""
    cache_path: Path | None = None
    from_cache: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [r.image_id for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def subset(self, mask: np.ndarray | Sequence[bool] | Sequence[int]) -> FeatureSet:
        """The rows selected by a boolean mask or index list (same cache key: a view, not a new extraction)."""
        idx = np.asarray(mask)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)
        return FeatureSet(
            self.features[idx],
            self.probabilities[idx],
            [self.records[int(i)] for i in idx],
            list(self.skipped),
            self.key,
            self.cache_path,
            self.from_cache,
            dict(self.meta),
            list(self.warnings),
        )


# ------------------------------------------------------------------------------------------------------- cache key
def default_cache_dir() -> Path:
    """``$XRAY_XAI_HOME/cache/features`` (default home ``~/.xray-xai``)."""
    from xray_xai.models.store import home

    return home() / "cache" / "features"


def model_fingerprint(model: Model) -> str | None:
    """What identifies the model's weights: the weights fingerprint (:mod:`xray_xai.sdk.fingerprint`), else a hash
    of its checkpoint file; None if neither."""
    from xray_xai.sdk.fingerprint import weights_fingerprint

    fp = weights_fingerprint(model)
    if fp is not None:
        return fp
    ckpt = getattr(model, "checkpoint_path", None)
    if ckpt is not None and Path(ckpt).is_file():
        return "file:" + sha256_file(Path(ckpt))[:16]
    return None


def _image_list_hash(records: Sequence[Record]) -> str:
    """Sorted absolute paths with size and mtime: a changed, added or removed film changes the key."""
    h = hashlib.sha256()
    for path in sorted({os.path.abspath(r.path) for r in records}):
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{path}\0{stamp}\n".encode())
    return h.hexdigest()


def cache_key(model: Model, records: Sequence[Record], extra: dict[str, Any] | None = None) -> str | None:
    """The cache key of ``model`` on ``records`` (None when the model cannot be fingerprinted: no caching)."""
    fp = model_fingerprint(model)
    if fp is None:
        return None
    parts = {
        "version": CACHE_VERSION,
        "model": getattr(model, "name", type(model).__name__),
        "fingerprint": fp,
        "images": _image_list_hash(records),
        "preprocessing": model.preprocessing.to_dict(),
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


# ------------------------------------------------------------------------------------------------------ cache file
def _load_cached(path: Path, key: str, records: Sequence[Record]) -> FeatureSet | None:
    """The cached arrays reordered to ``records``; None if absent, unreadable or not matching (then recompute)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            feats = np.asarray(data["features"], dtype=np.float32)
            probs = np.asarray(data["probabilities"], dtype=np.float32)
            paths = [str(p) for p in data["paths"]]
            bad_paths = [str(p) for p in data["skipped_paths"]]
            bad_why = [str(p) for p in data["skipped_problems"]]
            # caches written before damaged films were listed have no warnings
            warn_paths = [str(p) for p in data["warning_paths"]] if "warning_paths" in data else []
            warn_why = [str(p) for p in data["warning_problems"]] if "warning_problems" in data else []
            warned = list(zip(warn_paths, warn_why, strict=True))
    except (OSError, KeyError, ValueError):
        return None
    row = {p: i for i, p in enumerate(paths)}
    bad = dict(zip(bad_paths, bad_why, strict=True))
    keep: list[int] = []
    kept: list[Record] = []
    skipped: list[Problem] = []
    for rec in records:
        p = os.path.abspath(rec.path)
        if p in row:
            keep.append(row[p])
            kept.append(rec)
        elif p in bad:
            skipped.append(Problem(str(rec.path), bad[p]))
        else:  # the key says same list, so this cannot happen unless the file was tampered with
            return None
    meta: dict[str, Any] = {}
    side = path.with_suffix(".json")
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError):
            meta = {}
    idx = np.asarray(keep, dtype=np.int64)
    wanted = {os.path.abspath(r.path): str(r.path) for r in kept}
    warnings = [Problem(wanted[p], w, severity="warning") for p, w in warned if p in wanted]
    return FeatureSet(feats[idx], probs[idx], kept, skipped, key, path, True, meta, warnings)


def _save_cached(path: Path, fs: FeatureSet, meta: dict[str, Any]) -> None:
    from xray_xai._util.fsutil import atomic_path, atomic_write_json

    bad_paths = [os.path.abspath(p.path) for p in fs.skipped]
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            key=np.array(fs.key),
            features=fs.features.astype(np.float32, copy=False),
            probabilities=fs.probabilities.astype(np.float32, copy=False),
            paths=np.array([os.path.abspath(r.path) for r in fs.records], dtype=np.str_),
            skipped_paths=np.array(bad_paths, dtype=np.str_),
            skipped_problems=np.array([p.problem for p in fs.skipped], dtype=np.str_),
            warning_paths=np.array([os.path.abspath(p.path) for p in fs.warnings], dtype=np.str_),
            warning_problems=np.array([p.problem for p in fs.warnings], dtype=np.str_),
        )
    atomic_write_json(path.with_suffix(".json"), meta)


# ------------------------------------------------------------------------------------------------------ extraction
BatchFn = Callable[["torch.Tensor"], "tuple[np.ndarray, np.ndarray]"]


def _run(
    model: Model,
    records: Sequence[Record],
    batch_fn: BatchFn,
    *,
    kind: str,
    extra: dict[str, Any],
    batch_size: int,
    cache_dir: str | Path | None,
    progress: bool,
    use_cache: bool = True,
) -> FeatureSet:
    """Shared flow: look up the cache, else read films in batches, call ``batch_fn``, save."""
    from xray_xai._util.progress import progress as progress_bar
    from xray_xai.data.loader import RecordDataset, collate_skip_bad

    records = list(records)
    if batch_size < 1:
        raise XrayXaiError(f"batch_size must be at least 1, got {batch_size}")
    key = cache_key(model, records, {"kind": kind, **extra}) if use_cache else None
    path = Path(cache_dir or default_cache_dir()) / f"{key}.npz" if key else None
    if path is not None and key is not None:
        hit = _load_cached(path, key, records)
        if hit is not None:
            return hit

    started = time.time()
    dataset = RecordDataset(records, model.preprocessing)
    starts = range(0, len(records), batch_size)
    feats: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    kept: list[Record] = []
    for start in progress_bar(starts, f"{kind} ({len(records)} films)", total=len(starts), enabled=progress):
        batch = collate_skip_bad([dataset[i] for i in range(start, min(start + batch_size, len(records)))])
        dataset.add_skipped(batch.problems)
        if batch.images.shape[0] == 0:
            continue
        f, p = batch_fn(batch.images)
        feats.append(np.asarray(f, dtype=np.float32).reshape(batch.images.shape[0], -1))
        probs.append(np.asarray(p, dtype=np.float32).reshape(-1))
        kept.extend(records[int(i)] for i in batch.indices)
    dim = feats[0].shape[1] if feats else 0
    fs = FeatureSet(
        np.concatenate(feats) if feats else np.zeros((0, dim), dtype=np.float32),
        np.concatenate(probs) if probs else np.zeros((0,), dtype=np.float32),
        kept,
        list(dataset.skipped),
        key or "",
        path,
        False,
        warnings=list(dataset.warnings),
    )
    fs.meta = {
        "key": key,
        "kind": kind,
        "model": getattr(model, "name", type(model).__name__),
        "fingerprint": model_fingerprint(model),
        "preprocessing": model.preprocessing.to_dict(),
        "extra": extra,
        "n_images": len(records),
        "n_rows": len(kept),
        "n_skipped": len(fs.skipped),
        "dim": int(dim),
        "seconds": round(time.time() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if path is not None:
        _save_cached(path, fs, fs.meta)
    return fs


def feature_batch_fn(model: Model) -> BatchFn:
    """A function from a preprocessed batch ``(N, C, S, S)`` to ``(features (N, D), p(abnormal) (N,))`` as float32
    numpy arrays, moved to the model's device first: one forward pass for torch models with the standard head,
    else two calls (``features`` and ``predict_proba``). Used by :func:`extract_features` and the Ray backend."""
    import torch

    from xray_xai.sdk.torch_model import TorchModel

    device = model_device(model)
    single_pass = isinstance(model, TorchModel) and type(model).forward is TorchModel.forward

    @torch.inference_mode()
    def run(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if device is not None:
            x = x.to(device)
        if single_pass:
            assert isinstance(model, TorchModel)
            f = model.forward_features(x)
            p = torch.sigmoid(model.classifier(f).reshape(-1))
        else:
            f = model.features(x)
            p = model.predict_proba(x)
        return f.float().cpu().numpy(), p.float().cpu().numpy()

    return run


def extract_features(
    model: Model,
    records: Sequence[Record],
    *,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    use_cache: bool = True,
) -> FeatureSet:
    """Features ``(N, D)`` and probabilities ``(N,)`` of ``records`` (unreadable films skipped and listed).

    Cached on disk (see the module docstring); a second call with the same model, films and preprocessing reads
    the cache and never runs the model.
    """
    eval_fn = getattr(model, "eval", None)
    if callable(eval_fn):
        eval_fn()
    return _run(
        model,
        records,
        feature_batch_fn(model),
        kind="features",
        extra={},
        batch_size=batch_size,
        cache_dir=cache_dir,
        progress=progress,
        use_cache=use_cache,
    )


def extract_explanation_features(
    model: Model,
    records: Sequence[Record],
    explainer: str = CLUSTER_EXPLAINER,
    *,
    grid: int = 16,
    explainer_params: dict[str, Any] | None = None,
    batch_size: int = 16,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    use_cache: bool = True,
) -> FeatureSet:
    """Explanation maps downsampled to ``grid x grid`` (area average) and flattened: ``(N, grid*grid)``.

    Clustering these finds groups of films where the model looks at the same kind of place (a side marker, a
    plate, the film edge) whatever the anatomy. Probabilities come from the explanation's own forward pass.
    """
    import torch
    import torch.nn.functional as F

    from xray_xai.sdk.registry import explainers

    params = dict(explainer_params or {})
    exp = explainers.get(explainer)(**params)
    exp.check_model(model)
    if grid < 1:
        raise XrayXaiError(f"grid must be at least 1, got {grid}")

    def run(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        device = model_device(model)
        if device is not None:
            x = x.to(device)
        e = exp.explain(model, x)
        maps = torch.as_tensor(np.asarray(e.maps, dtype=np.float32)).unsqueeze(1)
        small = F.adaptive_avg_pool2d(maps, (grid, grid)).reshape(maps.shape[0], -1)
        return small.numpy(), np.asarray(e.probabilities, dtype=np.float32)

    return _run(
        model,
        records,
        run,
        kind=f"explanations:{explainer}",
        extra={"explainer": explainer, "params": params, "grid": grid},
        batch_size=batch_size,
        cache_dir=cache_dir,
        progress=progress,
        use_cache=use_cache,
    )
