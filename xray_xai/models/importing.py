"""Bring a classifier trained elsewhere into the store: ``xray-xai import`` and ``api.import_model``.

The weights file is read without running code from it: ``.safetensors`` with safetensors, ``.pt``/``.pth``/``.bin``/
``.ckpt`` only with ``torch.load(weights_only=True)`` (torch's restricted unpickler: tensors, numbers, strings and
containers; any other object, such as a whole pickled model, is refused before it is built). Then:

1. the state dict is found inside the usual wrappers (``{"state_dict": ...}``, ``{"model": ...}``,
   ``{"model_state_dict": ...}``...);
2. the architecture is built (``timm:<model>``, ``torchvision:<model>`` through the ``imported`` model plugin, or a
   registered model plugin by name) with no weight download, and with as many outputs as the file's last linear
   layer has (or ``num_classes``);
3. leading key prefixes that every key shares (``module.`` from ``nn.DataParallel``, ``model.``, ``net.``,
   ``_orig_mod.`` from ``torch.compile``...) are stripped where that makes the keys fit the architecture;
4. missing, unexpected or differently shaped tensors refuse the import (:class:`ImportMismatchError` lists them;
   only BatchNorm's ``num_batches_tracked`` counters may be missing, as in files from older torch versions);
5. the model is saved as a store checkpoint (safetensors + JSON sidecar) whose ``source`` records the file's name,
   path and sha256, the architecture and every option, so ``xray-xai models`` can say where it came from.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xray_xai._util.fsutil import sha256_file
from xray_xai.errors import CheckpointError, PluginError
from xray_xai.models.statefit import state_fit

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from xray_xai.sdk.interfaces import Model, Preprocessing

__all__ = [
    "IMPORTED_PLUGIN",
    "TORCH_SUFFIXES",
    "ImportMismatchError",
    "ImportResult",
    "import_model",
    "make_preprocessing",
    "read_state_dict",
    "strip_prefixes",
]

IMPORTED_PLUGIN = "imported"
TORCH_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin", ".ckpt")
#: keys under which training scripts nest the state dict, in the order they are tried
_NESTED: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "net", "module", "network", "weights")
_RESAVE = "re-save it as a state dict: torch.save(model.state_dict(), {path!r}), or as .safetensors"


class ImportMismatchError(CheckpointError):
    """The file's tensors do not fit the architecture; ``details`` lists ``missing``, ``unexpected`` and
    ``shape_mismatch`` (``key``, ``file``, ``model`` shapes) in full."""

    def __init__(self, path: str | Path | None, problem: str, details: dict[str, Any]) -> None:
        super().__init__(path, problem)
        self.details = details


@dataclass
class ImportResult:
    """What :func:`import_model` made: the checkpoint folder and what was found on the way."""

    checkpoint: Path
    name: str
    arch: str
    sha256: str
    prefix_stripped: str
    n_tensors: int
    num_classes: int
    target_layer: str
    cam_exact: bool
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "name": self.name,
            "arch": self.arch,
            "sha256": self.sha256,
            "prefix_stripped": self.prefix_stripped,
            "n_tensors": self.n_tensors,
            "num_classes": self.num_classes,
            "target_layer": self.target_layer,
            "cam_exact": self.cam_exact,
            "preprocessing": self.preprocessing,
        }


# -------------------------------------------------------------------------------------------------------- reading


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (see the module docstring); nothing in the file is executed."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(p, "file not found")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from xray_xai.models.store import load_weights

        return load_weights(p)
    if suffix not in TORCH_SUFFIXES:
        raise CheckpointError(p, f"not a weights file xray-xai imports (.safetensors, {', '.join(TORCH_SUFFIXES)})")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # the restricted unpickler refuses anything but plain data; or not a torch file at all
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f"it holds {found.group(1)}" if found else type(exc).__name__
        raise CheckpointError(
            p,
            f"refused unexecuted: not a plain state dict (a pickled whole model? {what}); "
            + _RESAVE.format(path=p.name),
        ) from None
    return _unwrap(obj, p)


def _is_tensor_map(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside ``obj``: itself, or under one of :data:`_NESTED` (searched two levels deep)."""
    import torch

    for _ in range(3):
        if _is_tensor_map(obj):
            return {str(k): v for k, v in obj.items()}
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in _NESTED if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:  # a state dict carrying a few plain entries (e.g. a version number) beside its tensors
                return tensors
            break
        obj = inner
    raise CheckpointError(
        path,
        f"holds no state dict of tensors (found {type(obj).__name__}"
        + (f" with keys {', '.join(map(str, list(obj)[:6]))}" if isinstance(obj, Mapping) else "")
        + "); "
        + _RESAVE.format(path=str(path)),
    )


