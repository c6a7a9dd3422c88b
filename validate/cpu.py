"""How many CPU threads a probe should use on this machine, now."""
from __future__ import annotations

import os


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
