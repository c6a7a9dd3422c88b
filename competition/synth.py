"""Synthetic worlds in the organisers' layout, at any scale, from latent user and product traits.

``python -m competition.synth --out D --clients N --seed S [--days 140]`` writes the six released parquet files
(string timestamps ``YYYY-MM-DD HH:MM:SS``, string code vectors ``"[202 151  55 ...]"``),
``input/relevant_clients.npy``, then runs the official split and the target lists, and keeps the latents apart in
``D/truth`` (``clients.parquet``, ``products.parquet``, ``world.json``; oracle measurements only, see
:mod:`validate.oracle`). The mechanisms and their latents are documented in docs/synthetic_worlds.md.

The generative story (all vectorised per chunk of clients; no per-event Python loop):

- Catalogue: categories with Zipf popularity (the more popular ones larger); products grouped by category, ranked
  by a within-category Zipf popularity; a log price per product (category mean + noise) cut into 100 quantile
  buckets; a **style** per product (STYLE_DIM numbers: brand / look); name codes = a category centroid (itself near
  one of a few super-category centroids) + the style along STYLE_DIM global axes + noise, quantized to 0..255, so a
  product's style can be read from its name. A share of the categories hold **consumables**, re-bought on a
  product-specific cycle. About 15% of products are released during the period (more often at the top ranks);
  before its release a product's events go to an older product of the same category, so products released after
  the split cut have no input events and are bought in the target windows.
- Clients: ``N`` relevant clients and ``N // 2`` lighter non-relevant ones. Latents per client: browsing session
  rate (log-normal, heavy tailed) and session length; an alive interval [join, death) with a churn hazard (more
  active clients churn less); purchase habits (a minority of regular buyers buy every few weeks in gamma-renewal
  purchase sessions, the rest almost never); cart and search multipliers; a price level and tolerance; two category
  tastes (start and end of the period, up to 8 categories each) between which the taste drifts; a preferred style
  (a unit vector) and its strength; a buy-now share; a replenishment probability and pace; a novelty multiplier.
- Choices: a product is chosen in a category among popularity draws by the smallest ``E x exp(cost)`` (a
  Gumbel-max choice), cost = price distance / tolerance - strength x style match (:func:`choice_cost`), so which
  sku a client picks is predictable from the names of what it viewed, not only from category counts. A share of
  the choices is offered the category's latest release, taken with a probability rising with the style match
  (:func:`adoption_probability`): new products are adopted by content affinity, not popularity alone.
- New arrivals (``--new-arrivals SHARE``, off by default): a ``SHARE x novelty`` share of the sessions browse the
  recent releases of every category and take as goal the one that best fits the client's price level and style
  (:func:`_choose_arrival`, sharper than everyday choices), so which new product a client buys is predictable from
  its content taste, across categories (the latent ``arrival_share`` in ``truth/clients.parquet``).
- Sessions: browsing sessions are Poisson over the alive interval, placed by a weekly and daily rhythm; purchase
  sessions follow the renewal process, at a time of day drawn from the daily rhythm. Each session has a focus
  category and a **goal** product in it; events inside a session are seconds to minutes apart, and late events go
  back to the focus category and to the goal more and more often (sequential intent: order matters). A purchase
  session ends with a pair per item bought, the first item being the goal: add_to_cart + product_buy or, buying
  now, a view of the product page + product_buy. Each event draws its kind from the client's browsing mix; page
  visits go to the product's page, its category's page or a generic page (many, flat popularity); add_to_cart
  while browsing mostly takes the product last viewed (carts mostly abandoned), removals the product last added; a
  search query's codes mix the name codes of the product the client looks at next with a query template.
- Replenishment: after a buy of a consumable, with the client's probability, a chain of re-buys every cycle x
  pace x Gamma noise days while the client is alive (each a product view or an add, then the buy).

Determinism: the catalogue comes from ``(seed, 0)``, client ids from ``(seed, 1)``, chunk ``k`` from
``(seed, 2, k)`` (numpy PCG64), so a given seed and chunk size give byte-identical files. Memory is bounded by the
chunk (about ``chunk_clients`` x 200 events). Events of a chunk are written in (client, session) order, re-buys
after them.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from functools import cached_property
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from competition.cli import HelpFormatter, add_no_progress, peak_rss_mb
from competition.io import atomic_path, save_npy
from competition.heap import large_blocks_in_heap
from competition.schema import (ADD_TO_CART, CATEGORY, CLIENT_ID, CODE_LEN, EVENT_CODE, EVENT_TYPES, ITEM_COLUMN,
                                N_PRICE_BUCKETS, NAME, PAGE_VISIT, PRICE, PRODUCT_BUY, PRODUCT_PROPERTIES,
                                REMOVE_FROM_CART, SEARCH_QUERY, SKU, TIMESTAMP, TIMESTAMP_FORMAT, DataPaths)

DEFAULT_START = "2022-06-23 00:00:00"
#: Event-weighted mix of kinds, in schema.EVENT_TYPES order (buy, add, remove, visit, search).
TARGET_MIX = np.array([0.010, 0.030, 0.010, 0.880, 0.060])
#: Kind weights while browsing (no purchases there; adds also come from purchase sessions), before the client's
#: multipliers; tuned so that the event-weighted mix comes out near TARGET_MIX.
BROWSE_MIX = np.array([0.0, 0.026, 0.0094, 0.880, 0.064])
BUYER_SHARE = 0.30              # share of regular buyers (at average activity)
BUY_INTERVAL_DAYS = 25.0        # median days between a regular buyer's purchase sessions
START_DELAY_DAYS = 80.0         # mean delay of a late purchasing start after joining (exponential)
PHASE_DAYS = 250.0              # mean length of the purchasing phase (exponential)
ITEMS_PER_BUY = 1.2             # mean products bought per purchase session
PRODUCTS_PER_CLIENT = 0.30      # catalogue size per client (relevant or not) ...
MIN_PRODUCTS = 6_000            # ... and at least this many products
CATEGORY_SIZE_ZIPF = 0.8       # category sizes fall with the category's popularity rank
PRODUCTS_PER_CATEGORY = 150     # mean category size (at least 200 categories)
K_TASTE = 8                     # categories per taste vector
PRODUCT_ZIPF = 0.9              # within-category popularity exponent
N_CANDIDATES = 4                # popularity draws per product choice; the best price and style match wins ...
VIEW_CANDIDATES = 2             # ... and per browsing event (views explore more widely than goals and purchases)
EXPLORE_SESSION = 0.08          # browsing sessions whose focus is any popular category, not the client's taste
EXPLORE_PURCHASE = 0.25         # the same for purchase sessions (gifts, one-off needs)
EVENT_OFF_FOCUS = 0.22          # events whose category is drawn afresh (taste or, below EVENT_WILD, anything)
EVENT_WILD = 0.06
FRESH_SHARE = 0.10              # share of product choices that go to the category's latest release ...
FRESH_DAYS = 30.0               # ... when it was released within this many days
FRESH_BUY_SHARE = 0.35         # the same share for the goal of a purchase session (new products sell)
ARRIVAL_CANDIDATES = 8          # new-arrivals sessions (WorldSpec.new_arrivals): recent releases drawn per goal ...
ARRIVAL_SHARPNESS = 2.0         # ... and the multiplier of their choice cost (content taste decides sharply)
GENERIC_ZIPF = 0.9              # popularity exponent of the generic pages
STYLE_DIM = 3                   # dimensions of the style space (brand / look) inside a category
STYLE_SCALE = 24.0              # name-code spread along the style directions (per unit of style)
NAME_NOISE = 8.0                # name-code noise per code beyond category, style and price
STYLE_STRENGTH = 1.2            # median weight of the style match in a client's product choice
INTENT_CATEGORY = 0.7           # a session event at relative position f takes the goal's category w.p. f * this
INTENT_GOAL = 0.25              # ... and the goal product itself w.p. f ** 2 * this
BUY_NOW_SHARE = 0.75            # mean share of bought items without an add_to_cart (a product view, then the buy)
CONSUMABLE_CATEGORIES = 0.25    # share of categories of consumables ...
CONSUMABLE_SHARE = 0.6          # ... and share of consumable products inside them
CYCLE_DAYS = 21.0               # median replenishment cycle of a consumable
REPLENISH_MEAN = 0.20           # mean probability that a client re-buys a consumable it bought
REPLENISH_CONTINUE = 0.6        # probability that a re-buy is followed by another one
PRODUCT_PAGE, CATEGORY_PAGE = 0.82, 0.04    # shares of page visits to product / category pages (rest: generic)
SESSION_LEN = 2.5               # median mean events per session, less one ...
SESSION_LEN_SD = 0.7            # ... and its log-normal spread over clients
SESSION_GAP_MEAN = 70.0         # mean seconds between events of a session, beyond 5 s
SECONDS_PER_DAY = 86_400
MAX_EVENTS_PER_CLIENT = 20_000
WRITE_SLICE = 4_000_000         # rows formatted and written at a time (bounds string buffers)
PARQUET_OPTIONS = dict(compression="zstd", compression_level=1, use_dictionary=True, write_statistics=True)
_HOUR_PROFILE = np.array([0.15, 0.08, 0.05, 0.04, 0.05, 0.10, 0.25, 0.50, 0.80, 1.00, 1.10, 1.15,
                          1.20, 1.15, 1.10, 1.10, 1.15, 1.25, 1.40, 1.55, 1.60, 1.45, 1.00, 0.50])
_WEEKDAY_PROFILE = np.array([1.00, 1.02, 1.00, 0.98, 0.95, 0.85, 1.05])   # Monday .. Sunday


@dataclass(frozen=True)
class WorldSpec:
    """Sizes and constants of a world; derived from the CLI arguments by :func:`world_spec`."""

    seed: int
    n_relevant: int
    n_other: int
    days: int
    start: str
    n_products: int
    n_categories: int
    n_generic_urls: int
    chunk_clients: int
    other_activity: float = 1.0     # multiplier of the non-relevant clients' session and purchase rates
    new_arrivals: float = 0.0       # sessions (x the client's novelty) whose goal is a recent release of any category

    @property
    def n_clients(self) -> int:
        return self.n_relevant + self.n_other

    @property
    def light_visitors(self) -> bool:
        """Non-relevant clients beyond the default count, scaled down by ``other_activity`` (:func:`world_spec`)."""
        return self.other_activity < 1.0

    @property
    def n_chunks(self) -> int:
        return max(1, math.ceil(self.n_clients / self.chunk_clients))


def world_spec(clients: int, seed: int, days: int = 140, chunk_clients: int = 50_000,
               start: str = DEFAULT_START, products: int | None = None, other_clients: int | None = None,
               new_arrivals: float = 0.0) -> WorldSpec:
    """Sizes for ``clients`` relevant clients.

    other_clients: non-relevant clients (default ``clients // 2``). Beyond the default their activity is scaled
    down by ``default / other_clients`` (sessions and purchases) and each keeps at least one session, so the world
    gains many light visitors and about the same number of non-relevant events, the shape of the real data (~19M
    distinct clients, 1M relevant; docs/challenge.md). products: catalogue size (default 0.30 per client of the
    default populations, at least MIN_PRODUCTS; the real data has 1.26M at 1M relevant clients). new_arrivals:
    the share of sessions (x the client's novelty, capped at 1) that browse the new arrivals of every category and
    whose goal is the recent release that best fits the client's content taste (:func:`_choose_arrival`; 0, the
    default, keeps the world's bytes)."""
    if clients < 1:
        raise ValueError(f"--clients must be >= 1, got {clients}")
    if days < 35:
        raise ValueError(f"--days must be >= 35 (the split cuts the last 27 days into target windows), got {days}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    if chunk_clients < 1:
        raise ValueError(f"chunk_clients must be >= 1, got {chunk_clients}")
    if other_clients is not None and other_clients < 0:
        raise ValueError(f"--other-clients must be >= 0, got {other_clients}")
    # Each category needs 2 products (build_catalog); fewer than 400 leaves no room for the 200 categories.
    if not 0.0 <= new_arrivals <= 1.0:
        raise ValueError(f"--new-arrivals must be in [0, 1], got {new_arrivals}")
    if products is not None and products < 400:
        raise ValueError(f"--products must be >= 400, got {products}")
    datetime.strptime(start, TIMESTAMP_FORMAT)
    default_other = clients // 2
    n_other = default_other if other_clients is None else other_clients
    other_activity = default_other / n_other if n_other > default_other else 1.0
    if products is None:
        products = max(MIN_PRODUCTS, int(PRODUCTS_PER_CLIENT * (clients + default_other)))
    n_categories = max(200, products // PRODUCTS_PER_CATEGORY)
    return WorldSpec(seed=seed, n_relevant=clients, n_other=n_other, days=days, start=start,
                     n_products=products, n_categories=n_categories,
                     n_generic_urls=max(2_000, products), chunk_clients=chunk_clients,
                     other_activity=other_activity, new_arrivals=float(new_arrivals))


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


def zipf_rank(u: np.ndarray, n: np.ndarray | int, a: float) -> np.ndarray:
    """Ranks in [0, n) with P(rank = r) ~ (r + 1) ** -a (continuous inverse CDF), from uniforms ``u``."""
    n = np.asarray(n, dtype=np.float64)
    return zipf_rank_c(u, np.power(n + 1.0, 1.0 - a) - 1.0, n - 1.0, a)


def zipf_rank_c(u: np.ndarray, c: np.ndarray, top: np.ndarray, a: float) -> np.ndarray:
    """:func:`zipf_rank` with ``c = (n + 1) ** (1 - a) - 1`` and ``top = n - 1`` precomputed, both of u's float
    type (float32 inputs stay float32; ``n`` below 2 ** 24 there, so ``top`` is exact). int64.

    Clipped to ``top`` before the cast: the same ranks as ``min(int(x), n - 1)``, without numpy's slow
    float -> int64 cast and int64 minimum (3x cheaper; the cast goes through int32, ranks are below 2 ** 31)."""
    x = np.exp(np.log1p(u * c) * (1.0 / (1.0 - a))) - 1.0
    return np.minimum(x, top).astype(np.int32).astype(np.int64)


def _pick(cum_weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index of the first cumulative weight above ``u`` per row; cum_weights (n, k) rows ending at 1."""
    return np.minimum((u[:, None] >= cum_weights).sum(axis=1), cum_weights.shape[1] - 1)


def _pick_sorted_rows(cum_weights: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """:func:`_pick` for ``cum_weights[rows]`` without materialising it: one searchsorted in the flattened table
    (row r's cumulative weights shifted by r)."""
    n, k = cum_weights.shape
    cw = cum_weights.copy()
    cw[:, -1] = 1.0
    table = (np.arange(n, dtype=np.float64)[:, None] + np.minimum(cw, 1.0)).reshape(-1)
    pos = np.searchsorted(table, rows + u, side="right") - rows * k
    return np.minimum(pos, k - 1)


# ---------------------------------------------------------------------------------------------------------------
# Catalogue
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Catalog:
    """Products grouped by category (contiguous), ranked by popularity within a category.

    Arrays over products (n_products,): sku int64, category (index) int32, log_price float32, price (bucket)
    int16, release_day float64 (-inf for products present from the start), fallback int32 (an older product of
    the same category used before the release), names uint8 (n_products, 16), style float32 (n_products,
    STYLE_DIM) the product's place in style space (written into its name codes along ``style_axes``),
    consumable bool, cycle_days float32 (replenishment cycle of a consumable, days; 0 otherwise).
    Over categories (n_categories,): category_id int64, cat_start / cat_size int64, centroid float32 (n_cat, 16),
    templates uint8 (n_cat, 4, 16) query templates. url ids: product pages, category pages, generic pages.
    row_order: the (shuffled) order of products in product_properties.parquet.
    """

    sku: np.ndarray
    category: np.ndarray
    rank: np.ndarray
    log_price: np.ndarray
    price: np.ndarray
    release_day: np.ndarray
    fallback: np.ndarray
    names: np.ndarray
    category_id: np.ndarray
    cat_start: np.ndarray
    cat_size: np.ndarray
    centroid: np.ndarray
    templates: np.ndarray
    style: np.ndarray
    style_axes: np.ndarray
    consumable: np.ndarray
    cycle_days: np.ndarray
    product_url: np.ndarray
    category_url: np.ndarray
    generic_url: np.ndarray
    row_order: np.ndarray

    def __post_init__(self):
        self.zipf_c = (np.power(self.cat_size + 1.0, 1.0 - PRODUCT_ZIPF) - 1.0).astype(np.float32)
        self.zipf_top = (self.cat_size - 1).astype(np.float32)         # zipf_rank_c's top, exact (sizes < 2 ** 24)
        self.release_second = self.release_day * SECONDS_PER_DAY     # float64 (-inf: from the start)
        new = np.flatnonzero(np.isfinite(self.release_day))
        key = self.category[new].astype(np.float64) * 1e6 + self.release_day[new]
        order = np.argsort(key, kind="stable")
        self._new, self._new_key = new[order], key[order]
        by_day = np.argsort(self.release_day[new], kind="stable")
        self.arrivals, self.arrival_day = new[by_day], self.release_day[new][by_day]

    def recent_releases(self, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``[lo, hi)`` per entry into :attr:`arrivals` (the new products by release day): the products of every
        category released in the FRESH_DAYS days up to ``day`` (float days)."""
        hi = np.searchsorted(self.arrival_day, day, side="right")
        lo = np.searchsorted(self.arrival_day, day - FRESH_DAYS, side="right")
        return lo, hi

    def latest_release(self, category: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The product of ``category`` released last at or before ``day`` (float days), and whether it exists
        and was released within FRESH_DAYS."""
        if len(self._new) == 0:
            return np.zeros(len(category), dtype=np.int64), np.zeros(len(category), dtype=bool)
        pos = np.searchsorted(self._new_key, category.astype(np.float64) * 1e6 + day, side="right") - 1
        prod = self._new[np.maximum(pos, 0)]
        ok = (pos >= 0) & (self.category[prod] == category) & (day - self.release_day[prod] < FRESH_DAYS)
        return prod, ok


def build_catalog(spec: WorldSpec) -> Catalog:
    rng = _rng(spec.seed, 0)
    n_p, n_c = spec.n_products, spec.n_categories
    # Category sizes: at least 2 products each, the rest Zipf-like, larger for the more popular categories (tastes
    # and exploration favour low category indices), with noise.
    size_w = np.exp(0.6 * rng.standard_normal(n_c)) / np.arange(1, n_c + 1) ** CATEGORY_SIZE_ZIPF
    cat_size = 2 + rng.multinomial(n_p - 2 * n_c, size_w / size_w.sum())
    cat_start = np.concatenate([[0], np.cumsum(cat_size)[:-1]]).astype(np.int64)
    category = np.repeat(np.arange(n_c, dtype=np.int32), cat_size)
    rank = (np.arange(n_p) - cat_start[category]).astype(np.int32)
    # Prices: category mean + product noise, then 100 quantile buckets over products.
    log_price = (rng.normal(3.5, 1.0, n_c)[category] + rng.normal(0.0, 0.45, n_p)).astype(np.float32)
    order = np.argsort(log_price, kind="stable")
    price = np.empty(n_p, dtype=np.int16)
    price[order] = (np.arange(n_p) * N_PRICE_BUCKETS // n_p).astype(np.int16)
    # Names: super-category centroid -> category centroid -> product (its style along STYLE_DIM global axes, plus
    # noise and a price direction); quantized 0..255. The same style reads the same in every category.
    n_super = max(8, n_c // 25)
    super_c = rng.normal(128.0, 38.0, (n_super, CODE_LEN))
    centroid = (super_c[rng.integers(0, n_super, n_c)] + rng.normal(0.0, 26.0, (n_c, CODE_LEN))).astype(np.float32)
    axes = np.linalg.qr(rng.standard_normal((CODE_LEN, STYLE_DIM)))[0].T.astype(np.float32)   # orthonormal rows
    style = rng.standard_normal((n_p, STYLE_DIM)).astype(np.float32)
    names = _quantize(centroid[category] + STYLE_SCALE * style @ axes + rng.normal(0.0, NAME_NOISE, (n_p, CODE_LEN))
                      + (log_price - log_price.mean())[:, None] * rng.normal(0.0, 3.0, CODE_LEN))
    templates = _quantize(centroid[:, None, :] + rng.normal(0.0, 12.0, (n_c, 4, CODE_LEN)))
    # Releases: new products are more often near the top of their category; the last product of each category
    # is always old so every new product has an older fallback.
    p_new = np.where(rank < 2, 0.40, 0.12)
    is_new = rng.random(n_p) < p_new
    is_new[cat_start + cat_size - 1] = False
    release_day = np.where(is_new, rng.uniform(0.0, spec.days, n_p), -np.inf)
    fallback = _fallback(is_new, cat_start, cat_size, category)
    # Consumables: a share of the categories hold products re-bought on a product-specific cycle.
    consumable = (rng.random(n_c) < CONSUMABLE_CATEGORIES)[category] & (rng.random(n_p) < CONSUMABLE_SHARE)
    cycle_days = np.where(consumable, np.exp(math.log(CYCLE_DAYS) + 0.4 * rng.standard_normal(n_p)), 0.0)
    # Ids: skus, categories and urls are random distinct integers.
    sku = rng.choice(10 * n_p, n_p, replace=False).astype(np.int64)
    category_id = rng.choice(20 * n_c, n_c, replace=False).astype(np.int64)
    n_urls = n_p + n_c + spec.n_generic_urls
    urls = rng.choice(10 * n_urls, n_urls, replace=False).astype(np.int64)
    return Catalog(sku=sku, category=category, rank=rank, log_price=log_price, price=price,
                   release_day=release_day, fallback=fallback, names=names, category_id=category_id,
                   cat_start=cat_start, cat_size=cat_size.astype(np.int64), centroid=centroid, templates=templates,
                   style=style, style_axes=axes, consumable=consumable, cycle_days=cycle_days.astype(np.float32),
                   product_url=urls[:n_p], category_url=urls[n_p:n_p + n_c], generic_url=urls[n_p + n_c:],
                   row_order=rng.permutation(n_p))


def _quantize(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _fallback(is_new: np.ndarray, cat_start: np.ndarray, cat_size: np.ndarray, category: np.ndarray) -> np.ndarray:
    """For each product, the next old product of the same category (itself when old)."""
    n = len(is_new)
    idx = np.arange(n)
    # Next old index at or after i: reverse running minimum over old positions.
    nxt = np.where(~is_new, idx, n)
    nxt = np.minimum.accumulate(nxt[::-1])[::-1]
    # The last product of each category is old, so nxt stays within the category.
    assert np.all(nxt < cat_start[category] + cat_size[category])
    return nxt.astype(np.int32)


def products_table(cat: Catalog) -> pa.Table:
    """product_properties in the released layout."""
    rows = cat.row_order
    return pa.table({SKU: pa.array(cat.sku[rows]), CATEGORY: pa.array(cat.category_id[cat.category[rows]]),
                     PRICE: pa.array(cat.price[rows].astype(np.int64)), NAME: codes_to_arrow(cat.names[rows])})


# ---------------------------------------------------------------------------------------------------------------
# Fixed-width string formatting (numpy byte buffers -> arrow string arrays)
# ---------------------------------------------------------------------------------------------------------------
_DIGITS3 = np.frombuffer("".join(f"{v:3d}" for v in range(256)).encode(), dtype=np.uint8).reshape(256, 3)


def _fixed_width_strings(buf: np.ndarray) -> pa.Array:
    """Arrow string array from an (n, w) uint8 array of ASCII bytes, one row per string."""
    n, w = buf.shape
    if n * w >= 2 ** 31:
        raise ValueError("string buffer too large for one arrow array; format in smaller slices")
    offsets = np.arange(0, (n + 1) * w, w, dtype=np.int32)
    data = np.ascontiguousarray(buf).reshape(-1)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def codes_to_arrow(codes: np.ndarray) -> pa.Array:
    """``"[202 151  55 ...]"`` strings (each value right-aligned to width 3) from uint8 (n, 16)."""
    codes = np.asarray(codes, dtype=np.uint8)
    n = len(codes)
    body = np.full((n, CODE_LEN, 4), ord(" "), dtype=np.uint8)
    body[:, :, :3] = _DIGITS3[codes]
    buf = np.empty((n, 4 * CODE_LEN + 1), dtype=np.uint8)
    buf[:, 0] = ord("[")
    buf[:, 1:4 * CODE_LEN] = body.reshape(n, 4 * CODE_LEN)[:, :4 * CODE_LEN - 1]
    buf[:, 4 * CODE_LEN] = ord("]")
    return _fixed_width_strings(buf)


class TimestampFormatter:
    """``YYYY-MM-DD HH:MM:SS`` strings for integer seconds since ``start`` (lookup tables per day and second)."""

    def __init__(self, start: datetime, days: int):
        self.days = days
        self.date_tab = np.frombuffer("".join((start + timedelta(days=d)).strftime("%Y-%m-%d ")
                                              for d in range(days + 1)).encode(), dtype=np.uint8).reshape(-1, 11)
        s = np.arange(SECONDS_PER_DAY)
        two = np.frombuffer("".join(f"{v:02d}" for v in range(60)).encode(), dtype=np.uint8).reshape(60, 2)
        tab = np.empty((SECONDS_PER_DAY, 8), dtype=np.uint8)
        tab[:, 0:2], tab[:, 3:5], tab[:, 6:8] = two[s // 3600], two[s // 60 % 60], two[s % 60]
        tab[:, 2] = tab[:, 5] = ord(":")
        self.time_tab = tab

    def __call__(self, seconds: np.ndarray) -> pa.Array:
        """seconds: int (n,) in [0, days * 86400)."""
        seconds = np.asarray(seconds, dtype=np.int64)
        if seconds.size and (seconds.min() < 0 or seconds.max() >= self.days * SECONDS_PER_DAY):
            raise ValueError("timestamp outside the world's period")
        buf = np.empty((len(seconds), 19), dtype=np.uint8)
        buf[:, :11] = self.date_tab[seconds // SECONDS_PER_DAY]
        buf[:, 11:] = self.time_tab[seconds % SECONDS_PER_DAY]
        return _fixed_width_strings(buf)


# ---------------------------------------------------------------------------------------------------------------
# Clients and their events
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Clients:
    """Latents of one chunk of clients, arrays (n,) unless noted. Days are measured from the world's start.

    session_rate: expected browsing sessions per day (before the weekly rhythm); session_len: mean events per
    session (before the purchase tail); join_day / death_day: the alive interval; hazard: churn hazard per day
    (death = join + Exp(hazard)); buyer: a regular buyer; buy_interval: mean days between purchase sessions (regular
    buyers weeks, others years); buy_shape: gamma shape of the gaps (higher = more regular); buy_start_day /
    buy_stop_day: the purchasing phase (within the alive interval); items_per_buy: mean
    products bought per purchase session; cart_mult / search_mult: multipliers of the add/remove and search shares
    while browsing; price_level: preferred price bucket (0..99), price_tol: tolerance in buckets;
    taste_cat: int32 (n, 2, K_TASTE) category indices at the start [:, 0] and end [:, 1] of the period (-1 unused),
    taste_w: float32 (n, 2, K_TASTE) weights (rows sum to 1; unused slots 0);
    style: float32 (n, STYLE_DIM) unit vector, the region of style space the client prefers, style_strength: its
    weight in product choices (a product's choice cost falls by strength x <product style, client style>);
    buy_now: share of bought items without an add_to_cart; replenish: probability of re-buying a consumable after
    a purchase of it, replenish_pace: multiplier of the product's cycle; novelty: multiplier of the share of product
    choices that go to a recent release (taken only when its style matches, see :func:`draw_events`).
    """

    client_id: np.ndarray
    relevant: np.ndarray
    session_rate: np.ndarray
    session_len: np.ndarray
    join_day: np.ndarray
    death_day: np.ndarray
    hazard: np.ndarray
    buyer: np.ndarray
    buy_interval: np.ndarray
    buy_shape: np.ndarray
    buy_start_day: np.ndarray
    buy_stop_day: np.ndarray
    items_per_buy: np.ndarray
    cart_mult: np.ndarray
    search_mult: np.ndarray
    price_level: np.ndarray
    price_tol: np.ndarray
    taste_cat: np.ndarray
    taste_w: np.ndarray
    style: np.ndarray
    style_strength: np.ndarray
    buy_now: np.ndarray
    replenish: np.ndarray
    replenish_pace: np.ndarray
    novelty: np.ndarray

    @cached_property
    def taste_cum(self) -> np.ndarray:
        """float32 (n, 2, K_TASTE): cumulative taste weights (what :func:`_taste_draw` picks a slot from)."""
        return np.cumsum(self.taste_w, axis=2)

    @cached_property
    def taste_slots(self) -> np.ndarray:
        """int64 (n, 2): used taste slots at the start and end of the period."""
        return (self.taste_cat >= 0).sum(axis=2)

    def browse_mix_cum(self) -> np.ndarray:
        """Cumulative probabilities (n, 5) of the event kinds (EVENT_TYPES order) while browsing: no purchases."""
        mult = np.stack([np.zeros_like(self.cart_mult), self.cart_mult, self.cart_mult,
                         np.ones_like(self.cart_mult), self.search_mult], axis=1)
        p = BROWSE_MIX * mult
        return np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)


def draw_clients(rng: np.random.Generator, client_id: np.ndarray, relevant: np.ndarray, spec: WorldSpec
                 ) -> Clients:
    n = len(client_id)
    z = rng.standard_normal(n)                      # activity
    session_rate = np.minimum(np.exp(np.where(relevant, math.log(0.09), math.log(0.025))
                                     + np.where(relevant, 1.7, 1.6) * z), 20.0)
    if spec.light_visitors:   # only then, so default worlds keep their bytes
        session_rate = np.where(relevant, session_rate, session_rate * spec.other_activity)
    session_len = 1.0 + np.exp(math.log(SESSION_LEN) + SESSION_LEN_SD * rng.standard_normal(n))
    hazard = np.exp(math.log(1 / 800) + 0.9 * rng.standard_normal(n) - 0.25 * z)
    join_day = np.where(rng.random(n) < 0.7, 0.0, rng.uniform(0.0, 0.8 * spec.days, n))
    death_day = np.minimum(join_day + rng.exponential(1.0, n) / hazard, float(spec.days))
    # Purchases: a minority of regular buyers (more likely among active clients) buy every few weeks; the others
    # buy once in years, if ever.
    buyer = rng.random(n) < 1.0 / (1.0 + np.exp(-(math.log(BUYER_SHARE / (1 - BUYER_SHARE)) + 0.5 * z)))
    buy_interval = np.where(buyer, np.exp(math.log(BUY_INTERVAL_DAYS) - 0.2 * z + 0.8 * rng.standard_normal(n)),
                            np.exp(math.log(3000.0) + rng.standard_normal(n)))
    if spec.light_visitors:
        buy_interval = np.where(relevant, buy_interval, buy_interval / spec.other_activity)
    buy_shape = rng.uniform(0.5, 1.5, n)
    # Purchasing starts at join for half the clients, later for the others, and stops after months on average.
    buy_start_day = join_day + np.where(rng.random(n) < 0.5, 0.0, rng.exponential(START_DELAY_DAYS, n))
    buy_stop_day = buy_start_day + rng.exponential(PHASE_DAYS, n)
    items_per_buy = 1.0 + np.exp(math.log(ITEMS_PER_BUY - 1.0) + 0.5 * rng.standard_normal(n) - 0.125)
    cart_mult = np.exp(0.5 * rng.standard_normal(n) - 0.125) * np.where(buyer, 1.5, 0.8)
    search_mult = np.exp(0.8 * rng.standard_normal(n) - 0.32)
    price_level = np.clip(rng.normal(50.0, 22.0, n), 0.0, 99.0)
    price_tol = np.exp(math.log(12.0) + 0.4 * rng.standard_normal(n))
    # Tastes: up to K_TASTE categories drawn from the global category popularity; the end-of-period taste
    # replaces a client-specific share of them and reweights the rest.
    k = 1 + np.minimum(rng.poisson(2.5, n), K_TASTE - 1)
    used = np.arange(K_TASTE)[None, :] < k[:, None]
    start_cat = zipf_rank(rng.random((n, K_TASTE)), spec.n_categories, 0.9)
    drift = rng.beta(2.0, 3.0, n)
    replace = rng.random((n, K_TASTE)) < drift[:, None]
    end_cat = np.where(replace, zipf_rank(rng.random((n, K_TASTE)), spec.n_categories, 0.9), start_cat)
    w0 = rng.gamma(0.8, 1.0, (n, K_TASTE)) * used + 1e-12 * used
    w1 = w0 * np.exp(0.8 * rng.standard_normal((n, K_TASTE)))
    w = np.stack([w0, w1], axis=1)
    w /= w.sum(axis=2, keepdims=True)
    taste_cat = np.where(used[:, None, :], np.stack([start_cat, end_cat], axis=1), -1).astype(np.int32)
    style = rng.standard_normal((n, STYLE_DIM))
    style /= np.linalg.norm(style, axis=1, keepdims=True)
    style_strength = np.exp(math.log(STYLE_STRENGTH) + 0.4 * rng.standard_normal(n))
    buy_now = rng.beta(3.0 * BUY_NOW_SHARE / (1 - BUY_NOW_SHARE), 3.0, n)
    replenish = rng.beta(2.0 * REPLENISH_MEAN / (1 - REPLENISH_MEAN), 2.0, n)
    replenish_pace = np.exp(0.25 * rng.standard_normal(n))
    novelty = np.exp(0.7 * rng.standard_normal(n) - 0.245)
    return Clients(client_id=client_id, relevant=relevant, session_rate=session_rate, session_len=session_len,
                   join_day=join_day, death_day=death_day, hazard=hazard, buyer=buyer, buy_interval=buy_interval,
                   buy_shape=buy_shape, buy_start_day=buy_start_day, buy_stop_day=buy_stop_day, items_per_buy=items_per_buy, cart_mult=cart_mult,
                   search_mult=search_mult, price_level=price_level, price_tol=price_tol, taste_cat=taste_cat,
                   taste_w=w.astype(np.float32), style=style.astype(np.float32), style_strength=style_strength,
                   buy_now=buy_now, replenish=replenish, replenish_pace=replenish_pace, novelty=novelty)


class Rhythm:
    """Weekly and daily rhythm: cumulative intensity ``W`` over hour slots, in days (W[-1] == days)."""

    def __init__(self, start: datetime, days: int):
        hours = np.arange(days * 24)
        w = _HOUR_PROFILE[hours % 24] * _WEEKDAY_PROFILE[(start.weekday() + hours // 24) % 7]
        self.w = w * (days / w.sum())
        self.W = np.concatenate([[0.0], np.cumsum(self.w)])
        self.hours = len(hours)
        self.hour_cum = np.cumsum(_HOUR_PROFILE / _HOUR_PROFILE.sum())

    def at(self, day: np.ndarray) -> np.ndarray:
        """Cumulative intensity at ``day`` (float days since start)."""
        return np.interp(np.asarray(day) * 24.0, np.arange(self.hours + 1), self.W)

    def invert(self, u: np.ndarray) -> np.ndarray:
        """Seconds since start where the cumulative intensity reaches ``u``."""
        slot = np.clip(np.searchsorted(self.W, u, side="right") - 1, 0, self.hours - 1)
        frac = np.clip((u - self.W[slot]) / self.w[slot], 0.0, 1.0 - 1e-9)
        return ((slot + frac) * 3600.0).astype(np.int64)

    def time_of_day(self, rng: np.random.Generator, day: np.ndarray) -> np.ndarray:
        """Seconds since start: the calendar day of ``day`` (float days) at a time drawn from the daily profile."""
        hour = np.minimum(np.searchsorted(self.hour_cum, rng.random(len(day)), side="right"), 23)
        return (np.floor(day).astype(np.int64) * SECONDS_PER_DAY + hour * 3600
                + (rng.random(len(day)) * 3600).astype(np.int64))


def _renewal(rng: np.random.Generator, start: np.ndarray, stop: np.ndarray, mean_gap: np.ndarray,
             shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Times of a stationary gamma renewal process per row in [start, stop): (row index, time), row-major."""
    n = len(start)
    bound = np.ceil(2.0 * np.maximum(stop - start, 0.0) / mean_gap + 6.0).astype(np.int64)
    rows = np.repeat(np.arange(n, dtype=np.int64), bound)
    gaps = rng.gamma(shape[rows], 1.0) / shape[rows] * mean_gap[rows]
    first = np.concatenate([[0], np.cumsum(bound)[:-1]]).astype(np.int64)
    gaps[first] *= rng.random(n)                   # stationary phase of the first event
    csum = np.cumsum(gaps)
    t = start[rows] + csum - (csum[first] - gaps[first])[rows]
    keep = t < stop[rows]
    return rows[keep], t[keep]


def _taste_draw(rng: np.random.Generator, clients: Clients, rows: np.ndarray, end_prob: np.ndarray) -> np.ndarray:
    """One category index per entry of ``rows`` (client rows): from the client's end-of-period taste with
    probability ``end_prob``, else from its start taste."""
    which = (rng.random(len(rows)) < end_prob).astype(np.int64)
    slot = _pick(clients.taste_cum[rows, which], rng.random(len(rows)))
    slot = np.minimum(slot, clients.taste_slots[rows, which] - 1)
    return clients.taste_cat[rows, which, slot]


def _last_in_session(mark: np.ndarray, session: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each event, the index of the latest earlier-or-same marked event of its session, and whether one exists."""
    idx = np.arange(len(mark), dtype=np.int64)
    last = np.maximum.accumulate(np.where(mark, idx, -1)) if len(mark) else idx
    ok = last >= 0
    ok[ok] = session[last[ok]] == session[ok]
    return np.where(ok, last, idx), ok


@dataclass
class ChunkEvents:
    """Events of one chunk, ordered by (client, session start). client: row into the chunk's Clients (int64),
    seconds: since the world's start (int64), kind: schema.EVENT_CODE (uint8), item: sku or url id (int64; -1 for
    searches), query: uint8 (n_search, 16) codes of the search events in order."""

    client: np.ndarray
    seconds: np.ndarray
    kind: np.ndarray
    item: np.ndarray
    query: np.ndarray


def _sessions(rng: np.random.Generator, clients: Clients, spec: WorldSpec, rhythm: Rhythm):
    """Browsing sessions (Poisson, by the rhythm) and purchase sessions (gamma renewal): client row, start second,
    number of purchased items (0 for browsing), sorted by (client, start)."""
    w_join, w_death = rhythm.at(clients.join_day), rhythm.at(clients.death_day)
    n_b = rng.poisson(clients.session_rate * (w_death - w_join))
    # Relevant clients (and the light visitors of a scaled world) appear at least once.
    n_b = np.where(clients.relevant | spec.light_visitors, np.maximum(n_b, 1), n_b)
    n_b = np.minimum(n_b, (MAX_EVENTS_PER_CLIENT / clients.session_len).astype(np.int64))
    b_client = np.repeat(np.arange(len(n_b), dtype=np.int64), n_b)
    b_time = rhythm.invert(w_join[b_client] + rng.random(len(b_client)) * (w_death - w_join)[b_client])
    p_client, p_day = _renewal(rng, clients.buy_start_day, np.minimum(clients.death_day, clients.buy_stop_day),
                               clients.buy_interval, clients.buy_shape)
    p_time = rhythm.time_of_day(rng, p_day)
    p_items = 1 + rng.poisson(clients.items_per_buy[p_client] - 1.0)
    s_client = np.concatenate([b_client, p_client])
    s_time = np.concatenate([b_time, p_time])
    s_items = np.concatenate([np.zeros(len(b_client), dtype=np.int64), p_items])
    return _by_client_time(s_client, s_time, s_items)


def _by_client_time(client: np.ndarray, seconds: np.ndarray, *more: np.ndarray) -> tuple[np.ndarray, ...]:
    """The arrays reordered by (client, seconds), ties in their order: ``np.lexsort((seconds, client))`` as one
    stable sort of a packed int64 key (the same permutation; 0.29 s instead of 1.22 s over a 100k-client world's
    chunks, line profile)."""
    if len(client) and seconds.min() >= 0:
        order = np.argsort(client * (int(seconds.max()) + 1) + seconds, kind="stable")
    else:
        order = np.lexsort((seconds, client))
    return tuple(a[order] for a in (client, seconds, *more))


def choice_cost(level, tol, strength, match, price):
    """Cost of a product for a client (lower = more likely chosen; the choice weight is exp(-cost)):
    ``|price - level| / tol - strength * match``, match = <product style, client style>. Float arrays
    broadcasting together (price in buckets); float32 result."""
    return (np.abs(price - level) / tol - strength * match).astype(np.float32)


def _choose(rng: np.random.Generator, clients: Clients, cat: Catalog, rows: np.ndarray, category: np.ndarray,
            seconds: np.ndarray, n_candidates: int = N_CANDIDATES) -> np.ndarray:
    """One product per entry (client row ``rows``, category index, time in seconds): ``n_candidates`` popularity draws
    in the category (unreleased ones replaced by their fallback), the one with the smallest ``E * exp(cost)``
    (E ~ Exp(1): a Gumbel-max choice with weights ``exp(-cost)``, see :func:`choice_cost`). int64 (n,)."""
    n = len(rows)
    level, tol = clients.price_level[rows].astype(np.float32), clients.price_tol[rows].astype(np.float32)
    strength, style = clients.style_strength[rows].astype(np.float32), clients.style[rows]
    start, zc, top = cat.cat_start[category], cat.zipf_c[category], cat.zipf_top[category]
    seconds = seconds.astype(np.float64)
    best, best_score = np.zeros(n, dtype=np.int64), np.full(n, np.inf, dtype=np.float32)
    for _ in range(n_candidates):          # a loop over candidates, vectorised over entries (bounded memory)
        cand = start + zipf_rank_c(rng.random(n, dtype=np.float32), zc, top, PRODUCT_ZIPF)
        cand = np.where(cat.release_second[cand] > seconds, cat.fallback[cand], cand)
        score = rng.standard_exponential(n, dtype=np.float32) * np.exp(
            choice_cost(level, tol, strength, style_match(cat.style[cand], style), cat.price[cand].astype(np.float32)))
        _keep_smaller(best, best_score, cand, score)
    return best


def _keep_smaller(best: np.ndarray, best_score: np.ndarray, cand: np.ndarray, score: np.ndarray) -> None:
    """One Gumbel-max step, in place: where ``score < best_score``, ``best`` takes ``cand`` and ``best_score`` the
    score (``fmin``: a NaN score never wins, as with ``<``; the same values as masked assignments, cheaper)."""
    np.copyto(best, cand, where=score < best_score)
    np.fmin(best_score, score, out=best_score)


def style_match(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of two (n, STYLE_DIM) arrays: the same values as ``(a * b).sum(axis=1)``, summed
    left to right column by column (numpy's reduction over a short axis costs more than the products)."""
    out = a[:, 0] * b[:, 0]
    for j in range(1, a.shape[1]):
        out += a[:, j] * b[:, j]
    return out


def adoption_probability(strength: np.ndarray, match: np.ndarray) -> np.ndarray:
    """Probability that a client takes a recent release offered to it: logistic in strength x style match."""
    return 1.0 / (1.0 + np.exp(1.0 - 3.0 * strength * match))


def _offer_fresh(rng: np.random.Generator, clients: Clients, cat: Catalog, rows: np.ndarray, category: np.ndarray,
                 seconds: np.ndarray, share: float | np.ndarray, product: np.ndarray) -> None:
    """Novelty, in place on ``product``: a ``share x novelty`` of the choices are offered the category's latest
    release of the last FRESH_DAYS days, taken when its style matches the client's (:func:`adoption_probability`)."""
    hot = np.flatnonzero(rng.random(len(rows)) < share * clients.novelty[rows])
    fresh, ok = cat.latest_release(category[hot], seconds[hot] / SECONDS_PER_DAY)
    match = style_match(cat.style[fresh], clients.style[rows[hot]])
    ok &= rng.random(len(hot)) < adoption_probability(clients.style_strength[rows[hot]], match)
    product[hot[ok]] = fresh[ok]


def arrival_share(new_arrivals: float, novelty: np.ndarray) -> np.ndarray:
    """Share of a client's sessions that are new-arrivals sessions: ``min(1, new_arrivals x novelty)``
    (``new_arrivals``: :attr:`WorldSpec.new_arrivals`)."""
    return np.minimum(new_arrivals * novelty, 1.0)


def arrival_weight(cat_rank: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Weight of a recent release in a new-arrivals choice: popularity x ``exp(-ARRIVAL_SHARPNESS x cost)``
    (:func:`choice_cost`), unnormalised; float arrays broadcasting together."""
    return np.exp(-PRODUCT_ZIPF * np.log(cat_rank + 1.0) - ARRIVAL_SHARPNESS * cost)


def _choose_arrival(rng: np.random.Generator, clients: Clients, cat: Catalog, rows: np.ndarray,
                    seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A new-arrivals goal per entry (client row, time in seconds): ARRIVAL_CANDIDATES uniform draws among the
    releases of every category in the last FRESH_DAYS, the one with the smallest ``E / arrival_weight`` (a
    Gumbel-max choice with weights :func:`arrival_weight`: the client's price level and style decide, across
    categories). Returns (product int64, ok: a recent release existed)."""
    lo, hi = cat.recent_releases(seconds / SECONDS_PER_DAY)
    ok = hi > lo
    n = len(rows)
    level, tol = clients.price_level[rows].astype(np.float32), clients.price_tol[rows].astype(np.float32)
    strength, style = clients.style_strength[rows].astype(np.float32), clients.style[rows]
    best, best_score = np.zeros(n, dtype=np.int64), np.full(n, np.inf)
    if not len(cat.arrivals):
        return best, ok
    for _ in range(ARRIVAL_CANDIDATES):
        pos = np.minimum(lo + (rng.random(n) * (hi - lo)).astype(np.int64), len(cat.arrivals) - 1)
        cand = cat.arrivals[pos]
        cost = choice_cost(level, tol, strength, style_match(cat.style[cand], style),
                           cat.price[cand].astype(np.float32))
        score = rng.standard_exponential(n) / arrival_weight(cat.rank[cand].astype(np.float64), cost)
        _keep_smaller(best, best_score, cand, score)
    return best, ok


def draw_events(rng: np.random.Generator, clients: Clients, spec: WorldSpec, cat: Catalog, rhythm: Rhythm
                ) -> ChunkEvents:
    """All events of a chunk of clients (see the module docstring for the story)."""
    period = spec.days * SECONDS_PER_DAY
    s_client, s_time, s_items = _sessions(rng, clients, spec, rhythm)
    n_s = len(s_client)
    focus = _taste_draw(rng, clients, s_client, s_time / period)
    explore = rng.random(n_s) < np.where(s_items > 0, EXPLORE_PURCHASE, EXPLORE_SESSION)
    focus[explore] = zipf_rank(rng.random(int(explore.sum())), spec.n_categories, 0.9)
    # Sequential intent: every session has a goal product in its focus category; its views narrow towards it and
    # a purchase session buys it first.
    goal = _choose(rng, clients, cat, s_client, focus, s_time)
    _offer_fresh(rng, clients, cat, s_client, focus, s_time, np.where(s_items > 0, FRESH_BUY_SHARE, FRESH_SHARE),
                 goal)
    if spec.new_arrivals > 0:   # only then, so default worlds keep their bytes
        # New arrivals: some sessions browse the recent releases of every category; the goal is the one that fits
        # the client's content taste (price, style) best, and the session's focus becomes its category.
        arrive = np.flatnonzero(rng.random(n_s) < arrival_share(spec.new_arrivals, clients.novelty[s_client]))
        new_goal, ok = _choose_arrival(rng, clients, cat, s_client[arrive], s_time[arrive].astype(np.float64))
        goal[arrive[ok]] = new_goal[ok]
        focus[arrive[ok]] = cat.category[new_goal[ok]]
    # Events per session: a geometric body (mean session_len) then, in purchase sessions, a pair per item bought
    # (add_to_cart or, buying now, a view of the product page; then product_buy); seconds to minutes apart.
    body = rng.geometric(1.0 / clients.session_len[s_client])
    n_ev = body + 2 * s_items
    session = np.repeat(np.arange(n_s, dtype=np.int64), n_ev)
    first = np.concatenate([[0], np.cumsum(n_ev)[:-1]]).astype(np.int64)
    gap = rng.exponential(SESSION_GAP_MEAN, len(session)) + 5.0
    gap[first] = 0.0
    csum = np.cumsum(gap)
    seconds = s_time[session] + (csum - csum[first][session]).astype(np.int64)
    pos = np.arange(len(session), dtype=np.int64) - first[session] - body[session]   # >= 0 in the tail
    del gap, csum
    keep = seconds < period
    session, seconds, pos = session[keep], seconds[keep], pos[keep]
    client = s_client[session]
    n_e = len(session)
    tail = pos >= 0
    progress = np.where(tail, 1.0, (pos + body[session] + 1) / body[session]).astype(np.float32)  # in (0, 1]
    kind = _pick_sorted_rows(clients.browse_mix_cum(), client, rng.random(n_e)).astype(np.uint8)
    kind[tail] = np.where(pos[tail] % 2 == 0, EVENT_CODE[ADD_TO_CART], EVENT_CODE[PRODUCT_BUY])
    buy_now = tail & (pos % 2 == 0) & (rng.random(n_e) < clients.buy_now[client])
    kind[buy_now] = EVENT_CODE[PAGE_VISIT]
    # Category: the session focus, else the client's taste at that time, else anything popular; late in the
    # session it returns to the focus (the goal's category).
    category = focus[session].astype(np.int64)
    r = rng.random(n_e)
    narrow = rng.random(n_e) < INTENT_CATEGORY * progress
    alt = np.flatnonzero((r < EVENT_OFF_FOCUS) & ~narrow)
    category[alt] = _taste_draw(rng, clients, client[alt], seconds[alt] / period)
    wild = np.flatnonzero((r < EVENT_WILD) & ~narrow)
    category[wild] = zipf_rank(rng.random(len(wild)), spec.n_categories, 0.9)
    product = _choose(rng, clients, cat, client, category, seconds, VIEW_CANDIDATES)
    # Novelty: some choices are offered the category's latest release of the last FRESH_DAYS days, taken when its
    # style matches the client's (content affinity, not popularity alone).
    _offer_fresh(rng, clients, cat, client, category, seconds, FRESH_SHARE, product)
    # Views narrow towards the goal: late events of a session are the goal product itself more and more often.
    to_goal = ~tail & (rng.random(n_e) < INTENT_GOAL * progress ** 2)
    product[to_goal] = goal[session[to_goal]]
    # The tail: the first item bought is the goal; both events of a pair hold the same product (a kept buy's pair
    # opener is kept too: times increase within a session).
    product[tail & (pos == 0)] = goal[session[tail & (pos == 0)]]
    closer = np.flatnonzero(tail & (pos % 2 == 1))
    product[closer] = product[closer - 1]
    # Page visits: the product's page, its category's page or a generic page (a buy-now view: the product's page).
    visit = kind == EVENT_CODE[PAGE_VISIT]
    u = np.where(buy_now, 0.0, rng.random(n_e))
    product_page = visit & (u < PRODUCT_PAGE)
    item = np.full(n_e, -1, dtype=np.int64)
    item[product_page] = cat.product_url[product[product_page]]
    cat_page = visit & (u >= PRODUCT_PAGE) & (u < PRODUCT_PAGE + CATEGORY_PAGE)
    item[cat_page] = cat.category_url[category[cat_page]]
    generic = visit & (u >= PRODUCT_PAGE + CATEGORY_PAGE)
    item[generic] = cat.generic_url[zipf_rank(rng.random(int(generic.sum())), spec.n_generic_urls, GENERIC_ZIPF)]
    # Funnel while browsing: add the product last viewed in the session; remove the product last added.
    last, ok = _last_in_session(product_page, session)
    is_add = (kind == EVENT_CODE[ADD_TO_CART]) & ~tail
    product = np.where(is_add & ok & (rng.random(n_e) < 0.8), product[last], product)
    last, ok = _last_in_session(is_add, session)
    product = np.where((kind == EVENT_CODE[REMOVE_FROM_CART]) & ok, product[last], product)
    sku_event = kind <= EVENT_CODE[REMOVE_FROM_CART]
    item[sku_event] = cat.sku[product[sku_event]]
    # Searches: a query like the name of the product looked at next in the session.
    search = np.flatnonzero(kind == EVENT_CODE[SEARCH_QUERY])
    nxt = np.minimum(search + 1, n_e - 1)
    target = np.where(session[nxt] == session[search], product[nxt], product[search])
    template = cat.templates[cat.category[target], rng.integers(0, cat.templates.shape[1], len(search))]
    query = _quantize(0.6 * cat.names[target] + 0.4 * template)
    # Replenishment: consumables bought are re-bought on their cycle (a product view or an add, then the buy).
    bought = np.flatnonzero((kind == EVENT_CODE[PRODUCT_BUY]) & cat.consumable[product])
    r_client, r_seconds, r_kind, r_product = _replenish(rng, clients, spec, cat, rhythm, client[bought],
                                                        seconds[bought], product[bought])
    r_item = np.where(r_kind == EVENT_CODE[PAGE_VISIT], cat.product_url[r_product], cat.sku[r_product])
    return ChunkEvents(client=np.concatenate([client, r_client]), seconds=np.concatenate([seconds, r_seconds]),
                       kind=np.concatenate([kind, r_kind]), item=np.concatenate([item, r_item]), query=query)


def _replenish(rng: np.random.Generator, clients: Clients, spec: WorldSpec, cat: Catalog, rhythm: Rhythm,
               client: np.ndarray, seconds: np.ndarray, product: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Re-buys of consumables: after a buy (client row, second, product), with the client's ``replenish``
    probability, a chain of re-buys every ``cycle_days x replenish_pace x Gamma(8)/8`` days, each followed by
    another with REPLENISH_CONTINUE, while the client is alive. Each re-buy is two events: a product-page view
    (with the client's buy_now share) or an add_to_cart, 5 s to minutes before the buy.
    Returns (client row, seconds, kind code, product), int64/uint8 arrays."""
    start = rng.random(len(client)) < clients.replenish[client]
    c, p, day = client[start], product[start], seconds[start] / SECONDS_PER_DAY
    out_c, out_t, out_p = [], [], []
    while len(c):                          # one pass per generation of the chains (each a vectorised step)
        day = day + cat.cycle_days[p] * clients.replenish_pace[c] * rng.gamma(8.0, 1.0 / 8.0, len(c))
        alive = day < np.minimum(clients.death_day[c], float(spec.days))
        c, p, day = c[alive], p[alive], day[alive]
        out_c.append(c), out_t.append(day), out_p.append(p)
        go_on = rng.random(len(c)) < REPLENISH_CONTINUE
        c, p, day = c[go_on], p[go_on], day[go_on]
    c, day, p = (np.concatenate(x) if x else np.zeros(0) for x in (out_c, out_t, out_p))
    c, p = c.astype(np.int64), p.astype(np.int64)
    buy = np.minimum(rhythm.time_of_day(rng, day), spec.days * SECONDS_PER_DAY - 1)
    lead = (rng.exponential(60.0, len(c)) + 5.0).astype(np.int64)
    ok = buy - lead >= 0
    c, p, buy, lead = c[ok], p[ok], buy[ok], lead[ok]
    opener = np.where(rng.random(len(c)) < clients.buy_now[c], EVENT_CODE[PAGE_VISIT], EVENT_CODE[ADD_TO_CART])
    kinds = np.concatenate([opener, np.full(len(c), EVENT_CODE[PRODUCT_BUY])]).astype(np.uint8)
    return np.concatenate([c, c]), np.concatenate([buy - lead, buy]), kinds, np.concatenate([p, p])


def clients_truth_table(clients: Clients, cat: Catalog, spec: WorldSpec | None = None) -> pa.Table:
    """Latents of a chunk of clients (truth/clients.parquet); taste categories as category ids (-1 unused); with
    new arrivals (``spec.new_arrivals > 0``) also ``arrival_share``, the client's share of new-arrivals sessions."""
    ids = np.where(clients.taste_cat >= 0, cat.category_id[np.maximum(clients.taste_cat, 0)], -1)
    n = len(clients.client_id)

    def fixed(a: np.ndarray) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(a).reshape(-1)), K_TASTE)

    cols = {CLIENT_ID: clients.client_id, "relevant": clients.relevant}
    for name in ("session_rate", "session_len", "join_day", "death_day", "hazard", "buyer", "buy_interval",
                 "buy_shape", "buy_start_day", "buy_stop_day", "items_per_buy", "cart_mult", "search_mult",
                 "price_level", "price_tol", "style_strength", "buy_now", "replenish", "replenish_pace", "novelty"):
        value = getattr(clients, name)
        cols[name] = value if value.dtype == bool else value.astype(np.float64)
    if spec is not None and spec.new_arrivals > 0:
        cols["arrival_share"] = arrival_share(spec.new_arrivals, clients.novelty).astype(np.float64)
    table = pa.table({k: pa.array(v) for k, v in cols.items()})
    table = table.append_column("style", pa.FixedSizeListArray.from_arrays(
        pa.array(clients.style.astype(np.float64).reshape(-1)), STYLE_DIM))
    for j, when in enumerate(("start", "end")):
        table = table.append_column(f"taste_{when}_category", fixed(ids[:, j]))
        table = table.append_column(f"taste_{when}_weight", fixed(clients.taste_w[:, j]))
    assert table.num_rows == n
    return table


def products_truth_table(cat: Catalog) -> pa.Table:
    """Product latents (truth/products.parquet), in catalogue order (categories contiguous, by rank): category
    index and rank, category size, log price, release day (NaN = from the start), is_new, fallback sku (the product
    bought in its place before the release), url (of its page), style (STYLE_DIM floats), consumable, cycle_days (0 = not a
    consumable)."""
    release = np.where(np.isfinite(cat.release_day), cat.release_day, np.nan)
    table = pa.table({SKU: cat.sku, CATEGORY: cat.category_id[cat.category],
                      "category_index": cat.category.astype(np.int64), "rank": cat.rank.astype(np.int64),
                      "category_size": cat.cat_size[cat.category].astype(np.int64),
                      "log_price": cat.log_price.astype(np.float64), PRICE: cat.price.astype(np.int64),
                      "release_day": release, "is_new": np.isfinite(cat.release_day),
                      "fallback_sku": cat.sku[cat.fallback], "url": cat.product_url, "consumable": cat.consumable,
                      "cycle_days": cat.cycle_days.astype(np.float64)})
    return table.append_column("style", pa.FixedSizeListArray.from_arrays(
        pa.array(cat.style.astype(np.float64).reshape(-1)), STYLE_DIM))


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------
def _event_schema(kind: str) -> pa.Schema:
    item = pa.string() if kind == SEARCH_QUERY else pa.int64()
    return pa.schema([(CLIENT_ID, pa.int64()), (TIMESTAMP, pa.string()), (ITEM_COLUMN[kind], item)])


def event_parquet_options(kind: str) -> dict:
    """:data:`PARQUET_OPTIONS` for an event file: no dictionary for the timestamps, nearly all distinct (building
    one and falling back to plain pages cost a fifth of the writes; the files are also smaller and read faster)."""
    return {**PARQUET_OPTIONS, "use_dictionary": [c for c in _event_schema(kind).names if c != TIMESTAMP]}


def _write_kind(writer: pq.ParquetWriter, kind: str, ev: ChunkEvents, ids: np.ndarray,
                fmt: TimestampFormatter) -> int:
    rows = np.flatnonzero(ev.kind == EVENT_CODE[kind])
    schema = writer.schema
    for lo in range(0, len(rows), WRITE_SLICE):
        part = rows[lo:lo + WRITE_SLICE]
        if kind == SEARCH_QUERY:
            item = codes_to_arrow(ev.query[lo:lo + WRITE_SLICE])
        else:
            item = pa.array(ev.item[part])
        table = pa.Table.from_arrays([pa.array(ids[ev.client[part]]), fmt(ev.seconds[part]), item], schema=schema)
        writer.write_table(table)
    return len(rows)


def write_raw_world(out: str | Path, spec: WorldSpec, progress: bool = True) -> dict[str, int]:
    """The six raw parquet files, input/relevant_clients.npy and truth/; returns row counts per event kind.

    Every file appears under its final name only when the whole world is written.
    """
    out = Path(out)
    paths = DataPaths(out)
    start = datetime.strptime(spec.start, TIMESTAMP_FORMAT)
    cat = build_catalog(spec)
    fmt, rhythm = TimestampFormatter(start, spec.days), Rhythm(start, spec.days)
    id_rng = _rng(spec.seed, 1)
    ids = id_rng.choice(10 * spec.n_clients + 1000, spec.n_clients, replace=False).astype(np.int64)
    relevant = np.zeros(spec.n_clients, dtype=bool)
    relevant[id_rng.choice(spec.n_clients, spec.n_relevant, replace=False)] = True
    counts = dict.fromkeys(EVENT_TYPES, 0)
    out.mkdir(parents=True, exist_ok=True)
    paths.truth.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        stack.enter_context(large_blocks_in_heap())   # every chunk allocates and frees the same large arrays
        tmp = {kind: stack.enter_context(atomic_path(paths.table(kind))) for kind in EVENT_TYPES}
        writers = {kind: stack.enter_context(pq.ParquetWriter(tmp[kind], _event_schema(kind),
                                                              **event_parquet_options(kind)))
                   for kind in EVENT_TYPES}
        truth_tmp = stack.enter_context(atomic_path(paths.truth / "clients.parquet"))
        truth_writer = None
        from competition.progress import progress as progress_of
        chunks = progress_of(range(spec.n_chunks), desc="synth: chunks", unit="chunk", enabled=progress)
        for k in chunks:
            lo, hi = k * spec.chunk_clients, min((k + 1) * spec.chunk_clients, spec.n_clients)
            rng = _rng(spec.seed, 2, k)
            clients = draw_clients(rng, ids[lo:hi], relevant[lo:hi], spec)
            ev = draw_events(rng, clients, spec, cat, rhythm)
            for kind in EVENT_TYPES:
                counts[kind] += _write_kind(writers[kind], kind, ev, clients.client_id, fmt)
            del ev
            table = clients_truth_table(clients, cat, spec)
            if truth_writer is None:
                truth_writer = stack.enter_context(pq.ParquetWriter(truth_tmp, table.schema, **PARQUET_OPTIONS))
            truth_writer.write_table(table)
        for w in [*writers.values(), truth_writer]:
            w.close()
        with atomic_path(paths.table(PRODUCT_PROPERTIES)) as t:
            pq.write_table(products_table(cat), t, **PARQUET_OPTIONS)
        with atomic_path(paths.truth / "products.parquet") as t:
            pq.write_table(products_truth_table(cat), t, **PARQUET_OPTIONS)
        with atomic_path(paths.truth / "world.json") as t:
            t.write_text(json.dumps({"spec": asdict(spec), "events": counts,
                                     "new_products": int(np.isfinite(cat.release_day).sum())}, indent=2))
        save_npy(paths.relevant_clients, np.sort(ids[relevant]))
    return counts


def finish_world(out: str | Path, progress: bool = True) -> None:
    """The official split (input/, target/ windows, active clients) and the target lists of a raw world."""
    from competition.split import split as run_split
    from competition.targets import write_target_lists
    run_split(out, check=False, progress=progress)
    write_target_lists(out, overwrite=True)


def generate_world(out: str | Path, clients: int, seed: int, days: int = 140, chunk_clients: int = 50_000,
                   progress: bool = True, start: str = DEFAULT_START, split: bool = True,
                   products: int | None = None, other_clients: int | None = None, new_arrivals: float = 0.0
                   ) -> Path:
    """Write a complete synthetic world to ``out`` and return it: raw files, relevant clients, truth/, then
    (``split=True``) the official split and the target lists. ``clients`` = number of relevant clients;
    products / other_clients / new_arrivals: see :func:`world_spec`."""
    spec = world_spec(clients, seed, days, chunk_clients, start, products=products, other_clients=other_clients,
                      new_arrivals=new_arrivals)
    write_raw_world(out, spec, progress=progress)
    if split:
        finish_world(out, progress=progress)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m competition.synth", formatter_class=HelpFormatter,
        description="Write a synthetic world in the organisers' layout (six parquet files, relevant clients, the "
                    "official split and target lists) with its latents apart in OUT/truth.")
    parser.add_argument("--out", required=True, type=Path, help="data directory to write (files in it are "
                        "replaced)")
    parser.add_argument("--clients", required=True, type=int, help="number of relevant clients (half as many "
                        "lighter non-relevant clients are added unless --other-clients)")
    parser.add_argument("--other-clients", type=int, default=None, help="non-relevant clients (default "
                        "CLIENTS // 2); more than that makes them light visitors (activity scaled down, about the "
                        "same non-relevant events in all), like the real data's ~19M clients for 1M relevant")
    parser.add_argument("--products", type=int, default=None, help="catalogue size (default 0.45 x CLIENTS, "
                        f"at least {MIN_PRODUCTS:,}; the real data has 1,260,365 at 1M relevant clients)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed and chunk size -> identical "
                        "files; default 0)")
    parser.add_argument("--days", type=int, default=140, help="length of the period in days (default 140)")
    parser.add_argument("--start", default=DEFAULT_START, help="first instant, 'YYYY-MM-DD HH:MM:SS' "
                        f"(default {DEFAULT_START!r})")
    parser.add_argument("--chunk-clients", type=int, default=50_000, help="clients generated at a time; bounds "
                        "memory (default 50000)")
    parser.add_argument("--new-arrivals", type=float, default=0.0, metavar="SHARE",
                        help="share of sessions (x the client's novelty, capped at 1) that browse the recent "
                        "releases of every category, the goal being the one that best fits the client's price "
                        "level and style: new-product purchases predictable from the user (default 0: off)")
    parser.add_argument("--no-split", action="store_true", help="write only the raw files, relevant clients "
                        "and truth/")
    add_no_progress(parser, deprecated=("--quiet",))
    args = parser.parse_args(argv)
    try:
        spec = world_spec(args.clients, args.seed, args.days, args.chunk_clients, args.start,
                          products=args.products, other_clients=args.other_clients,
                          new_arrivals=args.new_arrivals)
    except ValueError as exc:
        parser.error(str(exc))
    t0 = time.perf_counter()
    counts = write_raw_world(args.out, spec, progress=not args.no_progress)
    t_raw = time.perf_counter() - t0
    if not args.no_split:
        finish_world(args.out, progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    total = sum(counts.values())
    print(f"synth: wrote {args.out} ({spec.n_relevant:,} relevant + {spec.n_other:,} other clients, "
          f"{spec.n_products:,} products, {spec.n_categories:,} categories)")
    for kind in EVENT_TYPES:
        print(f"  {kind:<17} {counts[kind]:>13,}  {counts[kind] / max(total, 1):6.2%}")
    print(f"  {'total':<17} {total:>13,}")
    print(f"synth: raw files {t_raw:.1f}s ({total / max(t_raw, 1e-9) / 1e6:.2f}M events/s); total {seconds:.1f}s "
          f"(split and target lists {seconds - t_raw:.1f}s); peak RSS {peak_rss_mb():,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
