"""Training and inference for the GRU autoencoder: the :class:`GruAE` embedder.

- Clients: the relevant clients with events (``train_on="relevant"``) or every client of the event table
  (``"all"``); a seeded ``holdout`` fraction of them is kept apart to pick the best epoch by held-out reconstruction
  loss (sum over fields of the token-weighted mean cross-entropy). The vocabularies come from the others.
- Batches: clients sorted by length (random tie-break) and cut into batches of ``batch_size``, whose order is then
  shuffled; both from a generator seeded by ``(seed, epoch)``, so a batch holds sequences of similar length and is
  cut to its longest one. Dropout and sku negatives use streams seeded by ``(seed, epoch, rank)`` at each epoch
  start, so a run resumed from an epoch checkpoint continues exactly as the uninterrupted run would have.
- Checkpoints (``work_dir``): ``last.pt`` after every epoch (model, optimiser, epoch, best loss, history, RNG
  states, the run's key) and ``best.pt`` when the held-out loss improves; both written atomically. ``resume="auto"``
  (what ``submit.pack`` asks for) continues from ``last.pt`` when it is a checkpoint of this very run (same key, not
  past ``epochs``), else trains from scratch, saying why in one line. ``resume=True``
  continues from ``last.pt`` (a checkpoint of another configuration or input is refused). The best weights are
  reloaded for inference.
- Data parallel: under ``torchrun`` (``torch.distributed`` initialised) the model is wrapped in DDP; every rank
  builds the same batch list and takes batches ``rank, rank + K, ...`` (the list is padded by wrapping so all ranks
  take the same number of steps). Held-out losses are summed over ranks. Rank 0 writes checkpoints and does the
  inference alone; other ranks return an empty block. Each rank writes ``weights_rank<r>.sha256`` (a hash of its
  final weights) to the work dir.
"""
from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

from competition.load import read_relevant_clients
from competition.progress import progress as progress_of
from competition.schema import SKU
from embedders.base import Block
from embedders.chunks import map_chunks
from embedders.threads import DEFAULT_THREADS
from embedders.checkpoints import load_best, resume_training, save_epoch
from embedders.distributed import all_reduce_sum, dist_info, resolve_device, shard, wrap_ddp
from embedders.gru_ae.model import PRESETS, GruAutoencoder, ModelConfig, batch_tensors
from embedders.gru_ae.sku_table import SKU_INITS, SkuTable
from embedders.gru_ae.tokens import Tokens, Vocab, tokenize
from embedders.training import (SKU_UPDATES, RowSparseAdam, TorchEmbedder, cap_clients, epoch_batches, length_batches,
                                seed_of, sparse_rows, train_epoch, training_fingerprint)

TRAIN_ON = ("relevant", "all")
#: Parameters that may differ between a run and its resumption.
_NOT_IN_KEY = {"epochs", "resume", "progress", "device", "work_dir", "max_batches", "infer_batch"}


