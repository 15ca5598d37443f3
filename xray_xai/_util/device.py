"""Where a model's weights live, and which device a command runs on: one rule for every command."""

from __future__ import annotations

from typing import Any

__all__ = ["model_device", "resolve_device"]


def model_device(model: Any) -> Any:
    """The ``torch.device`` of the model's first parameter, or None for models without parameters (LBP, ensembles of
    such) - callers then leave inputs where they are."""
    params = getattr(model, "parameters", None)
    if not callable(params):
        return None
    try:
        first = next(iter(params()), None)
    except TypeError:
        return None
    return None if first is None else first.device


def resolve_device(requested: str | None = None) -> str:
    """The device a command runs on: ``requested`` as given (``cpu``, ``cuda``, ``cuda:1``, ``mps``...), or for
    ``None``/``"auto"`` the first CUDA device when there is one, else the CPU."""
    if requested not in (None, "", "auto"):
        return str(requested)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
