"""Data-parallel training over the processes ``torchrun`` starts: the recipe of one process, at any world size.

``xray_xai.models.training.train`` joins the process group when it runs under ``torchrun`` (``WORLD_SIZE`` > 1 in
the environment; :func:`join`) and hands a :class:`Ranks` to the epoch loop (:mod:`.epochs`), which calls it at a
few points. What stays the same as one process, and why:

* **the batches**: ``batch_size`` is the *global* batch. Every rank draws the one-process loader's permutation from
  the same seeded generator (torch's own ``RandomSampler`` and ``BatchSampler``, so the draws and the dropped last
  batch of one are those of a single process) and takes its share of each global batch (``batch_size / world``
  films; a short last batch is dealt as evenly as possible). So global batch k holds the same films at any world
  size, resume restores the generator as before, and no ``DistributedSampler`` (which permutes with
  ``seed + epoch``, other batches than one process's) is needed.
* **the gradient**: each rank's loss is its weighted sum times ``world / G``, where ``G`` (films in the global batch,
  summed over the ranks every step) counts only the films read; DDP averages over the ranks, which gives the gradient
  of the global batch's mean loss. A rank left with fewer films than a step needs (none, or one with batch-norm
  layers: unreadable films, a short last batch) is padded with weight-0 copies, so every rank steps in lock-step.
* **validation** runs on rank 0 alone over the whole validation split with the model it saves, so the metrics are
  those of a one-process evaluation of the same weights; the result goes to every rank (the plateau schedule and
  early stop decide the same everywhere).
* **files**: rank 0 alone writes the run folder (``history.csv``, ``curves.png``, ``last.pt``, ``skipped.csv``,
  ``result.json``) and the one store entry; the others wait for it. ``last.pt`` keeps every rank's random state.

What differs: augmentation and dropout draw from a stream of each rank's own (seeded from the run's seed and the
rank); on CPU (gloo) batch-norm statistics are each rank's (``SyncBatchNorm`` exists only on GPUs; on CUDA the
model's batch-norm layers are converted to it); and the sums are reduced in another order, so losses agree with one
process to float rounding, not bit for bit. Resuming with another number of processes is refused.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from xray_xai.errors import CheckpointError, PluginError, XrayXaiError

__all__ = ["Ranks", "check_world", "join", "launch", "on_main", "strip_nproc"]

T = TypeVar("T")


def _env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def join(batch_size: int, device: str) -> Ranks | None:
    """The process group ``torchrun`` describes, joined (gloo for ``device`` cpu, nccl with GPU ``LOCAL_RANK`` for
    cuda); None in a single process (no ``WORLD_SIZE``, or 1), which then runs exactly as without torchrun.

    ``batch_size`` is the global batch: it must split evenly over the processes."""
    world = _env_world()
    if world <= 1:
        return None
    if batch_size % world:
        raise PluginError(f"batch size {batch_size} is the global batch; it must be divisible by the {world} processes")
    import torch
    import torch.distributed as dist

    from xray_xai.scale import ddp

    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise PluginError(f"device {device!r}: no CUDA device on this machine; use --device cpu")
    if kind not in ("cpu", "cuda"):
        raise PluginError(f"distributed training runs on cpu (gloo) or cuda (nccl), not {device!r}")
    owns = not dist.is_initialized()
    dev = ddp.init("gloo" if kind == "cpu" else "nccl")
    if ddp.world_size() != world:  # pragma: no cover - a group set up by the caller for other processes
        raise PluginError(f"WORLD_SIZE is {world} but the process group has {ddp.world_size()} processes")
    return Ranks(rank=ddp.rank(), world=world, device=dev, owns_group=owns)


def on_main(ranks: Ranks | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run once, on rank 0, its result handed to every rank (a plain call in one process)."""
    return fn(*args, **kwargs) if ranks is None else ranks.on_main(fn, *args, **kwargs)


def check_world(state: dict[str, Any], ranks: Ranks | None, path: Path) -> None:
    """Refuse to resume ``last.pt`` saved by a run on another number of processes (its per-rank random streams and
    batch shares would not continue)."""
    saved = int(state.get("world_size", 1))
    now = 1 if ranks is None else ranks.world
    if saved != now:
        raise CheckpointError(
            path,
            f"cannot resume: saved by a run on {saved} process(es), this run has {now}; resume with --nproc {saved}",
        )


