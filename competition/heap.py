"""The one heap policy of loops that allocate and free the same large arrays: keep those blocks in the heap.

glibc's malloc serves every block above its mmap threshold (128 KiB, rising to at most 32 MiB) with a fresh
``mmap`` and returns it with ``munmap`` when freed; each comes back from the kernel as new zeroed pages. Inside
:func:`large_blocks_in_heap` freed blocks up to 1 GiB stay in the heap and the next allocation reuses them.
Allocation does not touch any value, so the results are the same bytes. Three loops use it:

- the organisers' network's training (:mod:`validate.mlp`, :func:`validate.probe.score_matrix`): a step of the
  51.6M-parameter net allocates and frees tens of 16-32 MiB blocks (gradients, bfloat16 weight copies,
  activations), about 74,000 page faults per step. One decision candidate (bfloat16, six tasks, 1,000 clients)
  took 28.8 s instead of 40.6 s on the 2-core reference machine, 1.41x, the same scores
  (``benchmarks/bench_heap.py``, docs/decision.md). The small nets of the torch embedders gained nothing
  measurable (multitask at 20k clients: 82 s against 80 s), so they do not use it.
- the generator's chunks (:func:`competition.synth.write_raw_world`): tens of arrays of 10-100 MB per chunk of
  clients; the system time of a 100k-client world fell from 9-11 s to 2.8 s, of a 1M world from 112 to 15-19 s
  (docs/scale.md);
- the event table's ranges (:meth:`competition.events.EventTable.build`): 1.09-1.12x per build at 1M.

On exit the previous behaviour is restored as far as glibc allows (the documented default thresholds) and the
freed memory is handed back to the kernel (``malloc_trim``), so a long pipeline does not keep a training loop's
peak in its RSS. Without glibc (macOS, musl), or with the environment variable ``UBP_HEAP_POLICY=0``, it does
nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from contextlib import contextmanager

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks below this size come from the heap inside the context (1 GiB: every block of a training step).
HEAP_BLOCK_LIMIT = 1 << 30
#: Environment variable that switches the policy off when set to 0 (read at each use).
ENV_SWITCH = "UBP_HEAP_POLICY"
#: glibc's documented defaults, restored on exit.
DEFAULT_MMAP_THRESHOLD = DEFAULT_TRIM_THRESHOLD = 128 * 1024

_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet


def _glibc() -> ctypes.CDLL | None:
    """glibc, when this process runs on it (mallopt and malloc_trim present), else None."""
    global _libc
    if _libc is False:
        _libc = None
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name or "libc.so.6")
            if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim"):
                _libc = lib
        except OSError:
            pass
    return _libc  # type: ignore[return-value]


def available() -> bool:
    """Whether the policy acts here: glibc, and not switched off by :data:`ENV_SWITCH`."""
    return os.environ.get(ENV_SWITCH, "1").strip() != "0" and _glibc() is not None


_depth = 0  # nesting: only the outermost context sets and restores


@contextmanager
def large_blocks_in_heap(enabled: bool = True):
    """Inside the block, allocations up to :data:`HEAP_BLOCK_LIMIT` come from (and return to) the heap; on exit,
    glibc's default thresholds are set again and the heap is trimmed. Nested uses act once; ``enabled=False``, no
    glibc or :data:`ENV_SWITCH` at 0: nothing changes."""
    global _depth
    lib = _glibc() if enabled and available() else None
    if lib is None:
        yield
        return
    if _depth == 0:
        lib.mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT)
        lib.mallopt(_M_TRIM_THRESHOLD, HEAP_BLOCK_LIMIT)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            lib.mallopt(_M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD)
            lib.mallopt(_M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
            lib.malloc_trim(0)



def release_freed() -> None:
    """Collect unreachable objects now (a reference cycle can keep a stage's arrays alive until the next full
    collection) and hand the heap's free memory back to the kernel (``malloc_trim``; glibc only, whatever
    :data:`ENV_SWITCH` says, as it changes no allocation policy). Called between the pipeline's stages, so that a
    stage starts with what its predecessors left alive, not their garbage. No value changes."""
    import gc
    gc.collect()
    lib = _glibc()
    if lib is not None:
        lib.malloc_trim(0)


__all__ = ["ENV_SWITCH", "HEAP_BLOCK_LIMIT", "available", "large_blocks_in_heap", "release_freed"]
