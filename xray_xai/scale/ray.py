"""The Ray backend of ``explain`` and ``cluster``: the same work spread over a Ray cluster, results as Parquet shards.

Why Ray Data: explaining or embedding a million films is embarrassingly parallel over images but each worker must
hold a model (hundreds of MB, seconds to build). ``ray.data.from_items(records).map_batches(ActorClass,
concurrency=n, batch_size=b)`` runs a pool of ``n`` actors that each load the model once and then stream batches
through it; the results are written by the workers themselves as sharded Parquet (``write_parquet``), so the driver
never holds them.

* :func:`explain_ray` writes one row per film: ``index`` (position in the record list), ``path``, ``image_id``,
  ``probability``, ``map`` (``H x W`` float32 in [0, 1], as the local backend's ``Explanation.maps``) and
  ``problem`` (empty, or why the film was skipped).
* :func:`extract_features_ray` writes ``index``, ``path``, ``probability``, ``features`` (``D`` float32) and
  ``problem``.
* :func:`cluster_ray` embeds with :func:`extract_features_ray`, gathers the shards into a ``.npy`` on the driver's
  disk in record order (one batch in memory at a time), and fits the clusterer on it: in memory when the matrix is
  small (then the result is exactly the local backend's), else streamed from the memory map (``pca-kmeans``:
  sampled randomized PCA + ``MiniBatchKMeans``, peak memory a chunk plus the projections).

Models travel as checkpoints, never pickles: a model object is first written with
:func:`xray_xai.models.store.save_model` (safetensors + JSON) to a folder every worker can read (a shared file
system on a multi-node cluster), and each actor rebuilds it with :func:`xray_xai.models.store.load_model`. Ray is an
optional dependency (``pip install "xray-xai[ray]"``, i.e. ``ray[data]``); importing this module does not import it.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xray_xai.defaults import DECISION_THRESHOLD
from xray_xai.errors import PluginError, XrayXaiError
from xray_xai.sdk.interfaces import Model, Problem, Record

__all__ = [
    "IN_MEMORY_LIMIT_BYTES",
    "cluster_command",
    "cluster_ray",
    "explain_command",
    "explain_ray",
    "extract_features_ray",
    "gather_features",
    "init_ray",
]

#: feature matrices up to this size are clustered in memory (same result as the local backend), larger ones streamed
IN_MEMORY_LIMIT_BYTES = 1 << 30


def _ray() -> Any:
    try:
        import ray
    except ImportError:  # pragma: no cover - depends on the environment
        raise PluginError('the ray backend needs Ray Data: pip install "xray-xai[ray]"') from None
    return ray


def init_ray(address: str | None = None, **options: Any) -> Any:
    """Connect to Ray (``address``: ``"auto"``, ``"ray://host:10001"``...) or start a local instance; idempotent."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address, **options)
    return ray


@contextlib.contextmanager
def _checkpoint(model: Model | str | Path, workdir: str | Path | None) -> Iterator[str]:
    """A checkpoint path or store name that every worker can load (a model object is saved first)."""
    if isinstance(model, (str, Path)):
        yield str(model)
        return
    from xray_xai.models.store import save_model

    with tempfile.TemporaryDirectory(prefix="xray-xai-ray-", dir=workdir) as tmp:
        yield str(save_model(model, Path(tmp) / "model", metadata={"purpose": "ray-backend transfer"}))


def _items(records: Sequence[Record]) -> list[dict[str, Any]]:
    return [{"index": i, "path": str(r.path), "image_id": r.image_id} for i, r in enumerate(records)]


def _load_tensors(paths: Sequence[str], pre: Any) -> tuple[list[Any], list[str]]:
    """Preprocessed tensors (None where unreadable) and the problem text of each path ("" when fine)."""
    from xray_xai.data.geometry import to_tensor
    from xray_xai.data.images import read_image

    tensors: list[Any] = []
    problems: list[str] = []
    for p in paths:
        try:
            tensors.append(to_tensor(read_image(p), pre))
            problems.append("")
        except (XrayXaiError, ValueError, OSError) as exc:
            tensors.append(None)
            problems.append((getattr(exc, "problem", None) or str(exc) or type(exc).__name__).splitlines()[0])
    return tensors, problems


