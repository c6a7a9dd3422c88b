"""The multitask network, in one file: an encoder to the exported bottleneck, the organisers' trunk, six heads.

Shapes: B clients, D stacked input columns, T tokens, H GRU hidden, Z bottleneck (the block's width), W thin and V
wide trunk widths, I item width, k a window's target entries (<= 100).

    z      = GELU(Linear(D, Z)(x))                       blocks input                         (B, Z)  <- exported
                                                                                                (the default)
           | GELU(Linear(H, Z)(GRU(fields(tokens))))     sequence input
    h      = LayerNorm(R_n(...R_1(drop(LayerNorm(Linear(Z, W)(z))))))
             R(x) = x + Linear(V, W)(drop(GELU(Linear(W, V)(LayerNorm(x)))))
    churn, conversion:  Linear(W, 1)(h)                                                          (B,)
    price:              Linear(W, 100)(h)[:, window's buckets]                                   (B, k)
    category / sku / new_sku:  (Linear(W, I)(h) @ item(entries).T) / sqrt(I) + bias(entries)     (B, k)
    heads export:  [churn, conversion, Linear(W, 100)(h), Linear(W, I)(h) / sqrt(I) x 3]      (B, 102 + 3 I)

The trunk is the organisers' downstream MLP (docs/challenge.md section 5) at configurable width, so the bottleneck
is trained to feed exactly the kind of model that will read it. A window's target entries change from window to
window (each has its own top 100), so category / sku / new-sku heads score entries by a dot product with item
vectors instead of a fixed output layer:

- category: a trainable vector per category;
- sku: the content tower plus a trainable vector per sku that is a target in some training window;
- new sku: the content tower alone (a new sku has no history to learn an id vector from, only its name codes,
  category and price), so the bottleneck must carry where in name-code space a client shops.

content tower(sku) = Linear(16, I)(standardised name codes) + E_category(category) + E_price(price bucket).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from competition.schema import CHURN, CONVERSION, N_PRICE_BUCKETS, PROPENSITY_CATEGORY, PROPENSITY_NEW_SKU, \
    PROPENSITY_PRICE, PROPENSITY_SKU, SKU, TASKS
from embedders.chunks import index_sorted
from embedders.gru_ae.model import StackedGRU
from embedders.gru_ae.sku_table import SkuTable, content_units
from embedders.gru_ae.tokens import PAD

INPUTS = ("blocks", "sequence")
#: What the block exports: the bottleneck z (:meth:`MultiTaskNet.embed`), or the heads' client side
#: (:meth:`MultiTaskNet.heads`).
EXPORTS = ("bottleneck", "heads")
#: The propensity heads whose client side is a query vector, in the order :meth:`MultiTaskNet.heads` exports them.
QUERY_TASKS = (PROPENSITY_CATEGORY, PROPENSITY_SKU, PROPENSITY_NEW_SKU)


@dataclass
class NetConfig:
    """Everything that fixes the network's shape (saved in checkpoints)."""

    input: str
    dim: int
    thin: int = 512
    wide: int = 1024
    residual_blocks: int = 2
    item_dim: int = 64
    dropout: float = 0.2
    in_dim: int = 0                                   # blocks: stacked input width
    fields: tuple[str, ...] = ()                      # sequence: token fields
    vocab_sizes: dict[str, int] = field(default_factory=dict)
    field_dim: int = 32
    gru_hidden: int = 128
    gru_layers: int = 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fields"] = list(self.fields)
        return d


@dataclass
class Catalogue:
    """The item side: sorted skus int64 ``(n,)``, their category rows int64 ``(n,)`` into ``categories`` (sorted
    int64), price buckets int64 ``(n,)`` (-1 unknown), standardised name codes float32 ``(n, 16)``, and
    ``target_skus`` (sorted int64): skus that get an id vector (targets of some training window)."""

    skus: np.ndarray
    category_rows: np.ndarray
    categories: np.ndarray
    price: np.ndarray
    content: np.ndarray
    target_skus: np.ndarray

    @classmethod
    def from_products(cls, products, target_skus: np.ndarray) -> "Catalogue":
        from competition.load import codes_to_numpy
        from competition.schema import CATEGORY, NAME, PRICE
        sku = products[SKU].to_numpy().astype(np.int64)
        order = np.argsort(sku, kind="stable")
        cats = products[CATEGORY].to_numpy().astype(np.int64)[order]
        categories = np.unique(cats)
        return cls(sku[order], np.searchsorted(categories, cats), categories,
                   products[PRICE].fill_null(-1).to_numpy().astype(np.int64)[order],
                   content_units(codes_to_numpy(products[NAME])[order]), np.unique(target_skus).astype(np.int64))

    def sku_rows(self, skus: np.ndarray) -> np.ndarray:
        """Catalogue row of each sku (-1 for a sku product_properties lacks)."""
        return index_sorted(self.skus, np.asarray(skus, dtype=np.int64))

    def category_index(self, categories: np.ndarray) -> np.ndarray:
        return index_sorted(self.categories, np.asarray(categories, dtype=np.int64))

    def target_index(self, skus: np.ndarray) -> np.ndarray:
        """Row of each sku in the id table: 1 + its index in ``target_skus``, 0 for the others (a zero vector)."""
        return index_sorted(self.target_skus, np.asarray(skus, dtype=np.int64)) + 1


