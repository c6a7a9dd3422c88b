"""The GRU sequence autoencoder, in one file.

Shapes: B clients, T tokens (start, events, end; <= 128), F fields, d field width, E = F*d ("concat") or d ("sum"),
H hidden, L layers.

    x_t    = combine(emb_f(token_{t,f}) for f in fields)                      (B, T, E)
    h_enc  = GRU_enc(x, lengths)                  state at each client's last token, per layer   (L, B, H)
    u      = h_enc[-1]                            the user vector (the block)  (B, H)
    o_t    = GRU_dec([x_t ; u] for t < len-1, initial state h_enc)            (N, H)  N = sum(lengths - 1)
    logit  = head_f(o_t) predicts token_{t+1, f}   (teacher forcing)
    loss   = sum_f  mean cross-entropy of field f over its target tokens

A client's vector never depends on who shares its batch: on CUDA the GRUs run on packed sequences
(``pack_padded_sequence``); on CPU, where PyTorch's packed GRU is 4-7x slower (its backward re-fills full-size
gradient buffers at every time step), they run on the padded batch and each layer's state is read at the client's
last real token. Padding comes after the tokens and the GRUs are unidirectional, so both give the same numbers
(:class:`StackedGRU`; a test checks it). The sku head
is tied to the :class:`~embedders.gru_ae.sku_table.SkuTable`: ``logits = (W o) @ rows.T / sqrt(d)`` over the whole
catalogue, or, when the catalogue exceeds ``full_softmax_max``, over a sampled candidate set (reserved tokens, the
batch's target skus and ``sku_negatives`` uniform draws from the catalogue: a sampled softmax with in-batch
negatives). The sku loss covers only positions whose target event has a sku (or ``other``); whether an event has
a sku at all is the event-type head's job. The optional ``query`` field embeds the 16 codes of a search (one table
per code position, summed) and is reconstructed by 16 heads of 256 classes (mean cross-entropy over the codes).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from competition.schema import CODE_LEN, QUERY, SKU
from embedders.gru_ae.sku_table import SkuTable
from embedders.gru_ae.tokens import N_RESERVED, OTHER, PAD, SKU_ID

N_CODES = 256
NO_QUERY = CODE_LEN * N_CODES  # embedding row shared by the 16 slots of an event without a query


@dataclass(frozen=True)
class Preset:
    """A variant: token fields, per-field width, how fields combine, GRU shape."""

    fields: tuple[str, ...]
    field_dim: int
    combine: str
    layers: int
    hidden: int
    dropout: float


PRESETS: dict[str, Preset] = {
    "day_event": Preset(("day", "event_type"), 64, "concat", 2, 128, 0.5),
    "all": Preset(("event_type", "category", "price", "sku", "url"), 512, "sum", 3, 512, 0.1),
    "week_all": Preset(("event_type", "category", "price", "sku", "url", "week"), 512, "sum", 3, 512, 0.1),
}


@dataclass
class ModelConfig:
    """Everything that fixes the network's shape (saved in checkpoints)."""

    fields: tuple[str, ...]
    vocab_sizes: dict[str, int]
    field_dim: int
    combine: str
    layers: int
    hidden: int
    dropout: float
    query: bool = False
    full_softmax_max: int = 100_000
    sku_negatives: int = 4096
    extra: dict = field(default_factory=dict)

    @property
    def input_dim(self) -> int:
        n = len(self.fields) + int(self.query)
        return self.field_dim * (n if self.combine == "concat" else 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fields"] = list(self.fields)
        return d


class StackedGRU(nn.Module):
    """``layers`` single-layer GRUs with dropout between them (what ``nn.GRU(num_layers=L, dropout=p)`` computes),
    run so that padding never leaks into a sequence's result.

    pack: True = packed sequences, False = padded run + gather at ``lengths - 1``, None = packed on CUDA only.
    """

    def __init__(self, input_size: int, hidden: int, layers: int, dropout: float, pack: bool | None = None):
        super().__init__()
        self.grus = nn.ModuleList(nn.GRU(input_size if i == 0 else hidden, hidden, batch_first=True)
                                  for i in range(layers))
        self.dropout, self.pack = dropout, pack

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, h0: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, I), lengths (B,) int64 on the CPU, h0 (L, B, H) -> top-layer outputs (B, T, H) (meaningful
        where t < length) and each layer's state after the last real token (L, B, H)."""
        pack = x.is_cuda if self.pack is None else self.pack
        last = (lengths - 1).to(x.device)
        rows = torch.arange(x.shape[0], device=x.device)
        states = []
        for i, gru in enumerate(self.grus):
            if i:
                x = F.dropout(x, self.dropout, self.training)
            hi = None if h0 is None else h0[i:i + 1].contiguous()
            if pack:
                out, h = gru(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False), hi)
                x = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]
                states.append(h[0])
            else:
                x = gru(x, hi)[0]
                states.append(x[rows, last])
        return x, torch.stack(states)


