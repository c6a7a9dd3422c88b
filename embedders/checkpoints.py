"""Epoch checkpoints of the neural embedders (gru_ae, multitask, next_event, contrastive): atomic saves, the resume
decision, and the epoch's save / the final reload of the best weights (:func:`save_epoch`, :func:`load_best`).

A run is identified by a *key* (its value-changing params, the input's fingerprint, the world size); ``last.pt``
holds the key with the weights, optimiser and history. ``resume``: False (start afresh), True (continue
``last.pt``, refusing another run's checkpoint with an error) or "auto" (continue it when it is this run's, else
say why in one line and start afresh: what ``submit.pack`` uses after a killed build).
"""
from __future__ import annotations

import math
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


def resume_training(last: Path, key: dict, model: torch.nn.Module, opt: torch.optim.Optimizer, device, resume,
                    epochs: int, log: Callable[[str], None]) -> tuple[int, float, int, list]:
    """(first epoch to train (0-based), best held-out loss, best epoch (1-based, -1: none), history): a fresh start,
    or the state of ``last`` when :func:`resume_checkpoint` continues it, its weights and optimiser state loaded into
    ``model`` and ``opt`` (and torch's RNG when the checkpoint holds it, see :func:`save_epoch`)."""
    ck = resume_checkpoint(last, key, device, resume, epochs, log)
    if ck is None:
        return 0, math.inf, -1, []
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    if "rng" in ck:
        torch.set_rng_state(ck["rng"]["torch"])
    return ck["epoch"], ck["best_loss"], ck["best_epoch"], ck["history"]


def save_epoch(work: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, key: dict, epoch: int,
               improved_loss: float | None, best: float, best_epoch: int, history: list, rng: bool = False) -> None:
    """Rank 0 after epoch ``epoch`` (0-based): ``best.pt`` (weights, epoch, held-out loss, key) when the epoch improved
    on the best held-out loss (``improved_loss``, else None), and always ``last.pt`` (weights, optimiser, best so far,
    history, key: what :func:`resume_training` continues from), with torch's RNG state when ``rng``."""
    if improved_loss is not None:
        save_atomic({"model": model.state_dict(), "epoch": epoch + 1, "loss": improved_loss, "key": key},
                    work / "best.pt")
    last = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1, "best_loss": best,
            "best_epoch": best_epoch, "history": history, "key": key}
    if rng:
        last["rng"] = {"torch": torch.get_rng_state()}
    save_atomic(last, work / "last.pt")


def load_best(model: torch.nn.Module, work: Path, device, best_epoch: int) -> None:
    """Load ``best.pt``'s weights into ``model`` when an epoch was best (``best_epoch`` > 0) and the file is there."""
    if (work / "best.pt").is_file() and best_epoch > 0:
        model.load_state_dict(torch.load(work / "best.pt", map_location=device, weights_only=False)["model"])


__all__ = ["RESUME_MODES", "work_folder", "save_atomic", "key_diff", "resume_checkpoint", "resume_training",
           "save_epoch", "load_best"]
