"""Training and inference of the multitask network: the :class:`MultiTaskEmbedder`.

- Windows: :func:`embedders.multitask.windows.anchor_times` cuts ``windows`` anchors back from the event table's
  end; each anchor's features come from :meth:`competition.events.EventTable.before` (events before it only) and
  its labels from the 14 days after it. ``target/`` is never read, nor any event at or after the table's end.
- Clients: the relevant clients with events (``input/relevant_clients.npy``; every client of the table when the
  table has no data directory), optionally a seeded sample of ``max_train_clients``. A seeded ``holdout`` share of
  them is kept apart, in every window, to pick the best epoch by held-out loss (the weighted sum of the six
  tasks' mean binary cross-entropies).
- Batches hold one window each (its target entries are the heads' outputs); every window's clients are shuffled
  and cut into batches, and the batch order is shuffled, from a generator seeded by ``(seed, epoch)``.
- Checkpoints in ``work_dir``: ``last.pt`` after every epoch, ``best.pt`` when the held-out loss improves;
  ``resume=True`` continues from ``last.pt`` (a checkpoint of other params or input is refused). Inputs are
  rebuilt on resume (deterministic), the weights and optimiser state are restored.
- Data parallel under ``torchrun`` through :mod:`embedders.distributed`: each rank trains its shard of the batch
  list; rank 0 writes checkpoints and embeds.
- The block: the bottleneck of every requested client, from its whole history up to the table's end.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from competition.progress import progress as progress_of

from competition.load import read_relevant_clients
from competition.schema import (BLOCK_META_FILE, CHURN, CONVERSION, PROPENSITY_CATEGORY, PROPENSITY_NEW_SKU,
                                PROPENSITY_PRICE, PROPENSITY_SKU, SKU, TARGET_WINDOW_DAYS, TASKS)
from embedders.base import Block
from embedders.distributed import dist_info, resolve_device, shard, wrap_ddp
from embedders.gru_ae.model import batch_tensors
from embedders.gru_ae.sku_table import SkuTable
from embedders.gru_ae.tokens import Vocab, tokenize
from embedders.checkpoints import load_best, resume_training, save_epoch
from embedders.training import (TorchEmbedder, adamw, cap_clients, check_positive_ints, holdout_split, length_batches,
                                progress_bar, seed_of, training_fingerprint)
from embedders.multitask.inputs import BlockInputs, parse_input, same_rows
from embedders.multitask.model import EXPORTS, INPUTS, Catalogue, MultiTaskNet, NetConfig, task_losses
from embedders.multitask.windows import WindowLabels, anchor_times, windows_labels
from embedders.quantile import quantile_transform

DEFAULT_INPUTS: tuple[str, ...] = ("stats", "tfidf_svd")
DEFAULT_FIELDS: tuple[str, ...] = ("event_type", "category", "price", "sku", "age")
#: Parameters that may differ between a run and its resumption (more epochs continue a shorter run; what is
#: exported does not change training).
_NOT_IN_KEY = frozenset({"epochs", "resume", "progress", "device", "work_dir", "infer_batch", "export"})
_SHORT = {CHURN: "churn", CONVERSION: "conv", PROPENSITY_CATEGORY: "cat", PROPENSITY_SKU: "sku",
          PROPENSITY_NEW_SKU: "new", PROPENSITY_PRICE: "price"}


def parse_loss_weights(weights: str | dict[str, float] | None) -> dict[str, float]:
    """Per-task loss weights (default 1 each) from ``{"task": w}`` or ``"task=w,task=w"``."""
    if weights is None or weights == "":
        given: dict[str, Any] = {}
    elif isinstance(weights, str):
        given = {}
        for item in filter(None, (w.strip() for w in weights.split(","))):
            task, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"loss weight {item!r} is not task=weight")
            given[task.strip()] = value
    else:
        given = dict(weights)
    unknown = sorted(set(given) - set(TASKS))
    if unknown:
        raise ValueError(f"loss weights for unknown task(s) {unknown}; tasks are {list(TASKS)}")
    try:
        out = {t: float(given.get(t, 1.0)) for t in TASKS}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"loss weights must be numbers: {given}") from exc
    if any(w < 0 or not math.isfinite(w) for w in out.values()) or not any(out.values()):
        raise ValueError(f"loss weights must be finite, >= 0 and not all 0: {out}")
    return out


class MultiTaskEmbedder(TorchEmbedder):
    """Supervised multi-task embedder trained on shifted windows; the block is the network's bottleneck.

    Parameters
    ----------
    dim : int
        the bottleneck's width (the block's with export=bottleneck)
    seed : int
        weights, windows' samples, held-out clients and the input embedders
    input : str
        blocks: stack ``inputs`` (see :mod:`embedders.multitask.inputs`); sequence: a GRU over the last 126
        events' ``fields``
    inputs : tuple | str
        input blocks of --input blocks, like spec entries: a registered name or module:Class, params after '@'
        (refit=true|false: fit at every anchor, or once before the first)
    windows : int
        training windows (anchors)
    horizon_days : int
        label window after each anchor
    stride_days : int
        days between anchors
    epochs : int
        training epochs (the best by held-out loss is kept)
    batch_size : int
        clients per batch (per rank under torchrun)
    lr : float
        AdamW learning rate
    weight_decay : float
        AdamW weight decay
    thin, wide : int
        trunk widths (the organisers' MLP: 2048 4096, a GPU size)
    residual_blocks : int
        residual blocks of the trunk (organisers': 3)
    item_dim : int
        item vector width of the category / sku / new-sku heads
    dropout : float
        dropout in the trunk (after the stem, in each block)
    loss_weights : str | dict | None
        per-task loss weights (default 1 each), e.g. propensity_sku=2,churn=0.5 (or a dict)
    holdout : float
        share of clients held out to pick the best epoch
    max_train_clients : int | None
        train on a seeded sample of this many clients (default: every relevant client); the windows' cut tables
        then hold the sample's events alone, so the inputs (stats, tfidf_svd) are fitted on the sample too
    fields : tuple | str
        --input sequence: token fields
    field_dim : int
        --input sequence: embedding width per field
    gru_hidden : int
        --input sequence: GRU hidden size
    gru_layers : int
        --input sequence: GRU layers
    delta_max : float
        --input sequence: largest L2 norm of a sku row's delta from its name-code vector (as gru_ae's content)
    device : str
        auto: CUDA when present, else CPU
    threads : int
        CPU threads per process (0: torch's default; cores / K under torchrun); recorded in meta, as the same
        threads give the same bytes (:mod:`embedders.threads`)
    work_dir : str | None
        checkpoints and the input embedders' files (default: <out>.work)
    resume : bool | str
        continue from <work-dir>/last.pt (same flags and input); "auto" (pack's): continue it when it is this
        run's checkpoint, else start afresh (:mod:`embedders.checkpoints`)
    progress : bool
        progress bars and one line per epoch on stderr
    infer_batch : int
        clients per batch when embedding
    export : str
        the block's columns: bottleneck (dim columns, the layer the trunk reads) or heads (the heads' client side:
        churn and conversion logits, 100 price-bucket logits, the category / sku / new-sku query vectors; 2 + 100 +
        3 x item_dim columns). Does not change training

    Fitted attributes: ``anchors_`` (s, latest first), ``catalogue_``, ``model_``, ``inputs_`` (blocks) or
    ``vocab_`` (sequence), ``normaliser_`` (blocks), ``history_``, ``best_epoch_``, ``n_train_``, ``n_holdout_``,
    ``trained_by_`` (the work folder of a prebuilt twin whose weights were read instead of training, or None).
    """

    name = "multitask"
    unknown_sku_note = ("as its inputs treat them (stacked blocks such as stats and tfidf_svd; with the sequence "
                        "input: category and price the missing token, sku the other token)")
    supervised = True  # trained on shifted-window labels of the six tasks
    work_dir_holds = "checkpoints and input models are written there"
    #: submit.pack may pass ``resume="auto"`` (continue an interrupted build from its checkpoint).
    resumable = True
    #: Folders of blocks already built for the same events (:meth:`use_prebuilt`); private, so not a param.
    _prebuilt: tuple = ()
    #: The prebuilt block whose training this one reads (:meth:`_trained_twin`); private, so not a param.
    _twin_folder: str | None = None

    @classmethod
    def transform_for(cls, params) -> str:
        """"quantile" for the heads export (logits and query coordinates, each column on its own scale, like
        statistics), "l2" for the bottleneck."""
        return "quantile" if (params or {}).get("export") == "heads" else cls.ensemble_transform

    def use_prebuilt(self, folders) -> "MultiTaskEmbedder":
        """Let a refitted input at the period's end that is one of the blocks in ``folders`` be read, not built again
        (:func:`.inputs.reusable_block` decides: the same bytes). ``submit.build`` calls it with the blocks of the
        spec built so far. Not a constructor parameter: it changes the work, never the block."""
        self._prebuilt = tuple(str(f) for f in folders)
        return self

    def __init__(self, dim: int = 256, seed: int = 0, input: str = "blocks",
                 inputs: tuple[str, ...] | list | str = DEFAULT_INPUTS, windows: int = 4,
                 horizon_days: int = TARGET_WINDOW_DAYS, stride_days: int = TARGET_WINDOW_DAYS, epochs: int = 8,
                 batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.01, thin: int = 512,
                 wide: int = 1024, residual_blocks: int = 2, item_dim: int = 64, dropout: float = 0.2,
                 loss_weights: str | dict | None = None, holdout: float = 0.1, max_train_clients: int | None = None,
                 fields: tuple[str, ...] | str = DEFAULT_FIELDS, field_dim: int = 32, gru_hidden: int = 128,
                 gru_layers: int = 1, delta_max: float = 0.5, device: str = "auto", threads: int = 2,
                 work_dir: str | None = None, resume: bool | str = False, progress: bool = True,
                 infer_batch: int = 2048, export: str = "bottleneck"):
        self.dim = dim
        self.seed = seed
        self.input = input
        self.inputs = inputs
        self.windows = windows
        self.horizon_days = horizon_days
        self.stride_days = stride_days
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.thin = thin
        self.wide = wide
        self.residual_blocks = residual_blocks
        self.item_dim = item_dim
        self.dropout = dropout
        self.loss_weights = loss_weights
        self.holdout = holdout
        self.max_train_clients = max_train_clients
        self.fields = fields
        self.field_dim = field_dim
        self.gru_hidden = gru_hidden
        self.gru_layers = gru_layers
        self.delta_max = delta_max
        self.device = device
        self.threads = threads
        self.work_dir = work_dir
        self.resume = resume
        self.progress = progress
        self.infer_batch = infer_batch
        self.export = export

    # -- validation -------------------------------------------------------------------------------------------------
    def input_specs(self):
        items = self.inputs.split() if isinstance(self.inputs, str) else list(self.inputs)
        return [parse_input(x) for x in items]

    def field_names(self) -> tuple[str, ...]:
        return tuple(f.strip() for f in self.fields.split(",")) if isinstance(self.fields, str) else tuple(self.fields)

    def validate(self) -> None:
        """Raise ValueError naming the first bad parameter."""
        if self.input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {self.input!r}")
        if self.export not in EXPORTS:
            raise ValueError(f"export must be one of {EXPORTS}, got {self.export!r}")
        positive = {"dim": self.dim, "windows": self.windows, "horizon_days": self.horizon_days,
                    "stride_days": self.stride_days, "epochs": self.epochs, "batch_size": self.batch_size,
                    "thin": self.thin, "wide": self.wide, "item_dim": self.item_dim, "field_dim": self.field_dim,
                    "gru_hidden": self.gru_hidden, "gru_layers": self.gru_layers, "infer_batch": self.infer_batch}
        check_positive_ints(positive)
        if self.residual_blocks < 0:
            raise ValueError(f"residual_blocks must be >= 0, got {self.residual_blocks}")
        if not (0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.validate_loop()
        parse_loss_weights(self.loss_weights)
        if self.input == "blocks":
            if not self.input_specs():
                raise ValueError("input='blocks' needs at least one input block (inputs)")
            if any(s.embedder == self.name for s in self.input_specs()):
                raise ValueError("a multitask block cannot stack another multitask block")
        else:
            from embedders.gru_ae.tokens import TOKEN_FIELDS
            bad = sorted(set(self.field_names()) - set(TOKEN_FIELDS)) or (["(none)"] if not self.field_names() else [])
            if bad:
                raise ValueError(f"unknown sequence field(s) {bad}; known: {list(TOKEN_FIELDS)}")

    # -- helpers ----------------------------------------------------------------------------------------------------
    def _train_clients(self, events) -> np.ndarray:
        ids = np.asarray(events.client_ids, dtype=np.int64)
        if events.data_dir is not None:
            relevant = read_relevant_clients(events.data_dir)
            ids = np.sort(relevant[events.rows_of(relevant) >= 0])
        return cap_clients(ids, self.max_train_clients, self.seed, "the multitask embedder")

    def _features(self, table, client_ids: np.ndarray, fit: bool = False):
        """The network's input for ``client_ids`` from a cut table: a float32 matrix (blocks, normalised once the
        normaliser is fitted) or token grids (sequence)."""
        if self.input == "blocks":
            if fit:
                self.inputs_ = BlockInputs(self.input_specs(), self.seed, self.progress,
                                           Path(self.work_dir) / "inputs", self._prebuilt).fit(table)
            X = self.inputs_.matrix(table, client_ids)
            return X if getattr(self, "normaliser_", None) is None else self._normalise(X)
        if fit:
            self.vocab_ = Vocab.fit(table, np.flatnonzero(table.lengths > 0), self.field_names())
        return tokenize(table, self.vocab_, table.rows_of(client_ids))

    def _normalise(self, X: np.ndarray) -> np.ndarray:
        return quantile_transform(self.normaliser_, X).astype(np.float32, copy=False)  # == .transform(X)

    def _entries(self, w: WindowLabels, device) -> dict[str, Any]:
        cat = self.catalogue_
        t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.int64)).to(device)  # noqa: E731
        sku = w.entries[PROPENSITY_SKU]
        return {PROPENSITY_CATEGORY: t(np.maximum(cat.category_index(w.entries[PROPENSITY_CATEGORY]), 0)),
                PROPENSITY_SKU: (t(cat.sku_rows(sku)), t(cat.target_index(sku))),
                PROPENSITY_NEW_SKU: t(cat.sku_rows(w.entries[PROPENSITY_NEW_SKU])),
                PROPENSITY_PRICE: t(np.clip(w.entries[PROPENSITY_PRICE], 0, 99))}

    def _batch(self, feats, idx: np.ndarray, device):
        if self.input == "blocks":
            return torch.from_numpy(np.ascontiguousarray(feats[idx])).to(device)
        grids, lengths = feats.batch(idx)
        return batch_tensors(grids, lengths, None, device)

    @staticmethod
    def _labels(w: WindowLabels, idx: np.ndarray, device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        f = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32)).to(device)  # noqa: E731
        labels = {CHURN: f(w.no_buy[idx]), CONVERSION: f(w.no_buy[idx])}
        labels.update({t: f(w.labels[t][idx]) for t in w.labels})
        return labels, torch.from_numpy(w.active[idx]).to(device)

    def _build_model(self, device) -> MultiTaskNet:
        torch.manual_seed(self.seed)
        cfg = NetConfig(input=self.input, dim=self.dim, thin=self.thin, wide=self.wide,
                        residual_blocks=self.residual_blocks, item_dim=self.item_dim, dropout=self.dropout)
        sku_table = None
        if self.input == "blocks":
            cfg.in_dim = int(sum(self.inputs_.widths_))
        else:
            v = self.vocab_
            cfg.fields, cfg.vocab_sizes = self.field_names(), dict(v.sizes)
            cfg.field_dim, cfg.gru_hidden, cfg.gru_layers = self.field_dim, self.gru_hidden, self.gru_layers
            if SKU in cfg.fields:
                sku_table = SkuTable("content", len(v.skus), self.field_dim, names=v.names,
                                     seen=v.catalogue_counts > 0, delta_max=self.delta_max, seed=self.seed)
        self.config_ = cfg
        return MultiTaskNet(cfg, self.catalogue_, sku_table).to(device)

    # -- training ---------------------------------------------------------------------------------------------------
    def _fit(self, events) -> "MultiTaskEmbedder":
        """Cut the windows, build inputs and labels, train; keeps the best epoch's weights."""
        rank, world = dist_info()
        device = resolve_device(self.device)
        work = self._work_dir()
        weights = parse_loss_weights(self.loss_weights)
        t0 = time.perf_counter()
        self.anchors_ = anchor_times(events, self.windows, self.horizon_days, self.stride_days)
        ids = self._train_clients(events)
        self.normaliser_ = None
        feats = []
        labels = windows_labels(events, sorted(self.anchors_), ids, self.horizon_days)  # one pass for all windows
        for j, anchor in enumerate(sorted(self.anchors_)):  # earliest first: it fits the inputs' models
            # on a training sample the cuts hold its clients' events alone (the inputs are then fitted on them):
            # a whole cut at 1M clients is ~9 GB of memory, a 50k sample's a few hundred MB
            table = events.before(anchor, client_ids=None if self.max_train_clients is None else ids)
            feats.append(self._features(table, ids, fit=(j == 0)))
            del table
            self._log(f"window {j + 1}/{len(self.anchors_)} (anchor {time.strftime('%Y-%m-%d', time.gmtime(anchor))})"
                      f": {int((labels[j].no_buy == 0).sum()):,} of {len(ids):,} clients buy")
        feats, labels = feats[::-1], labels[::-1]  # latest first, as anchors_
        if self.input == "blocks":
            self._fit_normaliser(feats)
            feats = [self._normalise(X) for X in feats]
        target_skus = np.concatenate([w.entries[t] for w in labels for t in (PROPENSITY_SKU, PROPENSITY_NEW_SKU)])
        self.catalogue_ = Catalogue.from_products(events.products, target_skus)
        self.inputs_seconds_ = round(time.perf_counter() - t0, 2)

        train, val = holdout_split(np.arange(len(ids)), self.holdout, self.seed)  # positions in ids
        self.n_train_, self.n_holdout_ = int(len(train)), int(len(val))

        model = self._build_model(device)
        opt = adamw(model, self.lr, self.weight_decay)
        entries = [self._entries(w, device) for w in labels]
        key = self._run_key(events)
        # a prebuilt twin (the same training, another export) has the weights already: read them, train nothing
        self.trained_by_ = self._trained_twin(key, device)
        source = Path(self.trained_by_) if self.trained_by_ else work
        start_epoch, best, best_epoch, history = resume_training(source / "last.pt", key, model, opt, device,
                                                                 True if self.trained_by_ else self.resume,
                                                                 self.epochs, self._log)
        net = wrap_ddp(model, device)
        for epoch in range(start_epoch, self.epochs):
            e0 = time.perf_counter()
            torch.manual_seed(seed_of(self.seed, epoch, rank, 1))
            erng = np.random.default_rng([self.seed, epoch])
            batches = [(j, chunk) for j in range(len(labels)) for chunk in self._window_batches(feats[j], train, erng)]
            batches = shard([batches[i] for i in erng.permutation(len(batches))], rank, world)
            net.train()
            sums = {t: 0.0 for t in TASKS}
            bar = progress_bar(batches, f"multitask epoch {epoch + 1}/{self.epochs}", self.progress and rank == 0)
            for i, (j, idx) in enumerate(bar):
                y, active = self._labels(labels[j], idx, device)
                parts = task_losses(net(self._batch(feats[j], idx, device), entries[j]), y, active)
                loss = sum(weights[t] * parts[t] for t in TASKS)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if model.encoder is not None and model.encoder.sku is not None:
                    model.encoder.sku.clip_()
                for t in TASKS:
                    sums[t] += float(parts[t].detach())
                if i % 20 == 0 or i == len(batches) - 1:
                    bar.set_postfix({_SHORT[t]: f"{sums[t] / (i + 1):.3f}" for t in TASKS})
            bar.close()
            train_parts = {t: sums[t] / max(len(batches), 1) for t in TASKS}
            val_parts = self._heldout(model, feats, labels, entries, val, device) if len(val) else train_parts
            val_loss = sum(weights[t] * val_parts[t] for t in TASKS)
            improved = val_loss < best
            if improved:
                best, best_epoch = val_loss, epoch + 1
            history.append({"epoch": epoch + 1, "train_loss": round(sum(weights[t] * train_parts[t] for t in TASKS), 5),
                            "heldout_loss": round(val_loss, 5),
                            "heldout": {t: round(v, 5) for t, v in val_parts.items()},
                            "batches": len(batches), "seconds": round(time.perf_counter() - e0, 2)})
            if rank == 0:
                save_epoch(work, model, opt, key, epoch, val_loss if improved else None, best, best_epoch, history)
            self._log(f"epoch {epoch + 1}/{self.epochs}: train {history[-1]['train_loss']:.4f}  held-out "
                      f"{val_loss:.4f}{'  (best)' if improved else ''}  {history[-1]['seconds']:.1f}s")
        load_best(model, source, device, best_epoch)
        self._keep_fitted(model, device, history, best, best_epoch)
        return self

    def _trained_twin(self, key: dict, device) -> str | None:
        """The work folder of a prebuilt multitask block (:meth:`use_prebuilt`) that ran this very training to its
        end: its checkpoint has this run's key (params but ``export``, events, anchors, ranks) and all ``epochs``.
        Training is deterministic, so its best weights are what training here would give; None when there is none
        (or under torchrun, where every rank would have to agree)."""
        self._twin_folder = None
        if dist_info()[1] > 1:
            return None
        for folder in self._prebuilt:
            try:
                meta = json.loads((Path(folder) / BLOCK_META_FILE).read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(meta, dict):
                continue
            work = (meta.get("params") or {}).get("work_dir")
            if meta.get("embedder") != self.name or not work or Path(work) == Path(self.work_dir):
                continue
            last = Path(work) / "last.pt"
            try:
                ck = torch.load(last, map_location=device, weights_only=False) if last.is_file() else None
            except Exception:  # a truncated or foreign file: not a twin
                ck = None
            if ck is not None and ck.get("key") == key and ck.get("epoch") == self.epochs \
                    and (ck.get("best_epoch", -1) < 1 or (Path(work) / "best.pt").is_file()):
                export = meta["params"].get("export", "bottleneck")
                self._log(f"weights of {folder} (the same training, export {export}): not trained again")
                self._twin_folder = str(folder)
                return str(work)
        return None

    def _twin_bottleneck(self, events, client_ids: np.ndarray) -> np.ndarray | None:
        """The bottleneck of ``client_ids`` read from the twin block whose weights this embedder uses
        (:meth:`_trained_twin`), when that block embedded the same events for exactly these clients (float32, as
        built); else None. The heads are a function of the bottleneck, so their inputs need not be built again."""
        if not self.trained_by_ or not self._twin_folder:
            return None
        from embedders.base import BlockError, read_block
        try:
            block = read_block(self._twin_folder, mmap=True)
        except (BlockError, OSError, ValueError):
            return None
        if block.meta.get("export", "bottleneck") != "bottleneck":
            return None
        return same_rows(block, events, client_ids)

    def _window_batches(self, feats, train: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """One window's training rows cut into batches: shuffled (blocks), or of similar length (sequence: sorted by
        length with a random tie-break, so a batch is cut to its longest sequence)."""
        if self.input == "sequence":
            return [train[b] for b in length_batches(feats.lengths[train], self.batch_size, rng)]
        return np.array_split(rng.permutation(train), max(1, -(-len(train) // self.batch_size)))

    def _fit_normaliser(self, feats: list[np.ndarray]) -> None:
        """Quantile map of every input column to a standard normal, fitted on a seeded sample of all windows'
        rows (counts and learnt axes alike become comparable, bounded inputs)."""
        from sklearn.preprocessing import QuantileTransformer
        X = np.concatenate(feats)
        rng = np.random.default_rng([self.seed, 13])
        sample = X[np.sort(rng.choice(len(X), size=min(len(X), 100_000), replace=False))]
        self.normaliser_ = QuantileTransformer(n_quantiles=min(1000, len(sample)), output_distribution="normal",
                                               subsample=len(sample), random_state=self.seed).fit(sample)

    def _run_key(self, events) -> dict:
        params = {k: v for k, v in self.get_params().items() if k not in _NOT_IN_KEY}
        return {"params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()},
                "fingerprint": training_fingerprint(events), "anchors": list(self.anchors_), "world": dist_info()[1]}

    @torch.no_grad()
    def _heldout(self, model, feats, labels, entries, val: np.ndarray, device) -> dict[str, float]:
        """Mean over windows of each task's loss on the held-out clients."""
        model.eval()
        sums = {t: 0.0 for t in TASKS}
        for j in range(len(labels)):
            for idx in np.array_split(val, max(1, -(-len(val) // self.infer_batch))):
                y, active = self._labels(labels[j], idx, device)
                parts = task_losses(model(self._batch(feats[j], idx, device), entries[j]), y, active)
                for t in TASKS:
                    sums[t] += float(parts[t]) * len(idx) / len(val)
        return {t: v / len(labels) for t, v in sums.items()}

    @property
    def width_(self) -> int:
        """The block's columns (:meth:`MultiTaskNet.export_width` of ``export``)."""
        return MultiTaskNet.export_width(self.config_, self.export)

    # -- inference --------------------------------------------------------------------------------------------------
    def transform(self, events, client_ids: np.ndarray) -> Block:
        """The export, float32 ``(len(client_ids), width_)`` (the bottleneck: ``dim`` columns; the heads: 2 + 100 +
        3 ``item_dim``), from each client's history up to the table's end (rank 0; other ranks of a torchrun job
        return an empty block). A client without events gets the vector of an empty history."""
        client_ids = np.asarray(client_ids, dtype=np.int64)
        if dist_info()[0] != 0:
            return Block(np.zeros(0, np.int64), np.zeros((0, self.width_), np.float32), {"name": self.name})
        with torch.no_grad(), self.threads_limit():
            return self._transform(events, client_ids)

    def _transform(self, events, client_ids: np.ndarray) -> Block:
        model = self.model_.eval()
        z = self._twin_bottleneck(events, client_ids) if self.export == "heads" else None
        reused = z is not None
        if z is None:
            feats = self._features(events, client_ids)
            order = np.argsort(feats.lengths, kind="stable") if self.input == "sequence" \
                else np.arange(len(client_ids))
            z = np.zeros((len(client_ids), self.dim), dtype=np.float32)
            for i in progress_of(range(0, len(order), self.infer_batch), desc="multitask embed", unit="batch",
                                 enabled=self.progress, leave=False):
                idx = order[i:i + self.infer_batch]
                z[idx] = model.embed(self._batch(feats, idx, self.device_)).float().cpu().numpy()
        out = z
        if self.export == "heads":  # the heads of the bottleneck, in fixed batches: the same bytes however z came
            out = np.zeros((len(client_ids), self.width_), dtype=np.float32)
            for lo in range(0, len(client_ids), self.infer_batch):
                zb = torch.from_numpy(z[lo:lo + self.infer_batch]).to(self.device_)
                out[lo:lo + self.infer_batch] = model.heads(zb).float().cpu().numpy()
        meta = {"name": self.name, "input": self.input, "export": self.export, "anchors": list(self.anchors_),
                "inputs": [s.to_dict() for s in self.input_specs()] if self.input == "blocks" else None,
                "reused_inputs": list(self.inputs_.reused_) if self.input == "blocks" and not reused else None,
                "trained_by": self.trained_by_,
                "bottleneck_from": self._twin_folder if reused else None,
                "history": self.history_, "best_epoch": self.best_epoch_, "best_heldout_loss": self.best_loss_,
                "n_train_clients": self.n_train_, "n_holdout_clients": self.n_holdout_,
                "inputs_seconds": self.inputs_seconds_, "config": self.config_.to_dict(),
                "clients_without_events": int((events.rows_of(client_ids) < 0).sum()),
                "n_parameters": sum(p.numel() for p in self.model_.parameters())}
        return Block(client_ids, out, meta)


__all__ = ["MultiTaskEmbedder", "parse_loss_weights", "DEFAULT_INPUTS", "DEFAULT_FIELDS"]