class Residual(nn.Module):
    """x + Linear(V, W)(dropout(GELU(Linear(W, V)(LayerNorm(x))))): one block of the organisers' MLP (theirs has
    no dropout; ours trains on few labels per window and needs it)."""

    def __init__(self, thin: int, wide: int, dropout: float = 0.0):
        super().__init__()
        self.norm, self.up, self.down = nn.LayerNorm(thin), nn.Linear(thin, wide), nn.Linear(wide, thin)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.dropout(F.gelu(self.up(self.norm(x))), self.dropout, self.training))


class SequenceEncoder(nn.Module):
    """Token grids -> per-field embeddings concatenated -> GRU -> the top layer's state at the last token."""

    def __init__(self, cfg: NetConfig, sku_table: SkuTable | None):
        super().__init__()
        self.fields = cfg.fields
        self.emb = nn.ModuleDict({f: nn.Embedding(cfg.vocab_sizes[f], cfg.field_dim, padding_idx=PAD)
                                  for f in cfg.fields if f != SKU})
        self.sku = sku_table
        self.gru = StackedGRU(cfg.field_dim * len(cfg.fields), cfg.gru_hidden, cfg.gru_layers, 0.0)

    def forward(self, batch: dict[str, torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.sku.rows(batch[f]) if f == SKU else self.emb[f](batch[f]) for f in self.fields], -1)
        return self.gru(x, lengths)[1][-1]


