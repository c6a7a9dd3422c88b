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

Everything is read from the event table in chunks of events, one pass per window (no per-event Python loop).
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
    anchor = int(anchor)
    end = anchor + horizon_days * DAY_S
    if end > int(events.cut_time):
        raise ValueError(f"window [{anchor}, {end}) runs past the end of the event period ({events.cut_time})")
    client_ids = np.asarray(client_ids, dtype=np.int64)
    # one pass over the product events before the window's end gives the window's buys, the skus seen before it
    # (for new skus) and the clients who bought before it (churn's active clients)
    rows, cols = events.select(hi_time=end, codes=_SKU_CODES, columns=(TIMESTAMP, "event_type", SKU, CATEGORY, PRICE))
    early = cols[TIMESTAMP] < anchor
    buy = cols["event_type"] == EVENT_CODE[PRODUCT_BUY]
    owners = np.asarray(events.client_ids)[rows]
    window = _frame(owners[buy & ~early], {c: cols[c][buy & ~early] for c in (SKU, CATEGORY, PRICE)})
    old_skus = cols[SKU][early]
    lists = compute_target_lists(window, np.unique(old_skus[old_skus >= 0]))
    entries = {t: lists[t][0] for t in PROPENSITY_TASKS}
    labels = {t: label_matrix(t, client_ids, window, entries[t]) for t in PROPENSITY_TASKS}
    no_buy = label_matrix("churn", client_ids, window)
    return WindowLabels(anchor, client_ids, np.isin(client_ids, owners[buy & early]), no_buy, entries,
                        {t: lists[t][1] for t in PROPENSITY_TASKS}, labels)


__all__ = ["anchor_times", "WindowLabels", "window_labels",
           "MIN_HISTORY_DAYS"]
