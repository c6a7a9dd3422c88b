"""The official local split (docs/challenge.md section 3).

``end`` = the last product_buy timestamp; ``train_target_start`` = floor_to_day(end - 27 days);
``validation_target_start`` = train_target_start + 14 days. Input = every event with timestamp <
train_target_start; train target = product_buy in [train_target_start, validation_target_start); validation
target = product_buy in [validation_target_start, end]; both joined with product_properties.

Input files keep the released columns and dtypes unchanged (rows are filtered, never rewritten), so they read
exactly like the raw files. Writes are streaming (polars sinks) and atomic.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from competition.cli import HelpFormatter, add_no_progress
from competition.io import atomic_path, save_npy
from competition.load import (DataError, check_table, normalise_column, read_products, read_relevant_clients,
                              scan_table)
from competition.schema import (CLIENT_ID, EVENT_TYPES, PRODUCT_BUY, PRODUCT_PROPERTIES, SKU, SPLIT_OFFSET_DAYS,
                                TARGET_WINDOW_DAYS, TIMESTAMP, DataPaths)


@dataclass(frozen=True)
class SplitTimes:
    """Boundaries of the split, naive datetimes to the second."""

    end: datetime
    train_target_start: datetime
    validation_target_start: datetime

    def to_json(self) -> dict[str, str]:
        return {k: getattr(self, k).isoformat(sep=" ") for k in ("end", "train_target_start",
                                                                 "validation_target_start")}

    @classmethod
    def from_json(cls, d: dict[str, str]) -> "SplitTimes":
        return cls(**{k: datetime.fromisoformat(v) for k, v in d.items()})


def split_times_from_end(end: datetime) -> SplitTimes:
    """The boundaries for a given last-purchase time."""
    start = (end - timedelta(days=SPLIT_OFFSET_DAYS)).replace(hour=0, minute=0, second=0, microsecond=0)
    return SplitTimes(end, start, start + timedelta(days=TARGET_WINDOW_DAYS))


def compute_split_times(data_dir: str | Path) -> SplitTimes:
    """Boundaries from the raw product_buy file."""
    end = scan_table(data_dir, PRODUCT_BUY).select(pl.col(TIMESTAMP).max()).collect(engine="streaming").item()
    if end is None:
        raise DataError(DataPaths(data_dir).table(PRODUCT_BUY), "no purchases: the split needs at least one",
                        TIMESTAMP)
    return split_times_from_end(end)


def read_split_times(data_dir: str | Path) -> SplitTimes:
    """Boundaries written by :func:`split`, or computed from the raw files when the file is absent."""
    path = DataPaths(data_dir).split_times
    if path.is_file():
        return SplitTimes.from_json(json.loads(path.read_text()))
    return compute_split_times(data_dir)


def _filtered(data_dir: Path, name: str, cond: pl.Expr) -> pl.LazyFrame:
    """Rows of the raw table where ``cond`` holds (``__ts`` = the parsed timestamp), raw columns unchanged."""
    path = DataPaths(data_dir).table(name)
    scan_table(data_dir, name)  # columns present, dtypes acceptable
    raw = pl.scan_parquet(path)
    ts = normalise_column(TIMESTAMP, "timestamp", raw.collect_schema()[TIMESTAMP], path)
    return raw.with_columns(ts.alias("__ts")).filter(cond).drop("__ts")


def split(data_dir: str | Path, check: bool = True, progress: bool = True) -> SplitTimes:
    """Write input/<event>.parquet, target/{train,validation}_target.parquet, target/active_clients.npy and
    target/split_times.json. Returns the boundaries."""
    data_dir = Path(data_dir)
    paths = DataPaths(data_dir)
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    t0 = time.perf_counter()
    if check:
        for name in EVENT_TYPES:
            check_table(data_dir, name)
    read_products(data_dir, check=check)  # unique skus, valid prices and names
    relevant = read_relevant_clients(data_dir)
    times = compute_split_times(data_dir)
    say(f"split: end={times.end}  train_target_start={times.train_target_start}  "
        f"validation_target_start={times.validation_target_start}")
    ts = pl.col("__ts")
    for name in EVENT_TYPES:
        out = paths.table(name, "input")
        with atomic_path(out) as tmp:
            _filtered(data_dir, name, ts < times.train_target_start).sink_parquet(tmp, mkdir=True)
        say(f"split: wrote {out}")
    # Targets carry the released property columns (name as the original string), as the organisers' split.
    raw_props = pl.scan_parquet(paths.table(PRODUCT_PROPERTIES)).with_columns(pl.col(SKU).cast(pl.Int64))
    windows = {paths.train_target: (ts >= times.train_target_start) & (ts < times.validation_target_start),
               paths.validation_target: (ts >= times.validation_target_start) & (ts <= times.end)}
    for out, cond in windows.items():
        with atomic_path(out) as tmp:
            (_filtered(data_dir, PRODUCT_BUY, cond).with_columns(pl.col(SKU).cast(pl.Int64)).join(raw_props, on=SKU, how="left", maintain_order="left")
             .sink_parquet(tmp, mkdir=True))
        say(f"split: wrote {out}")
    buyers = (pl.scan_parquet(paths.table(PRODUCT_BUY, "input")).select(pl.col(CLIENT_ID).cast(pl.Int64)).unique()
              .collect(engine="streaming")[CLIENT_ID].to_numpy())
    active = np.sort(relevant[np.isin(relevant, buyers)])
    save_npy(paths.active_clients, active)
    with atomic_path(paths.split_times) as tmp:
        tmp.write_text(json.dumps(times.to_json(), indent=2))
    say(f"split: {len(active):,} active of {len(relevant):,} relevant clients; {time.perf_counter() - t0:.1f}s")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m competition.split", formatter_class=HelpFormatter,
        description="Cut a data directory into the input period and the two 14-day target windows, exactly as "
                    "the organisers' split does (docs/challenge.md section 3).")
    parser.add_argument("--data-dir", required=True, type=Path, help="folder with the six released parquet files "
                        "and input/relevant_clients.npy")
    parser.add_argument("--no-check", action="store_true", help="skip the full value check of every table")
    parser.add_argument("--seed", type=int, default=0, help="unused (the split is deterministic); accepted for "
                        "a uniform CLI")
    add_no_progress(parser)
    args = parser.parse_args(argv)
    try:
        split(args.data_dir, check=not args.no_check, progress=not args.no_progress)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
