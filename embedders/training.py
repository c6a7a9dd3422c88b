"""The training-loop pieces the torch embedders share (gru_ae, multitask, next_event and contrastive, the last two
through :class:`embedders.next_event.train.SequenceEmbedder`): one place for each, so a fix reaches them all.

- :class:`TorchEmbedder`: ``fit`` = ``validate()`` then ``_fit`` under the thread policy (:mod:`embedders.threads`)
  and deterministic kernels (:func:`embedders.distributed.deterministic_algorithms`); the work folder, the rank-0
  log line and the fitted attributes every loop ends with.
- Clients: :func:`training_fingerprint` (the run key's input part), :func:`cap_clients` (the seeded
  ``max_train_clients`` sample), :func:`holdout_split` (the seeded held-out share).
- Batches: :func:`length_batches` (clients of similar length) and, per epoch, :func:`epoch_batches` (this rank's
  share and the epoch's seeds) and :func:`train_epoch` (the optimiser steps over them, with the progress bar).
- Optimiser: :class:`RowSparseAdam` (Adam, with the row-sparse parameters of a large sku table on SparseAdam) and
  :data:`SPARSE_ROWS_MIN`, the table size from which ``sku_updates="auto"`` picks it.

Seeds come from :func:`seed_of` over ``(seed, epoch, rank, stream)``, set at every epoch start, so a run resumed from
an epoch checkpoint continues exactly as the uninterrupted run would have: the same seed gives the same bytes on a
CPU (docs/design.md).
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

from competition.events import block_fingerprint
from competition.progress import progress as progress_of
from embedders.base import Embedder
from embedders.checkpoints import RESUME_MODES, work_folder
from embedders.distributed import deterministic_algorithms, dist_info, resolve_device, shard
from embedders.threads import resolve_threads, torch_threads


def seed_of(*key: int) -> int:
    """A 32-bit seed for a torch generator from a tuple of ints (``(seed, epoch, rank, stream)``): distinct keys give
    unrelated streams."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0])


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices grouped into batches of similar length (sorted, random tie-break), batch order shuffled."""
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def check_positive_ints(values: dict) -> None:
    """ValueError naming the first of ``values`` (``{parameter: value}``) that is not an integer >= 1."""
    for k, v in values.items():
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{k} must be an integer >= 1, got {v!r}")


def training_fingerprint(events) -> str:
    """The input part of a run key: the event table's fingerprint, joined with the relevant-clients list's when the
    table has a data directory (the training clients are read from it, so they count too)."""
    fp = events.fingerprint
    if events.data_dir is not None:
        fp = block_fingerprint(events.data_dir, events.layout, events_fingerprint=fp)
    return fp


def cap_clients(clients: np.ndarray, max_clients: int | None, seed: int, name: str) -> np.ndarray:
    """``clients`` (ids or table rows, sorted) cut to a seeded sample of ``max_clients`` (still sorted) when there are
    more; ValueError naming the embedder when fewer than 2 remain (a held-out split needs two)."""
    if max_clients is not None and len(clients) > max_clients:
        rng = np.random.default_rng([seed, 11])
        clients = np.sort(rng.choice(clients, size=max_clients, replace=False))
    if len(clients) < 2:
        raise ValueError(f"{len(clients)} training client(s) with events; {name} needs at least 2")
    return clients


def holdout_split(clients: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out), both sorted: a seeded ``holdout`` share of ``clients`` (1-D) held out, none when
    ``holdout`` is 0 or there are fewer than 10 clients."""
    perm = np.random.default_rng([seed, 12]).permutation(clients)
    n_val = int(round(holdout * len(clients))) if holdout > 0 and len(clients) >= 10 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, rank: int, world: int,
                  max_batches: int | None = None) -> tuple[list[np.ndarray], torch.Generator]:
    """This rank's batches of one epoch (:func:`length_batches` over ``lengths``, seeded by ``(seed, epoch)`` so all
    ranks cut the same list, then :func:`~embedders.distributed.shard`; the first ``max_batches``), and the torch
    generator of the epoch's sampling (sku negatives), seeded by ``(seed, epoch, rank, 2)``. Also seeds torch's
    global RNG (dropout) by ``(seed, epoch, rank, 1)``."""
    torch.manual_seed(seed_of(seed, epoch, rank, 1))
    gen = torch.Generator().manual_seed(seed_of(seed, epoch, rank, 2))
    batches = shard(length_batches(lengths, batch_size, np.random.default_rng([seed, epoch])), rank, world)
    if max_batches is not None:
        batches = batches[:max_batches]
    return batches, gen