class _ModelActor:
    """Holds one model per actor process; subclasses turn a batch of paths into output columns."""

    def __init__(self, checkpoint: str, threads: int = 1) -> None:
        import torch

        from xray_xai.models.store import load_model

        torch.set_num_threads(max(1, int(threads)))
        self.model = load_model(checkpoint)
        eval_fn = getattr(self.model, "eval", None)
        if callable(eval_fn):
            eval_fn()

    def _batch(self, batch: dict[str, np.ndarray]) -> tuple[Any, np.ndarray, list[str]]:
        import torch

        paths = [str(p) for p in batch["path"]]
        tensors, problems = _load_tensors(paths, self.model.preprocessing)
        ok = np.array([t is not None for t in tensors], dtype=bool)
        x = torch.stack([t for t in tensors if t is not None]) if ok.any() else None
        return x, ok, problems


class FeatureActor(_ModelActor):
    """Features and probability of each film (one forward pass, as
    :func:`xray_xai.cluster.features.extract_features`)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from xray_xai.cluster.features import feature_batch_fn

        x, ok, problems = self._batch(batch)
        n = len(ok)
        feats: np.ndarray | None = None
        probs = np.full(n, np.nan, dtype=np.float32)
        if x is not None:
            f, p = feature_batch_fn(self.model)(x)
            feats = np.zeros((n, f.shape[1]), dtype=np.float32)
            feats[ok] = f
            probs[ok] = p
        if feats is None:
            feats = np.zeros((n, 1), dtype=np.float32)
        return {
            "index": np.asarray(batch["index"], dtype=np.int64),
            "path": np.asarray(batch["path"]),
            "probability": probs,
            "features": feats,
            "problem": np.asarray(problems, dtype=object),
        }


class ExplainActor(_ModelActor):
    """Explanation map and probability of each film, from the registered explainer ``method``."""

    def __init__(
        self,
        checkpoint: str,
        method: str,
        params: dict[str, Any] | None = None,
        seed: int | None = 0,
        target: str = "abnormal",
        threads: int = 1,
    ) -> None:
        super().__init__(checkpoint, threads)
        from xray_xai.explain.engine import make_explainer

        self.explainer = make_explainer(method, seed=seed, params=params)
        self.explainer.check_model(self.model)
        self.target = target

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x, ok, problems = self._batch(batch)
        n = len(ok)
        size = int(self.model.preprocessing.input_size)
        maps = np.zeros((n, size, size), dtype=np.float32)
        probs = np.full(n, np.nan, dtype=np.float32)
        if x is not None:
            exp = self.explainer.explain(self.model, x, target=self.target)
            maps[ok] = exp.maps
            probs[ok] = exp.probabilities
        return {
            "index": np.asarray(batch["index"], dtype=np.int64),
            "path": np.asarray(batch["path"]),
            "image_id": np.asarray(batch["image_id"]),
            "probability": probs,
            "map": maps,
            "problem": np.asarray(problems, dtype=object),
        }


def _map(
    records: Sequence[Record],
    actor: type,
    kwargs: dict[str, Any],
    out: Path,
    *,
    batch_size: int,
    concurrency: int,
    num_cpus: float,
) -> Any:
    ray = _ray()
    if not ray.is_initialized():
        init_ray()
    if batch_size < 1 or concurrency < 1:
        raise PluginError(f"batch_size and concurrency must be positive, got {batch_size} and {concurrency}")
    ds = ray.data.from_items(_items(records), override_num_blocks=max(1, min(len(records), 4 * concurrency)))
    mapped = ds.map_batches(
        actor,
        fn_constructor_kwargs=kwargs,
        concurrency=int(concurrency),
        batch_size=int(batch_size),
        batch_format="numpy",
        num_cpus=num_cpus,
    )
    out.mkdir(parents=True, exist_ok=True)
    mapped.write_parquet(str(out))
    return ray


def _problems(out: Path) -> list[Problem]:
    import pyarrow.parquet as pq

    table = pq.read_table(str(out), columns=["path", "problem"])
    return [
        Problem(str(p), str(q))
        for p, q in zip(table["path"].to_pylist(), table["problem"].to_pylist(), strict=True)
        if q
    ]


def extract_features_ray(
    model: Model | str | Path,
    records: Sequence[Record],
    out: str | Path,
    *,
    batch_size: int = 32,
    concurrency: int = 2,
    num_cpus: float = 1,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Embed ``records`` on Ray; Parquet shards under ``out`` (columns in the module docstring). Returns a summary."""
    start = time.perf_counter()
    out = Path(out)
    with _checkpoint(model, workdir) as ckpt:
        _map(records, FeatureActor, {"checkpoint": ckpt, "threads": max(1, int(num_cpus))}, out,
             batch_size=batch_size, concurrency=concurrency, num_cpus=num_cpus)  # fmt: skip
    skipped = _problems(out)
    return {"out": str(out), "n_images": len(records), "skipped": skipped, "seconds": time.perf_counter() - start}


