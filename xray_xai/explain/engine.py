"""Explaining decoded films in memory: every loaded model x every method, probabilities, maps and overlays.

The one engine behind ``xray-xai explain`` (:func:`xray_xai.explain.service.explain`, which reads records and
writes files around it), :func:`xray_xai.api.explain_films` and the web page. Nothing here reads or writes a file:

* :func:`prepare_film` turns one decoded film into what each model sees (the film after its crop/resize, for
  display, and the normalised tensor);
* :func:`explain_prepared` runs each model once per method (and once more with ``predict``) on a batch of prepared
  films and returns one :class:`ModelFilms` per model;
* :func:`explain_films` does both for a list of films.

Errors follow one rule: an :class:`~xray_xai.errors.XrayXaiError` (a method that cannot explain a model, bad
options) is raised, or with ``keep_errors`` kept in that method's result; any other exception from a plugin is a bug
of the plugin and becomes a one-line :class:`~xray_xai.errors.PluginError` naming it and the films.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from xray_xai._util.device import model_device
from xray_xai._util.slugs import output_stem, slug
from xray_xai.defaults import DECISION_THRESHOLD, DEFAULT_METHOD
from xray_xai.errors import PluginError, XrayXaiError, one_line
from xray_xai.models.calibration import calibrated
from xray_xai.models.operating import resolve_threshold
from xray_xai.sdk.interfaces import Explainer, Explanation, Model
from xray_xai.sdk.provenance import provenance

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "MethodMaps",
    "ModelFilms",
    "PreparedFilm",
    "check_pair",
    "explain_films",
    "explain_prepared",
    "make_explainer",
    "method_list",
    "model_labels",
    "prepare_film",
]


def make_explainer(method: str, *, seed: int | None = 0, params: dict[str, Any] | None = None) -> Explainer:
    """Instantiate the explainer plugin ``method`` with ``params`` (and ``seed`` where it takes one)."""
    from xray_xai.sdk.registry import explainers

    cls = explainers.get(method)
    options = dict(params or {})
    sig = inspect.signature(cls.__init__)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    if seed is not None and ("seed" in sig.parameters or takes_any):
        options.setdefault("seed", seed)
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:  # an unknown option, or a value the plugin cannot use (stride=abc)
        raise PluginError(f"explainer {method!r}: {' '.join(str(exc).split())}") from None


def method_list(methods: str | Sequence[str] | None) -> list[str]:
    """Method names from a name, a comma-separated list or a sequence of either, in order, each once; None is the
    default method (:data:`xray_xai.defaults.DEFAULT_METHOD`), an empty sequence no method (probabilities only)."""
    if methods is None:
        return [DEFAULT_METHOD]
    given = [methods] if isinstance(methods, str) else list(methods)
    names = [name.strip() for spec in given for name in str(spec).split(",") if name.strip()]
    return list(dict.fromkeys(names))


def model_labels(models: Sequence[Model]) -> list[str]:
    """One file-name-safe label per model, its name (a shipped model's own name, e.g. ``fracatlas-lite0``); a name
    used twice gets ``-<position>`` appended."""
    labels: list[str] = []
    for i, model in enumerate(models):
        prov = provenance(model)
        label = output_stem(prov.name if prov.shipped else (model.name or type(model).__name__))
        labels.append(label if label not in labels else f"{label}-{i + 1}")
    return labels


def check_pair(explainer: Explainer, model: Model) -> None:
    """Raise :class:`PluginError` if ``explainer`` cannot explain ``model`` (or one of an ensemble's members)."""
    for part in getattr(model, "members", None) or [model]:
        explainer.check_model(part)


@dataclass
class PreparedFilm:
    """One decoded film as each model sees it, by model label: ``films`` after the model's geometry (crop, resize,
    letterbox; ``(S, S)`` in [0, 1], for display) and ``tensors`` fully preprocessed (``(C, S, S)``)."""

    films: dict[str, np.ndarray]
    tensors: dict[str, torch.Tensor]


def prepare_film(image: np.ndarray, models: Sequence[Model], labels: Sequence[str]) -> PreparedFilm:
    """Preprocess one decoded film (float ``(H, W)`` in [0, 1]) for every model."""
    from xray_xai.data.geometry import geometry, to_tensor

    pairs = list(zip(models, labels, strict=True))
    return PreparedFilm(
        films={label: geometry(image, m.preprocessing) for m, label in pairs},
        tensors={label: to_tensor(image, m.preprocessing) for m, label in pairs},
    )


@dataclass
class MethodMaps:
    """One method's explanation of a batch of films under one model, or the one-line reason it could not run."""

    method: str
    explanation: Explanation | None = None
    error: str | None = None

    @property
    def maps(self) -> np.ndarray | None:
        """The maps, ``(B, S, S)`` float32 in [0, 1] (NaN as 0), or None when the method failed."""
        if self.explanation is None:
            return None
        return np.clip(np.nan_to_num(np.asarray(self.explanation.maps, dtype=np.float32)), 0.0, 1.0)


@dataclass
class ModelFilms:
    """What one model made of a batch of films: each film as it saw it, the probabilities of abnormal and one
    :class:`MethodMaps` per method (in the order asked). A study's probability is the mean over its views."""

    label: str
    name: str
    fingerprint: str
    films: list[np.ndarray]
    probabilities: np.ndarray
    methods: dict[str, MethodMaps] = field(default_factory=dict)
    threshold: float = DECISION_THRESHOLD
    #: the model's own probabilities before the sidecar's calibration (equal to ``probabilities`` without one)
    probabilities_raw: np.ndarray | None = None
    provenance: str = ""  #: the model's name, training data and AUROC in one line (xray_xai.sdk.provenance)
    #: the model's name as its provenance gives it (a shipped model's own name, ``fracatlas-lite0``), for titles
    provenance_name: str = ""

    @property
    def study_probability(self) -> float:
        """Mean probability over the films (MURA's study-level rule)."""
        return float(np.mean(self.probabilities))

    @property
    def prediction(self) -> str:
        """``abnormal`` when the study probability reaches the threshold, else ``normal``."""
        return "abnormal" if self.study_probability >= self.threshold else "normal"

    def explanation(self, method: str) -> Explanation:
        """The method's explanation; a method that failed raises its error (one line)."""
        result = self.methods[method]
        if result.explanation is None:
            raise PluginError(result.error or f"explainer {method!r} gave no explanation")
        return result.explanation

    def heatmap(self, method: str, view: int) -> np.ndarray:
        """The map of film ``view``, ``(S, S)`` in [0, 1]."""
        maps = self.methods[method].maps
        if maps is None:
            raise PluginError(self.methods[method].error or f"explainer {method!r} gave no explanation")
        return maps[view]

    def overlay(self, method: str, view: int) -> np.ndarray:
        """The map over the film as RGB ``(S, S, 3)`` in [0, 1], blended by :func:`xray_xai.explain.overlays.blend`
        (the rule of every overlay xray-xai draws)."""
        from xray_xai.explain.overlays import blend

        return blend(self.films[view], self.heatmap(method, view))

    def png_name(self, kind: str, view: int, method: str | None = None) -> str:
        """A file name for one PNG of this result, ``<model>[-<method>]-view<n>-<kind>.png`` (file-name slugs)."""
        parts = [self.label, *([slug(method)] if method else []), f"view{view + 1}", slug(kind)]
        return "-".join(parts) + ".png"

    def film_png(self, view: int) -> bytes:
        """The film as the model saw it, 8-bit gray PNG."""
        from xray_xai.explain.overlays import to_png

        return to_png(self.films[view])

    def overlay_png(self, method: str, view: int) -> bytes:
        """:meth:`overlay` as an 8-bit RGB PNG."""
        from xray_xai.explain.overlays import to_png

        return to_png(self.overlay(method, view))

    def heatmap_png(self, method: str, view: int) -> bytes:
        """The bare map as an 8-bit gray PNG."""
        from xray_xai.explain.overlays import to_png

        return to_png(self.heatmap(method, view))


def explain_prepared(
    prepared: Sequence[PreparedFilm],
    models: Sequence[Model],
    labels: Sequence[str],
    explainers: Mapping[str, Explainer],
    *,
    target: str = "abnormal",
    predict: bool = False,
    keep_errors: bool = False,
    where: str = "the films",
    threshold: float | None = None,
) -> list[ModelFilms]:
    """Explain a batch of prepared films with every model and explainer (one batch per model).

    Probabilities come from a separate forward pass without gradients when ``predict`` is set or no method ran,
    else from the first method's own pass. ``where`` names the films in error messages.
    """
    out = []
    for model, label in zip(models, labels, strict=True):
        x = _stack([p.tensors[label] for p in prepared], model_device(model))
        methods = {
            name: _explain_one(name, explainer, model, x, target, keep_errors, where)
            for name, explainer in explainers.items()
        }
        done = [m.explanation for m in methods.values() if m.explanation is not None]
        for exp in done:
            _calibrate_explanation(model, exp)
        raw = (
            _predict(model, label, x, where)
            if predict or not done
            else np.asarray(done[0].extras["probabilities_raw"], dtype=np.float64)
        )
        prov = provenance(model)
        out.append(
            ModelFilms(
                label=label,
                name=model.name or label,
                fingerprint=_fingerprint(model),
                films=[p.films[label] for p in prepared],
                probabilities=calibrated(model, np.asarray(raw, dtype=np.float64).reshape(-1)),
                methods=methods,
                threshold=resolve_threshold(model, threshold)[0],
                probabilities_raw=np.asarray(raw, dtype=np.float64).reshape(-1),
                provenance=prov.short,
                provenance_name=prov.name,
            )
        )
    return out


def _calibrate_explanation(model: Model, exp: Explanation) -> None:
    """Show the calibrated probability in the explanation (titles, items), the model's own kept in
    ``extras["probabilities_raw"]``; applied once (:func:`xray_xai.models.calibration.calibrated`)."""
    if "probabilities_raw" in exp.extras:
        return
    raw = np.asarray(exp.probabilities, dtype=np.float64).reshape(-1)
    exp.extras["probabilities_raw"] = raw
    exp.probabilities = calibrated(model, raw)


def explain_films(
    films: Sequence[np.ndarray],
    models: Model | Sequence[Model],
    methods: str | Sequence[str] | Mapping[str, Explainer] | None = None,
    *,
    names: Sequence[str] = (),
    target: str = "abnormal",
    seed: int | None = 0,
    params: Mapping[str, dict[str, Any]] | None = None,
    predict: bool = True,
    keep_errors: bool = False,
    threshold: float | None = None,
) -> list[ModelFilms]:
    """Probabilities and maps of decoded ``films`` (float ``(H, W)`` in [0, 1], e.g. the views of one study) under
    each loaded model, for each method (names, or ready explainers by name; None: the default method; ``()``:
    probabilities only). ``params`` maps a method name to its options; ``names`` name the films in error messages.
    With ``keep_errors`` a method that cannot explain a model is reported in its :class:`MethodMaps` instead of
    raised. One :class:`ModelFilms` per model, in order."""
    from xray_xai.sdk.explainer import score_sign

    score_sign(target)
    model_list = [models] if isinstance(models, Model) else list(models)
    if not model_list:
        raise PluginError("no model given")
    if not films:
        raise PluginError("no film given")
    if isinstance(methods, Mapping):
        explainers = dict(methods)
    else:
        explainers = {m: make_explainer(m, seed=seed, params=(params or {}).get(m)) for m in method_list(methods)}
    labels = model_labels(model_list)
    prepared = [prepare_film(image, model_list, labels) for image in films]
    shown = [str(n) for n in names] or [f"film {i + 1}" for i in range(len(films))]
    return explain_prepared(
        prepared,
        model_list,
        labels,
        explainers,
        target=target,
        predict=predict,
        keep_errors=keep_errors,
        where=where(shown),
        threshold=threshold,
    )


def where(names: Sequence[str]) -> str:
    """The film (or batch of films) a failing plugin was given, for its one-line error."""
    return str(names[0]) if len(names) == 1 else f"a batch of {len(names)} films starting with {names[0]}"


def _explain_one(
    name: str,
    explainer: Explainer,
    model: Model,
    x: torch.Tensor,
    target: str,
    keep_errors: bool,
    at: str,
) -> MethodMaps:
    try:
        check_pair(explainer, model)
        return MethodMaps(name, explanation=explainer.explain(model, x, target=target))
    except XrayXaiError as exc:
        if keep_errors:
            return MethodMaps(name, error=one_line(exc))
        raise
    except Exception as exc:  # a (third-party) explainer's bug: one line naming it and the films
        raise PluginError(f"explainer {name!r} failed on {at}: {_bug(exc)}") from exc


def _predict(model: Model, label: str, x: torch.Tensor, at: str) -> np.ndarray:
    import torch

    try:
        with torch.no_grad():
            p = model.predict_proba(x)
    except XrayXaiError:
        raise
    except Exception as exc:  # a model plugin's forward failed: one line naming it and the films
        raise PluginError(f"model {label!r} failed on {at}: {_bug(exc)}") from exc
    return np.asarray(p.detach().cpu().numpy(), dtype=np.float64).reshape(-1)


def _bug(exc: BaseException) -> str:
    """``Type: message`` of an unexpected exception, on one line (the type alone when it has no message)."""
    kind = type(exc).__name__
    return f"{kind}: {one_line(exc)}" if str(exc).strip() else kind


def _fingerprint(model: Model) -> str:
    from xray_xai.sdk.explainer import fingerprint

    return fingerprint(model)


def _stack(tensors: Sequence[torch.Tensor], device: Any) -> torch.Tensor:
    import torch

    x = torch.stack(list(tensors))
    return x.to(device) if device is not None else x