def progress_bar(batches: list, desc: str, show: bool):
    """The per-epoch batch progress on stderr (:func:`competition.progress.progress`: a bar gone when done on a
    terminal, a few lines otherwise); ``show`` is False off rank 0 or with --no-progress."""
    return progress_of(batches, desc=desc, unit="batch", enabled=show, leave=False)


def train_epoch(net: torch.nn.Module, opt: torch.optim.Optimizer, tokens, batches: list[np.ndarray],
                loss_of: Callable[[dict[str, np.ndarray], np.ndarray], torch.Tensor], sku, desc: str, show: bool,
                world: int) -> tuple[float, int]:
    """One optimiser step per batch of token rows (``tokens.batch(idx)`` -> grids ``{field: (B, L + 2)}``, lengths
    ``(B,)`` with start and end), ``loss_of(grids, lengths)`` the scalar loss; the sku table (a
    :class:`~embedders.gru_ae.sku_table.SkuTable` or None) is clipped after each step. Returns (mean loss per batch,
    events trained on this rank). The bar shows the running loss and events/s over all ranks."""
    t0 = time.perf_counter()
    net.train()
    total, n_events = 0.0, 0
    bar = progress_bar(batches, desc, show)
    for i, idx in enumerate(bar):
        grids, lengths = tokens.batch(idx)
        loss = loss_of(grids, lengths)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sku is not None:
            sku.clip_()
        total += float(loss.detach())
        n_events += int((lengths - 2).sum())
        if i % 10 == 0 or i == len(batches) - 1:
            bar.set_postfix(loss=f"{total / (i + 1):.3f}",
                            ev_s=f"{n_events * world / max(time.perf_counter() - t0, 1e-9):,.0f}")
    bar.close()
    return total / max(len(batches), 1), n_events


#: ``sku_updates="auto"``: row-sparse updates from this many trainable sku-table rows (content deltas) up. Below,
#: dense Adam, as every block so far was trained (the default and test worlds' catalogues are far smaller).
SPARSE_ROWS_MIN = 100_000
SKU_UPDATES = ("auto", "dense", "sparse")


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters with torch's fused kernel: the same update up to float rounding (a seed
    still gives the same bytes, run after run) and much cheaper than the default loop over parameters on a CPU (the
    multitask embedder's 2,112 steps at 1M clients took 28.5 s in that loop, a fifth of its training;
    ``benchmarks/bench_kernels.py``). AdamW takes no sparse gradients either way."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)


def sparse_rows(sku_updates: str, n_rows: int) -> bool:
    """Whether a sku table of ``n_rows`` trainable rows takes row-sparse updates under ``sku_updates``."""
    if sku_updates not in SKU_UPDATES:
        raise ValueError(f"sku_updates must be one of {SKU_UPDATES}, got {sku_updates!r}")
    return sku_updates == "sparse" or (sku_updates == "auto" and n_rows >= SPARSE_ROWS_MIN)


