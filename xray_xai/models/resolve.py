"""Which model do ``--model`` and ``--checkpoint`` name? One rule for every command and the Python API.

* ``model`` alone: a shipped model's name (``fracatlas-lite0``, :mod:`xray_xai.models.shipped`) is its shipped
  weights; a registered name is the newest checkpoint of it in the store (never a shipped model); a path loads that
  checkpoint; a :class:`~xray_xai.sdk.interfaces.Model` is used as it is.
* ``checkpoint`` alone: that checkpoint (a ``.safetensors`` file or a checkpoint folder).
* both: they name ONE model, the checkpoint. A name must be the name of the model the checkpoint holds; a path must
  be the same checkpoint. Anything else is an error, never two models.

Commands that compare several models (``explain``) apply the rule to the first one: ``--checkpoint`` gives the
weights of the first ``--model``. Cheap: nothing is loaded until :func:`resolve_model` is called, and a name is
checked against the checkpoint's JSON sidecar, not its weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

from xray_xai.errors import CheckpointError, PluginError
from xray_xai.sdk.interfaces import Model

__all__ = ["ModelSpec", "resolve_model", "resolve_models", "resolve_spec", "resolve_specs"]

#: what names a model: a registered name, a checkpoint path (file or folder) or a model object
ModelSpec: TypeAlias = "str | Path | Model"


def _is_path(spec: str | Path) -> bool:
    return isinstance(spec, Path) or Path(spec).expanduser().exists()


def resolve_spec(model: ModelSpec | None = None, checkpoint: str | Path | None = None) -> ModelSpec:
    """The one model that ``model`` and ``checkpoint`` name together (see the module docstring), not yet loaded:
    ``model`` itself when no checkpoint is given, else the checkpoint path after checking that both agree."""
    from xray_xai.models import store

    if checkpoint is None:
        if model is None or (isinstance(model, str) and not model.strip()):
            raise PluginError("no model given: name a trained model, a checkpoint path or pass a Model")
        return model
    ckpt = Path(checkpoint)
    if model is None:
        return ckpt
    if isinstance(model, Model):
        raise PluginError(f"give a model object or a checkpoint ({checkpoint}), not both")
    weights = store.resolve(ckpt)
    if _is_path(model):
        other = store.resolve(model)
        if other.resolve() != weights.resolve():
            raise CheckpointError(ckpt, f"is not the checkpoint {model} names ({other}); give one of them")
        return ckpt
    from xray_xai.models.shipped import shipped_name_of

    side = store.read_sidecar(weights)
    held = str(side["name"])
    if str(model) not in (held, shipped_name_of(side)):
        raise CheckpointError(weights, f"holds model {held!r}, not {str(model)!r}")
    return ckpt


def resolve_specs(models: Sequence[ModelSpec], checkpoint: str | Path | None = None) -> list[ModelSpec]:
    """:func:`resolve_spec` for commands taking several models: ``checkpoint`` pins the first of ``models`` (or is
    the only model when none is given)."""
    specs = list(models)
    if checkpoint is None:
        if not specs:
            raise PluginError("no model given: name a trained model, a checkpoint path or pass a Model")
        return [resolve_spec(s) for s in specs]
    if not specs:
        return [resolve_spec(None, checkpoint)]
    return [resolve_spec(specs[0], checkpoint), *(resolve_spec(s) for s in specs[1:])]


def resolve_model(
    model: ModelSpec | None = None, checkpoint: str | Path | None = None, *, device: str = "cpu"
) -> Model:
    """The loaded model that ``model`` and ``checkpoint`` name (a model object comes back unchanged)."""
    spec = resolve_spec(model, checkpoint)
    if isinstance(spec, Model):
        return spec
    from xray_xai.models.store import load_model

    return load_model(spec, device=device)


def resolve_models(
    models: Sequence[ModelSpec], checkpoint: str | Path | None = None, *, device: str = "cpu"
) -> list[Model]:
    """The loaded models of :func:`resolve_specs`."""
    from xray_xai.models.store import load_model

    return [s if isinstance(s, Model) else load_model(s, device=device) for s in resolve_specs(models, checkpoint)]
