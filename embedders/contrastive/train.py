"""The :class:`ContrastiveEmbedder`: CoLES-style training on the shared sequence loop of
:class:`embedders.next_event.train.SequenceEmbedder` (clients, vocabulary, batches, checkpoints, DDP, inference).

Each batch of B clients becomes B x ``n_splits`` slices (:func:`random_slices`): for every client and split a
contiguous run of its last events, of a length drawn uniformly in ``[min_len, max_len]`` (at most the client's
events) at a uniform start, wrapped as ``[start, ..., end]`` like a whole history. The encoder
(:mod:`embedders.contrastive.model`) embeds all slices in one forward pass; slices of the same client are positives,
every other slice of the batch a negative. The block is the encoder's output on each client's whole history (its
last 126 events), so a client is placed where its own sub-sequences are.

pytorch-lifestream (the CoLES authors' library) is not used: ``pip install --dry-run pytorch-lifestream`` in a
fresh venv over this environment would add 56 packages (pytorch-lightning, transformers, spacy, dask, duckdb,
hydra ...), not another torch, but a Lightning training loop that our DDP helper, thread policy and byte-for-byte
determinism do not drive. The sampler and the two losses are a few dozen lines here (docs/new_blocks.md).
"""
from __future__ import annotations

import numpy as np
import torch

from embedders.contrastive.model import ENCODERS, LOSSES, EncoderConfig, SequenceEncoder, info_nce, margin_loss
from embedders.gru_ae.model import batch_tensors
from embedders.gru_ae.tokens import END, PAD, START
from embedders.next_event.inputs import DEFAULT_FIELDS
from embedders.next_event.train import SequenceEmbedder
from embedders.training import check_positive_ints


def random_slices(grids: dict[str, np.ndarray], lengths: np.ndarray, n_splits: int, min_len: int, max_len: int,
                  rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """``n_splits`` random contiguous slices of every row of ``[start, e_1..e_k, end]`` grids (``lengths`` = k + 2).

    Returns (grids ``(B * n_splits, L + 2)``, lengths ``(B * n_splits,)``, labels: the row of each slice), slices
    of row ``i`` at ``i * n_splits ...``. A slice has ``l ~ U[min(min_len, k), min(max_len, k)]`` events from a
    uniform start; a row without events gives ``[start, end]``."""
    k = np.repeat(np.asarray(lengths, dtype=np.int64) - 2, n_splits)
    lo, hi = np.minimum(min_len, k), np.minimum(max_len, k)
    ln = lo + np.floor(rng.random(len(k)) * (hi - lo + 1)).astype(np.int64)
    start = np.floor(rng.random(len(k)) * (k - ln + 1)).astype(np.int64)
    width = int(ln.max()) if len(ln) else 0
    src = np.repeat(np.arange(len(lengths)), n_splits)
    j = np.arange(width, dtype=np.int64)[None, :]
    inside = j < ln[:, None]
    cols = np.where(inside, 1 + start[:, None] + j, 0)
    out = {}
    for f, g in grids.items():
        s = np.zeros((len(k), width + 2), dtype=g.dtype)
        s[:, 0] = START
        s[:, 1:width + 1] = np.where(inside, g[src[:, None], cols], PAD)
        s[np.arange(len(k)), ln + 1] = END
        out[f] = s
    return out, ln + 2, src


class ContrastiveEmbedder(SequenceEmbedder):
    """CoLES-style contrastive sequence embedder (see the module docstring).

    encoder: "gru" (``layers`` GRU layers of hidden ``dim``) or "transformer" (``layers`` causal blocks of width
    ``field_dim``, ``heads`` heads, projected to ``dim``). field_dim: width of the per-field embeddings. loss:
    "infonce" (``temperature``) or "margin" (CoLES, ``margin``). n_splits / min_len / max_len: the slices.
    The loop's parameters: :class:`embedders.next_event.train.SequenceEmbedder`."""

    name = "contrastive"
    unknown_sku_note = ("their category and price are the missing token; their sku is the other token (not in the "
                        "catalogue)")

    def __init__(self, dim: int = 128, seed: int = 0, encoder: str = "gru", field_dim: int = 64, layers: int = 1,
                 heads: int = 2, dropout: float = 0.0, loss: str = "infonce", temperature: float = 0.1,
                 margin: float = 0.5, n_splits: int = 4, min_len: int = 10, max_len: int = 60,
                 fields: str = DEFAULT_FIELDS, epochs: int = 4, batch_size: int = 64, lr: float = 1e-3,
                 weight_decay: float = 0.01, holdout: float = 0.05, max_train_clients: int | None = None,
                 max_batches: int | None = None, vocab_cap: int = 5000, delta_max: float = 0.5, device: str = "auto",
                 threads: int = 2, work_dir: str | None = None, resume: bool | str = False, progress: bool = True,
                 infer_batch: int = 512):
        super().__init__(dim, seed, fields, epochs, batch_size, lr, weight_decay, holdout, max_train_clients,
                         max_batches, vocab_cap, delta_max, device, threads, work_dir, resume, progress, infer_batch)
        self.encoder = encoder
        self.field_dim = field_dim
        self.layers = layers
        self.heads = heads
        self.dropout = dropout
        self.loss = loss
        self.temperature = temperature
        self.margin = margin
        self.n_splits = n_splits
        self.min_len = min_len
        self.max_len = max_len

    def validate(self) -> None:
        super().validate()
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        check_positive_ints({k: getattr(self, k) for k in ("field_dim", "layers", "heads", "min_len")})
        if self.n_splits < 2 or self.max_len < self.min_len:
            raise ValueError(f"n_splits must be >= 2 and max_len >= min_len, got {self.n_splits}, "
                             f"{self.min_len}..{self.max_len}")
        if self.encoder == "transformer" and self.field_dim % self.heads:
            raise ValueError(f"field_dim ({self.field_dim}) must be a multiple of heads ({self.heads})")
        if self.field_dim < 16 and "sku" in self.fields:
            raise ValueError(f"field_dim must be >= 16 with the sku field, got {self.field_dim}")
        if self.temperature <= 0 or self.margin <= 0 or not (0.0 <= self.dropout < 1.0):
            raise ValueError("temperature and margin must be > 0 and dropout in [0, 1)")

    def build_model(self) -> SequenceEncoder:
        self.config_ = EncoderConfig(encoder=self.encoder, dim=self.dim, field_dim=self.field_dim, layers=self.layers,
                                     heads=self.heads, dropout=self.dropout, fields=self.inputs_.fields,
                                     vocab_sizes=dict(self.inputs_.sizes))
        return SequenceEncoder(self.config_, self.sku_table(self.field_dim))

    def objective(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return info_nce(z, labels, self.temperature) if self.loss == "infonce" else margin_loss(z, labels, self.margin)

    def batch_loss(self, net, grids, lengths, device, gen, rng) -> torch.Tensor:
        sg, sl, labels = random_slices(grids, lengths, self.n_splits, self.min_len, self.max_len, rng)
        batch, lens = batch_tensors(sg, sl, None, device)
        return self.objective(net(batch, lens), torch.from_numpy(labels).to(device))


__all__ = ["ContrastiveEmbedder", "random_slices"]