def _rank_seed(seed: int, rank: int) -> int:
    """A 63-bit seed of its own for each rank of a run."""
    return int.from_bytes(hashlib.sha256(f"xray-xai:{seed}:{rank}".encode()).digest()[:8], "little") >> 1


class _RankShare:
    """This rank's share of each global batch of ``batches`` (a torch ``BatchSampler``): contiguous slices, the
    first ``len % world`` ranks one film more when a batch does not split evenly."""

    def __init__(self, batches: Any, rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            each, extra = divmod(len(batch), self.world)
            start = self.rank * each + min(self.rank, extra)
            yield list(batch[start : start + each + (self.rank < extra)])

    def __len__(self) -> int:
        return len(self.batches)


class _Padded:
    """A ``collate_fn`` that fills a batch of fewer than ``least`` films with weight-0 films (dataset index
    ``sentinel``): copies of its first film, or blank ``shape`` films when every film of the batch was unreadable."""

    def __init__(self, collate: Callable[[Any], Any], least: int, sentinel: int, shape: tuple[int, ...]) -> None:
        self.collate, self.least, self.sentinel, self.shape = collate, least, sentinel, shape

    def __call__(self, items: Any) -> Any:
        import torch

        batch = self.collate(items)
        n = len(batch.indices)
        need = self.least - n
        if need <= 0:
            return batch
        fields: dict[str, Any] = {}
        for name, value in zip(batch._fields, batch, strict=True):
            if name == "indices":
                fields[name] = torch.cat([value, torch.full((need,), self.sentinel, dtype=value.dtype)])
            elif isinstance(value, torch.Tensor) and value.shape[:1] == (n,):
                if n:
                    fill = value[:1].expand(need, *value.shape[1:])
                else:
                    shape = self.shape if name == "images" else tuple(value.shape[1:])
                    fill = torch.zeros((need, *shape), dtype=value.dtype)
                fields[name] = torch.cat([value, fill])
        return batch._replace(**fields)


@dataclass
class Ranks:
    """This process's place in the group and what the epoch loop needs from it (see the module docstring)."""

    rank: int
    world: int
    device: Any
    owns_group: bool = False
    net: Any = None  #: the model wrapped in DistributedDataParallel: training passes go through it
    sentinel: int = -1  #: dataset index of padding films (their loss weight is 0)
    _sums: list[Any] = field(default_factory=list)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- set-up -------------------------------------------------------------------------------------------------
    def adapt(self, model: Any, parts: Any, seed: int) -> None:
        """Turn the one-process parts into this rank's: its share of the batches, a weight-0 slot for padding, the
        DDP wrapper (``SyncBatchNorm`` on CUDA), and random streams of its own for augmentation and dropout."""
        import torch

        from xray_xai.scale import ddp

        loader = parts.train_loader
        pre = loader.dataset.pre
        self.sentinel = int(parts.weights.shape[0])
        parts.weights = torch.cat([parts.weights, parts.weights.new_zeros(1)])
        parts.train_loader = self.shard_loader(loader, 2 if parts.has_batchnorm else 1, (pre.channels,) + 2 * (
            pre.input_size,))  # fmt: skip
        own = _rank_seed(seed, self.rank)
        torch.random.default_generator.manual_seed(own)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(own)
        self.net = ddp.wrap(model, self.device)
        parts.ranks = self

    def shard_loader(self, loader: Any, least: int, shape: tuple[int, ...]) -> Any:
        """``loader`` (the one-process training loader) giving this rank's share of each of its batches."""
        from torch.utils.data import DataLoader

        workers = loader.num_workers
        return DataLoader(
            loader.dataset,
            batch_sampler=_RankShare(loader.batch_sampler, self.rank, self.world),
            generator=loader.generator,  # the loader's draws (its base seed, then the permutation) stay the same
            num_workers=workers,
            collate_fn=_Padded(loader.collate_fn, least, self.sentinel, shape),
            pin_memory=loader.pin_memory,
            persistent_workers=loader.persistent_workers,
            worker_init_fn=loader.worker_init_fn,
            **({"prefetch_factor": loader.prefetch_factor} if workers else {}),
        )

    # -- the training pass --------------------------------------------------------------------------------------
    def batch_loss(self, per: Any, idx: Any) -> Any:
        """The loss to back-propagate from this rank's weighted per-film losses ``per``: after DDP averages the
        ranks' gradients, the gradient of the global batch's mean loss (padding films have weight 0)."""
        import torch
        import torch.distributed as dist

        real = (idx != self.sentinel).sum().to(device=per.device, dtype=torch.float32)
        total = real.clone()
        dist.all_reduce(total)
        local = per.sum()
        if not self._sums:
            self._sums = [torch.zeros((), device=per.device), torch.zeros((), device=per.device)]
        self._sums[0] += local.detach()
        self._sums[1] += real
        return local * (self.world / total.clamp(min=1.0))

    def epoch_loss(self) -> tuple[float, int]:
        """The epoch's mean training loss over every rank's films and the number of films (resets the sums)."""
        import torch
        import torch.distributed as dist

        sums = torch.stack(self._sums) if self._sums else torch.zeros(2, device=self.device)
        dist.all_reduce(sums)
        self._sums = []
        loss, n = float(sums[0].item()), round(float(sums[1].item()))
        return loss / max(n, 1), n

    # -- one rank for the others --------------------------------------------------------------------------------
    def on_main(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` run on rank 0 alone, its result broadcast; the others wait. A failure on rank 0 stops every rank
        (rank 0 raises the error, the others a one-line note of it) instead of leaving them waiting."""
        import torch.distributed as dist

        box: list[Any] = [None]
        error: Exception | None = None
        if self.is_main:
            try:
                box[0] = ("ok", fn(*args, **kwargs))
            except Exception as exc:  # handed on to the other ranks, then raised again below
                error = exc
                box[0] = ("error", f"{type(exc).__name__}: {exc}".splitlines()[0])
        dist.broadcast_object_list(box, src=0)
        if error is not None:
            raise error
        status, value = box[0]
        if status != "ok":
            raise XrayXaiError(f"rank {self.rank} stopped: rank 0 failed ({value})")
        return value

    def gather(self, value: Any) -> list[Any]:
        """``value`` of every rank, in rank order (on every rank)."""
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def gather_problems(self, skipped: Sequence[Any], warned: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        """The films every rank skipped or kept with a warning, each once (rank 0's first)."""
        merged: tuple[list[Any], list[Any]] = ([], [])
        for parts in self.gather((list(skipped), list(warned))):
            for into, found in zip(merged, parts, strict=True):
                into.extend(p for p in found if p not in into)
        return merged

    def checkpoint_extra(self) -> dict[str, Any]:
        """What ``last.pt`` keeps beside one process's state: the world size and every rank's random state
        (collective: every rank calls it)."""
        import torch

        return {"world_size": self.world, "rng_torch_ranks": self.gather(torch.get_rng_state())}

    def own_rng(self, state: dict[str, Any]) -> Any:
        """This rank's random state in a ``last.pt`` saved by a run on as many processes."""
        return state["rng_torch_ranks"][self.rank]

    def close(self) -> None:
        """Leave the process group (only one this process set up)."""
        from xray_xai.scale import ddp

        if self.owns_group:
            ddp.cleanup()


# -- the launcher ---------------------------------------------------------------------------------------------------
def strip_nproc(args: Sequence[str]) -> list[str]:
    """``args`` without ``--nproc N`` / ``--nproc=N`` (what each process started by :func:`launch` gets)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(nproc: int, args: Sequence[str]) -> int:
    """Run ``python -m xray_xai train ARGS`` (``--nproc`` dropped) in ``nproc`` processes on this machine: torchrun
    (``torch.distributed.run --standalone``) run in this process; the exit status of the group.

    Only rank 0's output reaches the console, and torchrun's own logging and report are silenced: a failure is the
    one line rank 0 printed (or, when another rank failed alone, one line naming it)."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default, without its warning
    parsed = get_args_parser().parse_args([
        "--standalone", "--nproc-per-node", str(nproc), "--local-ranks-filter", "0", "--module", "xray_xai",
        "train", *strip_nproc(args),
    ])  # fmt: skip
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(parsed)
    except ChildFailedError as exc:
        own = exc.failures.get(0)
        if own is not None and own.exitcode > 0:  # rank 0 failed and said why
            return int(own.exitcode)
        rank, failure = exc.get_first_failure()
        how = f"exit code {failure.exitcode}" if failure.exitcode > 0 else failure.signal_name()
        print(f"error: the process of rank {rank} failed ({how}); run torchrun to see its output", file=sys.stderr)
        return 1
    return 0
