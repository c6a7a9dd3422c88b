"""Hand-made behavioural statistics per client: a fixed-width block of documented float32 features.

``python -m embedders.stats --data-dir D --out E [--transform quantile|log|none] [--seed S]``

Every feature is computed with numpy over the event table's CSR arrays (bincount / reduceat / lexsort over
contiguous chunks of client rows; no Python loop per event or per client), so memory is bounded by
``chunk_events``. Time unit: days (float) before the table's ``cut_time`` (the end of the input period). Event
kinds: ``buy``, ``add``, ``remove``, ``visit``, ``search`` (schema.EVENT_TYPES order), ``all`` = any kind.
A "product event" is a buy, add or remove. Weekday and hour are read from the timestamps as they are (UTC-naive).

Fallbacks (no NaN anywhere): counts, distinct counts, shares, trends and session counts are 0 for a client
without events of that kind; ``days_since_*`` is the sentinel ``span_days + 1`` (span = days from the table's first
event to the cut); price, cart-share and popularity means are -1 (all real values are >= 0);
``days_between_sessions`` is -1 with fewer than two sessions. A client absent from the table gets exactly the row
of an empty history (see :attr:`StatsEmbedder.empty_row_`).

Features (:data:`FEATURE_NAMES`, in column order; ``<k>`` runs over all, buy, add, remove, visit, search):

=================================  ==========================================================================
``count_<k>``                      events of kind k in the whole input
``count_<k>_{7,14,28}d``           events of kind k in the last 7 / 14 / 28 days before the cut
``days_since_first_<k>``           days from the first event of kind k to the cut (sentinel if none)
``days_since_last_<k>``            days from the last event of kind k to the cut (sentinel if none)
``active_days``                    distinct calendar days with an event
``active_weeks``                   distinct Monday-based weeks with an event
``active_days_28d``                distinct days with an event in the last 28 days
``trend_<k>``                      log1p(count of kind k in the last 14 days) - log1p(count in the 14 days before)
``distinct_skus``                  distinct skus over product events
``distinct_skus_buy``              distinct skus bought
``distinct_skus_add``              distinct skus added to cart
``distinct_categories``            distinct categories over product events
``distinct_categories_buy``        distinct categories bought
``distinct_urls``                  distinct urls visited
``distinct_queries``               distinct query code vectors searched
``cart_bought_share``              share of distinct added skus bought at or after their first add (-1 if no add)
``cart_removed_share``             share of distinct added skus removed at or after their first add (-1 if no add)
``cart_open_share``                share of distinct added skus neither bought nor removed afterwards (-1 if no add)
``price_{buy,add}_{mean,min,max}`` price bucket (0..99) statistics of bought / added products (-1 if none)
``weekday_share_<d>``              share of events on weekday d (0 = Monday .. 6 = Sunday)
``hour_share_<h>``                 share of events in hours [h, h+4), h = 0, 4, .., 20
``pop_sku_mean``                   mean over product events of log1p(event count of the sku in the table) (-1)
``pop_category_mean``              mean over product events of log1p(event count of the category) (-1)
``pop_url_mean``                   mean over visits of log1p(visit count of the url in the table) (-1)
``sessions``                       sessions (a gap of more than 30 minutes starts a new one)
``sessions_28d``                   sessions starting in the last 28 days
``events_per_session``             count_all / sessions (0 if none)
``session_minutes_mean``           mean session length first-to-last event, minutes (0 if none)
``days_between_sessions``          (last session start - first session start) / (sessions - 1), days (-1 if < 2)
``events_per_active_day``          count_all / active_days (0 if none)
=================================  ==========================================================================

Popularity tables (event counts per sku, category and url) are computed in ``fit`` over every client in the
table, relevant or not. ``--dim`` is fixed to the number of features: any other value is an error (no silent
truncation: take columns downstream if fewer are wanted). Scaling is left to the ensemble step; ``--transform``
(quantile / log) exists for scoring the block alone.
"""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import scipy.sparse as sp

