"""The model store: trained weights as safetensors plus a JSON sidecar, never pickles.

Layout (``$XRAY_XAI_HOME``, default ``~/.xray-xai``)::

    models/<name>/<UTC timestamp>-<fingerprint[:8]>/model.safetensors
                                                  /model.json      (the sidecar)

Each checkpoint folder is written under a temporary name and renamed into place, so a crash never leaves a
half-written checkpoint that :func:`load_model` would pick as the newest.

Models are rebuilt from the sidecar through the registry (``registry.models.get(name)(**config)``), so the store
needs no plugin import and works for third-party models too. A model stored under a name of its own (an import,
``xray-xai import ... --name NAME``) records the registered plugin that rebuilds it as ``plugin``; such a name is
resolved through the store alone. Anything that is not a ``.safetensors`` file is refused
before it is opened: ``.pt``/``.pth``/``.ckpt`` files are pickles and unpickling runs arbitrary code.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xray_xai._util.fsutil import make_shareable, sha256_file
from xray_xai.errors import CheckpointError, UnknownPluginError
from xray_xai.models.statefit import state_fit
from xray_xai.sdk.fingerprint import hash_state, weights_fingerprint

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from xray_xai.sdk.interfaces import Model

__all__ = [
    "SIDECAR",
    "WEIGHTS",
    "home",
    "latest",
    "list_store",
    "load_model",
    "load_weights",
    "models_dir",
    "read_sidecar",
    "resolve",
    "save_model",
    "update_sidecar",
]

WEIGHTS = "model.safetensors"
SIDECAR = "model.json"
FORMAT_VERSION = 1
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar")
#: sidecar keys that save_model sets itself; metadata may not override them
_RESERVED = (
    "format_version",
    "name",
    "plugin",
    "class",
    "config",
    "trainable",
    "preprocessing",
    "xray_xai_version",
    "created",
    "fingerprint",
    "weights",
    "weights_sha256",
)


def home() -> Path:
    """The store's root: ``$XRAY_XAI_HOME`` or ``~/.xray-xai``."""
    env = os.environ.get("XRAY_XAI_HOME")
    return Path(env).expanduser() if env else Path.home() / ".xray-xai"


def models_dir() -> Path:
    return home() / "models"


