"""The contrastive encoder and its losses (CoLES-style; plain PyTorch). Shapes: N sequences (B clients x S slices),
T positions, C field-embedding width, Z = ``dim`` (the block's width).

    x = EventEmbedding(tokens)                                  next_event's: field sums + position    (N, T, C)
    z = GRU_L(x)[top layer, last token]                         encoder "gru" (hidden Z)               (N, Z)
      | Linear(C, Z)(LN(Blocks(x))[last event])                 encoder "transformer" (next_event's)  (N, Z)

Losses over a batch of slices, ``labels`` (N,) the client of each slice:

- ``infonce``: vectors L2-normalised, cosine / ``temperature``; for every slice the mean over its positives (the
  same client's other slices) of ``-log softmax`` over all other slices of the batch (multi-positive InfoNCE);
- ``margin``: the contrastive loss of the CoLES paper (Babaev et al., 2022): on L2-normalised vectors, squared
  distance of positive pairs plus ``relu(margin - distance)^2`` of negative pairs, averaged over the pairs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from embedders.gru_ae.model import StackedGRU
from embedders.gru_ae.sku_table import SkuTable
from embedders.next_event.model import Block, EventEmbedding, GPTConfig

ENCODERS = ("gru", "transformer")
LOSSES = ("infonce", "margin")


@dataclass
class EncoderConfig:
    encoder: str = "gru"
    dim: int = 128
    field_dim: int = 64
    layers: int = 1
    heads: int = 2
    dropout: float = 0.0
    fields: tuple[str, ...] = ()
    vocab_sizes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fields"] = list(self.fields)
        return d


class SequenceEncoder(nn.Module):
    """Token grids ``(N, T)`` per field and lengths ``(N,)`` -> vectors ``(N, dim)`` (module docstring)."""

    def __init__(self, cfg: EncoderConfig, sku_table: SkuTable | None):
        super().__init__()
        if cfg.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {cfg.encoder!r}")
        self.cfg = cfg
        g = GPTConfig(n_layer=cfg.layers, n_head=cfg.heads, n_embd=cfg.field_dim, dropout=cfg.dropout,
                      fields=cfg.fields, vocab_sizes=cfg.vocab_sizes)
        self.wte = EventEmbedding(g, sku_table)
        if cfg.encoder == "gru":
            self.gru = StackedGRU(cfg.field_dim, cfg.dim, cfg.layers, cfg.dropout)
        else:
            self.h = nn.ModuleList([Block(g) for _ in range(cfg.layers)])
            self.ln_f = nn.LayerNorm(cfg.field_dim)
            self.proj = nn.Linear(cfg.field_dim, cfg.dim)

    def forward(self, batch: dict[str, torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        x = self.wte(batch)
        if self.cfg.encoder == "gru":
            return self.gru(x, lengths)[1][-1]
        for block in self.h:
            x = block(x)
        last = (lengths.to(x.device) - 2).clamp(min=0)  # the last event (start for an empty history)
        return self.proj(self.ln_f(x)[torch.arange(len(x), device=x.device), last])

    def embed(self, batch: dict[str, torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        return self(batch, lengths)


def info_nce(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Multi-positive InfoNCE of vectors ``z`` (N, Z) whose rows with equal ``labels`` (N,) are positives."""
    z = F.normalize(z, dim=1)
    sim = z @ z.T / temperature
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    pos = (labels[:, None] == labels[None, :]) & ~eye
    logp = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    has = pos.any(1)
    per = -(logp.masked_fill(~pos, 0.0).sum(1)[has] / pos.sum(1)[has])
    return per.mean() if len(per) else z.sum() * 0


def margin_loss(z: torch.Tensor, labels: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """CoLES's contrastive loss over all pairs of L2-normalised ``z`` (N, Z) (module docstring)."""
    z = F.normalize(z, dim=1)
    iu = torch.triu_indices(len(z), len(z), offset=1, device=z.device)
    d2 = (2.0 - 2.0 * (z @ z.T))[iu[0], iu[1]].clamp_min(0.0)
    same = (labels[:, None] == labels[None, :])[iu[0], iu[1]]
    loss = torch.where(same, d2, F.relu(margin - torch.sqrt(d2 + 1e-9)).pow(2))
    return loss.mean() if len(loss) else z.sum() * 0


__all__ = ["ENCODERS", "LOSSES", "EncoderConfig", "SequenceEncoder", "info_nce", "margin_loss"]
