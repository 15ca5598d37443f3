"""What the web page and the JSON API do, without any web framework: decode uploads, run models and explainers
through :mod:`xray_xai.api`, keep results for download.

The explaining itself is :func:`xray_xai.api.explain_films` (the engine of ``xray-xai explain``): this module only
adds what a shared server needs, kept free of FastAPI so that the rules live in one place:

* every model is loaded once (:class:`ModelCache`, keyed by the server's own model names, never by a client path);
* one lock per model around inference and explanation: explainers register hooks on, and toggle ``requires_grad`` of,
  the shared module, so two requests on one model must not overlap (requests on different models still run in
  parallel); all per-request data lives in local variables;
* uploads are decoded from memory (:func:`xray_xai.api.read_image_bytes`: content sniffed, pixel-count guard);
* results are kept in a bounded in-memory cache under unguessable ids (:class:`ResultCache`), never on disk.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xray_xai import api
from xray_xai.errors import ImageError, PluginError, XrayXaiError

__all__ = [
    "DEFAULT_METHOD",
    "MAX_VIEWS",
    "Analysis",
    "Film",
    "ModelCache",
    "ModelEntry",
    "RequestError",
    "ResultCache",
    "analyse",
    "decode_uploads",
    "display_name",
    "explainer_names",
]

DEFAULT_METHOD = api.DEFAULT_METHOD  # the same default as the CLI and the API
#: most files (views) accepted in one request: a study has a handful of views, not hundreds
MAX_VIEWS = 16


class RequestError(XrayXaiError):
    """A client error with the HTTP status it maps to (400 bad input, 413 too large, 415 not an image)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------------------------------- uploads


@dataclass(frozen=True)
class Film:
    """One decoded upload: the name the client gave (display only) and the film, float32 ``(H, W)`` in [0, 1]."""

    name: str
    image: np.ndarray


_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def display_name(raw: str | None, index: int) -> str:
    """A client's file name reduced to something safe to echo: the last path component, no control characters,
    at most 120 characters. It is only ever shown (HTML-escaped) and put in messages, never used as a path."""
    name = unicodedata.normalize("NFC", raw or "")
    name = _UNSAFE.sub("", name).replace("\\", "/").rsplit("/", 1)[-1].strip()
    if len(name) > 120:
        name = name[:117] + "..."
    return name or f"upload-{index + 1}"


def _status_of(exc: ImageError) -> int:
    """HTTP status for an io error: 415 for content that is no image, 413 for the pixel guard, else 400."""
    problem = (exc.problem or "").lower()
    if problem.startswith(("not an image", "not a readable dicom")):
        return 415
    if "too large" in problem:
        return 413
    return 400


def decode_uploads(uploads: Sequence[tuple[str | None, bytes]]) -> list[Film]:
    """Decode ``(file name, bytes)`` pairs from memory; the first bad file raises :class:`RequestError` naming it."""
    if not uploads:
        raise RequestError("no file uploaded: choose a PNG, JPEG or DICOM radiograph")
    if len(uploads) > MAX_VIEWS:
        raise RequestError(f"too many files ({len(uploads)}); at most {MAX_VIEWS} views per study")
    films = []
    for i, (raw, data) in enumerate(uploads):
        name = display_name(raw, i)
        try:
            films.append(Film(name, api.read_image_bytes(data, name)))
        except ImageError as exc:
            raise RequestError(f"{name}: {exc.problem}", _status_of(exc)) from None
    return films


# -------------------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelEntry:
    """A model the server offers: ``key`` is what clients send; ``spec`` (name, path or instance) stays here."""

    key: str
    spec: Any  # a registered name, a checkpoint path or a loaded model
    source: str  # "store", "path" or "instance"
    info: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "source": self.source, **{k: v for k, v in self.info.items() if k != "path"}}


def _provenance_info(spec: Any) -> dict[str, Any]:
    """What the page shows of a model before loading it (its sidecar only): ``provenance`` (the one line of
    :func:`xray_xai.api.provenance`), ``dataset``, ``synthetic``, ``auroc``; empty when the spec names nothing."""
    try:
        prov = api.provenance(spec)
    except Exception:  # an unknown name or a broken checkpoint is reported when a request uses it
        return {}
    return {"provenance": prov["short"], "dataset": prov["dataset"], "synthetic": prov["synthetic"],
            "auroc": prov["auroc"], "shipped": prov["shipped"]}  # fmt: skip


