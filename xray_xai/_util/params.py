"""``--param`` values: one syntax for every command (``KEY=VALUE``, or ``METHOD.KEY=VALUE`` where a command takes
several methods), values parsed as JSON when they can be (numbers, true/false, null, lists), else kept as strings."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["ParamError", "method_params", "parse_method_params", "parse_params", "parse_value", "split_names"]


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


def split_names(*specs: str | Sequence[str] | None) -> list[str]:
    """Names from comma-separated lists and sequences, stripped, first occurrence kept:
    ``split_names("gradcam,saliency", ["gradcam"])`` -> ``["gradcam", "saliency"]``."""
    names: list[str] = []
    for spec in specs:
        items = [spec] if isinstance(spec, str) else list(spec or ())
        names += [n.strip() for item in items for n in str(item).split(",") if n.strip()]
    return list(dict.fromkeys(names))


def method_params(items: Iterable[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--param`` items for ``methods``: ``METHOD.KEY=VALUE``, or ``KEY=VALUE`` when exactly one method is chosen;
    values as JSON when they parse. Raises :class:`ParamError` (a ``ValueError``) on a malformed item or a method
    that is not chosen."""
    example = f"{methods[0] if methods else 'saliency'}.n_segments=200"
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ParamError(f"{item!r}: expected METHOD.KEY=VALUE (KEY=VALUE with one method), e.g. {example}")
        if "." in key:
            parsed = parse_method_params([item])
        elif len(methods) == 1:
            parsed = {methods[0]: parse_params([item])}
        else:
            raise ParamError(f"{item!r}: which method? expected METHOD.KEY=VALUE with {len(methods)} methods, e.g. "
                             f"{methods[0]}.{key.strip()}=...")  # fmt: skip
        for method, options in parsed.items():
            if method not in methods:
                raise ParamError(f"{item!r}: {method!r} is not among the chosen methods ({', '.join(methods)})")
            out.setdefault(method, {}).update(options)
    return out
