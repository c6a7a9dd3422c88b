"""Training windows cut back in time inside the embedder's own event period, and their six-task labels.

The scorer trains on labels from the 14 days after the embedding's period and asks the embedding to carry what
predicts them. We imitate that without ever reading ``target/``: anchor times ``t_1 > t_2 > ... > t_K`` with
``t_k = cut - horizon - (k - 1) * stride`` (``cut`` = the event table's end, exclusive; default horizon = stride =
14 days), features from events before ``t_k``, labels from product_buy events in ``[t_k, t_k + horizon)``. The
labels follow docs/challenge.md section 4 exactly, with each window's own target lists, computed by
:mod:`competition.targets` (the one place for those definitions):

- churn: clients that bought before ``t_k`` (the window's active clients); 1 = no buy in the window;
- conversion: every client, the same label;
- propensity_category / propensity_sku: the window's 100 most bought categories / skus, multi-hot;
- propensity_new_sku: the window's 100 most bought skus among those with no product event before ``t_k``;
- propensity_price: every price bucket bought in the window.

Everything is read from the event table in chunks of events, one pass for all windows (no per-event Python
loop).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from competition.schema import (CATEGORY, CLIENT_ID, EVENT_CODE, PRICE, PRODUCT_BUY, PROPENSITY_TASKS, SKU,
                                SKU_EVENTS, TARGET_WINDOW_DAYS, TIMESTAMP)
from competition.targets import compute_target_lists, label_matrix

DAY_S = 86_400
#: Fewest days of history an anchor must leave before it.
MIN_HISTORY_DAYS = 7
_SKU_CODES = np.array([EVENT_CODE[e] for e in SKU_EVENTS], dtype=np.uint8)


def anchor_times(events, n_windows: int, horizon_days: int = TARGET_WINDOW_DAYS,
                 stride_days: int = TARGET_WINDOW_DAYS) -> list[int]:
    """``[t_1, ..., t_K]`` in seconds, latest first (see the module docstring).

    Raises ValueError when not one window fits: each anchor must leave :data:`MIN_HISTORY_DAYS` of events before
    it. Anchors that do not fit are dropped (the list may be shorter than ``n_windows``).
    """
    if n_windows < 1 or horizon_days < 1 or stride_days < 1:
        raise ValueError(f"windows, horizon and stride must be >= 1 (got {n_windows}, {horizon_days}, {stride_days})")
    cut, start = int(events.cut_time), int(events.start_time)
    out = [cut - (horizon_days + k * stride_days) * DAY_S for k in range(n_windows)]
    out = [t for t in out if t - start >= MIN_HISTORY_DAYS * DAY_S]
    if not out:
        raise ValueError(f"the event period ({(cut - start) / DAY_S:.1f} days) is too short for one training window "
                         f"of {horizon_days} days after {MIN_HISTORY_DAYS} days of history")
    return out


def _frame(client_ids: np.ndarray, cols: dict[str, np.ndarray]) -> pl.DataFrame:
    """client_id, sku, category, price (Int64; -1 -> null): the frame :mod:`competition.targets` reads as a target
    window."""
    frame = pl.DataFrame({CLIENT_ID: client_ids.astype(np.int64),
                          **{c: cols[c].astype(np.int64) for c in (SKU, CATEGORY, PRICE)}})
    return frame.with_columns(pl.when(pl.col(c) >= 0).then(pl.col(c)).otherwise(None).alias(c)
                              for c in (SKU, CATEGORY, PRICE))


#: Largest sku id for which :func:`first_seen` keeps a dense table (int64, 8 bytes per id: 400 MB at most).
DENSE_SKU_MAX = 50_000_000


def first_seen(skus: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each known sku (``>= 0``) of ``skus`` once, with the earliest of its ``times``: ``(skus int64 (k,), first
    times int64 (k,))``, by increasing sku. A dense table indexed by sku when the ids are small (one ``minimum.at``,
    under a second for 100M events), else a polars group-by."""
    skus, times = np.asarray(skus), np.asarray(times, dtype=np.int64)
    known = skus >= 0
    if not known.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    top = int(skus.max())
    if top <= DENSE_SKU_MAX:
        never = np.iinfo(np.int64).max
        first = np.full(top + 1, never, dtype=np.int64)
        np.minimum.at(first, skus[known], times[known])
        ids = np.flatnonzero(first != never)
        return ids.astype(np.int64), first[ids]
    frame = (pl.DataFrame({SKU: skus[known].astype(np.int64), TIMESTAMP: times[known]})
             .group_by(SKU).agg(pl.col(TIMESTAMP).min()).sort(SKU))
    return frame[SKU].to_numpy(), frame[TIMESTAMP].to_numpy()