class ModelCache:
    """The models a server offers, each loaded once on first use and kept, with one inference lock per model.

    ``specs`` None: every model name in the store (:func:`xray_xai.api.list_store`; a name means its newest
    checkpoint), re-read on each listing so that a newly trained model appears without a restart. Otherwise the
    given registered names, checkpoint paths or loaded models. ``loads`` counts actual loads (tests use it to check
    that concurrent first requests still load a model once).
    """

    def __init__(self, specs: Sequence[Any] | None = None) -> None:
        self._fixed = None if specs is None else self._entries_from(specs)
        self._models: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._load_lock = threading.Lock()
        self.loads = 0

    @staticmethod
    def _entries_from(specs: Sequence[Any]) -> dict[str, ModelEntry]:
        out: dict[str, ModelEntry] = {}
        for spec in specs:
            if not isinstance(spec, str | Path):
                key, source = getattr(spec, "name", None) or type(spec).__name__, "instance"
            else:
                text = str(spec).strip()
                if not text:
                    continue
                source = "path" if Path(text).expanduser().exists() else "store"
                key = text
            if key in out:
                raise PluginError(f"model {key!r} given twice")
            out[key] = ModelEntry(key, spec, source, _provenance_info(spec))
        return out

    def entries(self) -> dict[str, ModelEntry]:
        """The offered models by key, in a stable order."""
        if self._fixed is not None:
            return dict(self._fixed)
        out: dict[str, ModelEntry] = {}
        # the shipped models first, then the store sorted by name then creation: the last one of a name is the newest
        for item in api.list_models():
            if item.get("problem"):
                continue
            name = str(item["name"])
            info = {k: item.get(k) for k in ("name", "created", "fingerprint", "dataset", "epochs", "metrics")}
            info.update(_provenance_info(item["path"]))
            out[name] = ModelEntry(name, name, "shipped" if item.get("shipped") else "store", info)
        return out

    def default_key(self) -> str | None:
        """The model the page preselects: the highest AUROC (model card or validation) among the offered models
        trained on real films (the shipped model after a plain install), else the first offered; None if none."""
        entries = self.entries()
        real = [
            (float(e.info["auroc"]), key)
            for key, e in entries.items()
            if e.info.get("dataset") and not e.info.get("synthetic") and e.info.get("auroc") is not None
        ]
        if real:
            return max(real, key=lambda t: t[0])[1]
        return next(iter(entries), None)

    def keys(self) -> list[str]:
        return list(self.entries())

    def get(self, key: str) -> tuple[Any, threading.Lock]:
        """The loaded model offered as ``key`` and its inference lock; an unknown key raises :class:`RequestError`."""
        model = self._models.get(key)
        if model is not None:
            return model, self._locks[key]
        entries = self.entries()
        entry = entries.get(key)
        if entry is None:
            offered = ", ".join(entries) or "none: train one with `xray-xai train`"
            raise RequestError(f"unknown model {key!r} (offered: {offered})")
        with self._load_lock:  # one load per model, however many requests ask for it at once
            model = self._models.get(key)
            if model is None:
                model = self._load(entry)
                self._locks[key] = threading.Lock()
                self._models[key] = model
                self.loads += 1
        return model, self._locks[key]

    @staticmethod
    def _load(entry: ModelEntry) -> Any:
        if entry.source != "instance":
            return api.load_model(entry.spec)
        model = entry.spec
        if hasattr(model, "eval"):
            model.eval()
        return model


def explainer_names() -> list[str]:
    """Explanation methods offered: every explainer in the registry (the default first)."""
    return api.explainer_names()


# ------------------------------------------------------------------------------------------------------ analysis


@dataclass
class Analysis:
    """Everything one request produced: the uploads and, per model key, what :func:`xray_xai.api.explain_films`
    returned; :meth:`files` and :meth:`to_dict` render it for the page and the API."""

    images: list[dict[str, Any]]
    results: list[tuple[str, Any]]  # (model key, xray_xai.explain.engine.ModelFilms)
    threshold: float | None = None  #: given for every model; None: each model's own (``results[i].threshold``)
    created: float = field(default_factory=time.time)
    #: per model key: ``provenance`` (one line) and ``warning`` (a phantom-trained model on uploaded films, or None)
    origins: dict[str, dict[str, Any]] = field(default_factory=dict)

    def file_names(self, mi: int, method: str, view: int) -> dict[str, str]:
        run = self.results[mi][1]
        return {kind: f"{mi + 1}-{run.png_name(kind, view, method)}" for kind in ("overlay", "heatmap")}

    def film_name(self, mi: int, view: int) -> str:
        return f"{mi + 1}-{self.results[mi][1].png_name('film', view)}"

    def files(self) -> dict[str, bytes]:
        """Every PNG of this result by download name (films, overlays on the film, bare heatmaps)."""
        out: dict[str, bytes] = {}
        for mi, (_, run) in enumerate(self.results):
            for vi in range(len(run.films)):
                out[self.film_name(mi, vi)] = run.film_png(vi)
            for method, result in run.methods.items():
                if result.error is not None:
                    continue
                for vi in range(len(run.films)):
                    names = self.file_names(mi, method, vi)
                    out[names["overlay"]] = run.overlay_png(method, vi)
                    out[names["heatmap"]] = run.heatmap_png(method, vi)
        return out

    def to_dict(self, link: Callable[[str], str] | None = None, *, maps: bool = False) -> dict[str, Any]:
        """JSON-ready result. ``link`` turns a PNG file name into what the JSON carries for it (a URL, or base64
        data); None leaves PNGs out. ``maps`` adds the raw maps as nested lists (``(S, S)`` floats per view)."""
        return {
            "images": self.images,
            "n_views": len(self.images),
            "threshold": self.threshold if self.threshold is not None else self._common_threshold(),
            "results": [self._model_dict(mi, link, maps) for mi in range(len(self.results))],
        }

    def _common_threshold(self) -> float | None:
        """The threshold when every model uses the same one (None when they differ)."""
        values = {float(run.threshold) for _, run in self.results}
        return values.pop() if len(values) == 1 else None

    def _model_dict(self, mi: int, link: Callable[[str], str] | None, maps: bool) -> dict[str, Any]:
        key, run = self.results[mi]
        entry: dict[str, Any] = {
            "model": key,
            "name": run.name,
            "fingerprint": run.fingerprint,
            "probabilities": [round(float(p), 6) for p in run.probabilities],
            "probabilities_raw": [
                round(float(p), 6)
                for p in (run.probabilities_raw if run.probabilities_raw is not None else run.probabilities)
            ],
            "threshold": run.threshold,
            "study_score": round(run.study_probability, 6),
            "prediction": run.prediction,
            **self.origins.get(key, {}),
        }
        if link is not None:
            entry["films"] = [link(self.film_name(mi, vi)) for vi in range(len(run.films))]
        if run.methods:
            entry["explanations"] = [self._method_dict(mi, m, link, maps) for m in run.methods]
        return entry

    def _method_dict(self, mi: int, method: str, link: Callable[[str], str] | None, maps: bool) -> dict[str, Any]:
        run = self.results[mi][1]
        result = run.methods[method]
        item: dict[str, Any] = {"method": method}
        if result.error is not None:
            item["error"] = result.error
            return item
        views = []
        for vi in range(len(run.films)):
            view: dict[str, Any] = {"view": vi}
            if link is not None:
                names = self.file_names(mi, method, vi)
                view["overlay_png"] = link(names["overlay"])
                view["heatmap_png"] = link(names["heatmap"])
            if maps:
                view["map"] = np.round(run.heatmap(method, vi), 4).tolist()
            views.append(view)
        item["views"] = views
        return item


