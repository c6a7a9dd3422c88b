"""Synthetic worlds in the organisers' layout, at any scale, from latent user and product traits.

``python -m competition.synth --out D --clients N --seed S [--days 140]`` writes the six released parquet files
(string timestamps ``YYYY-MM-DD HH:MM:SS``, string code vectors ``"[202 151  55 ...]"``),
``input/relevant_clients.npy``, then runs the official split and the target lists, and keeps the latents apart in
``D/truth`` (``clients.parquet``, ``products.parquet``, ``world.json``; oracle measurements only).

The generative story (all vectorised per chunk of clients; no per-event Python loop):

- Catalogue: categories with Zipf popularity; products grouped by category, ranked by a within-category Zipf
  popularity; a log price per product (category mean + noise) cut into 100 quantile buckets; name codes = a
  category centroid (itself near one of a few super-category centroids) + noise, quantized to 0..255. About 15%
  of products are released during the period (more often at the top ranks); before its release a product's
  events go to an older product of the same category, so products released after the split cut have no input
  events and, being popular, are bought in the target windows.
- Clients: ``N`` relevant clients and ``N // 2`` lighter non-relevant ones. Latents per client: session rate
  (log-normal, heavy tailed), session length, an alive interval [join, death) with a churn hazard (more active
  clients churn less), multipliers of the buy / cart / search shares of the event mix, a price level and tolerance,
  and two category tastes (start and end of the period, up to 8 categories each) between which the taste drifts.
- Sessions: a Poisson number over the alive interval, placed by a weekly and daily rhythm; each session has a focus
  category; events inside a session are seconds to minutes apart. Each event draws its kind from the client's mix
  and a product from its category (closest price among three popularity draws). Page visits go to the product's
  page, its category's page or a generic page; add_to_cart takes the product last viewed in the session,
  buys and removals the product last added; a search query's codes mix the name codes of the product the client
  looks at next with a query template of its category.

Determinism: the catalogue comes from ``(seed, 0)``, client ids from ``(seed, 1)``, chunk ``k`` from
``(seed, 2, k)`` (numpy PCG64), so a given seed and chunk size give byte-identical files. Memory is bounded by the
chunk (about ``chunk_clients`` x 200 events).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from competition.io import atomic_path, save_npy
from competition.schema import (ADD_TO_CART, CATEGORY, CLIENT_ID, CODE_LEN, EVENT_CODE, EVENT_TYPES, ITEM_COLUMN,
                                N_PRICE_BUCKETS, NAME, PAGE_VISIT, PRICE, PRODUCT_BUY, PRODUCT_PROPERTIES, QUERY,
                                REMOVE_FROM_CART, SEARCH_QUERY, SKU, TIMESTAMP, TIMESTAMP_FORMAT, DataPaths)

DEFAULT_START = "2022-06-23 00:00:00"
#: Event-weighted mix of kinds, in schema.EVENT_TYPES order (buy, add, remove, visit, search).
BASE_MIX = np.array([0.010, 0.030, 0.010, 0.880, 0.060])
K_TASTE = 8                     # categories per taste vector
N_CANDIDATES = 3                # popularity draws per product choice; the closest in price wins
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

    @property
    def n_clients(self) -> int:
        return self.n_relevant + self.n_other

    @property
    def n_chunks(self) -> int:
        return max(1, math.ceil(self.n_clients / self.chunk_clients))


def world_spec(clients: int, seed: int, days: int = 140, chunk_clients: int = 50_000,
               start: str = DEFAULT_START) -> WorldSpec:
    """Sizes for ``clients`` relevant clients: half as many non-relevant ones, ~0.12 products per client."""
    if clients < 1:
        raise ValueError(f"--clients must be >= 1, got {clients}")
    if days < 35:
        raise ValueError(f"--days must be >= 35 (the split cuts the last 27 days into target windows), got {days}")
    if chunk_clients < 1:
        raise ValueError(f"chunk_clients must be >= 1, got {chunk_clients}")
    datetime.strptime(start, TIMESTAMP_FORMAT)
    n_other = clients // 2
    n_products = max(2_000, int(0.12 * (clients + n_other)))
    n_categories = max(200, n_products // 60)
    return WorldSpec(seed=seed, n_relevant=clients, n_other=n_other, days=days, start=start,
                     n_products=n_products, n_categories=n_categories,
                     n_generic_urls=max(500, n_products // 4), chunk_clients=chunk_clients)


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


def zipf_rank(u: np.ndarray, n: np.ndarray | int, a: float) -> np.ndarray:
    """Ranks in [0, n) with P(rank = r) ~ (r + 1) ** -a (continuous inverse CDF), from uniforms ``u``."""
    n = np.asarray(n, dtype=np.float64)
    b = 1.0 - a
    x = np.power(1.0 + u * (np.power(n + 1.0, b) - 1.0), 1.0 / b) - 1.0
    return np.minimum(x.astype(np.int64), n.astype(np.int64) - 1)


def _pick(cum_weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index of the first cumulative weight above ``u`` per row; cum_weights (n, k) rows ending at 1."""
    return np.minimum((u[:, None] >= cum_weights).sum(axis=1), cum_weights.shape[1] - 1)


