"""How many CPU threads a probe should use on this machine, now."""
from __future__ import annotations

import os
from contextlib import contextmanager


def available_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def free_cores() -> int:
    """Cores not busy with other work: available cores minus the 1-minute load average, at least 1.

    OpenMP threads (torch, LightGBM) busy-wait for each other, so asking for more threads than there are free cores
    is much slower than asking for fewer: on this project's 2-core machine with other jobs running, a replica
    training step took 2.1 s with 2 threads and 0.6 s with 1.
    """
    cores = available_cores()
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return cores
    return max(1, min(cores, int(cores - load + 0.5)))


#: glibc mallopt parameters and their defaults (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _GLIBC_DEFAULT = -1, -3, 128 * 1024


@contextmanager
def reuse_large_blocks(keep_bytes: int = 1 << 30):
    """Within the block, glibc's malloc serves allocations of up to ``keep_bytes`` from its heap and keeps freed
    memory for reuse, instead of mapping fresh pages for every large tensor and unmapping them on free; after it,
    glibc's default thresholds are restored and the kept memory is returned to the system (``malloc_trim``).

    Why: a training step of the organisers' net allocates its ~52M-parameter gradients (and, under bfloat16
    autocast, the weights' casts) anew, each of them tens of MB, so every step page-faults on fresh memory. On this
    project's CPU that was half of a bfloat16 step (0.29 s -> 0.16 s with the reuse; fp32: 0.53 -> 0.45 s; the
    arithmetic and so the figures are unchanged). A no-op where glibc's ``mallopt`` is not available."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, int(keep_bytes))
    libc.mallopt(_M_TRIM_THRESHOLD, int(4 * keep_bytes))
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT)
        libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT)
        libc.malloc_trim(0)


def _glibc():
    """The C library when it is glibc with ``mallopt`` and ``malloc_trim``, else None."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
