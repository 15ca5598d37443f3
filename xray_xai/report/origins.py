"""The report's "Models" section: where each model in the report comes from (name, training data, AUROC), and a
loud note when a model trained on synthetic phantoms was applied to films that are not phantoms."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from xray_xai.sdk.provenance import is_synthetic_dataset

__all__ = ["models_section"]


def _e(x: Any) -> str:
    return html.escape(str(x))


def _origins(
    evaluation: Mapping[str, Any] | None, audit: Mapping[str, Any] | None, clustering: Mapping[str, Any] | None
) -> list[tuple[dict[str, Any], str | None]]:
    """``(provenance, data set it was applied to)`` for every model the results name, once each."""
    found: list[tuple[dict[str, Any], str | None]] = []
    if evaluation and isinstance(evaluation.get("provenance"), Mapping):
        found.append((dict(evaluation["provenance"]), evaluation.get("dataset")))
    if audit:
        applied = (audit.get("data") or {}).get("dataset")
        for block in (audit.get("models") or {}).values():
            if isinstance(block, Mapping) and isinstance(block.get("provenance"), Mapping):
                found.append((dict(block["provenance"]), applied))
    if clustering and isinstance(clustering.get("provenance"), Mapping):
        found.append((dict(clustering["provenance"]), clustering.get("dataset")))
    seen: set[tuple[str, str | None]] = set()
    out = []
    for prov, applied in found:
        key = (str(prov.get("short")), applied)
        if key not in seen:
            seen.add(key)
            out.append((prov, applied))
    return out


def models_section(
    evaluation: Mapping[str, Any] | None, audit: Mapping[str, Any] | None, clustering: Mapping[str, Any] | None
) -> str:
    """HTML: one line per model (its provenance) and a warning per phantom-trained model applied to real films;
    empty when the results carry no provenance."""
    origins = _origins(evaluation, audit, clustering)
    if not origins:
        return ""
    items = "".join(f"<li>{_e(prov.get('short', ''))}</li>" for prov, _ in origins)
    notes = [
        f"<p class='fail' role='alert'>Warning: model {_e(prov.get('name', ''))} was trained on synthetic phantoms "
        f"and is applied here to {_e(applied)} films, which are not phantoms: its numbers and heatmaps say nothing "
        "about real radiographs.</p>"
        for prov, applied in origins
        if prov.get("synthetic") and applied and not is_synthetic_dataset(str(applied))
    ]
    return f"<h2>Models</h2><ul class='models'>{items}</ul>{''.join(notes)}"