# ---------------------------------------------------------------------------------------------------------------
# Catalogue
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Catalog:
    """Products grouped by category (contiguous), ranked by popularity within a category.

    Arrays over products (n_products,): sku int64, category (index) int32, log_price float32, price (bucket)
    int16, release_day float64 (-inf for products present from the start), fallback int32 (an older product of
    the same category used before the release), names uint8 (n_products, 16).
    Over categories (n_categories,): category_id int64, cat_start / cat_size int64, centroid float32 (n_cat, 16),
    templates uint8 (n_cat, 4, 16) query templates. url ids: product pages, category pages, generic pages.
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
    product_url: np.ndarray
    category_url: np.ndarray
    generic_url: np.ndarray


def build_catalog(spec: WorldSpec) -> Catalog:
    rng = _rng(spec.seed, 0)
    n_p, n_c = spec.n_products, spec.n_categories
    # Category sizes: at least 2 products each, the rest Zipf-like over a random order.
    size_w = 1.0 / np.arange(1, n_c + 1) ** 0.8
    size_w = rng.permutation(size_w)
    cat_size = 2 + rng.multinomial(n_p - 2 * n_c, size_w / size_w.sum())
    cat_start = np.concatenate([[0], np.cumsum(cat_size)[:-1]]).astype(np.int64)
    category = np.repeat(np.arange(n_c, dtype=np.int32), cat_size)
    rank = (np.arange(n_p) - cat_start[category]).astype(np.int32)
    # Prices: category mean + product noise, then 100 quantile buckets over products.
    log_price = (rng.normal(3.5, 1.0, n_c)[category] + rng.normal(0.0, 0.45, n_p)).astype(np.float32)
    order = np.argsort(log_price, kind="stable")
    price = np.empty(n_p, dtype=np.int16)
    price[order] = (np.arange(n_p) * N_PRICE_BUCKETS // n_p).astype(np.int16)
    # Names: super-category centroid -> category centroid -> product; quantized 0..255.
    n_super = max(8, n_c // 25)
    super_c = rng.normal(128.0, 38.0, (n_super, CODE_LEN))
    centroid = (super_c[rng.integers(0, n_super, n_c)] + rng.normal(0.0, 26.0, (n_c, CODE_LEN))).astype(np.float32)
    names = _quantize(centroid[category] + rng.normal(0.0, 13.0, (n_p, CODE_LEN))
                      + (log_price - log_price.mean())[:, None] * rng.normal(0.0, 3.0, CODE_LEN))
    templates = _quantize(centroid[:, None, :] + rng.normal(0.0, 12.0, (n_c, 4, CODE_LEN)))
    # Releases: new products are more often near the top of their category; the last product of each category
    # is always old so every new product has an older fallback.
    p_new = np.where(rank < 2, 0.40, 0.12)
    is_new = rng.random(n_p) < p_new
    is_new[cat_start + cat_size - 1] = False
    release_day = np.where(is_new, rng.uniform(0.0, spec.days, n_p), -np.inf)
    fallback = _fallback(is_new, cat_start, cat_size, category)
    # Ids: skus, categories and urls are random distinct integers.
    sku = np.sort(rng.choice(10 * n_p, n_p, replace=False)).astype(np.int64)
    sku = rng.permutation(sku)
    category_id = rng.choice(20 * n_c, n_c, replace=False).astype(np.int64)
    n_urls = n_p + n_c + spec.n_generic_urls
    urls = rng.choice(10 * n_urls, n_urls, replace=False).astype(np.int64)
    return Catalog(sku=sku, category=category, rank=rank, log_price=log_price, price=price,
                   release_day=release_day, fallback=fallback, names=names, category_id=category_id,
                   cat_start=cat_start, cat_size=cat_size.astype(np.int64), centroid=centroid, templates=templates,
                   product_url=urls[:n_p], category_url=urls[n_p:n_p + n_c], generic_url=urls[n_p + n_c:])


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
    return pa.table({SKU: pa.array(cat.sku), CATEGORY: pa.array(cat.category_id[cat.category]),
                     PRICE: pa.array(cat.price.astype(np.int64)), NAME: codes_to_arrow(cat.names)})


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

    session_rate: expected sessions per day (before the weekly rhythm); session_len: mean events per session;
    join_day / death_day: the alive interval; hazard: churn hazard per day (death = join + Exp(hazard));
    buy_mult / cart_mult / search_mult: multipliers of the buy, cart (add and remove) and search shares;
    price_level: preferred price bucket (0..99), price_tol: tolerance in buckets;
    taste_cat: int32 (n, 2, K_TASTE) category indices at the start [:, 0] and end [:, 1] of the period,
    taste_w: float32 (n, 2, K_TASTE) weights (rows sum to 1; unused slots 0).
    """

    client_id: np.ndarray
    relevant: np.ndarray
    session_rate: np.ndarray
    session_len: np.ndarray
    join_day: np.ndarray
    death_day: np.ndarray
    hazard: np.ndarray
    buy_mult: np.ndarray
    cart_mult: np.ndarray
    search_mult: np.ndarray
    price_level: np.ndarray
    price_tol: np.ndarray
    taste_cat: np.ndarray
    taste_w: np.ndarray

    def mix_cum(self) -> np.ndarray:
        """Cumulative probabilities (n, 5) of the event kinds in EVENT_TYPES order."""
        mult = np.stack([self.buy_mult, self.cart_mult, self.cart_mult, np.ones_like(self.buy_mult),
                         self.search_mult], axis=1)
        p = BASE_MIX * mult
        return np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)