class MultiTaskNet(nn.Module):
    """Encoder, trunk and heads (module docstring). ``embed`` gives the bottleneck; ``forward`` the six logits."""

    def __init__(self, cfg: NetConfig, catalogue: Catalogue, sku_table: SkuTable | None = None):
        super().__init__()
        if cfg.input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {cfg.input!r}")
        self.cfg = cfg
        if cfg.input == "blocks":
            self.encoder = None
            self.project = nn.Linear(cfg.in_dim, cfg.dim)
        else:
            self.encoder = SequenceEncoder(cfg, sku_table)
            self.project = nn.Linear(cfg.gru_hidden, cfg.dim)
        self.stem = nn.Sequential(nn.Linear(cfg.dim, cfg.thin), nn.LayerNorm(cfg.thin))
        self.blocks = nn.Sequential(*(Residual(cfg.thin, cfg.wide, cfg.dropout) for _ in range(cfg.residual_blocks)))
        self.norm = nn.LayerNorm(cfg.thin)
        i = cfg.item_dim
        self.binary = nn.ModuleDict({CHURN: nn.Linear(cfg.thin, 1), CONVERSION: nn.Linear(cfg.thin, 1)})
        self.price = nn.Linear(cfg.thin, N_PRICE_BUCKETS)
        self.query = nn.ModuleDict({t: nn.Linear(cfg.thin, i) for t in QUERY_TASKS})
        # item side
        self.register_buffer("content", torch.from_numpy(catalogue.content), persistent=False)
        self.register_buffer("item_category", torch.from_numpy(catalogue.category_rows), persistent=False)
        self.register_buffer("item_price", torch.from_numpy(np.clip(catalogue.price, -1, N_PRICE_BUCKETS - 1) + 1),
                             persistent=False)
        n_cat = max(len(catalogue.categories), 1)
        self.category_vec = nn.Embedding(n_cat, i)
        self.category_bias = nn.Embedding(n_cat, 1)
        self.content_proj = nn.Linear(catalogue.content.shape[1] if catalogue.content.ndim == 2 else 16, i)
        self.content_category = nn.Embedding(n_cat, i)
        self.content_price = nn.Embedding(N_PRICE_BUCKETS + 1, i)
        self.content_bias = nn.Linear(i, 1)
        self.sku_vec = nn.Embedding(len(catalogue.target_skus) + 1, i)
        self.sku_bias = nn.Embedding(len(catalogue.target_skus) + 1, 1)
        for table in (self.sku_vec, self.sku_bias):
            nn.init.zeros_(table.weight)  # row 0 = "no id vector"; the rest learn from zero

    # -- encoding ---------------------------------------------------------------------------------------------------
    def embed(self, inputs) -> torch.Tensor:
        """The exported bottleneck (B, Z): ``inputs`` is a (B, D) tensor (blocks) or ``(batch, lengths)``."""
        x = inputs if self.encoder is None else self.encoder(*inputs)
        return F.gelu(self.project(x))

    def trunk(self, z: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(F.dropout(self.stem(z), self.cfg.dropout, self.training)))

    def heads(self, z: torch.Tensor) -> torch.Tensor:
        """The heads' client side of a bottleneck ``z`` (B, Z) -> (B, 2 + 100 + 3 I): the churn and conversion
        logits, the 100 price-bucket logits, and the category, sku and new-sku query vectors scaled by 1 / sqrt(I)
        (an entry's logit is its query . its item vector + its bias: linear in the query, so any fixed target list's
        logits are a linear map of it)."""
        h = self.trunk(z)
        scale = 1.0 / math.sqrt(self.cfg.item_dim)
        return torch.cat([self.binary[CHURN](h), self.binary[CONVERSION](h), self.price(h),
                          *(self.query[t](h) * scale for t in QUERY_TASKS)], 1)

    @staticmethod
    def export_width(cfg: "NetConfig", what: str) -> int:
        """Columns of an export: ``dim`` (bottleneck) or ``2 + 100 + 3 * item_dim`` (heads)."""
        return cfg.dim if what == "bottleneck" else 2 + N_PRICE_BUCKETS + len(QUERY_TASKS) * cfg.item_dim

    # -- heads --------------------------------------------------------------------------------------------------------
    def content_items(self, rows: torch.Tensor) -> torch.Tensor:
        """Content tower of catalogue rows (k,) -> (k, I); row -1 (unknown sku) gets the zero name vector."""
        ok = rows >= 0
        r = rows.clamp(min=0)
        vec = self.content_proj(self.content[r] * ok.unsqueeze(1))
        return vec + self.content_category(self.item_category[r]) + self.content_price(self.item_price[r] * ok)

    def forward(self, inputs, entries: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits per task. ``entries``: per propensity task, the window's target entries as item indices:
        category rows (category), catalogue rows + id rows (sku: (2, k)), catalogue rows (new sku), buckets
        (price)."""
        h = self.trunk(self.embed(inputs))
        scale = 1.0 / math.sqrt(self.cfg.item_dim)
        out = {t: head(h).squeeze(1) for t, head in self.binary.items()}
        out[PROPENSITY_PRICE] = self.price(h)[:, entries[PROPENSITY_PRICE]]
        cat = entries[PROPENSITY_CATEGORY]
        out[PROPENSITY_CATEGORY] = (self.query[PROPENSITY_CATEGORY](h) @ self.category_vec(cat).T * scale
                                    + self.category_bias(cat).T)
        rows, ids = entries[PROPENSITY_SKU]
        items = self.content_items(rows)
        out[PROPENSITY_SKU] = (self.query[PROPENSITY_SKU](h) @ (items + self.sku_vec(ids)).T * scale
                               + (self.content_bias(items) + self.sku_bias(ids)).T)
        new = self.content_items(entries[PROPENSITY_NEW_SKU])
        out[PROPENSITY_NEW_SKU] = self.query[PROPENSITY_NEW_SKU](h) @ new.T * scale + self.content_bias(new).T
        return out


def task_losses(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                active: torch.Tensor) -> dict[str, torch.Tensor]:
    """Binary cross-entropy per task, averaged over clients and, for propensity tasks, summed over the window's
    entries (a mean over ~100 mostly-zero entries would be ~100x smaller than the binary tasks' loss and starve
    them of gradient). Churn counts the window's active clients only; a task with no entries or no active client
    in the batch contributes 0."""
    out = {}
    for task in TASKS:
        y, z = labels[task], logits[task]
        if task == CHURN:
            y, z = y[active], z[active]
        if not y.numel():
            out[task] = z.sum() * 0.0
        elif y.ndim == 2:
            out[task] = F.binary_cross_entropy_with_logits(z, y, reduction="sum") / y.shape[0]
        else:
            out[task] = F.binary_cross_entropy_with_logits(z, y)
    return out


__all__ = ["NetConfig", "Catalogue", "MultiTaskNet", "Residual", "SequenceEncoder", "task_losses", "INPUTS", "EXPORTS",
           "QUERY_TASKS"]
