"""How many CPU threads a probe should use on this machine, now: the toolkit's one policy,
:func:`embedders.threads.free_cores` (cores less those busy with other processes)."""
from __future__ import annotations

from embedders.threads import available_cores, free_cores

__all__ = ["available_cores", "free_cores"]