@dataclass
class WindowLabels:
    """Labels of one window for ``client_ids`` int64 ``(n,)``.

    anchor: the window's start, s. active: bool ``(n,)`` (churn is scored on these only). no_buy: uint8 ``(n,)``
    (the churn and conversion label). entries / popularity / labels: per propensity task, the window's target
    entries int64 ``(k,)``, their purchase counts float64 ``(k,)`` and multi-hot labels uint8 ``(n, k)``.
    """

    anchor: int
    client_ids: np.ndarray
    active: np.ndarray
    no_buy: np.ndarray
    entries: dict[str, np.ndarray]
    popularity: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]


def window_labels(events, anchor: int, client_ids: np.ndarray,
                  horizon_days: int = TARGET_WINDOW_DAYS) -> WindowLabels:
    """The six tasks' labels of the window ``[anchor, anchor + horizon)`` for ``client_ids``."""
    return windows_labels(events, [anchor], client_ids, horizon_days)[0]


def windows_labels(events, anchors: list[int], client_ids: np.ndarray,
                   horizon_days: int = TARGET_WINDOW_DAYS) -> list[WindowLabels]:
    """:func:`window_labels` of each anchor (in the given order), from one pass over the events.

    One :meth:`~competition.events.EventTable.select` of the product events before the last window's end serves
    every window (at 1M clients a pass reads ~200M events: 13 s), and each sku's first time in it gives the skus
    seen before any anchor (new skus) without a ``np.unique`` per window."""
    anchors = [int(a) for a in anchors]
    ends = [a + horizon_days * DAY_S for a in anchors]
    if max(ends) > int(events.cut_time):
        raise ValueError(f"window [{anchors[int(np.argmax(ends))]}, {max(ends)}) runs past the end of the event "
                         f"period ({events.cut_time})")
    client_ids = np.asarray(client_ids, dtype=np.int64)
    rows, cols = events.select(hi_time=max(ends), codes=_SKU_CODES,
                               columns=(TIMESTAMP, "event_type", SKU, CATEGORY, PRICE))
    ts = cols[TIMESTAMP]
    buy = cols["event_type"] == EVENT_CODE[PRODUCT_BUY]
    owners = np.asarray(events.client_ids)[rows]
    skus, firsts = first_seen(cols[SKU], ts)
    out = []
    for anchor, end in zip(anchors, ends):
        early = ts < anchor
        inside = buy & ~early & (ts < end)
        window = _frame(owners[inside], {c: cols[c][inside] for c in (SKU, CATEGORY, PRICE)})
        lists = compute_target_lists(window, skus[firsts < anchor])  # a set: order and repeats do not matter
        entries = {t: lists[t][0] for t in PROPENSITY_TASKS}
        labels = {t: label_matrix(t, client_ids, window, entries[t]) for t in PROPENSITY_TASKS}
        no_buy = label_matrix("churn", client_ids, window)
        out.append(WindowLabels(anchor, client_ids, np.isin(client_ids, owners[buy & early]), no_buy, entries,
                                {t: lists[t][1] for t in PROPENSITY_TASKS}, labels))
    return out


__all__ = ["anchor_times", "WindowLabels", "window_labels", "windows_labels", "first_seen",
           "MIN_HISTORY_DAYS"]
