"""Training and inference of the sequence embedders: one loop (:class:`SequenceEmbedder`) and the next-event
Transformer on it (:class:`NextEventEmbedder`); :mod:`embedders.contrastive` is the other user of the loop.

- Clients: the relevant clients with events (every client of the table without a data directory), optionally a
  seeded sample of ``max_train_clients``; a seeded ``holdout`` share picks the best epoch by held-out loss.
- Inputs: :class:`embedders.next_event.inputs.SequenceInputs` (vocabulary fitted on the training clients).
- Batches: clients of similar length (:func:`embedders.training.epoch_batches`), seeded by ``(seed, epoch)``;
  under ``torchrun`` each rank trains its :func:`embedders.distributed.shard` of them through DDP.
- Checkpoints in ``work_dir`` (:mod:`embedders.checkpoints`): ``last.pt`` every epoch, ``best.pt`` when the
  held-out loss improves; ``resume`` continues ``last.pt``.
- Determinism: ``threads`` fixed (:mod:`embedders.threads`), deterministic kernels, seeded torch generators per
  (epoch, rank): the same seed gives the same bytes on a CPU.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from competition.load import read_relevant_clients
from competition.progress import progress as progress_of
from competition.schema import SKU
from embedders.base import Block
from embedders.checkpoints import load_best, resume_training, save_epoch
from embedders.distributed import dist_info, resolve_device, wrap_ddp
from embedders.gru_ae.model import batch_tensors
from embedders.gru_ae.sku_table import SkuTable
from embedders.next_event.inputs import DEFAULT_FIELDS, SequenceInputs, parse_fields
from embedders.next_event.model import PRESETS, GPTConfig, NextEventGPT
from embedders.training import (TorchEmbedder, adamw, cap_clients, check_positive_ints, epoch_batches, holdout_split,
                                length_batches, seed_of, train_epoch, training_fingerprint)

#: Parameters that may differ between a run and its resumption.
_NOT_IN_KEY = frozenset({"epochs", "resume", "progress", "device", "work_dir", "infer_batch"})


class SequenceEmbedder(TorchEmbedder):
    """The shared loop (module docstring). Subclasses set ``name``, implement :meth:`build_model` (an
    ``nn.Module`` with ``embed(batch, lengths) -> (B, dim)``) and :meth:`batch_loss`, and may extend
    :meth:`validate`."""

    resumable = True

    def __init__(self, dim: int | None = None, seed: int = 0, fields: str = DEFAULT_FIELDS, epochs: int = 4,
                 batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 0.01, holdout: float = 0.05,
                 max_train_clients: int | None = None, max_batches: int | None = None, vocab_cap: int = 5000,
                 delta_max: float = 0.5, device: str = "auto", threads: int = 2, work_dir: str | None = None,
                 resume: bool | str = False, progress: bool = True, infer_batch: int = 512):
        self.dim = dim
        self.seed = seed
        self.fields = fields
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.holdout = holdout
        self.max_train_clients = max_train_clients
        self.max_batches = max_batches
        self.vocab_cap = vocab_cap
        self.delta_max = delta_max
        self.device = device
        self.threads = threads
        self.work_dir = work_dir
        self.resume = resume
        self.progress = progress
        self.infer_batch = infer_batch

    # -- to implement -----------------------------------------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:  # pragma: no cover - interface
        raise NotImplementedError

    def batch_loss(self, net, grids: dict[str, np.ndarray], lengths: np.ndarray, device, gen: torch.Generator,
                   rng: np.random.Generator) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def out_dim(self) -> int:
        return int(self.dim)

    # -- validation -------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the first bad parameter."""
        parse_fields(self.fields)
        ints = {"epochs": self.epochs, "batch_size": self.batch_size, "vocab_cap": self.vocab_cap,
                "infer_batch": self.infer_batch}
        if self.dim is not None:
            ints["dim"] = self.dim
        check_positive_ints(ints)
        if self.max_batches is not None and self.max_batches < 1:
            raise ValueError(f"max_batches must be >= 1 or None, got {self.max_batches}")
        self.validate_loop()

    # -- helpers ----------------------------------------------------------------------------------------------------
    def _train_rows(self, events) -> np.ndarray:
        rows = np.flatnonzero(events.lengths > 0).astype(np.int64)
        if events.data_dir is not None:
            r = events.rows_of(read_relevant_clients(events.data_dir))
            rows = np.unique(r[r >= 0])
        return cap_clients(rows, self.max_train_clients, self.seed, self.name)

    def sku_table(self, dim: int) -> SkuTable | None:
        """The content-initialised sku table of gru_ae (bounded delta for skus seen in training)."""
        if SKU not in self.inputs_.fields:
            return None
        v = self.inputs_.vocab
        return SkuTable("content", len(v.skus), dim, names=v.names, seen=v.catalogue_counts > 0,
                        delta_max=self.delta_max, seed=self.seed)

    def _run_key(self, events, world: int) -> dict:
        params = {k: v for k, v in self.get_params().items() if k not in _NOT_IN_KEY}
        return {"params": params, "fingerprint": training_fingerprint(events), "world": world}

    # -- training ---------------------------------------------------------------------------------------------------
    def _fit(self, events) -> "SequenceEmbedder":
        rank, world = dist_info()
        device = resolve_device(self.device)
        work = self._work_dir()
        train_rows, val_rows = holdout_split(self._train_rows(events), self.holdout, self.seed)
        self.inputs_ = SequenceInputs(parse_fields(self.fields), self.vocab_cap).fit(events, train_rows)
        train_tok, val_tok = self.inputs_.tokens(events, train_rows), self.inputs_.tokens(events, val_rows)
        self.n_train_, self.n_holdout_ = int(len(train_rows)), int(len(val_rows))
        torch.manual_seed(self.seed)
        model = self.build_model().to(device)
        opt = adamw(model, self.lr, self.weight_decay)
        key = self._run_key(events, world)
        start, best, best_epoch, history = resume_training(work / "last.pt", key, model, opt, device, self.resume,
                                                           self.epochs, self._log)
        net = wrap_ddp(model, device)
        sku = next((m for m in model.modules() if isinstance(m, SkuTable)), None)
        for epoch in range(start, self.epochs):
            t0 = time.perf_counter()
            batches, gen = epoch_batches(train_tok.lengths, self.batch_size, self.seed, epoch, rank, world,
                                         self.max_batches)
            rng = np.random.default_rng([self.seed, epoch, rank, 3])  # batch_loss's own sampling (contrastive slices)

            def loss_of(grids, lengths, gen=gen, rng=rng):
                return self.batch_loss(net, grids, lengths, device, gen, rng)

            train_loss, n_events = train_epoch(net, opt, train_tok, batches, loss_of, sku,
                                               f"{self.name} epoch {epoch + 1}/{self.epochs}",
                                               self.progress and rank == 0, world)
            train_s = time.perf_counter() - t0
            val_loss = self._heldout(model, val_tok, device, epoch) if len(val_tok) else train_loss
            improved = val_loss < best
            if improved:
                best, best_epoch = val_loss, epoch + 1
            history.append({"epoch": epoch + 1, "train_loss": round(train_loss, 5), "heldout_loss": round(val_loss, 5),
                            "batches": len(batches), "events": n_events * world,
                            "train_seconds": round(train_s, 2), "seconds": round(time.perf_counter() - t0, 2)})
            if rank == 0:
                save_epoch(work, model, opt, key, epoch, val_loss if improved else None, best, best_epoch, history)
            self._log(f"epoch {epoch + 1}/{self.epochs}: train {train_loss:.4f}  held-out {val_loss:.4f}"
                      f"{'  (best)' if improved else ''}  {history[-1]['seconds']:.1f}s")
        load_best(model, work, device, best_epoch)
        self._keep_fitted(model, device, history, best, best_epoch)
        return self

    @torch.no_grad()
    def _heldout(self, model, tok, device, epoch: int) -> float:
        """Mean loss over the held-out clients' batches (model in eval mode, fixed sampling)."""
        model.eval()
        gen = torch.Generator().manual_seed(seed_of(self.seed, 99))
        rng = np.random.default_rng([self.seed, 99])
        total, n = 0.0, 0
        for idx in length_batches(tok.lengths, self.infer_batch, np.random.default_rng([self.seed, 98])):
            grids, lengths = tok.batch(idx)
            total += float(self.batch_loss(model, grids, lengths, device, gen, rng)) * len(idx)
            n += len(idx)
        return total / max(n, 1)

    # -- inference --------------------------------------------------------------------------------------------------
    def transform(self, events, client_ids: np.ndarray) -> Block:
        """Client vectors float32 ``(len(client_ids), dim)`` from each client's last events up to the table's end
        (rank 0; other ranks of a torchrun job return an empty block). A client without events gets the vector of
        an empty history."""
        client_ids = np.asarray(client_ids, dtype=np.int64)
        if dist_info()[0] != 0:
            return Block(np.zeros(0, np.int64), np.zeros((0, self.out_dim()), np.float32), {"name": self.name})
        with torch.no_grad(), self.threads_limit():
            rows = events.rows_of(client_ids)
            tok = self.inputs_.tokens(events, rows)
            order = np.argsort(tok.lengths, kind="stable")
            out = np.zeros((len(client_ids), self.out_dim()), dtype=np.float32)
            model = self.model_.eval()
            for i in progress_of(range(0, len(order), self.infer_batch), desc=f"{self.name} embed", unit="batch",
                                 enabled=self.progress, leave=False):
                idx = order[i:i + self.infer_batch]
                batch, lens = batch_tensors(*tok.batch(idx), None, self.device_)
                out[idx] = model.embed(batch, lens).float().cpu().numpy()
        meta = {"name": self.name, "history": self.history_, "best_epoch": self.best_epoch_,
                "best_heldout_loss": self.best_loss_, "n_train_clients": self.n_train_,
                "n_holdout_clients": self.n_holdout_, "config": self.config_.to_dict(),
                "clients_without_events": int((rows < 0).sum()),
                "n_parameters": int(sum(p.numel() for p in self.model_.parameters()))}
        return Block(client_ids, out, meta)