def draw_clients(rng: np.random.Generator, client_id: np.ndarray, relevant: np.ndarray, spec: WorldSpec
                 ) -> Clients:
    n = len(client_id)
    z = rng.standard_normal(n)
    session_rate = np.minimum(np.exp(np.where(relevant, math.log(0.11), math.log(0.03))
                                     + np.where(relevant, 1.7, 1.6) * z), 20.0)
    session_len = 1.0 + np.exp(math.log(3.5) + 0.4 * rng.standard_normal(n))
    hazard = np.exp(math.log(1 / 150) + 0.9 * rng.standard_normal(n) - 0.25 * z)
    join_day = np.where(rng.random(n) < 0.7, 0.0, rng.uniform(0.0, 0.8 * spec.days, n))
    death_day = np.minimum(join_day + rng.exponential(1.0, n) / hazard, float(spec.days))
    buy_mult = np.exp(rng.standard_normal(n) - 0.5)
    cart_mult = buy_mult ** 0.7 * np.exp(0.4 * rng.standard_normal(n) - 0.25)
    search_mult = np.exp(0.8 * rng.standard_normal(n) - 0.32)
    price_level = np.clip(rng.normal(50.0, 22.0, n), 0.0, 99.0)
    price_tol = np.exp(math.log(12.0) + 0.4 * rng.standard_normal(n))
    # Tastes: up to K_TASTE categories drawn from the global category popularity; the end-of-period taste
    # replaces a client-specific share of them and reweights the rest.
    k = 1 + np.minimum(rng.poisson(1.5, n), K_TASTE - 1)
    used = np.arange(K_TASTE)[None, :] < k[:, None]
    start_cat = zipf_rank(rng.random((n, K_TASTE)), spec.n_categories, 0.9)
    drift = rng.beta(2.0, 5.0, n)
    replace = rng.random((n, K_TASTE)) < drift[:, None]
    end_cat = np.where(replace, zipf_rank(rng.random((n, K_TASTE)), spec.n_categories, 0.9), start_cat)
    w0 = rng.gamma(0.8, 1.0, (n, K_TASTE)) * used + 1e-12 * used
    w1 = w0 * np.exp(0.5 * rng.standard_normal((n, K_TASTE)))
    w = np.stack([w0, w1], axis=1)
    w /= w.sum(axis=2, keepdims=True)
    taste_cat = np.where(used[:, None, :], np.stack([start_cat, end_cat], axis=1), -1).astype(np.int32)
    return Clients(client_id=client_id, relevant=relevant, session_rate=session_rate, session_len=session_len,
                   join_day=join_day, death_day=death_day, hazard=hazard, buy_mult=buy_mult, cart_mult=cart_mult,
                   search_mult=search_mult, price_level=price_level, price_tol=price_tol, taste_cat=taste_cat,
                   taste_w=w.astype(np.float32))