def analyse(
    films: Sequence[Film],
    cache: ModelCache,
    model_keys: Sequence[str],
    methods: Sequence[str] = (),
    *,
    seed: int = 0,
    threshold: float | None = None,
) -> Analysis:
    """Probabilities of every film under each model (and the study score, their mean), plus heatmaps for
    ``methods``. A method that cannot explain a model (missing capability) is reported in its result, not raised.
    Probabilities are calibrated and ``threshold`` None is each model's operating point, as recorded in its sidecar
    by ``xray-xai calibrate`` (else 0.5); the model's own probability is kept as ``probabilities_raw``."""
    keys = list(dict.fromkeys(model_keys))
    if not keys:
        raise RequestError("no model chosen")
    meths = list(dict.fromkeys(methods))
    known = explainer_names()
    for m in meths:
        if m not in known:
            raise RequestError(f"unknown explanation method {m!r} (offered: {', '.join(sorted(known))})")
    resolved = [(k, *cache.get(k)) for k in keys]  # all unknown keys fail before any work is done
    images = [f.image for f in films]
    names = [f.name for f in films]
    results = []
    origins: dict[str, dict[str, Any]] = {}
    for key, model, lock in resolved:
        with lock:
            (run,) = api.explain_films(
                images, model, meths, names=names, seed=seed, predict=True, keep_errors=True, threshold=threshold
            )
        results.append((key, run))
        (prov,), warnings = api.describe_models([model], uploaded=True)  # uploads are never taken for phantoms
        origins[key] = {"provenance": prov["short"], "warning": warnings[0] if warnings else None}
    shapes = [
        {"index": i, "name": f.name, "height": int(f.image.shape[0]), "width": int(f.image.shape[1])}
        for i, f in enumerate(films)
    ]
    return Analysis(shapes, results, threshold, origins=origins)


# ---------------------------------------------------------------------------------------------------- result cache


@dataclass
class _Stored:
    files: dict[str, bytes]
    json: bytes
    created: float


class ResultCache:
    """Finished results kept in memory for download, under random ids; bounded in count and age so that a long-
    running server's memory stays flat. Nothing is written to disk."""

    def __init__(self, max_entries: int = 32, ttl_s: float = 3600.0) -> None:
        self.max_entries = int(max_entries)
        self.ttl_s = float(ttl_s)
        self._items: OrderedDict[str, _Stored] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, files: dict[str, bytes], make_json: Callable[[str], bytes]) -> str:
        """Store ``files`` and the JSON that ``make_json(id)`` returns (it may link to the files by id)."""
        rid = secrets.token_urlsafe(16)
        json_bytes = make_json(rid)
        now = time.monotonic()
        with self._lock:
            self._items[rid] = _Stored(dict(files), json_bytes, now)
            self._evict(now)
        return rid

    def get(self, rid: str) -> _Stored | None:
        now = time.monotonic()
        with self._lock:
            self._evict(now)
            item = self._items.get(rid)
            if item is not None:
                self._items.move_to_end(rid)
            return item

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _evict(self, now: float) -> None:
        while self._items:
            rid, oldest = next(iter(self._items.items()))
            if len(self._items) > self.max_entries or now - oldest.created > self.ttl_s:
                del self._items[rid]
            else:
                break
