"""ImageNet weights from the local torch hub cache only: xray-xai never downloads weights behind the user's back.

torchvision's ``weights.get_state_dict()`` and timm's ``pretrained=True`` download on a cache miss, which fails
offline with a long traceback (and, online, silently fetches files). Here the expected file name is computed from
the published URL and looked up in ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``);
a missing file raises :class:`~xray_xai.errors.CheckpointError` in one line that says which file to place where.

``.pth`` files are read with ``torch.load(weights_only=True)`` (no arbitrary unpickling); ``.safetensors`` with
safetensors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xray_xai.errors import CheckpointError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["checkpoints_dir", "load_timm_weights", "load_torchvision_weights", "load_url_weights"]


def checkpoints_dir() -> Path:
    """Where torch's hub keeps downloaded weights (``$TORCH_HOME/hub/checkpoints``), whether or not it exists."""
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        return Path(torch_home).expanduser() / "hub" / "checkpoints"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "torch" / "hub" / "checkpoints"


def _read(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a weights file, or it holds objects weights_only refuses
        msg = f"cannot read pretrained weights ({type(exc).__name__}: {exc})".splitlines()[0]
        raise CheckpointError(path, msg) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"expected a state dict, found {type(obj).__name__}")
    return dict(obj)


def load_url_weights(url: str, *, file_name: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict published at ``url``, read from the local hub cache; never downloads."""
    name = file_name or os.path.basename(url.split("?")[0])
    folder = checkpoints_dir()
    path = folder / name
    if not path.is_file():
        raise CheckpointError(
            path, f"pretrained weights not found: download {url} into {folder}, or use --no-pretrained"
        )
    return _read(path)


_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def load_torchvision_weights(weights: Any) -> dict[str, torch.Tensor]:
    """The state dict of a torchvision ``WeightsEnum`` member (e.g. ``DenseNet169_Weights.IMAGENET1K_V1``).

    DenseNet checkpoints use old key names (``norm.1.weight``); they are renamed to today's (``norm1.weight``).
    """
    state = load_url_weights(weights.url)
    renamed = {}
    for key, value in state.items():
        m = _DENSENET_OLD_KEY.match(key)
        renamed[m.group(1) + m.group(2) if m else key] = value
    return renamed


def load_timm_weights(arch: str) -> dict[str, torch.Tensor]:
    """ImageNet weights of the timm architecture ``arch`` from the local hub cache.

    Uses the ``url`` of timm's pretrained config when there is one; otherwise the Hugging Face file, expected as
    ``<hf_hub_id with / replaced by _>.safetensors`` in the same folder.
    """
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        raise CheckpointError(None, f"timm has no pretrained weights for {arch!r}")
    url = getattr(cfg, "url", "") or ""
    if url:
        return load_url_weights(url)
    hub_id = getattr(cfg, "hf_hub_id", "") or ""
    if not hub_id:
        raise CheckpointError(None, f"timm has no pretrained weights for {arch!r}")
    return load_url_weights(
        f"https://huggingface.co/{hub_id}/resolve/main/model.safetensors",
        file_name=hub_id.replace("/", "_") + ".safetensors",
    )
