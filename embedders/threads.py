"""The one CPU-thread policy of the torch embedders, whichever command runs them.

A torch embedder takes a ``threads`` parameter (recorded in its meta.json like any other) and runs its ``fit`` and
``transform`` inside :func:`torch_threads` ``(``:func:`resolve_threads` ``(threads))``: its own CLI, ``submit.pack``
(:mod:`submit.build`) and the embedded default run therefore train with the same number of threads, so the same
params and seed give the same block, byte for byte, and the same speed. ``threads > 0``: that many; ``0``: torch's
default, or cores / K per process under ``torchrun`` with K processes. The small GRUs run one small matmul per time
step, where extra threads mostly wait on each other (1 thread trained ``day_event`` 8x faster than 2 on the 2-core
reference machine), hence the default of 1.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager

#: Default ``threads`` of the torch embedders.
DEFAULT_THREADS = 1


def resolve_threads(threads: int | None, world: int = 1) -> int | None:
    """Threads a process should use: ``threads`` when > 0; for 0 (or None) torch's default (None) alone, or
    cores / ``world`` per process under torchrun."""
    if threads is not None and threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if threads:
        return int(threads)
    if world > 1:
        return max(1, (os.cpu_count() or 1) // world)
    return None


@contextmanager
def torch_threads(n: int | None):
    """Limit torch's CPU threads to ``n`` inside the block (None: unchanged), restoring them after."""
    import torch

    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def available_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


#: Seconds over which :func:`busy_elsewhere` samples the CPUs, and how long its answer is reused.
SAMPLE_SECONDS, REUSE_SECONDS = 0.1, 30.0
_last_sample: tuple[float, float] | None = None  # (when, busy CPUs)


def busy_elsewhere() -> float:
    """CPUs busy with other processes now: the whole machine's busy time less this process's own, over
    :data:`SAMPLE_SECONDS` (psutil), reused for :data:`REUSE_SECONDS`. Without psutil: the 1-minute load average,
    which also counts this process (a run alone on the machine then looks like one busy core)."""
    global _last_sample
    now = time.monotonic()
    if _last_sample is not None and now - _last_sample[0] < REUSE_SECONDS:
        return _last_sample[1]
    try:
        import psutil
    except ImportError:
        try:
            return float(os.getloadavg()[0])
        except OSError:
            return 0.0

    def busy() -> tuple[float, float]:
        t, own = psutil.cpu_times(), psutil.Process().cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        return sum(t) - idle, own.user + own.system

    (all0, own0), t0 = busy(), time.perf_counter()
    time.sleep(SAMPLE_SECONDS)
    (all1, own1), dt = busy(), time.perf_counter() - t0
    value = max(0.0, ((all1 - all0) - (own1 - own0)) / max(dt, 1e-3))
    _last_sample = (now, value)
    return value


def free_cores() -> int:
    """Cores not busy with other work (:func:`available_cores` minus :func:`busy_elsewhere`), at least 1.

    OpenMP threads (torch, LightGBM) busy-wait for each other, so asking for more threads than there are free cores
    is much slower than asking for fewer: on this project's 2-core machine with other jobs running, a replica
    training step took 2.1 s with 2 threads and 0.6 s with 1. This process itself does not count as other work: the
    load average did, so a run alone on 2 idle cores used to get 1 thread (the organisers' net at bfloat16: 35 s per
    1,000-client candidate instead of 22 s)."""
    cores = available_cores()
    return max(1, min(cores, int(cores - busy_elsewhere() + 0.5)))


__all__ = ["DEFAULT_THREADS", "resolve_threads", "torch_threads", "available_cores", "busy_elsewhere",
           "free_cores"]