def _state(model: Any) -> dict[str, torch.Tensor]:
    if not hasattr(model, "state_dict"):
        raise CheckpointError(None, f"model {getattr(model, 'name', model)!r} has no state_dict(); cannot store it")
    # safetensors refuses shared or non-contiguous storage: give it private contiguous copies
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_model(model: Model, out_dir: str | Path | None = None, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as ``model.safetensors`` + ``model.json``; return the checkpoint folder.

    ``out_dir`` None: a new folder ``<home>/models/<name>/<UTC timestamp>-<fingerprint[:8]>/``. Otherwise that
    folder (created; an existing checkpoint there is replaced). ``metadata`` (dataset, split_fingerprint, epochs,
    metrics, seed, members...) is merged into the sidecar at top level; it cannot override the keys written here.
    """
    import safetensors.torch

    from xray_xai import __version__

    metadata = dict(metadata or {})
    clash = sorted(set(metadata) & set(_RESERVED))
    if clash:
        raise ValueError(f"metadata may not set reserved sidecar keys: {', '.join(clash)}")
    name = getattr(model, "name", "") or type(model).__name__
    state = _state(model)
    fingerprint = weights_fingerprint(model) or hash_state(str(getattr(model, "name", "")), state)
    now = _dt.datetime.now(_dt.timezone.utc)
    trainable = getattr(model, "trainable_prefixes", None)
    pre = getattr(model, "preprocessing", None)
    plugin = str(getattr(type(model), "name", "") or "")
    sidecar: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": name,
        **({"plugin": plugin} if plugin and plugin != name else {}),  # a model under a name of its own (imports)
        "class": f"{type(model).__module__}:{type(model).__qualname__}",
        "config": model.config(),
        "trainable": list(trainable) if trainable is not None else None,
        "preprocessing": pre.to_dict() if pre is not None else None,
        "xray_xai_version": __version__,
        "created": now.isoformat(),
        "fingerprint": fingerprint,
        "weights": WEIGHTS,
        **metadata,
    }

    if out_dir is None:
        parent = models_dir() / name
        final = parent / f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{fingerprint[:8]}"
    else:
        final = Path(out_dir)
        parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = make_shareable(tempfile.mkdtemp(prefix=f".{final.name}.", dir=parent))  # mkdtemp makes it 0700
    try:
        weights = tmp / WEIGHTS
        safetensors.torch.save_file(state, str(weights), metadata={"format": "pt", "xray_xai_model": name})
        make_shareable(weights)  # safetensors writes 0600 whatever the umask
        sidecar["weights_sha256"] = sha256_file(weights)
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=2, default=_json_default) + "\n", encoding="utf-8")
        if final.exists():  # explicit out_dir being overwritten: replace the two files, keep anything else there
            for fname in (WEIGHTS, SIDECAR):
                os.replace(tmp / fname, final / fname)
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__fspath__"):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar of a checkpoint (its folder, its ``.safetensors`` file or the ``.json`` itself)."""
    p = Path(path)
    side = p if p.suffix == ".json" else (p / SIDECAR if p.is_dir() else p.with_name(SIDECAR))
    if not side.is_file():
        alt = p.with_suffix(".json") if p.suffix == ".safetensors" else None
        if alt is None or not alt.is_file():
            raise CheckpointError(side, "sidecar not found: a checkpoint needs its model.json next to the weights")
        side = alt
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(side, f"unreadable sidecar ({exc})".splitlines()[0]) from None
    if not isinstance(data, dict) or "name" not in data:
        raise CheckpointError(side, "not an xray-xai sidecar (no 'name')")
    return data


def update_sidecar(weights: str | Path, updates: dict[str, Any]) -> Path:
    """Set top-level ``updates`` (e.g. ``calibration``, ``operating_points``) in the sidecar of the checkpoint whose
    weights file is ``weights``, atomically (a temporary file renamed over it: a reader sees the old or the new
    sidecar, never half of one). The weights are not touched, so their fingerprint and checksum stay; they are
    checked against the sidecar first, so the entry never lands beside other weights. Returns the sidecar path."""
    from xray_xai._util.fsutil import atomic_write_text

    w = Path(weights)
    side = w.with_name(SIDECAR) if (w.with_name(SIDECAR)).is_file() else w.with_suffix(".json")
    data = read_sidecar(side)
    clash = sorted(set(updates) & set(_RESERVED))
    if clash:
        raise ValueError(f"may not update reserved sidecar keys: {', '.join(clash)}")
    expected = data.get("weights_sha256")
    if expected and sha256_file(w) != expected:
        raise CheckpointError(w, "checksum differs from the sidecar's: truncated or modified file; not updating it")
    data.update(updates)
    try:
        atomic_write_text(side, json.dumps(data, indent=2, default=_json_default) + "\n")
    except OSError as exc:
        raise CheckpointError(side, f"cannot write the sidecar ({exc.strerror or exc})") from None
    return side


def latest(name: str) -> Path | None:
    """The newest stored checkpoint folder of model ``name``, or None."""
    folder = models_dir() / name
    if not folder.is_dir():
        return None
    best: tuple[str, str] | None = None
    best_path = None
    for ckpt in folder.iterdir():
        if ckpt.name.startswith(".") or not (ckpt / SIDECAR).is_file() or not (ckpt / WEIGHTS).is_file():
            continue
        try:
            created = str(read_sidecar(ckpt).get("created", ""))
        except CheckpointError:
            continue
        key = (created, ckpt.name)
        if best is None or key > best:
            best, best_path = key, ckpt
    return best_path


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise CheckpointError(
            path, "refusing a pickle checkpoint (unpickling runs arbitrary code); xray-xai loads only .safetensors"
        )
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(path, "not a .safetensors file; xray-xai loads only safetensors weights")


def resolve(name_or_path: str | Path) -> Path:
    """The ``.safetensors`` file meant by a shipped model's name, a registered model name (newest stored) or a path
    (file or folder)."""
    from xray_xai.sdk import registry

    p = Path(name_or_path).expanduser()
    if p.is_dir():
        weights = p / WEIGHTS
        if not weights.is_file():
            found = sorted(p.glob("*.safetensors"))
            if len(found) == 1:
                return found[0]
            pickles = sorted(q for q in p.iterdir() if q.suffix.lower() in _PICKLE_SUFFIXES)
            if pickles:
                _check_suffix(pickles[0])
            raise CheckpointError(p, f"no {WEIGHTS} in this folder")
        return weights
    if p.exists():
        _check_suffix(p)
        return p
    name = str(name_or_path)
    from xray_xai.models.shipped import shipped_weights

    shipped = shipped_weights(name)  # a shipped name always means the shipped weights (models/shipped.py)
    if shipped is not None:
        return shipped
    stored = latest(name) if name and "/" not in name and not name.startswith(".") else None
    if stored is not None and name not in registry.models:  # a name of its own, e.g. an imported model
        return stored / WEIGHTS
    if name in registry.models:
        ckpt = latest(name)
        if ckpt is None:
            raise CheckpointError(
                None,
                f"no trained {name!r} in {models_dir()}: train one with `xray-xai train --model {name} --data DIR`",
            )
        return ckpt / WEIGHTS
    raise CheckpointError(p, "no such checkpoint file or folder, and not a registered model name")


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (after checking its name); a truncated or foreign file raises CheckpointError."""
    import safetensors.torch

    p = Path(path)
    _check_suffix(p)
    try:
        return dict(safetensors.torch.load_file(str(p)))
    except FileNotFoundError:
        raise CheckpointError(p, "file not found") from None
    except Exception as exc:  # safetensors raises its own SafetensorError for truncated/garbled headers
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise CheckpointError(p, f"not a readable safetensors file, truncated or corrupt? ({msg})") from None


def _check_fit(path: Path, name: str, have: dict[str, torch.Tensor], want: dict[str, Any]) -> None:
    fit = state_fit(have, want)
    if not fit.ok:
        raise CheckpointError(path, f"weights do not fit model {name!r} (another architecture?): {fit.summary()}")


def load_model(name_or_path: str | Path, *, device: str = "cpu") -> Model:
    """Rebuild a stored model: a registered name loads its newest checkpoint; a path loads that one.

    The model comes back in eval mode on ``device`` with its regime applied, and carries ``checkpoint_path``
    (the weights file) and ``sidecar`` (the JSON as a dict) attributes. A model class whose
    ``from_sidecar(sidecar, weights_path, load_member=load_model)`` returns a model (ensembles, whose members are
    other checkpoints) is rebuilt by it.
    """
    from xray_xai.sdk import registry
    from xray_xai.sdk.interfaces import Preprocessing

    weights = resolve(name_or_path)
    sidecar = read_sidecar(weights)
    name = str(sidecar["name"])
    plugin = str(sidecar.get("plugin") or name)
    try:
        cls: Any = registry.models.get(plugin)
    except UnknownPluginError as exc:
        raise CheckpointError(weights, f"saved by model plugin {plugin!r}, which is not installed ({exc})") from None
    expected = sidecar.get("weights_sha256")
    if expected and sha256_file(weights) != expected:
        raise CheckpointError(weights, "checksum differs from the sidecar's: truncated or modified file")

    import torch

    # building the architecture draws random initial weights (overwritten below): from a forked generator, so that
    # loading a model leaves the process's random state as it was
    with torch.random.fork_rng(devices=[]):
        model = cls.from_sidecar(sidecar, weights, load_member=load_model)  # ensembles: members are other checkpoints
        built_here = model is None
        if model is None:
            config = dict(sidecar.get("config") or {})
            if "pretrained" in config:  # the weights come from the checkpoint; never look for ImageNet files
                config["pretrained"] = False
            try:
                model = cls(**config)
            except TypeError as exc:
                raise CheckpointError(weights, f"sidecar config does not fit model {name!r}: {exc}") from None
    if plugin != name:
        model.name = name  # the instance carries its own name; the class keeps the plugin's
    if built_here:
        state = load_weights(weights)
        if isinstance(model, torch.nn.Module):
            _check_fit(weights, name, state, dict(model.state_dict()))
        try:
            model.load_state_dict(state, strict=True)
        except CheckpointError as exc:
            raise CheckpointError(weights, exc.problem) from None
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(weights, f"weights do not fit model {name!r}: {exc}".splitlines()[0]) from None
    if hasattr(model, "set_regime") and "trainable" in sidecar:
        trainable = sidecar["trainable"]
        model.set_regime(list(trainable) if trainable is not None else None)
    if sidecar.get("preprocessing"):
        model.preprocessing = Preprocessing.from_dict(sidecar["preprocessing"])
    with contextlib.suppress(AttributeError, TypeError):
        model.eval()
        model.to(device)
    model.checkpoint_path = weights
    model.sidecar = sidecar
    return model


def list_store() -> list[dict[str, Any]]:
    """Every checkpoint in the store, sorted by name then creation time; unreadable ones carry a ``problem``."""
    root = models_dir()
    out: list[dict[str, Any]] = []
    if not root.is_dir():
        return out
    for name_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for ckpt in sorted(p for p in name_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            entry: dict[str, Any] = {"name": name_dir.name, "path": str(ckpt)}
            try:
                side = read_sidecar(ckpt)
            except CheckpointError as exc:
                entry["problem"] = str(exc)
                out.append(entry)
                continue
            entry.update(
                name=side.get("name", name_dir.name),
                created=side.get("created"),
                fingerprint=side.get("fingerprint"),
                dataset=side.get("dataset"),
                epochs=side.get("epochs"),
                metrics=side.get("metrics") or {},
                source=side.get("source"),
            )
            if not (ckpt / WEIGHTS).is_file():
                entry["problem"] = f"{WEIGHTS} missing"
            out.append(entry)
    out.sort(key=lambda e: (e["name"], e.get("created") or ""))
    return out
