"""The official local split (docs/challenge.md section 3).

``end`` = the last product_buy timestamp; ``train_target_start`` = floor_to_day(end - 27 days);
``validation_target_start`` = train_target_start + 14 days. Input = every event with timestamp <
train_target_start; train target = product_buy in [train_target_start, validation_target_start); validation
target = product_buy in [validation_target_start, end]; both joined with product_properties.

Input files keep the released columns and dtypes unchanged (rows are filtered, never rewritten), so they read
exactly like the raw files. Writes are streaming (polars sinks) and atomic, under the data folder's lock
(:mod:`competition.lock`: a second split of the same folder refuses at once, or waits with ``wait``).

Events after ``end`` (the last purchase) fall in no window: the split says how many, of which kinds and their time
range in one line (:func:`events_after_end`); the raw event table keeps those within :data:`AFTER_END_GRACE` of it
and leaves out the later ones (:mod:`competition.events`).
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
from competition.io import DiskFullError, atomic_path, save_npy
from competition.lock import LockedError, folder_lock
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


#: Events this long after the last purchase still belong to the raw period (the tail of the last day's sessions);
#: later ones (a clock gone wrong: dates in 2100) are left out of the raw event table (:mod:`competition.events`).
AFTER_END_GRACE = timedelta(days=1)


def events_after_end(data_dir: str | Path, end: datetime | None = None, layout: str = "raw") -> dict:
    """Events after the last purchase (``end``, default the raw files'), and those of them more than
    :data:`AFTER_END_GRACE` after it: ``{"end", "n", "events": {kind: n}, "first", "last", "dropped": {"after",
    "n", "events", "first", "last"}}`` (times as ISO strings or None; kinds with none left out). One streaming pass
    per kind over its timestamps."""
    if end is None:
        end = compute_split_times(data_dir).end
    limit = end + AFTER_END_GRACE
    iso = (lambda t: None if t is None else t.isoformat(sep=" "))  # noqa: E731
    out = {"end": iso(end), "n": 0, "events": {}, "first": None, "last": None,
           "dropped": {"after": iso(limit), "n": 0, "events": {}, "first": None, "last": None}}
    ts = pl.col(TIMESTAMP)
    for name in EVENT_TYPES:
        row = (scan_table(data_dir, name, layout).select(ts).filter(ts > end)
               .select(pl.len().alias("n"), ts.min().alias("lo"), ts.max().alias("hi"),
                       (ts > limit).sum().alias("n_late"), ts.filter(ts > limit).min().alias("lo_late"))
               .collect(engine="streaming").row(0, named=True))
        for part, n, lo, hi in ((out, row["n"], row["lo"], row["hi"]),
                                (out["dropped"], row["n_late"], row["lo_late"], row["hi"])):
            if n:
                part["n"] += int(n)
                part["events"][name] = int(n)
                part["first"] = iso(lo) if part["first"] is None else min(part["first"], iso(lo))
                part["last"] = iso(hi) if part["last"] is None else max(part["last"], iso(hi))
    return out


def _dated(part: dict) -> str:
    kinds = ", ".join(f"{k} {n:,}" for k, n in part["events"].items())
    span = part["first"] if part["first"] == part["last"] else f"from {part['first']} to {part['last']}"
    return f"{kinds}, dated {span}"


def after_end_words(after: dict) -> str:
    """One line's words on ``after`` (:func:`events_after_end`): how many events follow the last purchase, of which
    kinds and when, and what the raw event table does with them (keeps those within a day, drops the rest)."""
    words = f"{after['n']:,} event(s) after the last purchase ({after['end']}): {_dated(after)}"
    late = after["dropped"]
    if not late["n"]:
        return words + "; all within a day of it: kept in the final blocks"
    kept = after["n"] - late["n"]
    return (words + f"; {late['n']:,} of them more than a day later ({_dated(late)}) are left out of the final "
            f"blocks (dropped, not clipped: the raw period ends at the last event up to {late['after']}, and "
            f"recency counts from there)" + (f", the {kept:,} within a day are kept" if kept else ""))


def _filtered(data_dir: Path, name: str, cond: pl.Expr) -> pl.LazyFrame:
    """Rows of the raw table where ``cond`` holds (``__ts`` = the parsed timestamp), raw columns unchanged."""
    path = DataPaths(data_dir).table(name)
    scan_table(data_dir, name)  # columns present, dtypes acceptable
    raw = pl.scan_parquet(path)
    ts = normalise_column(TIMESTAMP, "timestamp", raw.collect_schema()[TIMESTAMP], path)
    return raw.with_columns(ts.alias("__ts")).filter(cond).drop("__ts")


def split(data_dir: str | Path, check: bool = True, progress: bool = True, wait: bool = False) -> SplitTimes:
    """Write input/<event>.parquet, target/{train,validation}_target.parquet, target/active_clients.npy and
    target/split_times.json under the data folder's lock (held by another process: :class:`LockedError`, or
    with ``wait`` a wait for it). Returns the boundaries."""
    data_dir = Path(data_dir)
    with folder_lock(data_dir, "data folder, being split", wait=wait,
                     hint="wait for its split to end, or pass --wait to split when it does"):
        return _split(data_dir, check, progress)


def _split(data_dir: Path, check: bool, progress: bool) -> SplitTimes:
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
    after = events_after_end(data_dir, times.end)
    if after["n"]:  # a notice, said whatever progress is
        print(f"split: notice: {after_end_words(after)}; none is in a window of the split", file=sys.stderr,
              flush=True)
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
    parser.add_argument("--wait", action="store_true", help="when another process is splitting the same folder, "
                        "wait for it to end instead of refusing")
    add_no_progress(parser)
    args = parser.parse_args(argv)
    try:
        split(args.data_dir, check=not args.no_check, progress=not args.no_progress, wait=args.wait)
    except (DataError, LockedError, DiskFullError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
