"""A floor under any event-table build: the work no build of the five event files can skip.

    python benchmarks/event_table_floor.py --data-dir W [--layout input] [--work /tmp/floor]

It reads the five event files' client_id, timestamp and item columns (every value decoded), parses the timestamp
strings, stacks the kinds, sorts all events by (client, time) once, and writes client, time, event type and item
as .npy files under a temporary folder (removed at the end). The real build (:class:`competition.events.EventTable`)
also checks every value, joins the catalogue, parses the query codes, orders over six keys (ties included) and writes
nine arrays, so it costs more than this; the floor says how much of its ratio to a bare scan is the unavoidable
parse, sort and write. ``bench_pipeline.py`` runs it between the bare scan and the build and prints the ratios.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from competition.cli import HelpFormatter  # noqa: E402
from competition.load import TIMESTAMP_FORMAT  # noqa: E402
from competition.schema import CLIENT_ID, EVENT_TYPES, ITEM_COLUMN, QUERY, TIMESTAMP, DataPaths  # noqa: E402


def _order(events: pl.DataFrame) -> np.ndarray:
    """Positions sorting by (client, time): one packed uint64 key (the fastest sort here, 3x two keys) when the
    ranges fit in 32 bits each, else the two columns."""
    lo = events.select(pl.col(CLIENT_ID).min().alias("c0"), pl.col(CLIENT_ID).max().alias("c1"),
                       pl.col(TIMESTAMP).min().alias("t0"), pl.col(TIMESTAMP).max().alias("t1")).row(0, named=True)
    if lo["c1"] - lo["c0"] < 2**32 and lo["t1"] - lo["t0"] < 2**32:
        key = ((pl.col(CLIENT_ID) - lo["c0"]).cast(pl.UInt64) * 2**32
               + (pl.col(TIMESTAMP) - lo["t0"]).cast(pl.UInt64))
        return events.select(key.arg_sort()).to_series().to_numpy()
    return events.select(pl.arg_sort_by([CLIENT_ID, TIMESTAMP])).to_series().to_numpy()


def floor_build(data_dir: Path, layout: str, work: Path) -> dict[str, float]:
    """Seconds of each step (read + parse, sort, write) over the five event files of ``data_dir``."""
    t0 = time.perf_counter()
    frames = []
    for code, kind in enumerate(EVENT_TYPES):
        item = ITEM_COLUMN[kind]
        ts = pl.col(TIMESTAMP)
        lf = pl.scan_parquet(DataPaths(data_dir).table(kind, layout))
        if lf.collect_schema()[TIMESTAMP] == pl.String:
            ts = ts.str.to_datetime(TIMESTAMP_FORMAT, time_unit="us", cache=False)
        # the query column is a string of codes: its length stands in for a parsed value (the floor reads it)
        value = pl.col(item).str.len_bytes().cast(pl.Int64) if item == QUERY else pl.col(item).cast(pl.Int64)
        frames.append(lf.select(pl.col(CLIENT_ID).cast(pl.Int64), ts.dt.epoch("s").alias(TIMESTAMP),
                                pl.lit(code, dtype=pl.UInt8).alias("event_type"), value.alias("item")))
    events = pl.concat(frames).collect()
    t1 = time.perf_counter()
    order = _order(events)
    t2 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    for col in events.columns:
        np.save(work / f"{col}.npy", np.take(events[col].to_numpy(), order))
    t3 = time.perf_counter()
    return {"events": float(len(events)), "read_parse": t1 - t0, "sort": t2 - t1, "write": t3 - t2,
            "total": t3 - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/event_table_floor.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--data-dir", required=True, type=Path, help="a split data directory")
    p.add_argument("--layout", default="input", choices=["input", "raw"], help="which event files (default input)")
    p.add_argument("--work", type=Path, default=None, help="parent of the temporary output folder (default: /tmp)")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="event_floor_", dir=args.work))
    try:
        steps = floor_build(args.data_dir, args.layout, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{int(steps['events']):,} events: read and parse {steps['read_parse']:.1f} s, sort {steps['sort']:.1f} s, "
          f"write {steps['write']:.1f} s, total {steps['total']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
