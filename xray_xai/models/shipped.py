"""Models that ship with xray-xai: package data under ``xray_xai/models/shipped/<name>/`` (safetensors + sidecar).

A shipped model has a name of its own (``fracatlas-lite0``), different from its model plugin's name
(``efficientnet-lite0``), so the two never shadow each other:

* ``--model fracatlas-lite0`` is always the shipped weights, whatever the store holds;
* ``--model efficientnet-lite0`` is always the newest checkpoint *you* trained (never the shipped one);
* a model plugin registered under a shipped name is reached through its checkpoint path only.

The sidecar is a store sidecar (its ``name`` is the plugin that rebuilds the architecture) plus a ``shipped`` block:
the shipped name, the model card's facts (data, licence, test metrics) and the card's path in the docs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["SHIPPED_DIR", "list_shipped", "shipped_name_of", "shipped_names", "shipped_weights"]

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
_WEIGHTS = "model.safetensors"
_SIDECAR = "model.json"


def shipped_names() -> list[str]:
    """The names of the shipped models (folders holding weights and a sidecar), sorted."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(
        p.name for p in SHIPPED_DIR.iterdir() if p.is_dir() and (p / _WEIGHTS).is_file() and (p / _SIDECAR).is_file()
    )


def shipped_weights(name: str) -> Path | None:
    """The weights file of the shipped model ``name``, or None when no shipped model has that name."""
    return SHIPPED_DIR / name / _WEIGHTS if name in shipped_names() else None


def shipped_name_of(sidecar: dict[str, Any]) -> str | None:
    """The shipped name a sidecar carries (None for a checkpoint trained here)."""
    block = sidecar.get("shipped")
    return str(block.get("name")) if isinstance(block, dict) and block.get("name") else None


def list_shipped() -> list[dict[str, Any]]:
    """One entry per shipped model, shaped like :func:`xray_xai.models.store.list_store`'s, with ``shipped`` True
    and the card's ``test`` metrics."""
    out = []
    for name in shipped_names():
        folder = SHIPPED_DIR / name
        entry: dict[str, Any] = {"name": name, "path": str(folder), "shipped": True}
        try:
            side = json.loads((folder / _SIDECAR).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            entry["problem"] = f"{folder / _SIDECAR}: unreadable sidecar ({exc})".splitlines()[0]
            out.append(entry)
            continue
        block = side.get("shipped") or {}
        entry.update(
            architecture=side.get("name"),
            created=side.get("created"),
            fingerprint=side.get("fingerprint"),
            dataset=side.get("dataset"),
            epochs=side.get("epochs"),
            metrics=side.get("metrics") or {},
            test=block.get("test") or {},
            card=block.get("card"),
        )
        out.append(entry)
    return out