class RowSparseAdam:
    """Adam over a model's dense parameters and SparseAdam (the same learning rate; moments of the rows a step
    touches only, "lazy Adam") over its row-sparse ones: a step costs the rows a batch looked up, not the whole
    table. With no sparse parameters it is plain ``torch.optim.Adam``. Offers what the loops and checkpoints call:
    ``zero_grad``, ``step``, ``state_dict``, ``load_state_dict``."""

    def __init__(self, params, sparse_params, lr: float):
        sparse_params = list(sparse_params)
        sparse_ids = {id(p) for p in sparse_params}
        self.dense = torch.optim.Adam([p for p in params if id(p) not in sparse_ids], lr=lr)
        self.sparse = torch.optim.SparseAdam(sparse_params, lr=lr) if sparse_params else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in (self.dense, self.sparse):
            if opt is not None:
                opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.dense.step()
        if self.sparse is not None:
            self.sparse.step()

    def state_dict(self) -> dict:
        if self.sparse is None:
            return self.dense.state_dict()
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if (self.sparse is None) != ("sparse" not in state):
            raise ValueError("the checkpoint's optimiser does not match (dense vs row-sparse sku updates)")
        if self.sparse is None:
            self.dense.load_state_dict(state)
        else:
            self.dense.load_state_dict(state["dense"])
            self.sparse.load_state_dict(state["sparse"])


class TorchEmbedder(Embedder):
    """Base of the torch embedders: subclasses implement ``_fit(events)`` (and ``transform``, inside
    :meth:`threads_limit`) and hold ``threads``, ``progress`` and ``work_dir`` parameters."""

    #: Why the work folder is needed, said when ``work_dir`` is None.
    work_dir_holds = "checkpoints are written there"
    #: Train under deterministic kernels (see :func:`embedders.distributed.deterministic_algorithms`).
    deterministic = True

    def fit(self, events) -> "TorchEmbedder":
        """``validate()``, then train on ``events`` (an :class:`~competition.events.EventTable`) under the thread
        policy of :mod:`embedders.threads`, whichever command calls it; keeps the best epoch's weights."""
        self.validate()
        with self.threads_limit(), (deterministic_algorithms() if self.deterministic else nullcontext()):
            return self._fit(events)

    def validate_loop(self) -> None:
        """ValueError naming the first bad parameter of the AdamW loop (multitask, next_event, contrastive): the
        client cap, the held-out share, lr and weight decay, resume, threads, device."""
        if self.max_train_clients is not None and self.max_train_clients < 2:
            raise ValueError(f"max_train_clients must be >= 2 or None, got {self.max_train_clients}")
        if not (0.0 <= self.holdout < 1.0):
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if self.resume not in RESUME_MODES:
            raise ValueError(f"resume must be one of {RESUME_MODES}, got {self.resume!r}")
        resolve_threads(self.threads)
        resolve_device(self.device)

    def _fit(self, events) -> "TorchEmbedder":  # pragma: no cover - interface
        raise NotImplementedError

    @contextmanager
    def threads_limit(self):
        """torch's CPU threads set by the ``threads`` parameter (cores / K per process under torchrun for 0)."""
        with torch_threads(resolve_threads(self.threads, dist_info()[1])):
            yield

    def _work_dir(self) -> Path:
        return work_folder(self.work_dir, self.work_dir_holds)

    def _log(self, msg: str) -> None:
        """One line on stderr, from rank 0, with progress on."""
        if self.progress and dist_info()[0] == 0:
            print(f"{self.name}: {msg}", file=sys.stderr, flush=True)

    def _keep_fitted(self, model: torch.nn.Module, device: torch.device, history: list, best: float,
                     best_epoch: int) -> None:
        """The fitted attributes every loop ends with: the model in eval mode, its device, the per-epoch history,
        the best epoch (1-based, -1 for none) and its held-out loss (None when no epoch ran)."""
        self.model_, self.device_, self.history_ = model.eval(), device, history
        self.best_epoch_, self.best_loss_ = best_epoch, (None if math.isinf(best) else best)


__all__ = ["TorchEmbedder", "adamw", "seed_of", "length_batches", "check_positive_ints", "training_fingerprint",
           "cap_clients", "holdout_split", "epoch_batches", "progress_bar", "train_epoch"]
