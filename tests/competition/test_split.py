"""competition.split: boundaries, events exactly at the cuts, raw columns kept, targets joined, active clients."""
from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import polars as pl
import pytest

from competition.load import DataError, read_active_clients
from competition.schema import (CATEGORY, CLIENT_ID, EVENT_TYPES, NAME, PAGE_VISIT, PRICE, PRODUCT_BUY,
                                PRODUCT_PROPERTIES, SKU, TIMESTAMP, DataPaths)
from competition.split import (SplitTimes, compute_split_times, main, read_split_times, split,
                               split_times_from_end)
from tests.worlds import END, PRODUCTS, TRAIN_START, VALID_START, tiny_world, write_world


def dt(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%d %H:%M:%S")


def rows(path, *cols):
    return pl.read_parquet(path).select(cols).rows()


def test_boundaries_of_the_tiny_world(raw_world):
    times = split(raw_world, progress=False)
    assert times == SplitTimes(dt(END), dt(TRAIN_START), dt(VALID_START))
    assert compute_split_times(raw_world) == times


@pytest.mark.parametrize("end,train_start", [
    ("2022-08-20 00:00:00", "2022-07-24 00:00:00"),   # end exactly at midnight: end - 27 d is already a day start
    ("2022-08-20 23:59:59", "2022-07-24 00:00:00"),   # last second of the day: floored to the same day
    ("2022-03-28 12:00:00", "2022-03-01 00:00:00"),   # across a month boundary
    ("2024-03-27 00:00:00", "2024-02-29 00:00:00"),   # leap day
])
def test_boundaries_at_day_edges(tmp_path, end, train_start):
    events = {PRODUCT_BUY: [(1, "2022-01-01 00:00:00", 1), (1, end, 1)]}
    root = write_world(tmp_path / "w", events, [(1, 1, 1)], [1])
    times = split(root, progress=False)
    assert times.end == dt(end)
    assert times.train_target_start == dt(train_start)
    assert times.validation_target_start == dt(train_start) + (dt(VALID_START) - dt(TRAIN_START))
    assert (times.validation_target_start - times.train_target_start).days == 14
    assert split_times_from_end(dt(end)) == times
    # the last purchase is in the validation window, inclusive
    assert rows(DataPaths(root).validation_target, CLIENT_ID, TIMESTAMP) == [(1, end)]


def test_end_is_the_last_buy_not_the_last_event(raw_world):
    # a page visit after the last purchase does not move the boundaries
    path = DataPaths(raw_world).table(PAGE_VISIT)
    frame = pl.read_parquet(path)
    extra = pl.DataFrame({"client_id": [100], "timestamp": ["2022-12-31 00:00:00"], "url": [1]},
                         schema=frame.schema)
    pl.concat([frame, extra]).write_parquet(path)
    assert split(raw_world, progress=False).end == dt(END)


def test_events_at_the_cuts(raw_world):
    split(raw_world, progress=False)
    paths = DataPaths(raw_world)
    # input: strictly before train_target_start (23:59:59 the day before is in, 00:00:00 is not)
    assert rows(paths.table(PRODUCT_BUY, "input"), CLIENT_ID, TIMESTAMP, SKU) == [
        (100, "2022-07-01 10:00:00", 1), (100, "2022-07-23 23:59:59", 2), (103, "2022-07-10 08:00:00", 3),
        (105, "2022-07-02 09:00:00", 1)]
    # train window: [train_target_start, validation_target_start)
    assert sorted(rows(paths.train_target, CLIENT_ID, TIMESTAMP, SKU)) == [
        (100, "2022-07-25 12:00:00", 6), (101, TRAIN_START, 3), (101, "2022-08-06 23:59:59", 4)]
    # validation window: [validation_target_start, end]
    assert sorted(rows(paths.validation_target, CLIENT_ID, TIMESTAMP, SKU)) == [
        (100, END, 1), (102, VALID_START, 5)]
    # every kind is cut at the same time; nothing after the cut survives in the input
    for ev in EVENT_TYPES:
        raw = pl.read_parquet(paths.table(ev))
        expected = raw.filter(pl.col(TIMESTAMP) < TRAIN_START)
        assert pl.read_parquet(paths.table(ev, "input")).equals(expected), ev
    assert rows(paths.table("add_to_cart", "input"), CLIENT_ID) == [(100,), (104,)]
    assert rows(paths.table(PAGE_VISIT, "input"), CLIENT_ID) == [(100,), (101,), (104,), (105,)]


def test_targets_joined_with_products(raw_world):
    split(raw_world, progress=False)
    paths = DataPaths(raw_world)
    props = {p[0]: p for p in PRODUCTS}
    raw_names = dict(pl.read_parquet(paths.table(PRODUCT_PROPERTIES)).select(SKU, NAME).rows())
    for path in (paths.train_target, paths.validation_target):
        frame = pl.read_parquet(path)
        assert frame.columns == [CLIENT_ID, TIMESTAMP, SKU, CATEGORY, PRICE, NAME]
        for client, ts, sku, category, price, name in frame.rows():
            assert (category, price) == props[sku][1:]
            assert name == raw_names[sku]  # the released string, unchanged


def test_target_with_unknown_sku_has_null_properties(tmp_path):
    events = {PRODUCT_BUY: [(1, "2022-07-01 00:00:00", 1), (1, "2022-08-20 00:00:00", 999)]}
    root = write_world(tmp_path / "w", events, [(1, 10, 5)], [1])
    split(root, progress=False)  # tolerated: the target row keeps its sku, category and price are null
    frame = pl.read_parquet(DataPaths(root).validation_target)
    assert frame.select(SKU, CATEGORY, PRICE).rows() == [(999, None, None)]


def test_active_clients(raw_world):
    split(raw_world, progress=False)
    active = read_active_clients(raw_world)
    assert active.dtype == np.int64
    # 100 and 103 bought in the input; 101/102 only in target windows; 104 never bought; 105 is not relevant
    np.testing.assert_array_equal(active, [100, 103])


def test_active_clients_are_relevant_buyers_only(tmp_path):
    events = {PRODUCT_BUY: [(7, "2022-07-01 00:00:00", 1), (8, "2022-07-01 00:00:00", 1),
                            (9, "2022-07-01 00:00:00", 1), (3, "2022-08-20 00:00:00", 1)],
              "add_to_cart": [(5, "2022-07-01 00:00:00", 1)]}
    root = write_world(tmp_path / "w", events, [(1, 10, 5)], [9, 5, 3, 7])
    split(root, progress=False)
    np.testing.assert_array_equal(read_active_clients(root), [7, 9])


def test_split_times_json(raw_world):
    times = split(raw_world, progress=False)
    path = DataPaths(raw_world).split_times
    assert json.loads(path.read_text()) == {"end": END, "train_target_start": TRAIN_START,
                                            "validation_target_start": VALID_START}
    assert read_split_times(raw_world) == times
    # read_split_times prefers the file (the raw files may change later) and falls back to computing
    path.write_text(json.dumps({"end": "2022-01-30 00:00:00", "train_target_start": "2022-01-03 00:00:00",
                                "validation_target_start": "2022-01-17 00:00:00"}))
    assert read_split_times(raw_world).train_target_start == dt("2022-01-03 00:00:00")
    path.unlink()
    assert read_split_times(raw_world) == times


def test_input_files_keep_raw_columns_and_dtypes(raw_world):
    paths = DataPaths(raw_world)
    # narrow dtypes and an extra column in the raw files must survive the cut unchanged
    buys = pl.read_parquet(paths.table(PRODUCT_BUY))
    buys.with_columns(pl.col(CLIENT_ID).cast(pl.Int32), pl.col(SKU).cast(pl.UInt32),
                      pl.lit("x").alias("extra")).write_parquet(paths.table(PRODUCT_BUY))
    split(raw_world, progress=False)
    for ev in EVENT_TYPES:
        assert (pl.read_parquet_schema(paths.table(ev, "input")) == pl.read_parquet_schema(paths.table(ev))), ev
    assert pl.read_parquet_schema(paths.table(PRODUCT_BUY, "input"))[CLIENT_ID] == pl.Int32


def test_datetime_timestamps_split_the_same(raw_world, tmp_path):
    strings = tiny_world(tmp_path / "strings")
    want = split(strings, progress=False)
    paths = DataPaths(raw_world)
    for ev in EVENT_TYPES:
        frame = pl.read_parquet(paths.table(ev))
        frame.with_columns(pl.col(TIMESTAMP).str.strptime(pl.Datetime("ns"), "%Y-%m-%d %H:%M:%S")
                           ).write_parquet(paths.table(ev))
    got = split(raw_world, progress=False)
    assert got == want
    for ev in EVENT_TYPES:
        a = pl.read_parquet(DataPaths(raw_world).table(ev, "input"))
        assert a[TIMESTAMP].dtype == pl.Datetime("ns")  # kept as released
        b = pl.read_parquet(DataPaths(strings).table(ev, "input"))
        assert a.with_columns(pl.col(TIMESTAMP).dt.strftime("%Y-%m-%d %H:%M:%S")).equals(b), ev
    np.testing.assert_array_equal(read_active_clients(raw_world), read_active_clients(strings))
    for which in ("train_target", "validation_target"):
        a = pl.read_parquet(getattr(paths, which)).select(CLIENT_ID, SKU, CATEGORY, PRICE)
        b = pl.read_parquet(getattr(DataPaths(strings), which)).select(CLIENT_ID, SKU, CATEGORY, PRICE)
        assert a.equals(b)


def test_split_rejects_bad_input(raw_world):
    path = DataPaths(raw_world).table(PAGE_VISIT)
    frame = pl.read_parquet(path)
    frame.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("soon")).otherwise(pl.col(TIMESTAMP))
                       .alias(TIMESTAMP)).write_parquet(path)
    with pytest.raises(DataError, match="unparsable") as err:
        split(raw_world, progress=False)
    assert str(path) in str(err.value) and repr(TIMESTAMP) in str(err.value)
    assert not DataPaths(raw_world).train_target.exists()


def test_split_needs_a_purchase(tmp_path):
    root = write_world(tmp_path / "w", {PAGE_VISIT: [(1, "2022-07-01 00:00:00", 3)]}, [(1, 1, 1)], [1])
    with pytest.raises(DataError, match="no purchases") as err:
        split(root, progress=False)
    assert str(DataPaths(root).table(PRODUCT_BUY)) in str(err.value)


def test_cli(raw_world, capsys):
    assert main(["--data-dir", str(raw_world)]) == 0
    assert DataPaths(raw_world).split_times.is_file()
    DataPaths(raw_world).table(PRODUCT_PROPERTIES).unlink()
    assert main(["--data-dir", str(raw_world)]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0


def test_split_leaves_no_temporary_files(raw_world):
    split(raw_world, progress=False)
    leftovers = [p for p in raw_world.rglob(".*") if p.name != ".cache"]
    assert leftovers == []
