"""The weights fingerprint: one definition, computed once per set of weights.

:func:`weights_fingerprint` is what the store writes in a sidecar, what explanations, audits and the feature cache
record, and what :meth:`TorchModel.fingerprint <xray_xai.sdk.torch_model.TorchModel.fingerprint>` returns: a short
sha256 of the model's name and every tensor of its ``state_dict`` (or the model's own ``fingerprint()`` where it
defines one: ensembles hash their members', ``lbp-logreg`` its arrays).

Hashing every weight is not free (a DenseNet-169 is 50 MB), so the value of a torch module is remembered until one
of its parameters or buffers changes: the key is each tensor's version counter (bumped by every in-place change:
``optimizer.step()``, ``load_state_dict``, ``reset_parameters``, ``copy_`` under ``no_grad``), its storage address
(a tensor replaced) and the model's name. The memo is keyed by the module object, so a deep copy (the audit's
randomised models) starts without a value and is hashed on first use. Not seen: writes through ``param.data`` in
place, which bypass the version counter; call :func:`forget` after such a change.
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["forget", "hash_state", "weights_fingerprint"]

_MEMO: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], str]] = weakref.WeakKeyDictionary()


def hash_state(name: str, state: Mapping[str, Any]) -> str:
    """sha256 of ``name`` and every ``(key, tensor bytes)`` of ``state`` in key order, first 16 hex digits."""
    h = hashlib.sha256(name.encode())
    for key, tensor in sorted(state.items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _key(model: Any) -> tuple[Any, ...]:
    # one walk over the modules' own tensors: ``parameters()`` and ``buffers()`` each build every dotted name, twice
    # the cost on a DenseNet-169 (1,000 tensors), and this runs on every explanation
    params, buffers = [], []
    for module in model.modules():
        params += [t for t in module._parameters.values() if t is not None]
        buffers += [t for t in module._buffers.values() if t is not None]
    versions = tuple(getattr(t, "_version", 0) for t in (*params, *buffers))
    return (str(getattr(model, "name", "")), *versions, *(t.data_ptr() for t in params))


def memoised(model: Any, compute: Callable[[], str]) -> str:
    """``compute()``, remembered for the torch module ``model`` until one of its tensors changes."""
    from torch import nn

    if not isinstance(model, nn.Module):
        return compute()
    try:
        key = _key(model)
        cached = _MEMO.get(model)
    except (TypeError, RuntimeError):  # not weak-referenceable, or tensors without a version counter
        return compute()
    if cached is not None and cached[0] == key:
        return cached[1]
    value = compute()
    _MEMO[model] = (key, value)
    return value


def forget(model: Any) -> None:
    """Drop the remembered fingerprint of ``model`` (after changing weights through ``param.data``)."""
    with contextlib.suppress(TypeError):
        _MEMO.pop(model, None)


def weights_fingerprint(model: Any) -> str | None:
    """The fingerprint of ``model``'s weights: its ``fingerprint()`` if it has one, else a hash of its
    ``state_dict()`` (see :func:`hash_state`); None for a model with neither. Remembered per torch module until
    its weights change."""
    fp = getattr(model, "fingerprint", None)
    if callable(fp):
        return memoised(model, lambda: str(fp()))
    state = getattr(model, "state_dict", None)
    if callable(state):
        name = str(getattr(model, "name", "") or "")
        return memoised(model, lambda: hash_state(name, state()))
    return None