def strip_prefixes(state: Mapping[str, Any], wanted: Sequence[str]) -> tuple[dict[str, Any], str]:
    """``state`` with the leading key components that every key shares stripped, as far as that makes more keys
    match ``wanted``; returns the state and the prefix stripped (``""``: none)."""
    want = set(wanted)
    cur, stripped = dict(state), ""
    best = (len(want & set(cur)), "", cur)
    for _ in range(4):
        heads = {k.split(".", 1)[0] for k in cur}
        if len(heads) != 1 or not all("." in k for k in cur):
            break
        prefix = heads.pop() + "."
        cur = {k[len(prefix) :]: v for k, v in cur.items()}
        stripped += prefix
        score = len(want & set(cur))
        if score > best[0]:
            best = (score, stripped, cur)
    return best[2], best[1]


def _check_fit(path: Path, arch: str, have: Mapping[str, Any], want: Mapping[str, Any], prefix: str) -> None:
    fit = state_fit(have, want, may_miss=lambda k: k.endswith("num_batches_tracked"))
    if fit.ok:
        return
    stripped = f" after stripping {prefix!r}" if prefix else ""
    raise ImportMismatchError(
        path,
        f"weights do not fit {arch}{stripped}: {fit.summary()} (--json lists them all)",
        {**fit.to_dict(), "prefix_stripped": prefix},
    )


# ---------------------------------------------------------------------------------------------------- building


def make_preprocessing(
    *,
    base: Preprocessing | None = None,
    input_size: int | None = None,
    mode: str | None = None,
    resize: int | None = None,
    crop: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    normalize: str | None = None,
    channels: int | None = None,
    eight_bit: bool | None = None,
    exif_orientation: bool | None = None,
) -> Preprocessing:
    """A :class:`Preprocessing` from import options over ``base`` (default: 224 px resize, ImageNet statistics, films
    as torchvision's PIL transforms see them: 8-bit resizing, EXIF orientation ignored); checks the options fit."""
    from dataclasses import replace

    from xray_xai.sdk.interfaces import Preprocessing

    pre = base or Preprocessing(name="imported", eight_bit=True, exif_orientation=False)
    pre = pre.resized(input_size)
    changes: dict[str, Any] = {}
    options = {"mode": mode, "resize": resize, "crop": crop, "normalize": normalize, "channels": channels,
               "eight_bit": eight_bit, "exif_orientation": exif_orientation}  # fmt: skip
    for key, value in options.items():
        if value is not None:
            changes[key] = value
    pre = replace(pre, **changes)
    c = int(pre.channels)
    stats: dict[str, Any] = {}
    given: tuple[tuple[str, Sequence[float] | None], ...] = (("mean", mean), ("std", std))
    for key, stat in given:
        if stat is not None:
            vals = tuple(float(v) for v in stat)
            if len(vals) == 1:
                vals = vals * c
            if len(vals) != c:
                raise PluginError(f"--{key} needs 1 or {c} values (one per input channel), got {len(vals)}")
            stats[key] = vals
    if channels is not None and c == 1 and not stats:  # one channel: the average of the three default statistics
        stats = {"mean": (sum(pre.mean) / len(pre.mean),), "std": (sum(pre.std) / len(pre.std),)}
    pre = replace(pre, **stats)
    if pre.mode not in ("resize", "center-crop", "letterbox"):
        raise PluginError(f"unknown preprocessing mode {pre.mode!r}; expected resize, center-crop or letterbox")
    if pre.channels not in (1, 3):
        raise PluginError(f"input channels must be 1 or 3, not {pre.channels}")
    if any(s <= 0 for s in pre.std):
        raise PluginError("--std values must be positive")
    if pre.mode == "center-crop" and not (pre.resize or pre.crop):
        raise PluginError(
            "--mode center-crop needs --resize (torchvision's Resize(R) + CenterCrop(input size)) or --crop"
        )
    if pre.resize is not None and pre.resize < pre.input_size:
        raise PluginError(f"--resize {pre.resize} is smaller than --input-size {pre.input_size}")
    kind = f"resize{pre.resize}-crop" if pre.mode == "center-crop" and pre.resize else pre.mode
    return replace(pre, name=f"imported-{kind}-{pre.input_size}")


def _build(
    arch: str, num_classes: int, options: Mapping[str, Any], output: str, positive_index: int,
    target_layer: str | None, pre: Preprocessing | None,
) -> Any:  # fmt: skip
    """The architecture named by ``arch``, random weights, in eval mode; the global RNG is left as it was."""
    import torch

    from xray_xai.sdk import registry

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if ":" in arch:
            cls: Any = registry.models.get(IMPORTED_PLUGIN)
            model = cls(
                arch=arch, arch_options=dict(options), num_classes=num_classes, output=output,
                positive_index=positive_index, target_layer=target_layer,
                preprocessing=pre.to_dict() if pre is not None else None,
            )  # fmt: skip
        else:
            cls = registry.models.get(arch)
            opts = dict(options)
            if "pretrained" in inspect.signature(cls).parameters:
                opts.setdefault("pretrained", False)  # the weights come from the file; never look for others
            try:
                model = cls(**opts)
            except TypeError as exc:
                raise PluginError(f"model {arch!r} refuses options {opts}: {exc}".splitlines()[0]) from None
            if pre is not None:
                model.preprocessing = pre
    model.eval()
    return model


