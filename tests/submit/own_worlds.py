"""Raw synthetic worlds for the own-data pipeline tests: a small ``competition.synth`` world (raw layout only, no
split, no target lists, no truth) with optional awkward properties of real logs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from competition.schema import (CLIENT_ID, EVENT_TYPES, PRODUCT_PROPERTIES, REMOVE_FROM_CART, SEARCH_QUERY, SKU,
                                SKU_EVENTS, DataPaths)


def raw_world(root: Path, clients: int = 400, seed: int = 7, id_offset: int = 0, empty: tuple[str, ...] = ()
              ) -> Path:
    """A raw world of ``clients`` relevant clients at ``root``: client and sku ids shifted by ``id_offset``, the
    event files named in ``empty`` emptied (schema kept), and ``truth/`` removed (it is not the user's data)."""
    import shutil

    from competition.synth import generate_world

    generate_world(root, clients, seed, progress=False, split=False)
    paths = DataPaths(root)
    shutil.rmtree(paths.truth)
    for name in (*EVENT_TYPES, PRODUCT_PROPERTIES):
        frame = pl.read_parquet(paths.table(name))
        shift = []
        if CLIENT_ID in frame.columns:
            shift.append(pl.col(CLIENT_ID) + id_offset)
        if SKU in frame.columns and (name in SKU_EVENTS or name == PRODUCT_PROPERTIES):
            shift.append(pl.col(SKU) + id_offset)
        if shift and id_offset:
            frame = frame.with_columns(shift)
        if name in empty:
            frame = frame.head(0)
        frame.write_parquet(paths.table(name))
    relevant = np.load(paths.relevant_clients)
    np.save(paths.relevant_clients, relevant + np.int64(id_offset))
    return root


AWKWARD = dict(id_offset=10**9, empty=(SEARCH_QUERY, REMOVE_FROM_CART))


def make_messy(root: Path, no_event_clients: int = 3, unknown_sku_buys: int = 5, late_visits: int = 100) -> dict:
    """Issue 28's awkward properties, added to a raw world: relevant clients without a single event, purchases of
    skus absent from product_properties, and page visits dated 2100-01-01 (after the last purchase). Returns what
    was added."""
    from competition.schema import PAGE_VISIT, PRODUCT_BUY
    paths = DataPaths(root)
    relevant = np.load(paths.relevant_clients)
    seen = set()
    for name in EVENT_TYPES:
        seen |= set(pl.read_parquet(paths.table(name), columns=[CLIENT_ID])[CLIENT_ID].to_list())
    new = np.arange(no_event_clients, dtype=np.int64) + max(int(relevant.max()), max(seen)) + 1
    np.save(paths.relevant_clients, np.r_[relevant, new])
    buys = pl.read_parquet(paths.table(PRODUCT_BUY))
    skus = pl.read_parquet(paths.table(PRODUCT_PROPERTIES), columns=[SKU])[SKU]
    unknown = int(skus.max()) + 1
    extra = buys.head(unknown_sku_buys).with_columns(pl.lit(unknown, dtype=buys.schema[SKU]).alias(SKU))
    pl.concat([buys, extra]).write_parquet(paths.table(PRODUCT_BUY))
    visits = pl.read_parquet(paths.table(PAGE_VISIT))
    late = visits.head(1).select(pl.all().repeat_by(late_visits).explode())
    late = late.with_columns(pl.lit("2100-01-01 00:00:00").cast(visits.schema["timestamp"], strict=False)
                             .alias("timestamp"))
    pl.concat([visits, late]).write_parquet(paths.table(PAGE_VISIT))
    return {"no_event_clients": new, "unknown_sku": unknown, "late_visits": late_visits}
