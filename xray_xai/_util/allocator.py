"""Keep freed memory in the process instead of handing it back to the OS after every large tensor.

Why: glibc's ``malloc`` serves allocations above its mmap threshold (128 KiB to 32 MiB, adjusted on the fly) with
fresh ``mmap`` pages and returns them with ``munmap`` when freed. A CNN's training step allocates and frees
activation tensors of tens to hundreds of MiB, so every step pays page faults to zero-fill new pages. On this
project's 2-core CPU an EfficientNet-Lite0 step (32 films at 224 px, AdamW) spent 4.9-6.9 s of system time per 6
steps and ran at 15.4-17.6 img/s; with both thresholds raised it spent 0.0-0.1 s and ran at 23.9-24.8 img/s
(1.41-1.55x over two runs; ``python benchmarks/bench_allocator.py``). The cost: the process keeps its peak heap
instead of shrinking after it, which is what a training or explanation run does anyway.

It changes the whole process, so no library function calls it: the ``xray-xai`` command does at its entry, and a
script that trains or explains in its own process may call it once at its start. Set ``XRAY_XAI_KEEP_MEMORY=0`` to
leave the allocator alone. Other C libraries (musl, macOS, Windows) are left as
they are; so is a process whose ``MALLOC_MMAP_THRESHOLD_`` is set by the user.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_LARGE = 2**31 - 1
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds once per process; True when they are raised (now or before)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("XRAY_XAI_KEEP_MEMORY", "1") == "0" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        # the process's own symbols include the C library's: no ctypes.util.find_library, which runs ldconfig in a
        # subprocess (15 ms on every command start, --help included)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_TRIM_THRESHOLD, _LARGE)) and bool(mallopt(_M_MMAP_THRESHOLD, _LARGE))
    return _done