def _target(model: Any) -> Any:
    """The module the file's keys are for: an imported network itself, else the whole plugin model."""
    return model.backbone if getattr(type(model), "name", "") == IMPORTED_PLUGIN else model


def _classes_in(state: Mapping[str, Any], model: Any) -> int | None:
    head = getattr(model, "head_name", "")
    weight = state.get(f"{head}.weight") if head else None
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def _fit_classes(
    path: Path, arch: str, state: Mapping[str, Any], output: str, num_classes: int | None, build: Any
) -> tuple[Any, dict[str, Any], str, int]:
    """Build the architecture with the file's number of outputs; returns (model, stripped state, prefix, K)."""
    k = int(num_classes) if num_classes else (2 if output.startswith("softmax") else 1)
    model = build(k)
    stripped, prefix = strip_prefixes(state, list(_target(model).state_dict()))
    found = _classes_in(stripped, model) if ":" in arch else None
    if found is not None and not num_classes and found != k:
        if output in ("logit", "probability"):
            raise CheckpointError(
                path,
                f"the last linear layer {model.head_name!r} has {found} outputs, but --output {output} needs one: "
                "a softmax classifier? use --output softmax (and --positive-index)",
            )
        k = found
        model = build(k)
    return model, stripped, prefix, k


def import_model(
    weights: str | Path,
    arch: str,
    name: str,
    *,
    arch_options: Mapping[str, Any] | None = None,
    output: str = "logit",
    positive_index: int = 1,
    num_classes: int | None = None,
    preprocessing: Preprocessing | None = None,
    target_layer: str | None = None,
    trained_on: str | None = None,
    out_dir: str | Path | None = None,
) -> ImportResult:
    """Turn ``weights`` into a store checkpoint of model ``name`` (see the module docstring)."""
    import torch

    from xray_xai.models.store import save_model
    from xray_xai.sdk import registry
    from xray_xai.sdk.wrapped import OUTPUTS

    path = Path(weights).expanduser()
    if not name or not name.strip() or "/" in name or name.startswith("."):
        raise PluginError(f"--name {name!r}: give a plain model name such as my-densenet")
    if name in registry.models:
        raise PluginError(f"--name {name!r} is a registered model plugin; choose another name for the import")
    if output not in OUTPUTS:
        raise PluginError(f"unknown --output {output!r}; expected one of {', '.join(OUTPUTS)}")
    if ":" not in arch and output != "logit":
        raise PluginError(f"model plugin {arch!r} outputs a logit by contract; --output applies to timm:/torchvision:")
    state = read_state_dict(path)
    opts = dict(arch_options or {})

    def build(k: int) -> Any:
        return _build(arch, k, opts, output, positive_index, target_layer, preprocessing)

    model, stripped, prefix, k = _fit_classes(path, arch, state, output, num_classes, build)
    target = _target(model)
    want = target.state_dict()
    _check_fit(path, arch, stripped, want, prefix)
    full = {key: stripped.get(key, want[key]) for key in want}  # only num_batches_tracked may come from the build
    with torch.no_grad():
        target.load_state_dict({key: v.to(want[key].dtype) for key, v in full.items()}, strict=True)
    model.name = name
    model.eval()
    digest = sha256_file(path)
    source = {
        "kind": "imported",
        "file": path.name,
        "path": str(path.resolve()),
        "sha256": digest,
        "arch": arch,
        "arch_options": opts,
        "num_classes": k,
        "output": output,
        "positive_index": int(positive_index),
        "prefix_stripped": prefix,
        "target_layer": getattr(model, "target_layer", ""),
        "imported": _dt.datetime.now(_dt.timezone.utc).isoformat(),
    }
    folder = save_model(model, out_dir, metadata={"source": source, "dataset": trained_on})
    return ImportResult(
        checkpoint=folder,
        name=name,
        arch=arch,
        sha256=digest,
        prefix_stripped=prefix,
        n_tensors=len(stripped),
        num_classes=k,
        target_layer=str(getattr(model, "target_layer", "")),
        cam_exact=bool(model.tags.has_linear_head),
        preprocessing=model.preprocessing.to_dict(),
    )


def wrap(
    module: Any,
    *,
    name: str | None = None,
    preprocessing: Preprocessing | None = None,
    output: str = "logit",
    positive_index: int = 1,
    target_layer: str | None = None,
) -> Model:
    """A :class:`~xray_xai.sdk.wrapped.WrappedModel` around ``module`` (eval mode), outside the store."""
    from xray_xai.sdk.wrapped import WrappedModel

    model = WrappedModel(
        module,
        name=name or type(module).__name__.lower(),
        preprocessing=preprocessing or make_preprocessing(),
        output=output,
        positive_index=positive_index,
        target_layer=target_layer,
    )
    model.eval()
    return model
