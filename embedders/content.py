"""Content taste per client: where in the catalogue's content space (name codes, price) a client's products lie.

``python -m embedders.content --data-dir D --out E [--components 8] [--recent-days 28] [--seed S]``

Why: count statistics say how much and when a client buys, not *what kind* of product. A new product has no
history, only its name codes, category and price (the organisers' propensity_new_sku task, where the 2025 winners'
margin lay), so the part of a client's behaviour that carries over to it is its taste in that content space. This
block is that taste read directly from the products a client touched, with no training (seconds at 1M clients).

Fit (over product_properties, no events): each product's **within-category residual**, its name codes minus the
mean name codes of its category (what a category shares says nothing the category counts do not), and a PCA of
those residuals (``components`` axes, fitted on up to 200k products sampled by ``seed``, coordinates divided by
each axis's standard deviation); each category's mean price bucket.

Features (:func:`feature_names`, in column order), for each group ``g`` of a client's events with a known product:
``product`` (buys, adds to cart, removes), ``buy`` (buys), ``recent`` (product events of the last ``recent_days``
days before the cut):

=================================  ==========================================================================
``taste_<g>_<j>``                  mean over the group's events of PCA coordinate j of the product's residual
``price_rel_<g>``                  mean over the group's events with a known price of (price bucket - its
                                   category's mean price bucket) / 100
``log_count_<g>``                  log1p(the group's events with a product of product_properties)
=================================  ==========================================================================

A client without such events gets zeros (the mean of every coordinate is 0 by construction; the count says
"none"). Events whose sku product_properties lacks are left out (they have no content).
"""
from __future__ import annotations

import argparse

import numpy as np

from competition.progress import progress as progress_of
from competition.schema import CATEGORY, EVENT_CODE, NAME, PRICE, PRODUCT_BUY, SKU, SKU_EVENTS
from embedders.base import Block, Embedder, EventSource
from embedders.chunks import gather, index_sorted, present_rows, row_chunks

DAY = 86_400
GROUPS: tuple[str, ...] = ("product", "buy", "recent")
PRODUCT_CODES = np.array([EVENT_CODE[e] for e in SKU_EVENTS], dtype=np.uint8)
BUY = EVENT_CODE[PRODUCT_BUY]
#: Products the PCA is fitted on at most (sampled by seed beyond that): 200k rows of 16 codes fit in a second.
PCA_MAX_PRODUCTS = 200_000


def feature_names(components: int) -> list[str]:
    """Column names of a block with ``components`` PCA axes: per group, the taste coordinates, the relative price
    and the log count."""
    return [name for g in GROUPS for name in
            (*(f"taste_{g}_{j}" for j in range(components)), f"price_rel_{g}", f"log_count_{g}")]


def within_category_residuals(names: np.ndarray, category: np.ndarray) -> np.ndarray:
    """Name codes uint8 ``(n, 16)`` minus the mean codes of each product's category (``category`` int64 ``(n,)``,
    -1 unknown: the unknowns are one group), float32 ``(n, 16)``."""
    x = np.asarray(names, dtype=np.float64)
    if len(x) == 0:
        return x.astype(np.float32)
    _, group = np.unique(category, return_inverse=True)
    counts = np.bincount(group).astype(np.float64)
    means = np.stack([np.bincount(group, weights=x[:, j]) for j in range(x.shape[1])], axis=1) / counts[:, None]
    return (x - means[group]).astype(np.float32)