from competition.progress import progress as progress_of
from competition.schema import CODE_LEN, EVENT_CODE, EVENT_TYPES, SKU_EVENTS
from embedders.base import Block, Embedder, EventSource
from embedders.chunks import (DENSE_LIMIT, CountTable, EventChunk, empty_chunk, gather, index_sorted, map_chunks,
                              present_rows, read_range, row_chunks)
from embedders.quantile import quantile_transform

DAY = 86_400
SESSION_GAP_S = 30 * 60
KINDS: tuple[str, ...] = ("buy", "add", "remove", "visit", "search")  # short names, EVENT_TYPES order
ALL_KINDS: tuple[str, ...] = ("all", *KINDS)
WINDOWS_D: tuple[int, ...] = (7, 14, 28)
PRODUCT_CODES = np.array([EVENT_CODE[e] for e in SKU_EVENTS], dtype=np.uint8)
BUY, ADD, REMOVE, VISIT, SEARCH = (EVENT_CODE[e] for e in EVENT_TYPES)
HOUR_BIN = 4
TRANSFORMS = ("none", "log", "quantile")


def _feature_table() -> list[tuple[str, str]]:
    f: list[tuple[str, str]] = []
    for k in ALL_KINDS:
        f.append((f"count_{k}", f"events of kind {k} in the whole input"))
    for w in WINDOWS_D:
        for k in ALL_KINDS:
            f.append((f"count_{k}_{w}d", f"events of kind {k} in the last {w} days before the cut"))
    for k in ALL_KINDS:
        f.append((f"days_since_first_{k}", f"days from the first {k} event to the cut (sentinel span+1 if none)"))
        f.append((f"days_since_last_{k}", f"days from the last {k} event to the cut (sentinel span+1 if none)"))
    f += [("active_days", "distinct calendar days with an event"),
          ("active_weeks", "distinct Monday-based weeks with an event"),
          ("active_days_28d", "distinct days with an event in the last 28 days")]
    for k in ALL_KINDS:
        f.append((f"trend_{k}", f"log1p({k} events in the last 14 days) - log1p({k} events in the 14 days before)"))
    f += [("distinct_skus", "distinct skus over product events"),
          ("distinct_skus_buy", "distinct skus bought"),
          ("distinct_skus_add", "distinct skus added to cart"),
          ("distinct_categories", "distinct categories over product events"),
          ("distinct_categories_buy", "distinct categories bought"),
          ("distinct_urls", "distinct urls visited"),
          ("distinct_queries", "distinct query code vectors searched"),
          ("cart_bought_share", "share of distinct added skus bought at/after their first add (-1 if no add)"),
          ("cart_removed_share", "share of distinct added skus removed at/after their first add (-1 if no add)"),
          ("cart_open_share", "share of distinct added skus neither bought nor removed afterwards (-1 if no add)")]
    for k in ("buy", "add"):
        for s in ("mean", "min", "max"):
            f.append((f"price_{k}_{s}", f"{s} price bucket of {k} events with a known price (-1 if none)"))
    for d in range(7):
        f.append((f"weekday_share_{d}", f"share of events on weekday {d} (0 = Monday)"))
    for h in range(0, 24, HOUR_BIN):
        f.append((f"hour_share_{h}", f"share of events in hours [{h}, {h + HOUR_BIN})"))
    f += [("pop_sku_mean", "mean log1p(table event count of the sku) over product events (-1 if none)"),
          ("pop_category_mean", "mean log1p(table event count of the category) over product events (-1 if none)"),
          ("pop_url_mean", "mean log1p(table visit count of the url) over visits (-1 if none)"),
          ("sessions", "sessions (a gap > 30 minutes starts a new one)"),
          ("sessions_28d", "sessions starting in the last 28 days"),
          ("events_per_session", "count_all / sessions (0 if none)"),
          ("session_minutes_mean", "mean session length, first to last event, minutes (0 if none)"),
          ("days_between_sessions", "(last - first session start) / (sessions - 1), days (-1 if < 2 sessions)"),
          ("events_per_active_day", "count_all / active_days (0 if none)")]
    return f


#: (name, one-line description) per feature, in column order.
FEATURES: list[tuple[str, str]] = _feature_table()
FEATURE_NAMES: list[str] = [name for name, _ in FEATURES]
N_FEATURES = len(FEATURE_NAMES)


