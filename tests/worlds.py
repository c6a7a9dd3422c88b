"""Hand-made tiny worlds in the organisers' raw layout, with answers known by construction.

``write_world(root, events, products, relevant)`` writes the six parquet files (string timestamps, string codes,
exactly like the released files) and ``input/relevant_clients.npy``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from competition.load import format_codes
from competition.schema import (CATEGORY, CLIENT_ID, EVENT_TYPES, ITEM_COLUMN, NAME, PRICE, PRODUCT_PROPERTIES,
                                QUERY, SKU, TIMESTAMP, DataPaths)


def codes(seed: int, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 16), dtype=np.uint8)


def write_world(root: Path, events: dict[str, list[tuple]], products: list[tuple[int, int, int]],
                relevant: list[int]) -> Path:
    """events[kind] = [(client_id, "YYYY-MM-DD HH:MM:SS", item)], item = sku / url / query seed (codes(seed)).
    products = [(sku, category, price)]; name codes = codes(sku)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = DataPaths(root)
    for kind in EVENT_TYPES:
        rows = events.get(kind, [])
        item = ITEM_COLUMN[kind]
        frame = {CLIENT_ID: pl.Series([r[0] for r in rows], dtype=pl.Int64),
                 TIMESTAMP: pl.Series([r[1] for r in rows], dtype=pl.String)}
        if item == QUERY:
            frame[item] = (format_codes(np.concatenate([codes(r[2]) for r in rows]))
                           if rows else pl.Series([], dtype=pl.String))
        else:
            frame[item] = pl.Series([r[2] for r in rows], dtype=pl.Int64)
        pl.DataFrame(frame).write_parquet(paths.table(kind))
    skus = [p[0] for p in products]
    pl.DataFrame({SKU: pl.Series(skus, dtype=pl.Int64),
                  CATEGORY: pl.Series([p[1] for p in products], dtype=pl.Int64),
                  PRICE: pl.Series([p[2] for p in products], dtype=pl.Int64),
                  NAME: format_codes(np.concatenate([codes(s) for s in skus]))}
                 ).write_parquet(paths.table(PRODUCT_PROPERTIES))
    paths.relevant_clients.parent.mkdir(parents=True, exist_ok=True)
    np.save(paths.relevant_clients, np.asarray(relevant, dtype=np.int64))
    return root


# The standard tiny world. Last buy (end) = 2022-08-20 15:30:00, so train_target_start = 2022-07-24 00:00:00 and
# validation_target_start = 2022-08-07 00:00:00.
END = "2022-08-20 15:30:00"
TRAIN_START = "2022-07-24 00:00:00"
VALID_START = "2022-08-07 00:00:00"
PRODUCTS = [(1, 10, 5), (2, 10, 50), (3, 20, 7), (4, 20, 99), (5, 30, 0), (6, 30, 42)]
RELEVANT = [100, 101, 102, 103, 104]
EVENTS = {
    "product_buy": [
        (100, "2022-07-01 10:00:00", 1),   # input: 100 is active
        (100, "2022-07-23 23:59:59", 2),   # input, one second before the cut
        (101, TRAIN_START, 3),             # exactly at the cut: train target, not input
        (101, "2022-08-06 23:59:59", 4),   # last second of the train window
        (102, VALID_START, 5),             # first second of the validation window
        (103, "2022-07-10 08:00:00", 3),   # input: 103 active, churns in both windows
        (105, "2022-07-02 09:00:00", 1),   # non-relevant client
        (100, "2022-07-25 12:00:00", 6),   # train window (sku 6 never seen in input: new)
        (100, END, 1),                     # end: validation window
    ],
    "add_to_cart": [(100, "2022-07-01 09:59:00", 1), (104, "2022-07-20 00:00:00", 2),
                    (101, "2022-07-24 00:00:01", 6)],
    "remove_from_cart": [(104, "2022-07-20 00:05:00", 2)],
    "page_visit": [(100, "2022-07-01 09:58:00", 77), (101, "2022-07-05 12:00:00", 78),
                   (104, "2022-07-20 00:00:00", 77), (105, "2022-07-02 08:59:00", 79),
                   (102, "2022-08-08 10:00:00", 78)],
    "search_query": [(100, "2022-07-01 09:57:00", 11), (102, "2022-07-06 06:06:06", 12)],
}


def tiny_world(root: Path) -> Path:
    return write_world(root, EVENTS, PRODUCTS, RELEVANT)
