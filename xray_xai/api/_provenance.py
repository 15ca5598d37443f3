"""Where each model comes from: provenance lines, the phantom-model warning, shipped and trained models listed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.sdk.interfaces import Model

    ModelSpec = str | Path | Model


def _sidecar_of(spec: Any) -> Any:
    """The sidecar dict a name or path names (read, not loaded), or the model object itself."""
    if not isinstance(spec, str | Path):
        return spec
    from xray_xai.models import store

    return store.read_sidecar(store.resolve(spec))


def provenance(model: ModelSpec) -> dict[str, Any]:
    """A model's name, fingerprint, training data set and AUROC (validation, or the model card's test AUROC for a
    shipped model), with ``short``, the one line every command, figure, report and the web page show.
    ``model``: a shipped or registered name, a checkpoint path (only the sidecar is read) or a loaded model."""
    from xray_xai.sdk.provenance import provenance as _provenance

    return _provenance(_sidecar_of(model)).to_dict()


def describe_models(
    models: Sequence[ModelSpec],
    *,
    checkpoint: str | Path | None = None,
    dataset: str | None = None,
    data_root: str | Path | None = None,
    inputs: Iterable[str | Path] = (),
    uploaded: bool = False,
) -> tuple[list[dict[str, Any]], list[str]]:
    """``(provenances, warnings)`` for the models a command runs on the films it reads: one provenance per model
    (see :func:`provenance`) and one warning per model trained on synthetic phantoms when the films are not phantoms
    (``uploaded``: films sent to the web page, never taken for phantoms)."""
    from xray_xai.models.resolve import resolve_specs
    from xray_xai.sdk.provenance import films_are_phantoms, phantom_warning
    from xray_xai.sdk.provenance import provenance as _provenance

    specs = resolve_specs(list(models), checkpoint) if (models or checkpoint is not None) else []
    provs = [_provenance(_sidecar_of(s)) for s in specs]
    phantoms = False if uploaded else films_are_phantoms(dataset=dataset, data_root=data_root, inputs=inputs)
    what = "uploaded films" if uploaded else (f"{dataset or 'the'} films" if data_root is not None else "these films")
    warnings = [w for p in provs if (w := phantom_warning(p, phantoms, what)) is not None]
    return [p.to_dict() for p in provs], warnings


def list_models() -> list[dict[str, Any]]:
    """The shipped models, then every trained model in the store (``xray-xai models``); each entry has ``shipped``
    (bool) and ``provenance`` (:func:`provenance`'s ``short``)."""
    from xray_xai.models import store
    from xray_xai.models.shipped import list_shipped
    from xray_xai.sdk.provenance import provenance as _provenance

    out = []
    for entry in [*list_shipped(), *({**e, "shipped": False} for e in store.list_store())]:
        if not entry.get("problem"):
            try:
                entry["provenance"] = _provenance(store.read_sidecar(Path(entry["path"]))).short
            except Exception as exc:  # a sidecar that list_store could read but provenance cannot: say so
                entry["problem"] = str(exc).splitlines()[0]
        out.append(entry)
    return out


def best_real_model(entries: Sequence[dict[str, Any]]) -> str | None:
    """The name of the model with the highest AUROC (model card or validation) among ``entries`` (as
    :func:`list_models` gives them) trained on real films, or None when none is."""
    from xray_xai.models import store
    from xray_xai.sdk.provenance import provenance as _provenance

    best: tuple[float, str] | None = None
    for entry in entries:
        if entry.get("problem"):
            continue
        try:
            prov = _provenance(store.read_sidecar(Path(entry["path"])))
        except Exception:
            continue
        if prov.dataset is None or prov.synthetic or prov.auroc is None:
            continue
        key = (prov.auroc, str(entry["name"]))
        if best is None or key[0] > best[0]:
            best = key
    return best[1] if best else None
