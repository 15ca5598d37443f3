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
    """The device a command runs on: ``requested`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``...) checked to exist on
    this machine, or for ``None``/``"auto"`` the first CUDA device when there is one, else the CPU. A name torch does
    not know, or a device this machine lacks, is a :class:`~xray_xai.errors.PluginError` in one line."""
    import torch

    from xray_xai.errors import PluginError

    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(str(requested))
    except (RuntimeError, ValueError):
        raise PluginError(f"unknown device {requested!r}; expected cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise PluginError(f"device {requested!r}: no CUDA device on this machine; use --device cpu")
        if device.index is not None and device.index >= count:
            raise PluginError(f"device {requested!r}: this machine has {count} CUDA device(s) (cuda:0-{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise PluginError(f"device {requested!r}: MPS is not available on this machine; use --device cpu")
    return str(requested)
