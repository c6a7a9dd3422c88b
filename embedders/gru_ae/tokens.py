"""Event table -> token sequences, one integer grid per field, vectorised (no Python loop over events or clients).

A client's sequence is ``[start, e_1, ..., e_k, end]`` where ``e_1..e_k`` are its most recent ``k <= 126`` events in
time order, padded to :data:`SEQ_LEN` = 128 columns. Every field has its own vocabulary whose first
:data:`N_RESERVED` ids are shared: ``pad`` 0, ``start`` 1, ``end`` 2, ``missing`` 3 (the event has no such field: a
visit has no sku) and ``other`` 4 (a value outside the vocabulary). Values start at id 5.

Fields:

- ``event_type``: 5 + code of :data:`competition.schema.EVENT_CODE` (buy, add, remove, visit, search);
- ``category``, ``price``: 5 + index of the product's category (all categories of product_properties) / price
  bucket (0..99);
- ``sku``: 5 + row of the sku in the sorted catalogue (``catalogue`` mode: every sku of product_properties has a
  token, seen or not) or 5 + rank among the ``vocab_cap`` most frequent training skus (``id`` mode, the reference's
  capped table; the rest is ``other``);
- ``url``: 5 + rank among the ``vocab_cap`` most frequent training urls (sorted by id), rest ``other``;
- ``day`` / ``week``: 5 + calendar days / ISO (Monday-based) weeks since those of ``events.start_time`` (UTC);
- ``age``: 5 + how long before ``events.cut_time`` the event happened: whole days 0..13, then weeks (2..21), the
  rest in the last bucket. Unlike ``day``/``week`` it is relative to the table's end, so the same history cut at
  another time (:meth:`competition.events.EventTable.before`) gives the same tokens;
- ``query``: not a token but the event's row in ``events.query_codes`` (int32, -1 = none); the model embeds the
  16 codes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from competition.events import read_positions
from competition.load import codes_to_numpy
from competition.schema import CATEGORY, EVENT_TYPES, N_PRICE_BUCKETS, NAME, PRICE, QUERY, SKU, URL
from embedders.chunks import index_sorted

PAD, START, END, MISSING, OTHER = 0, 1, 2, 3, 4
N_RESERVED = 5
MAX_EVENTS = 126
SEQ_LEN = MAX_EVENTS + 2
SECONDS_PER_DAY = 86_400
DAY, WEEK, AGE, EVENT_TYPE = "day", "week", "age", "event_type"
#: Every token field (``query`` is handled apart: it is a row into ``events.query_codes``).
TOKEN_FIELDS: tuple[str, ...] = (EVENT_TYPE, CATEGORY, PRICE, SKU, URL, DAY, WEEK, AGE)
AGE_DAYS, AGE_WEEKS = 14, 20  # age buckets: one per day below AGE_DAYS, then one per week, AGE_WEEKS of them
N_AGE_BUCKETS = AGE_DAYS + AGE_WEEKS + 1


def age_bucket(days_before: np.ndarray) -> np.ndarray:
    """Age bucket (0 .. N_AGE_BUCKETS - 1) of whole days before the cut (int64, >= 0)."""
    d = np.maximum(np.asarray(days_before, dtype=np.int64), 0)
    return np.where(d < AGE_DAYS, d, AGE_DAYS + np.minimum((d - AGE_DAYS) // 7, AGE_WEEKS))
#: Raw sku ids per position (int64, -1 none): not a model input, used to score reconstruction by sku identity.
SKU_ID = "sku_id"
SKU_MODES = ("catalogue", "id")


def iso_week(seconds):
    """Monday-based week number since the epoch (1970-01-01 was a Thursday), for timestamps in seconds."""
    return (np.asarray(seconds, dtype=np.int64) // SECONDS_PER_DAY + 3) // 7


def _smallest_dtype(size: int) -> np.dtype:
    return np.dtype(np.uint8 if size <= 256 else np.uint16 if size <= 65_536 else np.int32)


def _lookup(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Token of each value: 5 + its index in the sorted ``keys``, ``other`` when absent. int64."""
    idx = index_sorted(keys, values)
    return np.where(idx >= 0, N_RESERVED + idx, OTHER).astype(np.int64)


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` most frequent values (ties: smaller id first), returned sorted by id."""
    uniq, counts = np.unique(values, return_counts=True)
    keep = np.lexsort((uniq, -counts))[:k]
    return np.sort(uniq[keep])


@dataclass
class Vocab:
    """Token maps, fitted on the training clients' sequences.

    catalogue: sorted skus of product_properties (int64 ``(n_products,)``); catalogue_counts: occurrences of each in
    the training sequences (int64, 0 = unseen); names: their 16 name codes (uint8 ``(n_products, 16)``).
    skus: the sku token table (``catalogue`` mode: = catalogue; ``id`` mode: the kept skus, sorted).
    """

    fields: tuple[str, ...]
    query: bool
    sku_mode: str
    start_time: int
    n_days: int
    n_weeks: int
    categories: np.ndarray
    urls: np.ndarray
    skus: np.ndarray
    catalogue: np.ndarray
    catalogue_counts: np.ndarray
    names: np.ndarray
    sizes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sizes = {
            EVENT_TYPE: N_RESERVED + len(EVENT_TYPES), CATEGORY: N_RESERVED + len(self.categories),
            PRICE: N_RESERVED + N_PRICE_BUCKETS, SKU: N_RESERVED + len(self.skus), URL: N_RESERVED + len(self.urls),
            DAY: N_RESERVED + self.n_days, WEEK: N_RESERVED + self.n_weeks, AGE: N_RESERVED + N_AGE_BUCKETS,
        }

    @classmethod
    def fit(cls, events, train_rows: np.ndarray, fields: tuple[str, ...], query: bool = False,
            sku_mode: str = "catalogue", vocab_cap: int = 5000, sku_cap: int | None = None) -> "Vocab":
        """Vocabularies from the last :data:`MAX_EVENTS` events of ``train_rows`` (rows into events.client_ids).

        vocab_cap: urls kept; sku_cap: skus kept in ``id`` mode (default: vocab_cap)."""
        if sku_mode not in SKU_MODES:
            raise ValueError(f"sku_mode must be one of {SKU_MODES}, got {sku_mode!r}")
        unknown = set(fields) - set(TOKEN_FIELDS)
        if unknown:
            raise ValueError(f"unknown token fields {sorted(unknown)}; known: {TOKEN_FIELDS}")
        pos, _ = events.last_events(np.asarray(train_rows, dtype=np.int64), MAX_EVENTS)
        products = events.products
        order = np.argsort(products[SKU].to_numpy(), kind="stable")
        catalogue = products[SKU].to_numpy()[order].astype(np.int64)
        names = codes_to_numpy(products[NAME])[order]
        sku = read_positions(events.sku, pos)
        sku = sku[sku >= 0]
        tok = _lookup(catalogue, sku)
        counts = np.bincount(tok[tok >= N_RESERVED] - N_RESERVED, minlength=len(catalogue)).astype(np.int64)
        skus = catalogue if sku_mode == "catalogue" else _top_k(sku, vocab_cap if sku_cap is None else sku_cap)
        url = read_positions(events.url, pos)
        urls = _top_k(url[url >= 0], vocab_cap) if URL in fields else np.zeros(0, np.int64)
        start, last = int(events.start_time), max(int(events.cut_time) - 1, int(events.start_time))
        return cls(fields=tuple(fields), query=query, sku_mode=sku_mode, start_time=start,
                   n_days=last // SECONDS_PER_DAY - start // SECONDS_PER_DAY + 1,
                   n_weeks=int(iso_week(last) - iso_week(start)) + 1,
                   categories=np.unique(products[CATEGORY].to_numpy()).astype(np.int64), urls=urls, skus=skus,
                   catalogue=catalogue, catalogue_counts=counts, names=names)

    def state(self) -> dict:
        """A picklable summary used to check that a resumed run sees the same vocabulary."""
        return {"fields": list(self.fields), "query": self.query, "sku_mode": self.sku_mode, "sizes": self.sizes,
                "start_time": self.start_time}

    def field_values(self, events, pos: np.ndarray, name: str) -> np.ndarray:
        """Tokens (int64) of field ``name`` for the events at ``pos``."""
        if name == EVENT_TYPE:
            return N_RESERVED + read_positions(events.event_type, pos).astype(np.int64)
        if name == AGE:
            days = (int(events.cut_time) - 1 - read_positions(events.timestamp, pos)) // SECONDS_PER_DAY
            return N_RESERVED + age_bucket(days)
        if name in (DAY, WEEK):
            ts = read_positions(events.timestamp, pos)
            if name == DAY:
                idx = ts // SECONDS_PER_DAY - self.start_time // SECONDS_PER_DAY
            else:
                idx = iso_week(ts) - iso_week(self.start_time)
            return N_RESERVED + np.clip(idx, 0, self.sizes[name] - N_RESERVED - 1)
        raw = read_positions({CATEGORY: events.category, PRICE: events.price, SKU: events.sku, URL: events.url}[name], pos)
        raw = raw.astype(np.int64)
        if name == PRICE:
            tok = np.where((raw >= 0) & (raw < N_PRICE_BUCKETS), N_RESERVED + raw, OTHER)
        else:
            tok = _lookup({CATEGORY: self.categories, SKU: self.skus, URL: self.urls}[name], raw)
        return np.where(raw < 0, MISSING, tok)

    def sku_token_to_id(self, tokens: np.ndarray) -> np.ndarray:
        """Sku id of each sku token (int64; -1 for reserved tokens)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        ok = tokens >= N_RESERVED
        return np.where(ok, self.skus[np.clip(tokens - N_RESERVED, 0, max(len(self.skus) - 1, 0))], -1) \
            if len(self.skus) else np.full(tokens.shape, -1, np.int64)

    def catalogue_count_of(self, sku_ids: np.ndarray) -> np.ndarray:
        """Training occurrences of each sku id (int64; 0 for unseen or unknown skus)."""
        tok = _lookup(self.catalogue, np.asarray(sku_ids, dtype=np.int64))
        return np.where(tok >= N_RESERVED, self.catalogue_counts[np.maximum(tok - N_RESERVED, 0)], 0)


@dataclass
class Tokens:
    """Padded token grids of a set of clients.

    grids: field -> ``(n, SEQ_LEN)`` unsigned ints (smallest dtype that fits); ``query`` (if asked): int32 rows into
    ``query_codes`` (-1 none); ``sku_id`` (if asked): int64 raw sku ids (-1 none). lengths: int64 ``(n,)`` =
    events + 2 (start and end), so at least 2 (a client without events is ``[start, end]``).
    """

    grids: dict[str, np.ndarray]
    lengths: np.ndarray

    def __len__(self) -> int:
        return int(len(self.lengths))

    def batch(self, idx: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Grids of rows ``idx`` cut to the batch's longest sequence, and their lengths."""
        lengths = self.lengths[idx]
        t = int(lengths.max())
        return {k: g[idx, :t] for k, g in self.grids.items()}, lengths


def tokenize(events, vocab: Vocab, rows: np.ndarray, with_sku_ids: bool = False) -> Tokens:
    """Token grids of client ``rows`` (rows into ``events.client_ids``; -1 = a client without events)."""
    rows = np.asarray(rows, dtype=np.int64)
    n = len(rows)
    pos, counts = events.last_events(rows, MAX_EVENTS)
    r = np.repeat(np.arange(n, dtype=np.int64), counts)
    c = 1 + np.arange(len(pos), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    ends = counts + 1
    grids: dict[str, np.ndarray] = {}
    for name in vocab.fields:
        g = np.zeros((n, SEQ_LEN), dtype=_smallest_dtype(vocab.sizes[name]))
        g[:, 0] = START
        g[r, c] = vocab.field_values(events, pos, name)
        g[np.arange(n), ends] = END
        grids[name] = g
    if vocab.query:
        q = np.full((n, SEQ_LEN), -1, dtype=np.int32)
        q[r, c] = read_positions(events.query, pos)
        grids[QUERY] = q
    if with_sku_ids:
        s = np.full((n, SEQ_LEN), -1, dtype=np.int64)
        s[r, c] = read_positions(events.sku, pos)
        grids[SKU_ID] = s
    return Tokens(grids, (counts + 2).astype(np.int64))


__all__ = ["PAD", "START", "END", "MISSING", "OTHER", "N_RESERVED", "MAX_EVENTS", "SEQ_LEN", "TOKEN_FIELDS",
           "DAY", "WEEK", "AGE", "EVENT_TYPE", "age_bucket", "SKU_ID", "Vocab", "Tokens", "tokenize"]