class Rhythm:
    """Weekly and daily rhythm: cumulative intensity ``W`` over hour slots, in days (W[-1] == days)."""

    def __init__(self, start: datetime, days: int):
        hours = np.arange(days * 24)
        w = _HOUR_PROFILE[hours % 24] * _WEEKDAY_PROFILE[(start.weekday() + hours // 24) % 7]
        self.w = w * (days / w.sum())
        self.W = np.concatenate([[0.0], np.cumsum(self.w)])
        self.hours = len(hours)

    def at(self, day: np.ndarray) -> np.ndarray:
        """Cumulative intensity at ``day`` (float days since start)."""
        return np.interp(np.asarray(day) * 24.0, np.arange(self.hours + 1), self.W)

    def invert(self, u: np.ndarray) -> np.ndarray:
        """Seconds since start where the cumulative intensity reaches ``u``."""
        slot = np.clip(np.searchsorted(self.W, u, side="right") - 1, 0, self.hours - 1)
        frac = np.clip((u - self.W[slot]) / self.w[slot], 0.0, 1.0 - 1e-9)
        return ((slot + frac) * 3600.0).astype(np.int64)


def _taste_draw(rng: np.random.Generator, clients: Clients, rows: np.ndarray, day: np.ndarray) -> np.ndarray:
    """One category index per entry: the client's start or end taste (end with probability day / days)."""
    days = float(rows.size and 1) and None  # placeholder removed below
    raise NotImplementedError  # pragma: no cover


def _last_in_session(mark: np.ndarray, session: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each event, the index of the latest earlier-or-same marked event of its session, and whether one exists."""
    idx = np.arange(len(mark), dtype=np.int64)
    last = np.maximum.accumulate(np.where(mark, idx, -1)) if len(mark) else idx
    ok = last >= 0
    ok[ok] = session[last[ok]] == session[ok]
    return np.where(ok, last, idx), ok
