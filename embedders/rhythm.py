"""Purchase and visit rhythm per client: how regularly a client comes back and buys, and where in its cycle the cut
falls; plus the spread of the prices it buys and carts.

``python -m embedders.rhythm --data-dir D --out E [--horizon-days 14] [--seed S]``

Why: count statistics say how often and how recently a client bought (``count_buy``, ``days_since_last_buy``),
not whether it buys like a clock. A client who buys every 10 days and last bought 9 days ago is due; one who
bought twice in a burst 9 days ago is not, and their counts can be equal. The network that scores a submission
does not divide one column by another, so the ratio that says "due" (days since the last buy over the usual gap)
must be a column. This is the classic inter-purchase-time extension of recency/frequency/monetary features for
churn and conversion, with no training (seconds at 1M clients).

Days are whole days before the cut: an event at ``t`` falls on day ``(cut - 1 - t) // 86400`` (0 = the last 24
hours). For each kind of day ``k`` -- ``buy`` (days with a product_buy) and ``active`` (days with any event) --
with the client's distinct days of that kind in time order, the gaps between consecutive ones (days) and ``e``
the days since the last one:

=================================  ==========================================================================
``<k>_days``                       log1p(distinct days of kind k)
``<k>_gap_mean``                   mean gap (-1: fewer than 2 such days)
``<k>_gap_cv``                     standard deviation of the gaps over their mean (-1: fewer than 2 days)
``<k>_gap_last``                   the last gap (-1: fewer than 2 days)
``<k>_overdue``                    e / mean gap (-1: fewer than 2 days)
``<k>_renewal``                    of the client's gaps longer than e, the share at most e + horizon_days: the
                                   empirical chance of a next day of kind k within the horizon, given none for e
                                   days (0: no gap longer than e; -1: fewer than 2 days)
=================================  ==========================================================================

and over the client's product events (buys, adds, removes) with a known price bucket: ``price_product_mean``,
``price_product_std``, ``price_product_last`` (the latest), ``price_buy_std``, ``price_add_std`` (-1 without
such events; a std of one event is 0).
"""
from __future__ import annotations

import argparse

import numpy as np

from competition.progress import progress as progress_of
from competition.schema import ADD_TO_CART, EVENT_CODE, PRODUCT_BUY, SKU_EVENTS
from embedders.base import Block, Embedder, EventSource
from embedders.chunks import gather, present_rows, row_chunks

DAY = 86_400
DAY_KINDS: tuple[str, ...] = ("buy", "active")
DAY_FEATURES: tuple[str, ...] = ("days", "gap_mean", "gap_cv", "gap_last", "overdue", "renewal")
PRICE_FEATURES: tuple[str, ...] = ("price_product_mean", "price_product_std", "price_product_last", "price_buy_std",
                                   "price_add_std")
PRODUCT_CODES = np.array([EVENT_CODE[e] for e in SKU_EVENTS], dtype=np.uint8)
BUY, ADD = EVENT_CODE[PRODUCT_BUY], EVENT_CODE[ADD_TO_CART]
#: The value of a feature a client has no data for (every defined value is >= 0).
MISSING = -1.0


def feature_names() -> list[str]:
    """Column names, in order: the day features of each kind of day, then the price features."""
    return [f"{k}_{f}" for k in DAY_KINDS for f in DAY_FEATURES] + list(PRICE_FEATURES)


def day_rhythm(row: np.ndarray, day: np.ndarray, n: int, horizon: float) -> np.ndarray:
    """The :data:`DAY_FEATURES` of each of ``n`` rows, float64 ``(n, 6)``, from events at row ``row`` (int64,
    any order) on ``day`` (int64 days before the cut, >= 0); duplicates of a (row, day) count once."""
    out = np.full((n, len(DAY_FEATURES)), MISSING)
    out[:, 0] = 0.0
    if len(row) == 0:
        return out
    span = int(day.max()) + 1
    # distinct (row, day), by row and then by time (the largest day-before-cut first)
    key = np.unique(row * span + (span - 1 - day))
    r, d = key // span, span - 1 - key % span
    days = np.bincount(r, minlength=n).astype(np.float64)
    out[:, 0] = np.log1p(days)
    last = np.r_[r[1:] != r[:-1], True]
    elapsed = np.zeros(n)
    elapsed[r[last]] = d[last]                              # days since the row's last day of this kind
    same = r[1:] == r[:-1]
    g, gr = (d[:-1] - d[1:])[same].astype(np.float64), r[1:][same]
    n_gaps = np.bincount(gr, minlength=n).astype(np.float64)
    has = n_gaps > 0
    mean = np.bincount(gr, weights=g, minlength=n)[has] / n_gaps[has]
    var = np.maximum(np.bincount(gr, weights=g * g, minlength=n)[has] / n_gaps[has] - mean ** 2, 0.0)
    out[has, 1] = mean
    out[has, 2] = np.sqrt(var) / mean                      # gaps are >= 1 day, so the mean is > 0
    last_gap = np.r_[gr[1:] != gr[:-1], True] if len(gr) else np.zeros(0, dtype=bool)
    out[gr[last_gap], 3] = g[last_gap]
    out[has, 4] = elapsed[has] / mean
    e = elapsed[gr]
    longer = g > e
    due = np.bincount(gr, weights=(longer & (g <= e + horizon)).astype(np.float64), minlength=n)
    n_longer = np.bincount(gr, weights=longer.astype(np.float64), minlength=n)
    out[has, 5] = np.where(n_longer[has] > 0, due[has] / np.maximum(n_longer[has], 1.0), 0.0)
    return out


