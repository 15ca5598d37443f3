"""``--param`` values: one syntax for every command (``KEY=VALUE``, or ``METHOD.KEY=VALUE`` where a command takes
several methods), values parsed as JSON when they can be (numbers, true/false, null, lists), else kept as strings."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = ["ParamError", "parse_method_params", "parse_params", "parse_value"]


class ParamError(ValueError):
    """A ``--param`` item that does not follow the syntax; the message says what was expected."""


def parse_value(raw: str) -> Any:
    """``"200"`` -> 200, ``"true"`` -> True, ``"[1, 2]"`` -> [1, 2], ``"conv1"`` -> ``"conv1"``."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_params(items: Iterable[str]) -> dict[str, Any]:
    """``["k=4", "init=k-means++"]`` -> ``{"k": 4, "init": "k-means++"}``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ParamError(f"{item!r}: expected KEY=VALUE, e.g. n_init=10")
        out[key.strip()] = parse_value(raw)
    return out


def parse_method_params(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["saliency.n_segments=200"]`` -> ``{"saliency": {"n_segments": 200}}`` (the method is everything before the
    last dot, so ``gradcam++.layer=x`` works)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, name = key.rpartition(".")
        if not sep or not dot or not method.strip() or not name.strip():
            raise ParamError(f"{item!r}: expected METHOD.KEY=VALUE, e.g. saliency.n_segments=200")
        out.setdefault(method.strip(), {})[name.strip()] = parse_value(raw)
    return out
