"""A small causal Transformer over a client's events, nanoGPT-shaped (one file: config, attention, MLP, block, model).

Shapes: B clients, T positions (<= 127: ``start`` and the last 126 events), C = ``n_embd``, H heads.

    x_t   = sum_f E_f(token_f[t]) + P(t)           fields f (sku rows: the content-initialised SkuTable)  (B, T, C)
    h     = LayerNorm(Block_L(...Block_1(drop(x))))  Block(x) = x + Attn(LN(x)); x + MLP(LN(x)), causal     (B, T, C)
    heads = Linear(C, V_f)(h) for event_type / category / price; Linear(C, C)(h) . SkuTable rows for sku

Position ``t`` predicts the fields of event ``t + 1`` (cross-entropy; sku by sampled softmax over the batch's
target skus and ``sku_negatives`` uniform catalogue skus, tied to the input table). The client vector is ``h`` at
the client's last event (position ``length - 2`` of its ``[start, e_1..e_k, end]`` grid; ``start`` for a client
without events): the state that predicts what it does next. See docs/new_blocks.md.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from competition.schema import CATEGORY, PRICE, SKU
from embedders.gru_ae.sku_table import SkuTable
from embedders.gru_ae.tokens import EVENT_TYPE, N_RESERVED, PAD

#: Fields the next event is predicted on (those of them the model reads).
TARGETS: tuple[str, ...] = (EVENT_TYPE, CATEGORY, PRICE, SKU)


@dataclass
class GPTConfig:
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 128
    block_size: int = 128
    dropout: float = 0.1
    fields: tuple[str, ...] = ()
    vocab_sizes: dict[str, int] = field(default_factory=dict)
    sku_negatives: int = 2048

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fields"] = list(self.fields)
        return d


#: ``small`` for a CPU, ``base`` for a GPU (the 2nd place's next_sku GPT: 4 layers, 4 heads).
PRESETS: dict[str, dict] = {"small": {"n_layer": 2, "n_head": 2, "n_embd": 128},
                            "base": {"n_layer": 4, "n_head": 4, "n_embd": 256}}


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd ({cfg.n_embd}) must be a multiple of n_head ({cfg.n_head})")
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c)))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(cfg.n_embd), CausalSelfAttention(cfg)
        self.ln_2, self.mlp = nn.LayerNorm(cfg.n_embd), MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class EventEmbedding(nn.Module):
    """Sum of per-field embeddings (sku: the SkuTable's rows) and a learnt position embedding, ``(B, T, C)``."""

    def __init__(self, cfg: GPTConfig, sku_table: SkuTable | None):
        super().__init__()
        self.fields = cfg.fields
        self.emb = nn.ModuleDict({f: nn.Embedding(cfg.vocab_sizes[f], cfg.n_embd, padding_idx=PAD)
                                  for f in cfg.fields if f != SKU})
        self.sku = sku_table
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        t = next(iter(batch.values())).shape[1]
        x = sum(self.sku.rows(batch[f]) if f == SKU else self.emb[f](batch[f]) for f in self.fields)
        return x + self.wpe(torch.arange(t, device=x.device))


class NextEventGPT(nn.Module):
    """Embedding, causal blocks, final LayerNorm, next-event heads (see the module docstring)."""

    def __init__(self, cfg: GPTConfig, sku_table: SkuTable | None = None):
        super().__init__()
        self.cfg = cfg
        self.wte = EventEmbedding(cfg, sku_table)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.targets = tuple(f for f in TARGETS if f in cfg.fields)
        self.heads = nn.ModuleDict({f: nn.Linear(cfg.n_embd, cfg.vocab_sizes[f]) for f in self.targets if f != SKU})
        self.sku_head = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False) if SKU in self.targets else None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # nanoGPT's scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def hidden(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token grids ``(B, T)`` per field -> final hidden states ``(B, T, C)``."""
        x = self.drop(self.wte(batch))
        for block in self.h:
            x = block(x)
        return self.ln_f(x)

    def embed(self, batch: dict[str, torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        """Client vectors ``(B, C)``: the hidden state at each client's last event."""
        h = self.hidden({f: g[:, :-1] for f, g in batch.items()})
        last = (lengths.to(h.device) - 2).clamp(min=0)
        return h[torch.arange(len(h), device=h.device), last]

    def forward(self, batch: dict[str, torch.Tensor], lengths: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Training loss: the sum over target fields of the mean next-event cross-entropy (a scalar)."""
        h = self.hidden({f: g[:, :-1] for f, g in batch.items()})
        t = h.shape[1]
        # position p predicts event p + 1; the last event (p = length - 2) has no next one, END is never a target
        valid = torch.arange(t, device=h.device)[None, :] < (lengths.to(h.device)[:, None] - 2)
        hv = h[valid]
        loss = h.new_zeros(())
        for f in self.targets:
            y = batch[f][:, 1:][valid]
            if f == SKU:
                keep = y >= N_RESERVED
                loss = loss + self._sku_loss(hv[keep], y[keep], generator)
            else:
                logits = self.heads[f](hv)
                loss = loss + (F.cross_entropy(logits, y) if len(y) else logits.sum() * 0)  # 0: every rank's
                # parameters take part in every step (DDP), a batch without targets too
        return loss

    def _sku_loss(self, o: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if len(y) == 0:
            return self.sku_head(o).sum() * 0
        sku = self.wte.sku
        neg = torch.randint(0, max(sku.n_items, 1), (self.cfg.sku_negatives,), generator=generator).to(y.device)
        cands = torch.unique(torch.cat([y, neg + N_RESERVED]))
        logits = self.sku_head(o) @ sku.rows(cands).T / math.sqrt(sku.dim)
        return F.cross_entropy(logits, torch.searchsorted(cands, y))


__all__ = ["GPTConfig", "PRESETS", "TARGETS", "NextEventGPT", "EventEmbedding", "Block", "CausalSelfAttention", "MLP"]