class NextEventEmbedder(SequenceEmbedder):
    """Next-event causal Transformer (:mod:`embedders.next_event.model`); the block is the hidden state at each
    client's last event. ``preset``: "small" (CPU: 2 layers, 2 heads, 128-d) or "base" (GPU: 4 layers, 4 heads,
    256-d); ``dim`` (the model width, = the block's) and ``n_layer`` / ``n_head`` override it. ``dropout``,
    ``sku_negatives`` (sampled softmax) and the loop's parameters (:class:`SequenceEmbedder`)."""

    name = "next_event"
    unknown_sku_note = ("their category and price are the missing token; their sku is the other token (not in the "
                        "catalogue)")

    def __init__(self, dim: int | None = None, seed: int = 0, preset: str = "small", n_layer: int | None = None,
                 n_head: int | None = None, dropout: float = 0.1, sku_negatives: int = 2048,
                 fields: str = DEFAULT_FIELDS, epochs: int = 4, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 0.01, holdout: float = 0.05, max_train_clients: int | None = None,
                 max_batches: int | None = None, vocab_cap: int = 5000, delta_max: float = 0.5, device: str = "auto",
                 threads: int = 2, work_dir: str | None = None, resume: bool | str = False, progress: bool = True,
                 infer_batch: int = 512):
        super().__init__(dim, seed, fields, epochs, batch_size, lr, weight_decay, holdout, max_train_clients,
                         max_batches, vocab_cap, delta_max, device, threads, work_dir, resume, progress, infer_batch)
        self.preset = preset
        self.n_layer = n_layer
        self.n_head = n_head
        self.dropout = dropout
        self.sku_negatives = sku_negatives

    def shape(self) -> dict:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        p = dict(PRESETS[self.preset])
        for k, v in (("n_embd", self.dim), ("n_layer", self.n_layer), ("n_head", self.n_head)):
            if v is not None:
                p[k] = v
        return p

    def out_dim(self) -> int:
        return int(self.shape()["n_embd"])

    def validate(self) -> None:
        super().validate()
        s = self.shape()
        if s["n_layer"] < 1 or s["n_head"] < 1 or s["n_embd"] % s["n_head"]:
            raise ValueError(f"n_layer and n_head must be >= 1 and dim ({s['n_embd']}) a multiple of n_head "
                             f"({s['n_head']})")
        if s["n_embd"] < 16 and SKU in parse_fields(self.fields):
            raise ValueError(f"dim must be >= 16 with the sku field (its content rows are 16 name codes), got "
                             f"{s['n_embd']}")
        if not (0.0 <= self.dropout < 1.0) or self.sku_negatives < 1:
            raise ValueError(f"dropout must be in [0, 1) and sku_negatives >= 1, got {self.dropout}, "
                             f"{self.sku_negatives}")

    def build_model(self) -> NextEventGPT:
        s = self.shape()
        self.config_ = GPTConfig(n_layer=s["n_layer"], n_head=s["n_head"], n_embd=s["n_embd"], dropout=self.dropout,
                                 fields=self.inputs_.fields, vocab_sizes=dict(self.inputs_.sizes),
                                 sku_negatives=self.sku_negatives)
        return NextEventGPT(self.config_, self.sku_table(s["n_embd"]))

    def batch_loss(self, net, grids, lengths, device, gen, rng) -> torch.Tensor:
        batch, lens = batch_tensors(grids, lengths, None, device)
        return net(batch, lens, gen)


__all__ = ["SequenceEmbedder", "NextEventEmbedder"]