# ---------------------------------------------------------------------------------------------------------------
# Vectorised group helpers (rows sorted non-decreasing)
# ---------------------------------------------------------------------------------------------------------------
def _segment_starts(row: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.r_[True, row[1:] != row[:-1]]) if len(row) else np.empty(0, dtype=np.int64)


def group_reduce(ufunc: np.ufunc, row: np.ndarray, values: np.ndarray, n: int, fill: float) -> np.ndarray:
    """``ufunc.reduceat`` of ``values`` per row (rows sorted); ``fill`` for rows without values. float64 ``(n,)``."""
    out = np.full(n, fill, dtype=np.float64)
    if len(row):
        s = _segment_starts(row)
        out[row[s]] = ufunc.reduceat(values, s)
    return out


def group_first_last(row: np.ndarray, values: np.ndarray, n: int, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """First and last value per row in array order; ``fill`` for rows without values."""
    first = np.full(n, fill, dtype=np.float64)
    last = np.full(n, fill, dtype=np.float64)
    if len(row):
        s = _segment_starts(row)
        e = np.r_[s[1:] - 1, len(row) - 1]
        first[row[s]] = values[s]
        last[row[e]] = values[e]
    return first, last


def distinct_count(row: np.ndarray, n: int, *keys: np.ndarray) -> np.ndarray:
    """Distinct key tuples per row, float64 ``(n,)``. Exact: one small non-negative key -> a CSR matrix with summed
    duplicates (linear time); otherwise a lexsort."""
    if len(row) == 0:
        return np.zeros(n)
    if len(keys) == 1 and keys[0].min() >= 0 and keys[0].max() < DENSE_LIMIT:
        x = sp.csr_matrix((np.ones(len(row), dtype=np.float32), (row, keys[0])), shape=(n, int(keys[0].max()) + 1))
        x.sum_duplicates()
        return np.diff(x.indptr).astype(np.float64)
    order = np.lexsort((*reversed(keys), row))
    r = row[order]
    new = np.r_[True, r[1:] != r[:-1]]
    for k in keys:
        ks = k[order]
        new[1:] |= ks[1:] != ks[:-1]
    return np.bincount(r[new], minlength=n).astype(np.float64)


def _safe_div(a: np.ndarray, b: np.ndarray, fill: float) -> np.ndarray:
    return np.where(b > 0, a / np.maximum(b, 1), fill)


# ---------------------------------------------------------------------------------------------------------------
# The embedder
# ---------------------------------------------------------------------------------------------------------------
class StatsEmbedder(Embedder):
    """:data:`N_FEATURES` documented statistics per client (module docstring).

    Parameters
    ----------
    dim : int | None
        None (held as :data:`N_FEATURES`) or :data:`N_FEATURES`; anything else is refused by :meth:`validate`
    seed : int
        random state of the quantile transform (the only random step)
    transform : str
        scaling for scoring the block alone: quantile (uniform, fitted on the embedded clients), log
        (sign*log1p|x|) or none (the ensemble scales)
    quantile_subsample : int
        rows sampled to fit the quantile transform
    chunk_events : int
        events per chunk (bounds memory)
    progress : bool
        progress bars on stderr

    Fitted attributes: ``cut_time_`` / ``start_time_`` (s), ``sentinel_days_``, popularity tables ``pop_sku_``,
    ``pop_category_``, ``pop_url_`` (:class:`CountTable`), ``empty_row_`` float32 ``(N_FEATURES,)``,
    ``quantile_`` (the fitted QuantileTransformer, or None).
    """

    name = "stats"
    unknown_sku_note = ("counted as product events (counts, shares, distinct skus, sku popularity); left out of the "
                        "price and category features")
    #: Heavy-tailed counts: each column to uniform [0, 1] by its quantiles in an ensemble.
    ensemble_transform = "quantile"

    def __init__(self, dim: int | None = None, seed: int = 0, transform: str = "none",
                 quantile_subsample: int = 200_000, chunk_events: int = 5_000_000, progress: bool = True):
        super().__init__(N_FEATURES if dim is None else dim, seed)
        self.transform_kind = transform
        self.quantile_subsample = quantile_subsample
        self.chunk_events = chunk_events
        self.progress = progress

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, verbatim: ``transform`` is held as ``transform_kind`` (``transform`` is the
        method), and given back under its constructor name, so a block's meta.json rebuilds the same embedder."""
        params = super().get_params()
        params["transform"] = params.pop("transform_kind")
        return params

    def validate(self) -> None:
        """The width is fixed; ``transform`` one of :data:`TRANSFORMS`."""
        if self.dim != N_FEATURES:
            raise ValueError(f"stats has a fixed width of {N_FEATURES} features; dim must be {N_FEATURES} or "
                             f"omitted, got {self.dim}")
        if self.transform_kind not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {self.transform_kind!r}")

    # -- fit -------------------------------------------------------------------------------------------------------
    def fit(self, events: EventSource, client_ids: np.ndarray | None = None) -> "StatsEmbedder":
        """Time frame and popularity tables (event counts per sku / category / url over the whole table); with
        ``transform="quantile"``, the quantile transform fitted on the features of ``client_ids`` (default: every
        client of the table)."""
        self._fit_tables(events)
        self.quantile_ = None
        if self.transform_kind == "quantile":
            ids = np.asarray(events.client_ids if client_ids is None else client_ids, dtype=np.int64)
            self._fit_quantile(self._raw(events, ids)[0])
        return self

    def fit_transform(self, events: EventSource, client_ids: np.ndarray) -> Block:
        """``fit(events, client_ids).transform(events, client_ids)`` in one pass over the clients' events (the
        quantile transform is fitted on the embedded clients)."""
        self._fit_tables(events)
        self.quantile_ = None
        raw, where = self._raw(events, client_ids)
        if self.transform_kind == "quantile":
            self._fit_quantile(raw)
        return self._block(client_ids, raw, where)

    def _fit_tables(self, events: EventSource) -> None:
        self.validate()
        self.cut_time_ = int(events.cut_time)
        self.start_time_ = int(events.start_time) if events.n_events else int(events.cut_time)
        self.sentinel_days_ = (self.cut_time_ - self.start_time_) / DAY + 1.0
        self.pop_sku_, self.pop_category_, self.pop_url_ = CountTable(), CountTable(), CountTable()
        n = events.n_events
        step = max(self.chunk_events, 1)
        for lo in progress_of(range(0, n, step), desc="stats: popularity", enabled=self.progress, unit="chunk"):
            hi = min(lo + step, n)
            et = read_range(events.event_type, lo, hi)
            product = np.isin(et, PRODUCT_CODES)
            sku = read_range(events.sku, lo, hi)
            cat = read_range(events.category, lo, hi)
            url = read_range(events.url, lo, hi)
            self.pop_sku_.add(sku[product & (sku >= 0)])
            self.pop_category_.add(cat[product & (cat >= 0)])
            self.pop_url_.add(url[(et == VISIT) & (url >= 0)])
        self.empty_row_ = self._features(empty_chunk(), events.query_codes)[0]

    def _fit_quantile(self, x: np.ndarray) -> None:
        """The QuantileTransformer to uniform of features ``x`` float32 ``(n, N_FEATURES)`` (None when n = 0)."""
        if len(x):
            from sklearn.preprocessing import QuantileTransformer
            self.quantile_ = QuantileTransformer(n_quantiles=min(1000, len(x)), output_distribution="uniform",
                                                 subsample=self.quantile_subsample, random_state=self.seed).fit(x)

    # -- transform ---------------------------------------------------------------------------------------------------
    def transform(self, events: EventSource, client_ids: np.ndarray) -> Block:
        """float32 ``(len(client_ids), N_FEATURES)`` in ``client_ids`` order (after ``transform`` scaling)."""
        return self._block(client_ids, *self._raw(events, client_ids))

    def _raw(self, events: EventSource, client_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unscaled features float32 ``(len(client_ids), N_FEATURES)`` (the empty row for clients without events),
        and each client's index into the table rows it found (-1: no events)."""
        client_ids = np.asarray(client_ids, dtype=np.int64)
        table_rows, where = present_rows(events, client_ids)
        feats = np.empty((len(table_rows), N_FEATURES), dtype=np.float32)
        chunks = row_chunks(events.lengths[table_rows], self.chunk_events)

        def one(bounds: tuple[int, int]) -> np.ndarray:
            return self._features(gather(events, table_rows[bounds[0]:bounds[1]]), events.query_codes)

        # chunks are independent rows, computed in threads (1M clients on 2 cores: 31-33 s against 55-66 s in one)
        done = map_chunks(one, chunks)
        for lo, hi in progress_of(chunks, desc="stats: features", enabled=self.progress, unit="chunk"):
            feats[lo:hi] = next(done)
        out = np.empty((len(client_ids), N_FEATURES), dtype=np.float32)
        out[where >= 0] = feats[where[where >= 0]]
        out[where < 0] = self.empty_row_
        return out, where

    def _block(self, client_ids: np.ndarray, raw: np.ndarray, where: np.ndarray) -> Block:
        out = self._scale(raw)
        meta = {"name": self.name, "feature_names": FEATURE_NAMES, "transform": self.transform_kind,
                "sentinel_days": self.sentinel_days_, "clients_without_events": int((where < 0).sum())}
        return Block(client_ids, out, meta)

    def _scale(self, x: np.ndarray) -> np.ndarray:
        if self.transform_kind == "log":
            return (np.sign(x) * np.log1p(np.abs(x))).astype(np.float32)
        if self.transform_kind == "quantile" and self.quantile_ is not None and len(x):
            return quantile_transform(self.quantile_, x).astype(np.float32, copy=False)  # == .transform(x)
        return x

    # -- the features of one chunk ----------------------------------------------------------------------------------
    def _features(self, c: EventChunk, query_codes: np.ndarray) -> np.ndarray:
        """float32 ``(c.n_rows, N_FEATURES)``: the feature families of the module docstring, one step each."""
        n, row, ts, et = c.n_rows, c.row, c.timestamp, c.event_type.astype(np.int64)
        age = (self.cut_time_ - ts) / DAY  # days before the cut, float64
        product = np.isin(c.event_type, PRODUCT_CODES)
        ps, pc = product & (c.sku >= 0), product & (c.category >= 0)  # product events with a sku / a category
        vu = (et == VISIT) & (c.url >= 0)  # visits with a url
        f: dict[str, np.ndarray] = {}
        f.update(self._counts_and_recency(row, et, age, n))
        total = f["count_all"]
        f.update(_activity(row, ts, age, n))
        f.update(_distinct_items(c, row, et, ps, pc, vu, query_codes, n))
        f.update(self._cart(row, et, ts, c.sku, ps, n))
        f.update(_prices(row, et, c.price, n))
        f.update(_time_shares(row, ts, total, n))
        f.update(self._popularity(row, c, ps, pc, vu, n))
        f.update(_sessions(row, ts, age, total, f["active_days"], n))
        return np.column_stack([f[name] for name in FEATURE_NAMES]).astype(np.float32).reshape(n, N_FEATURES)

    def _counts_and_recency(self, row, et, age, n) -> dict[str, np.ndarray]:
        """``count_<k>``, ``count_<k>_<w>d``, ``trend_<k>``, ``days_since_{first,last}_<k>``."""
        f, nk = {}, len(KINDS)

        def per_kind(mask: np.ndarray | None = None) -> np.ndarray:
            r, e = (row, et) if mask is None else (row[mask], et[mask])
            by = np.bincount(r * nk + e, minlength=n * nk).reshape(n, nk).astype(np.float64)
            return np.column_stack([by.sum(axis=1), by])  # (n, 6): all, then the five kinds

        counts = per_kind()
        win = {w: per_kind(age <= w) for w in WINDOWS_D}
        for j, k in enumerate(ALL_KINDS):
            f[f"count_{k}"] = counts[:, j]
            for w in WINDOWS_D:
                f[f"count_{k}_{w}d"] = win[w][:, j]
        prev14 = win[28] - win[14]
        for j, k in enumerate(ALL_KINDS):
            f[f"trend_{k}"] = np.log1p(win[14][:, j]) - np.log1p(prev14[:, j])
            m = slice(None) if k == "all" else (et == j - 1)
            first, last = group_first_last(row[m], age[m], n, self.sentinel_days_)
            f[f"days_since_first_{k}"], f[f"days_since_last_{k}"] = first, last
        return f

    def _popularity(self, row, c: EventChunk, ps, pc, vu, n) -> dict[str, np.ndarray]:
        """``pop_{sku,category,url}_mean``: mean log1p of the fitted table counts of the client's items."""
        f = {}
        for name, table, m, vals in (("pop_sku_mean", self.pop_sku_, ps, c.sku),
                                     ("pop_category_mean", self.pop_category_, pc, c.category),
                                     ("pop_url_mean", self.pop_url_, vu, c.url)):
            pop = np.log1p(table.lookup(vals[m]).astype(np.float64))
            f[name] = _safe_div(np.bincount(row[m], weights=pop, minlength=n), np.bincount(row[m], minlength=n), -1.0)
        return f

    @staticmethod
    def _cart(row, et, ts, sku, ps, n) -> dict[str, np.ndarray]:
        """Fate of each distinct added (client, sku): bought / removed at or after its first add, or neither."""
        r, e, t, s = row[ps], et[ps], ts[ps], sku[ps]
        if len(s) == 0:
            return {k: np.full(n, -1.0) for k in ("cart_bought_share", "cart_removed_share", "cart_open_share")}
        _, sid = np.unique(s, return_inverse=True)
        key = r * (int(sid.max()) + 1) + sid  # (row, sku) as one int64, rows local to the chunk
        add = e == ADD
        add_key, first = np.unique(key[add], return_index=True)  # first occurrence = earliest add (time order)
        first_add = t[add][first]
        add_row = r[add][first]

        def after(code: int) -> np.ndarray:
            sel = e == code
            k_rev, t_rev = key[sel][::-1], t[sel][::-1]
            uk, idx = np.unique(k_rev, return_index=True)  # first in reversed order = latest event
            pos = index_sorted(uk, add_key)
            return (pos >= 0) & (t_rev[idx][np.maximum(pos, 0)] >= first_add) if len(uk) else pos >= 0

        bought, removed = after(BUY), after(REMOVE)
        n_add = np.bincount(add_row, minlength=n).astype(np.float64)

        def share(x: np.ndarray) -> np.ndarray:
            return _safe_div(np.bincount(add_row, weights=x.astype(np.float64), minlength=n), n_add, -1.0)

        return {"cart_bought_share": share(bought), "cart_removed_share": share(removed),
                "cart_open_share": share(~bought & ~removed)}


def _activity(row, ts, age, n) -> dict[str, np.ndarray]:
    """``active_days``, ``active_weeks``, ``active_days_28d`` (rows sorted, time sorted within a row)."""
    day = ts // DAY
    new_day = np.r_[True, (row[1:] != row[:-1]) | (day[1:] != day[:-1])] if len(row) else np.zeros(0, bool)
    week = (day + 3) // 7  # epoch day 0 is a Thursday: Monday-based week index
    new_week = np.r_[True, (row[1:] != row[:-1]) | (week[1:] != week[:-1])] if len(row) else new_day
    return {"active_days": np.bincount(row[new_day], minlength=n).astype(np.float64),
            "active_weeks": np.bincount(row[new_week], minlength=n).astype(np.float64),
            "active_days_28d": np.bincount(row[new_day & (age <= 28)], minlength=n).astype(np.float64)}


def _distinct_items(c: EventChunk, row, et, ps, pc, vu, query_codes, n) -> dict[str, np.ndarray]:
    """``distinct_{skus,skus_buy,skus_add,categories,categories_buy,urls,queries}``."""
    b, a, bc = ps & (et == BUY), ps & (et == ADD), pc & (et == BUY)
    sq = (et == SEARCH) & (c.query >= 0)
    qc = np.ascontiguousarray(np.asarray(query_codes[c.query[sq]], dtype=np.uint8)).reshape(-1, CODE_LEN)
    q64 = qc.view("<u8").reshape(-1, 2) if len(qc) else np.zeros((0, 2), dtype=np.uint64)
    return {"distinct_skus": distinct_count(row[ps], n, c.sku[ps]),
            "distinct_skus_buy": distinct_count(row[b], n, c.sku[b]),
            "distinct_skus_add": distinct_count(row[a], n, c.sku[a]),
            "distinct_categories": distinct_count(row[pc], n, c.category[pc]),
            "distinct_categories_buy": distinct_count(row[bc], n, c.category[bc]),
            "distinct_urls": distinct_count(row[vu], n, c.url[vu]),
            "distinct_queries": distinct_count(row[sq], n, q64[:, 0], q64[:, 1])}


def _prices(row, et, price, n) -> dict[str, np.ndarray]:
    """``price_{buy,add}_{mean,min,max}`` over events with a known price bucket (-1 if none)."""
    f = {}
    for kind, code in (("buy", BUY), ("add", ADD)):
        m = (et == code) & (price >= 0)
        r, p = row[m], price[m].astype(np.float64)
        cnt = np.bincount(r, minlength=n)
        f[f"price_{kind}_mean"] = _safe_div(np.bincount(r, weights=p, minlength=n), cnt, -1.0)
        f[f"price_{kind}_min"] = group_reduce(np.minimum, r, p, n, -1.0)
        f[f"price_{kind}_max"] = group_reduce(np.maximum, r, p, n, -1.0)
    return f


def _time_shares(row, ts, total, n) -> dict[str, np.ndarray]:
    """``weekday_share_<d>`` and ``hour_share_<h>``: shares of the client's ``total`` events (0 if none)."""
    f = {}
    wd = (ts // DAY + 3) % 7
    by_wd = np.bincount(row * 7 + wd, minlength=n * 7).reshape(n, 7)
    n_hb = 24 // HOUR_BIN
    hb = (ts % DAY) // 3600 // HOUR_BIN
    by_hb = np.bincount(row * n_hb + hb, minlength=n * n_hb).reshape(n, n_hb)
    for d in range(7):
        f[f"weekday_share_{d}"] = _safe_div(by_wd[:, d], total, 0.0)
    for j in range(n_hb):
        f[f"hour_share_{j * HOUR_BIN}"] = _safe_div(by_hb[:, j], total, 0.0)
    return f


def _sessions(row, ts, age, total, active_days, n) -> dict[str, np.ndarray]:
    """Session features: a new row or a gap of more than 30 minutes starts a session."""
    new_s = np.r_[True, (row[1:] != row[:-1]) | (np.diff(ts) > SESSION_GAP_S)] if len(row) else np.zeros(0, bool)
    s_idx = np.flatnonzero(new_s)
    e_idx = np.r_[s_idx[1:] - 1, len(row) - 1] if len(s_idx) else s_idx
    s_row = row[s_idx]
    n_sess = np.bincount(s_row, minlength=n).astype(np.float64)
    dur = np.bincount(s_row, weights=(ts[e_idx] - ts[s_idx]) / 60.0, minlength=n)
    first_s, last_s = group_first_last(s_row, ts[s_idx].astype(np.float64), n, 0.0)
    return {"sessions": n_sess,
            "sessions_28d": np.bincount(s_row[age[s_idx] <= 28], minlength=n).astype(np.float64),
            "events_per_session": _safe_div(total, n_sess, 0.0),
            "session_minutes_mean": _safe_div(dur, n_sess, 0.0),
            "days_between_sessions": np.where(n_sess >= 2, (last_s - first_s) / DAY / np.maximum(n_sess - 1, 1),
                                              -1.0),
            "events_per_active_day": _safe_div(total, active_days, 0.0)}


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from embedders.cli import add_params, base_parser
    parser = base_parser("python -m embedders.stats",
                         f"{N_FEATURES} documented behavioural statistics per client (see the module docstring).",
                         default_dim=N_FEATURES)
    return add_params(parser, StatsEmbedder, choices={"transform": TRANSFORMS})


def make(args: argparse.Namespace) -> StatsEmbedder:
    """The embedder of the parsed flags."""
    from embedders.cli import from_args
    return from_args(StatsEmbedder, args)


def main(argv: list[str] | None = None) -> int:
    from embedders.cli import run
    return run(build_parser(), make, argv)


if __name__ == "__main__":
    raise SystemExit(main())
