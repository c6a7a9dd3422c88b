"""Epoch checkpoints of the neural embedders (gru_ae, multitask): atomic saves and the resume decision.

A run is identified by a *key* (its value-changing params, the input's fingerprint, the world size); ``last.pt``
holds the key with the weights, optimiser and history. ``resume``: False (start afresh), True (continue
``last.pt``, refusing another run's checkpoint with an error) or "auto" (continue it when it is this run's, else
say why in one line and start afresh: what ``submit.pack`` uses after a killed build).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from competition.io import atomic_path

RESUME_MODES = (False, True, "auto")


def work_folder(work_dir: str | Path | None, why: str = "checkpoints are written there") -> Path:
    """``work_dir`` as a created folder; a clear error when it is None (a neural embedder needs one)."""
    if work_dir is None:
        raise ValueError(f"work_dir is required ({why})")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    return work


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` under a temporary name, renamed when complete."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def key_diff(old: dict, new: dict) -> str:
    """'name: checkpoint -> now' for every differing entry of two run keys."""
    flat = lambda k: {**k.get("params", {}), **{x: v for x, v in k.items() if x != "params"}}  # noqa: E731
    a, b = flat(old), flat(new)
    return ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


def resume_checkpoint(last: Path, key: dict, device, resume, epochs: int, log: Callable[[str], None]) -> dict | None:
    """The checkpoint to continue from, or None to train afresh (see the module docstring for ``resume``)."""
    if not resume:
        return None
    if not last.is_file():
        log(f"--resume: no checkpoint in {last.parent}; starting from scratch")
        return None
    try:
        ck = torch.load(last, map_location=device, weights_only=False)
        why = None if ck["key"] == key else f"checkpoint of another run ({key_diff(ck['key'], key)})"
        if why is None and ck["epoch"] > epochs:
            why = f"checkpoint after epoch {ck['epoch']}, past the {epochs} asked for"
    except Exception as exc:  # a truncated or foreign file
        ck, why = None, f"unreadable checkpoint ({type(exc).__name__}: {exc})"
    if why is None:
        log(f"resumed from {last} after epoch {ck['epoch']}")
        return ck
    if resume != "auto":
        raise ValueError(f"{last}: {why}; use the same flags and input, another --work-dir, or drop --resume")
    log(f"{last}: {why}; training from scratch")
    return None


__all__ = ["RESUME_MODES", "save_atomic", "key_diff", "resume_checkpoint"]