class ContentEmbedder(Embedder):
    """Mean content coordinates, relative price and counts of a client's products (module docstring).

    Parameters
    ----------
    dim : int | None
        None (the width ``components`` gives: 3 x (components + 2)) or that width; anything else is refused
    seed : int
        random state of the products sampled for the PCA (the only random step)
    components : int
        PCA axes of the within-category name-code residuals, 1..16
    recent_days : int
        days before the cut that make the ``recent`` group
    chunk_events : int
        events per chunk (bounds memory)
    progress : bool
        progress bars on stderr

    Fitted attributes: ``cut_time_`` (s), ``skus_`` int64 ``(n_products,)`` ascending, ``coords_`` float32
    ``(n_products, components)`` each product's PCA coordinates (unit variance), ``price_rel_`` float32
    ``(n_products,)`` (NaN: no price), ``axes_`` float32 ``(components, 16)``, ``explained_`` float32
    ``(components,)`` the share of residual variance of each axis.
    """

    name = "content"
    unknown_sku_note = "left out (a sku product_properties lacks has no content)"
    #: Hand-made means and counts: each column to uniform [0, 1] by its quantiles in an ensemble, as stats.
    ensemble_transform = "quantile"

    def __init__(self, dim: int | None = None, seed: int = 0, components: int = 8, recent_days: int = 28,
                 chunk_events: int = 5_000_000, progress: bool = True):
        super().__init__(dim, seed)
        self.components = components
        self.recent_days = recent_days
        self.chunk_events = chunk_events
        self.progress = progress

    @property
    def width(self) -> int:
        """Columns of the block: per group, ``components`` taste coordinates, the relative price, the count."""
        return len(GROUPS) * (self.components + 2)

    def validate(self) -> None:
        """``components`` in 1..16, ``dim`` None or the width it gives, ``recent_days`` and ``chunk_events`` > 0."""
        if not isinstance(self.components, int) or not 1 <= self.components <= 16:
            raise ValueError(f"components must be an integer in 1..16 (name codes have 16), got {self.components!r}")
        if self.dim is not None and self.dim != self.width:
            raise ValueError(f"content with {self.components} components has a fixed width of {self.width} "
                             f"(3 groups x (components + 2)); dim must be {self.width} or omitted, got {self.dim}")
        if not self.recent_days > 0:
            raise ValueError(f"recent_days must be > 0, got {self.recent_days}")
        if not self.chunk_events > 0:
            raise ValueError(f"chunk_events must be > 0, got {self.chunk_events}")

    # -- fit -------------------------------------------------------------------------------------------------------
    def fit(self, events: EventSource) -> "ContentEmbedder":
        """The products' PCA coordinates and relative prices (from ``events.products``), the cut time."""
        from competition.load import codes_to_numpy
        self.validate()
        products = events.products
        sku = products[SKU].to_numpy().astype(np.int64)
        order = np.argsort(sku, kind="stable")
        category = products[CATEGORY].fill_null(-1).to_numpy().astype(np.int64)[order]
        price = products[PRICE].fill_null(-1).to_numpy().astype(np.float64)[order]
        residual = within_category_residuals(codes_to_numpy(products[NAME])[order], category)
        self.axes_, scale, self.explained_ = self._pca(residual)
        self.coords_ = ((residual @ self.axes_.T) / scale).astype(np.float32)
        known = price >= 0
        _, group = np.unique(category, return_inverse=True)
        per_cat = np.bincount(group[known], weights=price[known], minlength=group.max(initial=-1) + 1) / \
            np.maximum(np.bincount(group[known], minlength=group.max(initial=-1) + 1), 1)
        self.price_rel_ = np.where(known, (price - per_cat[group]) / 100.0, np.nan).astype(np.float32)
        self.skus_ = sku[order]
        self.cut_time_ = int(events.cut_time)
        return self

    def _pca(self, residual: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(axes float32 (k, 16), per-axis standard deviation float64 (k,), explained share float32 (k,)) of the
        residuals (zero-mean by construction), fitted on up to :data:`PCA_MAX_PRODUCTS` rows sampled by seed."""
        k, d = self.components, residual.shape[1]
        rows = residual
        if len(rows) > PCA_MAX_PRODUCTS:
            rows = rows[np.sort(np.random.default_rng(self.seed).choice(len(rows), PCA_MAX_PRODUCTS, replace=False))]
        if len(rows) < 2:
            return np.eye(d, dtype=np.float32)[:k], np.ones(k), np.zeros(k, dtype=np.float32)
        cov = rows.astype(np.float64).T @ rows.astype(np.float64) / (len(rows) - 1)
        values, vectors = np.linalg.eigh(cov)
        top = np.argsort(values)[::-1][:k]
        axes = vectors[:, top].T
        axes *= np.where(axes[np.arange(k), np.abs(axes).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]  # fixed signs
        std = np.sqrt(np.maximum(values[top], 1e-12))
        return axes.astype(np.float32), std, (values[top] / max(values.sum(), 1e-12)).astype(np.float32)

    # -- transform ---------------------------------------------------------------------------------------------------
    def transform(self, events: EventSource, client_ids: np.ndarray) -> Block:
        """float32 ``(len(client_ids), width)`` in ``client_ids`` order; zeros for clients without product events."""
        client_ids = np.asarray(client_ids, dtype=np.int64)
        table_rows, where = present_rows(events, client_ids)
        feats = np.zeros((len(table_rows), self.width), dtype=np.float32)
        chunks = row_chunks(events.lengths[table_rows], self.chunk_events)
        for lo, hi in progress_of(chunks, desc="content: features", enabled=self.progress, unit="chunk"):
            feats[lo:hi] = self._features(gather(events, table_rows[lo:hi]))
        out = np.zeros((len(client_ids), self.width), dtype=np.float32)
        out[where >= 0] = feats[where[where >= 0]]
        names = feature_names(self.components)
        meta = {"name": self.name, "feature_names": names,
                "explained_variance_share": [round(float(v), 4) for v in self.explained_],
                "clients_without_product_events": int((out[:, names.index("log_count_product")] == 0).sum())}
        return Block(client_ids, out, meta)

    def _features(self, c) -> np.ndarray:
        """float32 ``(c.n_rows, width)`` of one chunk of client rows."""
        n, k = c.n_rows, self.components
        product = index_sorted(self.skus_, np.asarray(c.sku, dtype=np.int64))
        keep = np.isin(c.event_type, PRODUCT_CODES) & (product >= 0)
        row, product, et = c.row[keep], product[keep], c.event_type[keep]
        recent = (self.cut_time_ - c.timestamp[keep]) < self.recent_days * DAY
        cols = []
        for mask in (np.ones(len(row), dtype=bool), et == BUY, recent):
            r, p = row[mask], product[mask]
            count = np.bincount(r, minlength=n).astype(np.float64)
            coords = self.coords_[p]
            taste = [np.bincount(r, weights=coords[:, j], minlength=n) / np.maximum(count, 1) for j in range(k)]
            rel = self.price_rel_[p]
            priced = ~np.isnan(rel)
            price = np.bincount(r[priced], weights=rel[priced], minlength=n) / \
                np.maximum(np.bincount(r[priced], minlength=n), 1)
            cols += [*taste, price, np.log1p(count)]
        return np.stack(cols, axis=1).astype(np.float32) if n else np.zeros((0, self.width), dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from embedders.cli import add_params, base_parser
    parser = base_parser("python -m embedders.content", __doc__.split("\n\n")[0], default_dim=None,
                         dim_help="width of the block: omitted (3 x (components + 2)) or exactly that")
    return add_params(parser, ContentEmbedder)


def make(args: argparse.Namespace) -> ContentEmbedder:
    """The embedder of the parsed flags."""
    from embedders.cli import from_args
    return from_args(ContentEmbedder, args)


def main(argv: list[str] | None = None) -> int:
    from embedders.cli import run
    return run(build_parser(), make, argv)


if __name__ == "__main__":
    raise SystemExit(main())