def explain_ray(
    model: Model | str | Path,
    method: str,
    records: Sequence[Record],
    out: str | Path,
    *,
    params: dict[str, Any] | None = None,
    seed: int | None = 0,
    target: str = "abnormal",
    batch_size: int = 16,
    concurrency: int = 2,
    num_cpus: float = 1,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Explain ``records`` with ``method`` on Ray; Parquet shards of maps under ``out``. Returns a summary."""
    from xray_xai.explain.engine import make_explainer
    from xray_xai.sdk.explainer import score_sign

    score_sign(target)
    explainer = make_explainer(method, seed=seed, params=params)  # unknown method, bad parameters: fail before Ray
    if isinstance(model, Model):
        explainer.check_model(model)  # an incompatible pair fails here, not in every actor
    start = time.perf_counter()
    out = Path(out)
    with _checkpoint(model, workdir) as ckpt:
        kwargs = {"checkpoint": ckpt, "method": method, "params": params, "seed": seed, "target": target,
                  "threads": max(1, int(num_cpus))}  # fmt: skip
        _map(records, ExplainActor, kwargs, out, batch_size=batch_size, concurrency=concurrency, num_cpus=num_cpus)
    skipped = _problems(out)
    return {
        "out": str(out),
        "method": method,
        "n_images": len(records),
        "n_explained": len(records) - len(skipped),
        "skipped": skipped,
        "seconds": time.perf_counter() - start,
    }


def gather_features(shards: str | Path, npy_path: str | Path, n_records: int) -> tuple[np.ndarray, np.ndarray]:
    """Write the feature shards into ``npy_path`` in record order, one batch at a time; returns (kept rows mask,
    probabilities). Rows of unreadable films stay zero and are ``False`` in the mask."""
    import pyarrow.parquet as pq

    files = sorted(Path(shards).glob("*.parquet"))
    if not files:
        raise XrayXaiError(f"{shards}: no Parquet shard to gather")
    kept = np.zeros(n_records, dtype=bool)
    probs = np.full(n_records, np.nan, dtype=np.float32)
    mm: np.memmap | None = None
    for f in files:
        pf = pq.ParquetFile(str(f))
        for batch in pf.iter_batches(batch_size=4096, columns=["index", "probability", "features", "problem"]):
            idx = batch.column("index").to_numpy()
            ok = np.array([not p for p in batch.column("problem").to_pylist()], dtype=bool)
            if not ok.any():
                continue
            feats = _tensor_column(batch.column("features"))
            if mm is None:
                mm = np.lib.format.open_memmap(
                    str(npy_path), mode="w+", dtype=np.float32, shape=(n_records, feats.shape[1])
                )
            mm[idx[ok]] = feats[ok]
            kept[idx[ok]] = True
            probs[idx[ok]] = batch.column("probability").to_numpy(zero_copy_only=False)[ok]
    if mm is None:
        raise XrayXaiError(f"{shards}: no film could be read")
    mm.flush()
    del mm
    return kept, probs


def _tensor_column(col: Any) -> np.ndarray:
    """A Ray tensor-extension (or list) Arrow column as a 2-D float32 array."""
    to_numpy = getattr(col, "to_numpy_ndarray", None)
    arr = np.asarray(to_numpy()) if callable(to_numpy) else np.asarray(col.to_pylist(), dtype=np.float32)
    return arr.reshape(len(col), -1).astype(np.float32, copy=False)


def _selected_features(npy: Path, select: np.ndarray, sel_path: Path, in_memory_limit: int) -> tuple[Any, bool]:
    """The rows of ``npy`` that ``select`` keeps, and whether they are streamed from disk: in memory when the matrix
    fits ``in_memory_limit`` bytes, else memory-mapped (the whole file, or a copy of the selected rows at
    ``sel_path``)."""
    X: Any = np.load(npy, mmap_mode="r")
    streamed = X.nbytes > in_memory_limit
    if select.all() and streamed:
        return X, True  # stream straight from the map
    if not streamed:
        return np.asarray(X[select], dtype=np.float32), False
    n_sel = int(select.sum())
    mm = np.lib.format.open_memmap(str(sel_path), mode="w+", dtype=np.float32, shape=(n_sel, X.shape[1]))
    idx = np.flatnonzero(select)
    for s in range(0, n_sel, 65536):
        mm[s : s + 65536] = X[idx[s : s + 65536]]
    mm.flush()
    del mm
    return np.load(sel_path, mmap_mode="r"), True


def _write_assignments(path: Path, records: Sequence[Record], probs: np.ndarray, labels: np.ndarray) -> Path:
    """``assignments.parquet``: ``index``, ``path``, ``probability``, ``cluster`` per record (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from xray_xai._util.fsutil import atomic_path

    table = pa.table(
        {
            "index": np.arange(len(records), dtype=np.int64),
            "path": [str(r.path) for r in records],
            "probability": probs,
            "cluster": labels,
        }
    )
    with atomic_path(path, suffix=".parquet.tmp") as tmp:
        pq.write_table(table, str(tmp))
    return path


def cluster_ray(
    model: Model | str | Path,
    records: Sequence[Record],
    out: str | Path,
    *,
    k: int = 4,
    method: str = "pca-kmeans",
    params: dict[str, Any] | None = None,
    seed: int = 0,
    threshold: float | None = None,
    batch_size: int = 32,
    concurrency: int = 2,
    num_cpus: float = 1,
    in_memory_limit: int = IN_MEMORY_LIMIT_BYTES,
) -> dict[str, Any]:
    """Embed ``records`` on Ray, then cluster the films (``threshold``: only those with p(abnormal) >= it).

    Writes ``out/features/*.parquet``, ``out/features.npy`` and ``out/assignments.parquet`` (``index``, ``path``,
    ``probability``, ``cluster``); returns a summary with ``labels`` (cluster per selected film, -1 for films not
    selected or unreadable, in record order).
    """
    from xray_xai.cluster.service import make_clusterer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = extract_features_ray(
        model, records, out / "features", batch_size=batch_size, concurrency=concurrency, num_cpus=num_cpus
    )
    npy = out / "features.npy"
    kept, probs = gather_features(out / "features", npy, len(records))
    select = kept & (probs >= threshold if threshold is not None else True)
    n_sel = int(select.sum())
    data, streamed = _selected_features(npy, select, out / "features_selected.npy", in_memory_limit)
    t0 = time.perf_counter()
    est = make_clusterer(method, k, seed, params)
    est.fit(data)
    fit_seconds = time.perf_counter() - t0
    labels = np.full(len(records), -1, dtype=np.int64)
    labels[select] = np.asarray(est.labels_, dtype=np.int64)
    _write_assignments(out / "assignments.parquet", records, probs, labels)
    summary.update(
        {
            "out": str(out),
            "k": k,
            "method": method,
            "n_selected": n_sel,
            "streamed": bool(streamed),
            "fit_seconds": fit_seconds,
            "labels": labels,
            "sizes": {str(c): int((labels == c).sum()) for c in sorted(set(labels.tolist())) if c >= 0},
        }
    )
    return summary


# -- what the CLI's ``--backend ray`` calls ----------------------------------------------------------------------------
def explain_command(
    models: Sequence[str | Path | Model],
    methods: Sequence[str],
    *,
    inputs: Sequence[str | Path] = (),
    data: str | Path | None = None,
    dataset: str | None = None,
    split: str | None = None,
    checkpoint: str | Path | None = None,
    limit: int | None = None,
    out: str | Path = "explanations",
    batch_size: int = 16,
    target: str = "abnormal",
    params: dict[str, dict[str, Any]] | None = None,
    seed: int | None = 0,
    concurrency: int = 2,
    address: str | None = None,
) -> dict[str, Any]:
    """``xray-xai explain --backend ray``: the same image selection as the local service, maps as Parquet shards
    under ``out/<model>/<method>/``. Returns a JSON-ready summary."""
    from xray_xai.explain.service import gather_records

    records, skipped, warnings = gather_records(None, inputs, data, split, dataset, limit)
    skipped += warnings  # the Ray summary lists the data set's warnings with the skipped files, as before
    specs: list[str | Path | Model] = [checkpoint] if checkpoint is not None else list(models)
    init_ray(address)
    runs = []
    for i, spec in enumerate(specs):
        label = Path(str(spec)).stem if isinstance(spec, (str, Path)) else getattr(spec, "name", f"model{i}")
        for method in methods:
            res = explain_ray(
                spec, method, records, Path(out) / label / method, params=(params or {}).get(method), seed=seed,
                target=target, batch_size=batch_size, concurrency=concurrency,
            )  # fmt: skip
            skipped.extend(res.pop("skipped"))
            runs.append({"model": label, **res})
    return {
        "backend": "ray",
        "out": str(out),
        "runs": runs,
        "skipped": [{"path": p.path, "problem": p.problem} for p in skipped],
    }


def cluster_command(
    model: str | Path | Model,
    data_root: str | Path,
    *,
    dataset: str | None = None,
    k: int = 4,
    method: str = "pca-kmeans",
    splits: Sequence[str] = ("train", "test"),
    threshold: float | None = DECISION_THRESHOLD,
    region: str | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 32,
    method_params: dict[str, Any] | None = None,
    concurrency: int = 2,
    address: str | None = None,
) -> dict[str, Any]:
    """``xray-xai cluster --backend ray``: the local service's film selection, features embedded on Ray, streaming
    clustering on the driver; ``assignments.parquet`` under ``out_dir``. Returns a JSON-ready summary."""
    from xray_xai.cluster.service import default_out_dir, open_data, select_records

    ds = open_data(data_root, dataset)
    records = select_records(ds, splits, region)
    name = str(model) if isinstance(model, (str, Path)) else getattr(model, "name", "model")
    out = Path(out_dir) if out_dir is not None else default_out_dir(Path(name).stem)
    init_ray(address)
    res = cluster_ray(
        model, records, out, k=k, method=method, params=method_params, seed=seed, threshold=threshold,
        batch_size=batch_size, concurrency=concurrency,
    )  # fmt: skip
    res.pop("labels")
    res["skipped"] = [{"path": p.path, "problem": p.problem} for p in res["skipped"]]
    res["backend"] = "ray"
    return res