def state_hash(module: torch.nn.Module) -> str:
    """sha256 of a module's state (sorted keys, raw bytes)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class GruAE(TorchEmbedder):
    """GRU sequence autoencoder; the user vector is the encoder's top-layer final state (width = hidden = dim).

    Parameters
    ----------
    variant : str
        preset (a key of :data:`~embedders.gru_ae.model.PRESETS`): token fields and GRU shape
    dim : int | None
        block width = GRU hidden size (default: the preset's hidden size)
    seed : int
        weights, batches and held-out clients
    epochs : int
        training epochs (the best one by held-out loss is kept)
    field_dim : int | None
        embedding width per field (default: the preset's)
    layers : int | None
        GRU layers (default: the preset's)
    dropout : float | None
        dropout between GRU layers (default: the preset's)
    query : bool
        add the search query field: its 16 codes embedded (one table per position) and summed, and reconstructed
    sku_init : str
        sku table (one of :data:`~embedders.gru_ae.sku_table.SKU_INITS`): content = name-code vector + trainable
        delta bounded by --delta-max (seen skus only; new skus keep their content vector); id = the reference's
        top --vocab-cap ids + 'other'; content-frozen = no delta; content-finetune = unbounded delta
    delta_max : float
        largest L2 norm of a sku's delta (content vectors have norm 1); clipped after every step
    vocab_cap : int
        most frequent urls kept; the rest share the 'other' token
    sku_cap : int | None
        most frequent skus kept with --sku-init id (default: --vocab-cap); the rest are 'other'
    batch_size : int
        clients per batch (per rank under torchrun)
    lr : float
        Adam learning rate
    holdout : float
        fraction of training clients held out to pick the best epoch (0: keep the best training loss)
    full_softmax_max : int
        catalogue size above which the sku head uses a sampled softmax (in-batch skus + --sku-negatives uniform
        negatives) instead of a softmax over every sku
    sku_negatives : int
        uniform negative skus per batch (sampled softmax)
    sku_updates : str
        how the sku deltas learn: dense (Adam over every row each step), sparse (SparseAdam on the rows a batch
        looked up: a step costs the batch, not the catalogue; the table's part of a step 3.2x faster at 1.26M skus)
        or auto (sparse from embedders.training.SPARSE_ROWS_MIN = 100,000 trainable rows, dense below)
    train_on : str
        train on the relevant clients with events, or on every client of the event table
    max_train_clients : int | None
        train on a seeded sample of this many of those clients (None: all); every client is still embedded. What
        a time budget lowers at challenge scale: one day_event epoch over 1M clients takes ~17 min on one core, a
        50,000-client sample 48.5 s (docs/scale.md)
    device : str
        auto: CUDA when present (one GPU per rank under torchrun), else CPU
    work_dir : str | Path | None
        checkpoints (last.pt, best.pt) and per-rank weight hashes (default: <out>.work)
    resume : bool | str
        continue from <work-dir>/last.pt (same flags and input required); gives the same result as an
        uninterrupted run. "auto" (pack's): continue it when it is this run's checkpoint, else start afresh
    progress : bool
        progress bars and one line per epoch on stderr
    max_batches : int | None
        stop each epoch after this many batches (benchmarks and smoke runs)
    infer_batch : int
        clients per batch when embedding
    threads : int
        CPU threads per process (0: torch's default, cores / K under torchrun). The GRUs run one small matmul per
        time step, where extra threads mostly wait on each other: on the 2-core reference machine 1 thread
        trained day_event 8x faster than 2 (docs/gru_ae.md). Scale out with torchrun processes instead
    """

    name = "gru_ae"
    unknown_sku_note = ("their category and price are the missing token; their sku is the other token (not in the "
                        "catalogue) with catalogue sku tokens, a frequency-ranked token in id mode")
    #: Trained without deterministic kernels, as its blocks always were: on one thread (the default) its sums keep
    #: their order anyway, and switching them on could pick other kernels, hence other bytes, for existing blocks.
    deterministic = False
    #: submit.pack may pass ``resume="auto"`` (continue an interrupted build from its checkpoint).
    resumable = True

    def __init__(self, variant: str = "week_all", dim: int | None = None, seed: int = 0, epochs: int = 5,
                 field_dim: int | None = None, layers: int | None = None, dropout: float | None = None,
                 query: bool = False, sku_init: str = "content", delta_max: float = 0.5, vocab_cap: int = 5000,
                 sku_cap: int | None = None,
                 batch_size: int = 256, lr: float = 1e-3, holdout: float = 0.05, full_softmax_max: int = 100_000,
                 sku_negatives: int = 4096, sku_updates: str = "auto", train_on: str = "relevant",
                 max_train_clients: int | None = None, device: str = "auto",
                 work_dir: str | Path | None = None, resume: bool | str = False, progress: bool = True,
                 max_batches: int | None = None, infer_batch: int = 1024, threads: int = DEFAULT_THREADS):
        # dim / field_dim / layers / dropout left None take the preset's (recorded so in meta.json); an unknown
        # variant leaves them None for validate() to refuse
        preset = PRESETS.get(variant)

        def pick(value, default, cast):
            value = value if value is not None else getattr(preset, default, None)
            return None if value is None else cast(value)

        self.variant = variant
        self.dim = pick(dim, "hidden", int)
        self.seed = int(seed)
        self.epochs = int(epochs)
        self.field_dim = pick(field_dim, "field_dim", int)
        self.layers = pick(layers, "layers", int)
        self.dropout = pick(dropout, "dropout", float)
        self.query, self.sku_init, self.delta_max = bool(query), sku_init, float(delta_max)
        self.vocab_cap = int(vocab_cap)
        self.sku_cap = None if sku_cap is None else int(sku_cap)
        self.batch_size, self.lr, self.holdout = int(batch_size), float(lr), float(holdout)
        self.full_softmax_max, self.sku_negatives, self.train_on = int(full_softmax_max), int(sku_negatives), train_on
        self.sku_updates = sku_updates
        self.max_train_clients = None if max_train_clients is None else int(max_train_clients)
        self.device, self.work_dir, self.progress = device, work_dir, bool(progress)
        self.resume = resume if resume == "auto" else bool(resume)
        self.threads = int(threads)
        self.max_batches, self.infer_batch = max_batches, int(infer_batch)

    def validate(self) -> None:
        """Every problem with the parameters, in one ValueError."""
        if self.variant not in PRESETS:
            raise ValueError(f"variant must be one of {sorted(PRESETS)}, got {self.variant!r}")
        problems = []
        for k in ("dim", "field_dim", "layers", "batch_size", "vocab_cap", "infer_batch", "sku_negatives"):
            if getattr(self, k) < 1:
                problems.append(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.max_train_clients is not None and self.max_train_clients < 2:
            problems.append(f"max_train_clients must be >= 2, got {self.max_train_clients}")
        if self.sku_cap is not None and self.sku_cap < 1:
            problems.append(f"sku_cap must be >= 1, got {self.sku_cap}")
        if self.epochs < 0:
            problems.append(f"epochs must be >= 0, got {self.epochs}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.holdout < 1.0:
            problems.append(f"holdout must be in [0, 1), got {self.holdout}")
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.delta_max <= 0:
            problems.append(f"delta_max must be > 0, got {self.delta_max}")
        if self.sku_init not in SKU_INITS:
            problems.append(f"sku_init must be one of {SKU_INITS}, got {self.sku_init!r}")
        if self.sku_updates not in SKU_UPDATES:
            problems.append(f"sku_updates must be one of {SKU_UPDATES}, got {self.sku_updates!r}")
        if self.train_on not in TRAIN_ON:
            problems.append(f"train_on must be one of {TRAIN_ON}, got {self.train_on!r}")
        if self.threads < 0:
            problems.append(f"threads must be >= 0, got {self.threads}")
        if self.max_batches is not None and self.max_batches < 1:
            problems.append(f"max_batches must be >= 1, got {self.max_batches}")
        if problems:
            raise ValueError("; ".join(problems))

    # -- building ---------------------------------------------------------------------------------------------------
    @property
    def fields(self) -> tuple[str, ...]:
        return PRESETS[self.variant].fields

    def _run_key(self, events, world: int) -> dict:
        params = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.get_params().items()
                  if k not in _NOT_IN_KEY}
        fp = training_fingerprint(events) if self.train_on == "relevant" else events.fingerprint
        return {"params": params, "fingerprint": fp, "world_size": world}

    def build_model(self, vocab: Vocab) -> GruAutoencoder:
        """A freshly initialised network for ``vocab`` (seeded by ``seed``)."""
        torch.manual_seed(self.seed)
        cfg = ModelConfig(fields=self.fields, vocab_sizes=dict(vocab.sizes), field_dim=self.field_dim,
                          combine=PRESETS[self.variant].combine, layers=self.layers, hidden=self.dim,
                          dropout=self.dropout, query=self.query, full_softmax_max=self.full_softmax_max,
                          sku_negatives=self.sku_negatives)
        table = None
        if SKU in self.fields:
            content = self.sku_init != "id"
            table = SkuTable(self.sku_init, len(vocab.skus), self.field_dim,
                             names=vocab.names if content else None,
                             seen=(vocab.catalogue_counts > 0) if content else None,
                             delta_max=self.delta_max, seed=self.seed)
            # the update mode follows the table's own trainable rows (none in id and content-frozen modes)
            table.sparse_rows = sparse_rows(self.sku_updates, 0 if table.delta is None else len(table.delta))
        return GruAutoencoder(cfg, table)

    def _train_rows(self, events) -> np.ndarray:
        """Table rows to train on (sorted): ``train_on``'s clients, cut to a seeded ``max_train_clients``."""
        if self.train_on == "all":
            rows = np.arange(events.n_clients, dtype=np.int64)
        elif events.data_dir is None:
            raise ValueError("train_on='relevant' needs an event table opened with its data directory")
        else:
            rows = events.rows_of(read_relevant_clients(events.data_dir))
            rows = np.unique(rows[rows >= 0])
        if self.max_train_clients is None:
            return rows
        return cap_clients(rows, self.max_train_clients, self.seed, "the gru_ae embedder")

    # -- training ---------------------------------------------------------------------------------------------------
    def _fit(self, events) -> "GruAE":
        """Split off the held-out clients, tokenize, build (or resume) the model, train epoch by epoch keeping
        checkpoints, then keep the best epoch's weights."""
        rank, world = dist_info()
        device = resolve_device(self.device)
        train_rows, val_rows = self._holdout_split(self._train_rows(events))
        self.vocab_ = Vocab.fit(events, train_rows, self.fields, self.query,
                                "id" if self.sku_init == "id" else "catalogue", self.vocab_cap, self.sku_cap)
        train_tok = tokenize(events, self.vocab_, train_rows)
        val_tok = tokenize(events, self.vocab_, val_rows)
        self.n_train_, self.n_holdout_ = int(len(train_rows)), int(len(val_rows))
        self.holdout_rows_ = val_rows

        model = self.build_model(self.vocab_).to(device)
        opt = RowSparseAdam(model.parameters(), model.sku.sparse_parameters if model.sku is not None else [], self.lr)
        work = self._work_dir()
        key = self._run_key(events, world)
        start_epoch, best, best_epoch, history = resume_training(work / "last.pt", key, model, opt, device,
                                                                 self.resume, self.epochs, self._log)
        net = wrap_ddp(model, device)
        qcodes = events.query_codes if self.query else None
        for epoch in range(start_epoch, self.epochs):
            t0 = time.perf_counter()
            train_loss, n_batches, n_events = self._train_epoch(net, model, opt, train_tok, qcodes, device, epoch,
                                                                rank, world)
            train_seconds = time.perf_counter() - t0
            val_loss = self._heldout_loss(model, val_tok, qcodes, device, rank, world) if len(val_tok) else train_loss
            seconds = time.perf_counter() - t0
            improved = val_loss < best
            if improved:
                best, best_epoch = val_loss, epoch + 1
            history.append({"epoch": epoch + 1, "train_loss": round(train_loss, 5), "heldout_loss": round(val_loss, 5),
                            "seconds": round(seconds, 2), "train_seconds": round(train_seconds, 2),
                            "batches": n_batches, "events": n_events * world,
                            "events_per_second": round(n_events * world / max(train_seconds, 1e-9), 1)})
            if rank == 0:  # torch's RNG too, as gru_ae's checkpoints always held it
                save_epoch(work, model, opt, key, epoch, val_loss if improved else None, best, best_epoch, history,
                           rng=True)
            self._log(f"epoch {epoch + 1}/{self.epochs}: train {train_loss:.4f}  held-out {val_loss:.4f}"
                      f"{'  (best)' if improved else ''}  {seconds:.1f}s  "
                      f"{history[-1]['events_per_second']:,.0f} events/s")
        (work / f"weights_rank{rank}.sha256").write_text(state_hash(model) + "\n")  # the last epoch's weights
        if rank == 0:
            load_best(model, work, device, best_epoch)
        self._keep_fitted(model, device, history, best, best_epoch)
        return self

    def _holdout_split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(training rows, held-out rows), both sorted: a seeded ``holdout`` share of ``rows`` (at least one
        when holding out and there are two rows or more; never all)."""
        if len(rows) == 0:
            raise ValueError("no training clients with events (check relevant_clients.npy and the event files)")
        perm = np.random.default_rng(self.seed).permutation(rows)
        n_val = min(int(round(self.holdout * len(rows))), len(rows) - 1) if self.holdout > 0 else 0
        n_val = max(n_val, 1) if (self.holdout > 0 and len(rows) >= 2) else n_val
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    def _train_epoch(self, net, model, opt, train_tok: Tokens, qcodes, device, epoch: int, rank: int,
                     world: int) -> tuple[float, int, int]:
        """One epoch over this rank's share of length-bucketed batches (seeded by seed, epoch and rank):
        (mean training loss per batch, batches, events trained per rank)."""
        batches, gen = epoch_batches(train_tok.lengths, self.batch_size, self.seed, epoch, rank, world,
                                     self.max_batches)

        def loss_of(grids, lengths):
            return net(*batch_tensors(grids, lengths, qcodes, device), gen)

        loss, n_events = train_epoch(net, opt, train_tok, batches, loss_of, model.sku,
                                     f"gru_ae epoch {epoch + 1}/{self.epochs}", self.progress and rank == 0, world)
        if world > 1:  # events trained by all ranks; per-rank mean, the history multiplies by world
            n_events = int(all_reduce_sum(torch.tensor([n_events], dtype=torch.float64), device).item()) // world
        return loss, len(batches), n_events

    def _log(self, msg: str) -> None:
        """One line on stderr from rank 0, with progress off too (gru_ae's epoch lines always showed)."""
        if dist_info()[0] == 0:
            print(f"gru_ae: {msg}", file=sys.stderr, flush=True)

    @torch.no_grad()
    def _heldout_loss(self, model, tokens: Tokens, qcodes, device, rank: int, world: int) -> float:
        """Sum over fields of the token-weighted mean cross-entropy on the held-out clients (all ranks)."""
        model.eval()
        names = list(model.cfg.fields) + (["query"] if model.cfg.query else [])
        sums = torch.zeros(2 * len(names), dtype=torch.float64)
        order = np.argsort(tokens.lengths, kind="stable")
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        gen = torch.Generator().manual_seed(seed_of(self.seed, 3))  # sku negatives, if sampled: fixed
        for idx in batches[rank::world]:
            grids, lengths = tokens.batch(idx)
            batch, lens = batch_tensors(grids, lengths, qcodes, device)
            parts = model.losses(batch, lens, gen)
            for j, f in enumerate(names):
                s, n = parts[f]
                sums[2 * j] += float(s)
                sums[2 * j + 1] += n
        sums = all_reduce_sum(sums, device)
        return float(sum(sums[2 * j] / max(sums[2 * j + 1], 1) for j in range(len(names))))

    # -- inference --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_rows(self, events, rows: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """User vectors float32 ``(len(rows), dim)`` for event-table rows (-1: a client without events, which gets
        the vector of the empty sequence [start, end])."""
        tokens = tokenize(events, self.vocab_, rows)
        model = self.model_.eval()
        qcodes = events.query_codes if self.query else None
        out = np.zeros((len(tokens), self.dim), dtype=np.float32)
        order = np.argsort(tokens.lengths, kind="stable")
        bs = batch_size or self.infer_batch
        starts = range(0, len(order), bs)

        def encode(i: int) -> np.ndarray:
            with torch.no_grad():  # grad mode is per thread
                batch, lens = batch_tensors(*tokens.batch(order[i:i + bs]), qcodes, self.device_)
                return model.user_vectors(batch, lens).float().cpu().numpy()

        # On a CPU with one torch thread, batches run side by side in a thread per free core (the GRU's loop over
        # time leaves the GIL): each batch is still computed by one thread, so the bytes do not change.
        side_by_side = self.device_.type == "cpu" and torch.get_num_threads() == 1
        done = map_chunks(encode, starts, threads=None if side_by_side else 1)
        for i in progress_of(starts, desc="gru_ae embed", unit="batch", enabled=self.progress, leave=False):
            out[order[i:i + bs]] = next(done)
        return out

    def transform(self, events, client_ids: np.ndarray) -> Block:
        """Block for ``client_ids`` (rank 0; other ranks of a torchrun job return an empty block)."""
        with self.threads_limit():
            return self._transform(events, client_ids)

    def _transform(self, events, client_ids: np.ndarray) -> Block:
        rank, _ = dist_info()
        client_ids = np.asarray(client_ids, dtype=np.int64)
        if rank != 0:
            return Block(np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32), {"name": self.name})
        rows = events.rows_of(client_ids)
        vectors = self.encode_rows(events, rows)
        meta = {"name": self.name, "variant": self.variant, "history": self.history_, "best_epoch": self.best_epoch_,
                "best_heldout_loss": self.best_loss_, "n_train_clients": self.n_train_,
                "n_holdout_clients": self.n_holdout_, "clients_without_events": int((rows < 0).sum()),
                "vocab_sizes": self.vocab_.sizes, "n_parameters": sum(p.numel() for p in self.model_.parameters())}
        return Block(client_ids, vectors, meta)


__all__ = ["GruAE", "length_batches", "shard", "state_hash", "resolve_device", "dist_info", "TRAIN_ON"]