class GruAutoencoder(nn.Module):
    """Encoder / decoder GRUs, field embeddings and heads (see module docstring)."""

    def __init__(self, cfg: ModelConfig, sku_table: SkuTable | None = None):
        super().__init__()
        if cfg.combine not in ("concat", "sum"):
            raise ValueError(f"combine must be 'concat' or 'sum', got {cfg.combine!r}")
        if SKU in cfg.fields and sku_table is None:
            raise ValueError("the sku field needs a SkuTable")
        self.cfg = cfg
        d, h = cfg.field_dim, cfg.hidden
        self.emb = nn.ModuleDict({f: nn.Embedding(cfg.vocab_sizes[f], d, padding_idx=PAD)
                                  for f in cfg.fields if f != SKU})
        self.sku = sku_table if SKU in cfg.fields else None
        if cfg.query:
            self.query_emb = nn.Embedding(NO_QUERY + 1, d)
            self.register_buffer("code_offsets", torch.arange(CODE_LEN) * N_CODES, persistent=False)
        self.encoder = StackedGRU(cfg.input_dim, h, cfg.layers, cfg.dropout)
        self.decoder = StackedGRU(cfg.input_dim + h, h, cfg.layers, cfg.dropout)
        self.heads = nn.ModuleDict({f: nn.Linear(h, cfg.vocab_sizes[f]) for f in cfg.fields if f != SKU})
        if self.sku is not None:
            self.sku_head = nn.Linear(h, self.sku.dim, bias=False)
        if cfg.query:
            self.query_head = nn.Linear(h, CODE_LEN * N_CODES)

    # -- encoding ---------------------------------------------------------------------------------------------------
    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token grids (B, T) per field (+ ``query`` codes (B, T, 16), -1 = none) -> inputs (B, T, E)."""
        parts = [self.sku.rows(batch[f]) if f == SKU else self.emb[f](batch[f]) for f in self.cfg.fields]
        if self.cfg.query:
            codes = batch[QUERY]
            idx = torch.where(codes >= 0, codes + self.code_offsets, torch.full_like(codes, NO_QUERY))
            parts.append(self.query_emb(idx).sum(-2))
        return torch.cat(parts, -1) if self.cfg.combine == "concat" else torch.stack(parts).sum(0)

    def encode(self, batch: dict[str, torch.Tensor], lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (B, T, E) and the encoder's final state (L, B, H); ``lengths`` (B,) int64 on the CPU."""
        x = self.embed(batch)
        return x, self.encoder(x, lengths)[1]

    def user_vectors(self, batch: dict[str, torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        """The block rows: top layer's final hidden state, (B, H)."""
        return self.encode(batch, lengths)[1][-1]

    # -- decoding and loss ----------------------------------------------------------------------------------------
    def decode(self, batch: dict[str, torch.Tensor], lengths: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Decoder outputs at every non-final position (N, H), row-major (client, then time), and the targets per
        field in the same order (N,) (query: (N, 16))."""
        x, h = self.encode(batch, lengths)
        u = h[-1]
        t = x.shape[1] - 1
        dec_in = torch.cat([x[:, :-1], u.unsqueeze(1).expand(-1, t, -1)], -1)
        out, _ = self.decoder(dec_in, lengths - 1, h)
        valid = valid_mask(lengths - 1, t).to(x.device)
        return out[valid], {k: v[:, 1:][valid] for k, v in batch.items()}

    def sku_logits(self, o: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """Tied sku logits (n, C) over ``candidates`` (sorted token ids; None = every token)."""
        if candidates is None:
            candidates = torch.arange(N_RESERVED + self.sku.n_items, device=o.device)
        return self.sku_head(o) @ self.sku.rows(candidates).T / math.sqrt(self.sku.dim)

    def losses(self, batch: dict[str, torch.Tensor], lengths: torch.Tensor,
               generator: torch.Generator | None = None) -> dict[str, tuple[torch.Tensor, int]]:
        """Per field: (sum of cross-entropies, number of target tokens). ``generator`` draws sku negatives."""
        o, tgt = self.decode(batch, lengths)
        out: dict[str, tuple[torch.Tensor, int]] = {}
        for f in self.cfg.fields:
            y = tgt[f].long()
            if f == SKU:
                keep = (y >= N_RESERVED) | (y == OTHER)  # real skus and 'other'; not missing / end
                out[f] = self._sku_loss(o[keep], y[keep], generator)
            else:
                out[f] = (F.cross_entropy(self.heads[f](o), y, reduction="sum"), int(len(y)))
        if self.cfg.query:
            q = tgt[QUERY]
            keep = q[:, 0] >= 0
            logits = self.query_head(o[keep]).view(-1, CODE_LEN, N_CODES)
            ce = F.cross_entropy(logits.reshape(-1, N_CODES), q[keep].reshape(-1).long(), reduction="sum")
            out[QUERY] = (ce / CODE_LEN, int(keep.sum()))
        return out

    def _sku_loss(self, o: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None):
        n_items = self.sku.n_items
        if n_items + N_RESERVED <= self.cfg.full_softmax_max:
            logits = self.sku_logits(o)
            return F.cross_entropy(logits, y, reduction="sum"), int(len(y))
        neg = torch.randint(0, n_items, (self.cfg.sku_negatives,), generator=generator).to(y.device) + N_RESERVED
        cands = torch.unique(torch.cat([torch.arange(N_RESERVED, device=y.device), y, neg]))
        logits = self.sku_logits(o, cands)
        return F.cross_entropy(logits, torch.searchsorted(cands, y), reduction="sum"), int(len(y))

    def forward(self, batch: dict[str, torch.Tensor], lengths: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Training loss: sum over fields of the mean cross-entropy (a scalar)."""
        parts = self.losses(batch, lengths, generator)
        return sum(s / max(n, 1) for s, n in parts.values())


def valid_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """(B, t) bool: position < length."""
    return torch.arange(t).unsqueeze(0) < lengths.cpu().unsqueeze(1)


def batch_tensors(grids: dict[str, np.ndarray], lengths: np.ndarray, query_codes: np.ndarray | None,
                  device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """numpy grids of one batch -> long tensors on ``device`` (query rows become their codes (B, T, 16), -1 none);
    lengths stay on the CPU (as packing wants)."""
    out = {}
    for k, g in grids.items():
        if k == QUERY:
            rows = np.asarray(g)
            codes = np.asarray(query_codes[np.maximum(rows, 0).ravel()]).reshape(*rows.shape, CODE_LEN)
            codes = np.where(rows[..., None] >= 0, codes.astype(np.int64), -1)
            out[k] = torch.from_numpy(codes).to(device)
        elif k != SKU_ID:
            out[k] = torch.from_numpy(np.ascontiguousarray(g, dtype=np.int64)).to(device)
    return out, torch.from_numpy(np.asarray(lengths, dtype=np.int64))


__all__ = ["GruAutoencoder", "StackedGRU", "ModelConfig", "Preset", "PRESETS", "batch_tensors", "valid_mask"]
