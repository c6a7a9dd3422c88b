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