def price_spread(row: np.ndarray, price: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std, last) price per row, float64 ``(n,)`` each, of events in table (time) order; MISSING for rows
    without one."""
    mean, std, last = (np.full(n, MISSING) for _ in range(3))
    if len(row):
        count = np.bincount(row, minlength=n).astype(np.float64)
        has = count > 0
        p = price.astype(np.float64)
        m = np.bincount(row, weights=p, minlength=n)[has] / count[has]
        mean[has] = m
        std[has] = np.sqrt(np.maximum(np.bincount(row, weights=p * p, minlength=n)[has] / count[has] - m ** 2, 0.0))
        end = np.r_[row[1:] != row[:-1], True]
        last[row[end]] = p[end]
    return mean, std, last


class RhythmEmbedder(Embedder):
    """Gaps between a client's buy days and active days, where the cut falls in them, and its price spread
    (module docstring).

    Parameters
    ----------
    dim : int | None
        None or the block's fixed width (17); anything else is refused
    seed : int
        unused (the block is deterministic); kept for the common interface
    horizon_days : float
        the horizon of the ``renewal`` features, days (the challenge's target window is 14)
    chunk_events : int
        events per chunk (bounds memory)
    progress : bool
        progress bars on stderr

    Fitted attributes: ``cut_time_`` (s).
    """

    name = "rhythm"
    unknown_sku_note = "kept (a buy day is a buy day); without a price bucket they are left out of the price columns"
    #: Hand-made ratios and counts: each column to uniform [0, 1] by its quantiles in an ensemble, as stats.
    ensemble_transform = "quantile"

    def __init__(self, dim: int | None = None, seed: int = 0, horizon_days: float = 14.0,
                 chunk_events: int = 5_000_000, progress: bool = True):
        super().__init__(dim, seed)
        self.horizon_days = horizon_days
        self.chunk_events = chunk_events
        self.progress = progress

    @property
    def width(self) -> int:
        """Columns of the block (fixed)."""
        return len(DAY_KINDS) * len(DAY_FEATURES) + len(PRICE_FEATURES)

    def validate(self) -> None:
        """``dim`` None or the width, ``horizon_days`` and ``chunk_events`` > 0."""
        if self.dim is not None and self.dim != self.width:
            raise ValueError(f"rhythm has a fixed width of {self.width}; dim must be {self.width} or omitted, "
                             f"got {self.dim}")
        if not self.horizon_days > 0:
            raise ValueError(f"horizon_days must be > 0, got {self.horizon_days}")
        if not self.chunk_events > 0:
            raise ValueError(f"chunk_events must be > 0, got {self.chunk_events}")

    def fit(self, events: EventSource) -> "RhythmEmbedder":
        """Nothing to learn: the cut time."""
        self.validate()
        self.cut_time_ = int(events.cut_time)
        return self

    def transform(self, events: EventSource, client_ids: np.ndarray) -> Block:
        """float32 ``(len(client_ids), width)`` in ``client_ids`` order; clients without events get 0 days and
        MISSING elsewhere."""
        client_ids = np.asarray(client_ids, dtype=np.int64)
        table_rows, where = present_rows(events, client_ids)
        feats = np.zeros((len(table_rows), self.width), dtype=np.float32)
        for lo, hi in progress_of(row_chunks(events.lengths[table_rows], self.chunk_events),
                                  desc="rhythm: features", enabled=self.progress, unit="chunk"):
            feats[lo:hi] = self._features(gather(events, table_rows[lo:hi]))
        out = np.full((len(client_ids), self.width), MISSING, dtype=np.float32)
        names = feature_names()
        for k in DAY_KINDS:
            out[:, names.index(f"{k}_days")] = 0.0
        out[where >= 0] = feats[where[where >= 0]]
        meta = {"name": self.name, "feature_names": names, "horizon_days": self.horizon_days,
                "clients_without_buy_gaps": int((out[:, names.index("buy_gap_mean")] < 0).sum())}
        return Block(client_ids, out, meta)

    def _features(self, c) -> np.ndarray:
        """float32 ``(c.n_rows, width)`` of one chunk of client rows."""
        n = c.n_rows
        day = (self.cut_time_ - 1 - np.asarray(c.timestamp, dtype=np.int64)) // DAY
        buy = c.event_type == BUY
        cols = [day_rhythm(c.row[buy], day[buy], n, self.horizon_days),
                day_rhythm(c.row, day, n, self.horizon_days)]
        priced = np.isin(c.event_type, PRODUCT_CODES) & (c.price >= 0)
        mean, std, last = price_spread(c.row[priced], c.price[priced], n)
        by_kind = [price_spread(c.row[priced & (c.event_type == code)], c.price[priced & (c.event_type == code)],
                                n)[1] for code in (BUY, ADD)]
        cols.append(np.stack([mean, std, last, *by_kind], axis=1))
        return np.concatenate(cols, axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from embedders.cli import add_params, base_parser
    parser = base_parser("python -m embedders.rhythm", __doc__.split("\n\n")[0], default_dim=None,
                         dim_help="width of the block: omitted or exactly 17 (fixed)")
    return add_params(parser, RhythmEmbedder)


def make(args: argparse.Namespace) -> RhythmEmbedder:
    """The embedder of the parsed flags."""
    from embedders.cli import from_args
    return from_args(RhythmEmbedder, args)


def main(argv: list[str] | None = None) -> int:
    from embedders.cli import run
    return run(build_parser(), make, argv)


if __name__ == "__main__":
    raise SystemExit(main())
