"""Multi-process data-parallel training helpers for ``torchrun`` (PyTorch DDP), CPU (gloo) or GPU (nccl).

``xray_xai.models.training.train`` runs in one process; to use several GPUs (or to check the set-up on CPU), launch a
script with ``torchrun --nproc_per_node N script.py`` that calls :func:`init` once, wraps the model with
:func:`wrap`, reads its share of the data with :func:`shard` (or a ``DistributedSampler``), and lets rank 0 alone write
files (:func:`is_main`). DDP averages the gradients across processes in ``backward``, so every rank keeps identical
weights and an epoch takes 1/N of the time. ``benchmarks/ddp_smoke.py`` is a complete example; docs/distributed.md
has the commands.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["cleanup", "init", "is_main", "params_checksum", "rank", "shard", "world_size", "wrap"]

T = TypeVar("T")


def init(backend: str | None = None) -> Any:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...); returns the device.

    ``backend`` None: ``nccl`` when CUDA is available (each rank on GPU ``LOCAL_RANK``), else ``gloo`` on CPU.
    Outside torchrun (no ``WORLD_SIZE``) nothing is initialised and the process is rank 0 of 1.
    """
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and backend != "gloo"
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if cuda else "gloo"))
    return device


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process should write files, print progress and save checkpoints."""
    return rank() == 0


def wrap(model: Any, device: Any) -> Any:
    """Move ``model`` to ``device`` and wrap it in ``DistributedDataParallel`` (unchanged in a single process).

    Batch-norm layers are converted to ``SyncBatchNorm`` on GPU so that statistics use the global batch.
    """
    import torch
    from torch.nn.parallel import DistributedDataParallel

    model = model.to(device)
    if world_size() == 1:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items`` (every ``world_size``-th item from ``rank``): disjoint, together complete."""
    return list(items[rank() :: world_size()])


def params_checksum(model: Any) -> float:
    """Sum of every parameter (float64): equal on every rank while DDP keeps them in step."""
    import torch

    with torch.no_grad():
        return float(sum(p.detach().double().sum().item() for p in model.parameters()))


def cleanup() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
