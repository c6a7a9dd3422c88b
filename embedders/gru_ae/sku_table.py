"""The sku embedding table, shared by the input and the (tied) sku output head.

Token ids follow :mod:`embedders.gru_ae.tokens`: ids ``0..4`` are the reserved tokens (own trainable rows), id
``5 + i`` is catalogue row ``i``. Modes:

- ``id``: a plain trainable table over the kept skus (the reference's capped vocabulary; the rest is ``other``);
- ``content``: ``row(sku) = scale * (c(sku) + delta(sku))``. ``c`` is fixed: the product's 16 name codes,
  standardised per code over the catalogue, L2-normalised, lifted to ``dim`` by a frozen seeded projection with
  orthonormal rows (so ``|c| = 1``). ``delta`` is trainable only for skus seen in training, starts at 0, and
  :meth:`clip_` (called after every optimiser step) bounds each row to L2 norm ``<= delta_max``. Unseen skus have
  no delta: their row is exactly ``scale * c``, in the input and in the output head alike, so a new sku can be
  read and decoded. ``scale`` is one trainable scalar (init ``sqrt(dim)``, the norm of a default embedding row);
- ``content-frozen``: ``content`` without delta; ``content-finetune``: ``content`` without the bound.

Memory: the catalogue is stored as its ``(n, 16)`` unit vectors, not as ``(n, dim)`` rows; full rows exist only
for the tokens asked for (:meth:`rows`). Deltas take ``(n_seen, dim)``.

Time: with ``sparse_rows`` the deltas get row-sparse gradients (an optimiser step then costs the rows a batch
touched, :class:`embedders.training.RowSparseAdam`) and :meth:`clip_` bounds only the rows touched since its last
call. Dense Adam and a whole-table clip cost ``n_seen * dim`` per step: the table's part of a step (lookups, sampled
softmax, backward, step, clip; one core) took 1.12 s dense against 0.35 s row-sparse at 1.26M seen skus and 32-wide
rows, 0.29 s against 0.28 s at 25k (``benchmarks/bench_sku_table.py``, 2026-12-01, loaded machine).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embedders.gru_ae.tokens import N_RESERVED

SKU_INITS = ("content", "id", "content-frozen", "content-finetune")


def content_units(names: np.ndarray) -> np.ndarray:
    """Name codes uint8 ``(n, 16)`` -> standardised (per code), L2-normalised float32 ``(n, 16)``."""
    x = np.asarray(names, dtype=np.float64)
    if len(x) == 0:
        return x.astype(np.float32)
    x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def projection(n_in: int, dim: int, seed: int) -> torch.Tensor:
    """A fixed seeded ``(n_in, dim)`` matrix with orthonormal rows when ``dim >= n_in`` (orthonormal columns
    otherwise)."""
    g = torch.Generator().manual_seed(int(seed) + 7919)
    a = torch.randn(max(n_in, dim), min(n_in, dim), generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))  # unique QR: a deterministic sign per column
    return (q.T if dim >= n_in else q).to(torch.float32).contiguous()


class SkuTable(nn.Module):
    """Rows for sku tokens (see module docstring).

    n_items: catalogue size (content modes) or kept skus (id mode). names: uint8 ``(n_items, 16)`` (content modes).
    seen: bool ``(n_items,)``, skus that get a delta. dim: row width. sparse_rows: row-sparse delta gradients and
    clipping of the touched rows only (module docstring; the optimiser must then take sparse gradients).
    """

    def __init__(self, mode: str, n_items: int, dim: int, names: np.ndarray | None = None,
                 seen: np.ndarray | None = None, delta_max: float = 0.5, seed: int = 0, sparse_rows: bool = False):
        super().__init__()
        if mode not in SKU_INITS:
            raise ValueError(f"sku-init must be one of {SKU_INITS}, got {mode!r}")
        self.mode, self.n_items, self.dim, self.delta_max = mode, int(n_items), int(dim), float(delta_max)
        self.sparse_rows = bool(sparse_rows)
        self._touched: list[torch.Tensor] = []  # delta rows looked up with gradients since the last clip_
        self.reserved = nn.Parameter(torch.randn(N_RESERVED, dim))
        self.delta = None
        if mode == "id":
            self.ids = nn.Parameter(torch.randn(n_items, dim))
            return
        if names is None or len(names) != n_items:
            raise ValueError(f"content modes need name codes for all {n_items} catalogue skus")
        self.register_buffer("unit", torch.from_numpy(content_units(names)))
        self.register_buffer("proj", projection(self.unit.shape[1], dim, seed))
        self.scale = nn.Parameter(torch.tensor(math.sqrt(dim)))
        if mode != "content-frozen":
            seen = np.ones(n_items, bool) if seen is None else np.asarray(seen, bool)
            index = np.full(n_items, -1, dtype=np.int64)
            index[seen] = np.arange(int(seen.sum()))
            self.register_buffer("delta_index", torch.from_numpy(index))
            self.delta = nn.Parameter(torch.zeros(int(seen.sum()), dim))

    @property
    def bounded(self) -> bool:
        return self.mode == "content"

    def content(self, items: torch.Tensor) -> torch.Tensor:
        """c(sku) for catalogue rows ``items`` (long), ``(..., dim)``, unit norm (``dim >= 16``)."""
        return self.unit[items] @ self.proj

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        """Rows of catalogue items ``items`` (long, any shape) -> ``(..., dim)``."""
        if self.mode == "id":
            return self.ids[items]
        c = self.content(items)
        if self.delta is not None:
            di = self.delta_index[items]
            if self.sparse_rows:
                rows = F.embedding(di.clamp(min=0), self.delta, sparse=True)
                if torch.is_grad_enabled():
                    self._touched.append(torch.unique(di[di >= 0]))
            else:
                rows = self.delta[di.clamp(min=0)]
            c = c + rows * (di >= 0).unsqueeze(-1).to(c.dtype)
        return self.scale * c

    @property
    def sparse_parameters(self) -> list[nn.Parameter]:
        """The parameters with row-sparse gradients (the deltas under ``sparse_rows``), for the optimiser."""
        return [self.delta] if self.sparse_rows and self.delta is not None else []

    def rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """Rows of sku tokens (reserved or catalogue; long, any shape) -> ``(..., dim)``."""
        is_res = tokens < N_RESERVED
        items = (tokens - N_RESERVED).clamp(min=0, max=max(self.n_items - 1, 0))
        res = self.reserved[tokens.clamp(max=N_RESERVED - 1)]
        if self.n_items == 0:
            return res
        return torch.where(is_res.unsqueeze(-1), res, self.item_rows(items))

    @torch.no_grad()
    def clip_(self) -> None:
        """Bound every delta row to L2 norm ``<= delta_max`` (``content`` mode only; call after each step)."""
        touched, self._touched = self._touched, []
        if not (self.bounded and self.delta is not None and len(self.delta)):
            return
        if self.sparse_rows and not touched:
            return
        # sparse: only looked-up rows received a gradient, so only they can have moved
        rows = torch.unique(torch.cat(touched)) if self.sparse_rows else slice(None)
        norm = self.delta[rows].norm(dim=1, keepdim=True)
        self.delta[rows] *= (self.delta_max / norm.clamp_min(1e-12)).clamp(max=1.0)

    def extra_repr(self) -> str:
        n_delta = 0 if self.delta is None else len(self.delta)
        return (f"mode={self.mode}, items={self.n_items}, dim={self.dim}, deltas={n_delta}, delta_max={self.delta_max}"
                f"{', sparse_rows' if self.sparse_rows else ''}")


__all__ = ["SkuTable", "SKU_INITS", "content_units", "projection"]
