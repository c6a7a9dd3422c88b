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


__all__ = ["DEFAULT_THREADS", "resolve_threads", "torch_threads"]
