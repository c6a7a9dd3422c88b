"""competition.events: the sorted CSR event table, its cache, and its access helpers.

Expected contents of the standard tiny world's input layout (cut 2022-07-24 00:00:00), by construction:
  100: search q11 09:57, visit 77 09:58, add 1 09:59, buy 1 10:00 (2022-07-01), buy 2 2022-07-23 23:59:59
  101: visit 78;  102: search q12;  103: buy 3;  104: add 2 / visit 77 at the same second, then remove 2
  105 (not relevant): visit 79, buy 1
"""
from __future__ import annotations

import json
import os
import warnings
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

import competition.events as events_mod
from competition.events import (EVENT_ARRAYS, EventTable, fingerprint, load_events, main, read_positions,
                               read_range, release)
from competition.load import DataError, DataWarning
from competition.schema import (ADD_TO_CART, CATEGORY, CLIENT_ID, EVENT_CODE, PAGE_VISIT, PRICE, PRODUCT_BUY, QUERY,
                                REMOVE_FROM_CART, SEARCH_QUERY, SKU, TIMESTAMP, DataPaths)
from competition.split import split
from tests.worlds import END, PRODUCTS, TRAIN_START, codes, write_world

B, A, R, V, S = (EVENT_CODE[k] for k in (PRODUCT_BUY, ADD_TO_CART, REMOVE_FROM_CART, PAGE_VISIT, SEARCH_QUERY))


def epoch(s: str) -> int:
    return int(datetime.strptime(s, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp())


def arrays(table: EventTable) -> dict[str, np.ndarray]:
    """In-memory copies of every array of a table."""
    names = ("client_ids", "offsets", *EVENT_ARRAYS, "query_codes")
    return {n: np.array(getattr(table, n)) for n in names}


def cache_dirs(data_dir, layout="input"):
    return sorted(p.name for p in DataPaths(data_dir).cache.glob(f"events_{layout}_*"))


@pytest.fixture
def table(split_world):
    return EventTable.build(split_world, progress=False)


# ---------------------------------------------------------------------------------------------------------------
# contents
# ---------------------------------------------------------------------------------------------------------------
def test_tiny_input_table(table):
    t = table
    np.testing.assert_array_equal(t.client_ids, [100, 101, 102, 103, 104, 105])
    np.testing.assert_array_equal(t.offsets, [0, 5, 6, 7, 8, 11, 13])
    np.testing.assert_array_equal(t.lengths, [5, 1, 1, 1, 3, 2])
    assert t.n_events == 13 and t.n_clients == 6
    np.testing.assert_array_equal(t.event_type, [S, V, A, B, B, V, S, B, A, V, R, V, B])
    np.testing.assert_array_equal(t.timestamp, [epoch(s) for s in (
        "2022-07-01 09:57:00", "2022-07-01 09:58:00", "2022-07-01 09:59:00", "2022-07-01 10:00:00",
        "2022-07-23 23:59:59", "2022-07-05 12:00:00", "2022-07-06 06:06:06", "2022-07-10 08:00:00",
        "2022-07-20 00:00:00", "2022-07-20 00:00:00", "2022-07-20 00:05:00", "2022-07-02 08:59:00",
        "2022-07-02 09:00:00")])
    # missing fields are -1; category and price come from product_properties
    np.testing.assert_array_equal(t.sku, [-1, -1, 1, 1, 2, -1, -1, 3, 2, -1, 2, -1, 1])
    np.testing.assert_array_equal(t.category, [-1, -1, 10, 10, 10, -1, -1, 20, 10, -1, 10, -1, 10])
    np.testing.assert_array_equal(t.price, [-1, -1, 5, 5, 50, -1, -1, 7, 50, -1, 50, -1, 5])
    np.testing.assert_array_equal(t.url, [-1, 77, -1, -1, -1, 78, -1, -1, -1, 77, -1, 79, -1])
    np.testing.assert_array_equal(t.query, [0, -1, -1, -1, -1, -1, 1, -1, -1, -1, -1, -1, -1])
    np.testing.assert_array_equal(t.query_codes, np.concatenate([codes(11), codes(12)]))
    for name, dtype in EVENT_ARRAYS.items():
        assert getattr(t, name).dtype == dtype and getattr(t, name).shape == (13,), name
    assert t.client_ids.dtype == np.int64 and t.offsets.dtype == np.int64
    assert t.query_codes.dtype == np.uint8 and t.query_codes.shape == (2, 16)
    # the period: first input event .. the split's train_target_start (exclusive)
    assert t.start_time == epoch("2022-07-01 09:57:00")
    assert t.cut_time == epoch(TRAIN_START)
    assert t.timestamp.max() < t.cut_time
    assert t.layout == "input" and t.meta["unknown_sku_events"] == 0 and t.meta["n_queries"] == 2


def test_products_attribute(table):
    assert table.products.select(SKU, CATEGORY, PRICE).rows() == PRODUCTS
    assert EventTable.open(DataPaths(table.data_dir).cache / f"events_input_{table.fingerprint}").meta == table.meta


def test_raw_layout(raw_world):
    t = EventTable.build(raw_world, "raw", progress=False)
    assert t.n_events == 20 and t.layout == "raw"
    assert t.cut_time == epoch(END) + 1  # one second after the last event
    np.testing.assert_array_equal(t.client_ids, [100, 101, 102, 103, 104, 105])
    # client 101: visit 78 (07-05), buy 3 at the cut, add 6 one second later, buy 4
    rows = slice(t.offsets[1], t.offsets[2])
    np.testing.assert_array_equal(t.event_type[rows], [V, B, A, B])
    np.testing.assert_array_equal(t.sku[rows], [-1, 3, 6, 4])
    np.testing.assert_array_equal(t.category[rows], [-1, 20, 30, 20])
    np.testing.assert_array_equal(t.price[rows], [-1, 7, 42, 99])
    assert cache_dirs(raw_world, "raw") == [f"events_raw_{t.fingerprint}"]
    assert cache_dirs(raw_world, "input") == []


def sort_world(root):
    """Ties: all five kinds at one second, several items per kind, events given out of order, clients unsorted."""
    t0, t1 = "2022-07-01 00:00:00", "2022-07-01 00:00:01"
    events = {
        PRODUCT_BUY: [(9, t1, 2), (9, t0, 3), (9, t0, 1), (4, t0, 1)],
        ADD_TO_CART: [(9, t0, 2), (9, t0, 1)],
        REMOVE_FROM_CART: [(9, t0, 3)],
        PAGE_VISIT: [(9, t0, 50), (9, t0, 40), (-3, t1, 1)],
        SEARCH_QUERY: [(9, t0, 7), (9, t0, 5), (9, t0, 6)],
    }
    return write_world(root, events, [(1, 1, 1), (2, 2, 2), (3, 3, 3)], [9, 4])


def test_sort_order_client_time_type_item(tmp_path):
    t = EventTable.build(sort_world(tmp_path / "w"), "raw", progress=False)
    np.testing.assert_array_equal(t.client_ids, [-3, 4, 9])
    np.testing.assert_array_equal(t.offsets, [0, 1, 2, 13])
    nine = slice(2, 13)
    np.testing.assert_array_equal(t.event_type[nine], [B, B, A, A, R, V, V, S, S, S, B])
    np.testing.assert_array_equal(t.sku[nine], [1, 3, 1, 2, 3, -1, -1, -1, -1, -1, 2])
    np.testing.assert_array_equal(t.url[nine], [-1] * 5 + [40, 50] + [-1] * 4)
    # searches tied in time keep their file order
    np.testing.assert_array_equal(t.query_codes[t.query[nine][7:10]], np.concatenate([codes(7), codes(5),
                                                                                      codes(6)]))
    np.testing.assert_array_equal(t.query[nine][7:10], [0, 1, 2])  # query rows in event order
    assert np.all(np.diff(t.timestamp[nine]) >= 0)


@pytest.mark.parametrize("chunk_events", [1, 2, 3, 5])
def test_chunked_build_equals_single_chunk(tmp_path, chunk_events):
    root = sort_world(tmp_path / "w")
    one = arrays(EventTable.build(root, "raw", progress=False, chunk_events=10**9))
    many = EventTable.build(root, "raw", progress=False, rebuild=True, chunk_events=chunk_events)
    for name, want in one.items():
        np.testing.assert_array_equal(np.asarray(getattr(many, name)), want, err_msg=name)


def test_chunked_build_equals_single_chunk_tiny(split_world):
    one = arrays(EventTable.build(split_world, progress=False))
    many = EventTable.build(split_world, progress=False, rebuild=True, chunk_events=2)
    for name, want in one.items():
        np.testing.assert_array_equal(np.asarray(getattr(many, name)), want, err_msg=name)
    assert many.start_time == EventTable.build(split_world, progress=False).start_time



def test_ids_too_wide_for_packed_keys_sort_by_the_columns(tmp_path, monkeypatch):
    # client ids 2^61 apart leave no room for the time in one 64-bit key: the six-column sort gives the same order
    far = 2 ** 61
    t0, t1 = "2022-07-01 00:00:00", "2022-07-01 00:00:01"
    events = {PRODUCT_BUY: [(far, t1, 2), (far, t0, 3), (far, t0, 1), (-far, t0, 1)],
              PAGE_VISIT: [(far, t0, 50), (far, t0, 40)], SEARCH_QUERY: [(far, t0, 7), (far, t0, 5)]}
    root = write_world(tmp_path / "w", events, [(1, 1, 1), (2, 2, 2), (3, 3, 3)], [far])
    keys = []
    real = events_mod._sort_keys
    monkeypatch.setattr(events_mod, "_sort_keys", lambda *a: keys.append(real(*a)) or keys[-1])
    t = EventTable.build(root, "raw", progress=False)
    assert keys == [None]
    np.testing.assert_array_equal(t.client_ids, [-far, far])
    np.testing.assert_array_equal(t.event_type[1:], [B, B, V, V, S, S, B])
    np.testing.assert_array_equal(t.sku[1:], [1, 3, -1, -1, -1, -1, 2])
    np.testing.assert_array_equal(t.url[1:5], [-1, -1, 40, 50])
    np.testing.assert_array_equal(t.query_codes, np.concatenate([codes(7), codes(5)]))


@pytest.mark.parametrize("chunk_events", [10**9, 2])
@pytest.mark.parametrize("kind,column,bad", [(PAGE_VISIT, TIMESTAMP, "2022-02-30 10:00:00"),
                                             (PRODUCT_BUY, CLIENT_ID, None), (ADD_TO_CART, SKU, None),
                                             (SEARCH_QUERY, QUERY, "[1 2 3]")])
def test_bad_values_stop_the_build_naming_file_and_column(split_world, chunk_events, kind, column, bad):
    # the values are checked on the parsed ranges (one range, or several after the partition), never skipped
    path = DataPaths(split_world).table(kind, "input")
    frame = pl.read_parquet(path)
    values = frame[column].to_list()
    values[-1] = bad
    frame.with_columns(pl.Series(column, values, dtype=frame[column].dtype)).write_parquet(path)
    with pytest.raises(DataError) as err, warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # a null sku is an error, not an unknown sku
        EventTable.build(split_world, progress=False, chunk_events=chunk_events)
    assert str(path) in str(err.value) and repr(column) in str(err.value)
    cache = DataPaths(split_world).cache
    assert not cache.exists() or list(cache.iterdir()) == []


def test_tied_searches_keep_file_order(tmp_path):
    # 40 searches of one client in the same second, across several chunks: order = file order, every build
    t0 = "2022-07-01 00:00:00"
    events = {SEARCH_QUERY: [(1, t0, s) for s in range(40)] + [(2, t0, s) for s in range(40, 0, -1)],
              PRODUCT_BUY: [(1, t0, 1)]}
    root = write_world(tmp_path / "w", events, [(1, 1, 1)], [1, 2])
    want = np.concatenate([codes(s) for s in [*range(40), *range(40, 0, -1)]])
    for chunk_events in (10**9, 7, 10**9):
        t = EventTable.build(root, "raw", progress=False, rebuild=True, chunk_events=chunk_events)
        np.testing.assert_array_equal(t.event_type[:2], [B, S])
        np.testing.assert_array_equal(t.query[1:], np.arange(80))
        np.testing.assert_array_equal(t.query_codes, want)


@pytest.mark.parametrize("n,values", [(0, 3), (1, 3), (2_000, 40), (2_000, 10**9)])
def test_order_ties_equals_the_two_key_sort(n, values):
    # many ties (40 values), none (10**9); any first-key order of the ties, here a reversed one, is repaired
    rng = np.random.default_rng(n + values)
    first = rng.integers(0, values, n).astype(np.uint64)
    second = rng.permutation(n).astype(np.uint64)  # distinct: the pairs are distinct
    rough = np.argsort(first, kind="stable")[::-1].copy()
    rough = rough[np.argsort(first[rough], kind="stable")]  # sorted by first, ties in reversed order
    want = np.lexsort((second, first))
    np.testing.assert_array_equal(events_mod.order_ties(rough, first, second), want)


def test_unknown_skus_are_counted_and_kept(tmp_path, capsys):
    events = {PRODUCT_BUY: [(1, "2022-07-01 10:00:00", 999), (1, "2022-07-02 10:00:00", 1)],
              ADD_TO_CART: [(2, "2022-07-01 10:00:00", 998)]}
    root = write_world(tmp_path / "w", events, [(1, 10, 5)], [1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the toolkit's own line (with progress), never a raw Python warning
        t = EventTable.build(root, "raw", progress=True)
    err = capsys.readouterr().err
    line = next(m for m in err.splitlines() if "missing from product_properties" in m)
    assert line.startswith("events: 2 event(s)") and "product_buy 1, add_to_cart 1" in line and "Warning" not in err
    assert t.meta["unknown_sku_events"] == 2
    assert t.meta["unknown_sku_by_kind"] == {PRODUCT_BUY: 1, ADD_TO_CART: 1}
    assert json.loads((DataPaths(root).cache / f"events_raw_{t.fingerprint}" / "manifest.json").read_text()
                      )["unknown_sku_events"] == 2
    np.testing.assert_array_equal(t.sku, [999, 1, 998])
    np.testing.assert_array_equal(t.category, [-1, 10, -1])
    np.testing.assert_array_equal(t.price, [-1, 5, -1])
    # no search events at all: an empty query_codes matrix
    assert t.query_codes.shape == (0, 16)
    np.testing.assert_array_equal(t.query, [-1, -1, -1])


def test_empty_input_period(tmp_path):
    # every event is at or after the cut: the input table is empty but well-formed
    events = {PRODUCT_BUY: [(1, "2022-07-24 00:00:00", 1), (1, "2022-08-20 00:00:00", 1)]}
    root = write_world(tmp_path / "w", events, [(1, 10, 5)], [1])
    split(root, progress=False)
    t = EventTable.build(root, progress=False)
    assert t.n_events == 0 and t.n_clients == 0
    np.testing.assert_array_equal(t.offsets, [0])
    np.testing.assert_array_equal(t.rows_of(np.array([1])), [-1])
    assert t.cut_time == epoch("2022-07-24 00:00:00")


# ---------------------------------------------------------------------------------------------------------------
# access helpers
# ---------------------------------------------------------------------------------------------------------------
def test_rows_of(table):
    rows = table.rows_of(np.array([105, 999, 100, 50, 104, 104]))
    assert rows.dtype == np.int64
    np.testing.assert_array_equal(rows, [5, -1, 0, -1, 4, 4])
    assert table.rows_of(np.array([], dtype=np.int64)).shape == (0,)


def test_event_client_index(table):
    idx = table.event_client_index()
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx, [0, 0, 0, 0, 0, 1, 2, 3, 4, 4, 4, 5, 5])
    np.testing.assert_array_equal(table.client_ids[idx][[0, 12]], [100, 105])


def test_last_events(table):
    positions, counts = table.last_events(np.array([0, -1, 4, 1]), 2)
    assert positions.dtype == np.int64 and counts.dtype == np.int64
    np.testing.assert_array_equal(counts, [2, 0, 2, 1])
    np.testing.assert_array_equal(positions, [3, 4, 9, 10, 5])
    positions, counts = table.last_events(np.array([4, 0]), 100)  # n larger than any history: everything
    np.testing.assert_array_equal(counts, [3, 5])
    np.testing.assert_array_equal(positions, [8, 9, 10, 0, 1, 2, 3, 4])
    positions, counts = table.last_events(np.array([0, 1]), 0)
    assert positions.shape == (0,) and list(counts) == [0, 0]
    positions, counts = table.last_events(np.array([], dtype=np.int64), 3)
    assert positions.shape == (0,) and counts.shape == (0,)
    positions, counts = table.last_events(np.array([-1, -1]), 3)
    assert positions.shape == (0,) and list(counts) == [0, 0]


# ---------------------------------------------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------------------------------------------
def test_cache_is_reused(split_world, monkeypatch):
    first = EventTable.build(split_world, progress=False)
    folder = DataPaths(split_world).cache / f"events_input_{first.fingerprint}"
    stamp = (folder.stat().st_ino, folder.stat().st_mtime_ns, (folder / "timestamp.npy").stat().st_mtime_ns)

    def fail(*args, **kwargs):
        raise AssertionError("the table was rebuilt although its inputs did not change")

    monkeypatch.setattr(events_mod, "_build_into", fail)
    second = EventTable.build(split_world, progress=False)
    third = load_events(split_world, progress=False)
    assert second.fingerprint == third.fingerprint == first.fingerprint
    assert (folder.stat().st_ino, folder.stat().st_mtime_ns,
            (folder / "timestamp.npy").stat().st_mtime_ns) == stamp
    np.testing.assert_array_equal(second.timestamp, first.timestamp)


def test_changed_input_rebuilds(split_world):
    first = EventTable.build(split_world, progress=False)
    old = cache_dirs(split_world)
    assert old == [f"events_input_{first.fingerprint}"]
    # drop client 101's only input event (a page visit)
    path = DataPaths(split_world).table(PAGE_VISIT, "input")
    pl.read_parquet(path).filter(pl.col("client_id") != 101).write_parquet(path)
    assert fingerprint(split_world) != first.fingerprint
    second = EventTable.build(split_world, progress=False)
    assert second.fingerprint == fingerprint(split_world)
    assert cache_dirs(split_world) == [f"events_input_{second.fingerprint}"]  # the stale table is gone
    assert second.n_events == 12
    np.testing.assert_array_equal(second.client_ids, [100, 102, 103, 104, 105])


def test_fingerprint_follows_content_not_modification_times(split_world):
    fp = fingerprint(split_world)
    assert fingerprint(split_world) == fp
    assert fingerprint(split_world, "raw") != fp
    path = DataPaths(split_world).table(PRODUCT_BUY, "input")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fingerprint(split_world) == fp  # touched, same content
    split(split_world, progress=False)  # the split re-run: every file rewritten, the same content
    assert fingerprint(split_world) == fp
    pl.read_parquet(path).head(3).write_parquet(path)  # a changed file
    assert fingerprint(split_world) != fp
    # product_properties is shared by both layouts
    fp_raw = fingerprint(split_world, "raw")
    pl.read_parquet(DataPaths(split_world).table("product_properties")).with_columns(
        pl.col(PRICE) // 2).write_parquet(DataPaths(split_world).table("product_properties"))
    assert fingerprint(split_world, "raw") != fp_raw


def test_layouts_have_separate_caches(split_world):
    EventTable.build(split_world, progress=False)
    EventTable.build(split_world, "raw", progress=False)
    assert len(cache_dirs(split_world, "input")) == 1 and len(cache_dirs(split_world, "raw")) == 1
    with pytest.raises(ValueError):
        EventTable.build(split_world, "other", progress=False)


def test_bad_input_raises_and_leaves_no_cache(split_world):
    path = DataPaths(split_world).table(SEARCH_QUERY, "input")
    pl.read_parquet(path).with_columns(pl.lit("[1 2 3]").alias(QUERY)).write_parquet(path)
    with pytest.raises(DataError, match="16 integers") as err:
        EventTable.build(split_world, progress=False)
    assert str(path) in str(err.value) and repr(QUERY) in str(err.value)
    cache = DataPaths(split_world).cache
    assert not cache.exists() or list(cache.iterdir()) == []


def test_input_layout_needs_the_split(raw_world):
    with pytest.raises(DataError) as err:
        EventTable.build(raw_world, progress=False)
    assert str(DataPaths(raw_world).table(PRODUCT_BUY, "input")) in str(err.value)


def test_datetime_timestamps_build_the_same(tmp_path, raw_world):
    want = arrays(EventTable.build(raw_world, "raw", progress=False))
    for ev in (PRODUCT_BUY, ADD_TO_CART, REMOVE_FROM_CART, PAGE_VISIT, SEARCH_QUERY):
        path = DataPaths(raw_world).table(ev)
        pl.read_parquet(path).with_columns(pl.col(TIMESTAMP).str.strptime(pl.Datetime("ns"), "%Y-%m-%d %H:%M:%S")
                                           ).write_parquet(path)
    got = EventTable.build(raw_world, "raw", progress=False)
    for name, value in want.items():
        np.testing.assert_array_equal(np.asarray(getattr(got, name)), value, err_msg=name)


def test_cli(split_world, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["--data-dir", str(split_world)]) == 0
    assert json.loads(capsys.readouterr().out)["n_events"] == 13
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0


def test_block_fingerprint_follows_the_clients(split_world):
    fp = events_mod.block_fingerprint(split_world)
    ids = np.load(DataPaths(split_world).relevant_clients)
    assert events_mod.block_fingerprint(split_world, client_ids=ids[::-1]) == fp  # order does not count
    assert events_mod.block_fingerprint(split_world, client_ids=ids[1:]) != fp
    assert events_mod.block_fingerprint(split_world, "raw") != fp
    np.save(DataPaths(split_world).relevant_clients, np.r_[ids[1:], 999])
    assert events_mod.block_fingerprint(split_world) != fp
    assert fingerprint(split_world) == fingerprint(split_world)  # the event table does not depend on them


@pytest.mark.parametrize("damage", ["truncate", "manifest", "missing"])
def test_damaged_cache_is_said_and_rebuilt(split_world, capsys, damage):
    """A complete-looking cache with a truncated array: one line, then a rebuild (not a 34-line mmap traceback)."""
    first = arrays(EventTable.build(split_world, progress=False))
    folder = DataPaths(split_world).cache / f"events_input_{fingerprint(split_world)}"
    target = folder / ("manifest.json" if damage == "manifest" else "timestamp.npy")
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-16])
    elif damage == "manifest":
        target.write_text('{"n_events": 3')
    else:
        target.unlink()
    with pytest.raises(DataError, match=f"{folder}: damaged event table cache"):
        EventTable.open(folder)
    capsys.readouterr()
    table = EventTable.build(split_world, progress=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is damaged" in err and "rebuilding" in err
    assert events_mod.cache_problem(folder) is None
    for name, value in first.items():
        np.testing.assert_array_equal(np.asarray(getattr(table, name)), value, err_msg=name)


def test_leftover_build_temporaries_are_removed(split_world, capsys):
    cache = DataPaths(split_world).cache
    cache.mkdir(parents=True)
    for name in (".events_input_0123456789abcdef.tmp-1a2b3c4d", ".events_raw_0123456789abcdef.tmp-1a2b3c4d"):
        (cache / name).mkdir()
        (cache / name / "timestamp.npy").write_bytes(b"half a table")
    EventTable.build(split_world, progress=False)
    assert "removed 1 leftover temporary" in capsys.readouterr().err
    assert sorted(p.name for p in cache.iterdir()) == [".events_raw_0123456789abcdef.tmp-1a2b3c4d",
                                                      f"events_input_{fingerprint(split_world)}"]


# ---------------------------------------------------------------------------------------------------------------
# the raw period ends at the last purchase (issue 28, 5)
# ---------------------------------------------------------------------------------------------------------------
def test_events_after_the_last_purchase_are_left_out_of_the_raw_table(tmp_path):
    """100 page visits dated 2100 (a clock gone wrong) neither stretch the raw table's period nor bend its recency:
    they are dropped, a visit within a day of the last purchase is kept, and the manifest says how many, of which
    kinds and when."""
    from embedders.stats import StatsEmbedder
    from tests.worlds import EVENTS, RELEVANT

    tail = (102, "2022-08-20 16:00:00", 78)  # half an hour after the last purchase: the tail of the data, kept
    clean = write_world(tmp_path / "clean", {**EVENTS, PAGE_VISIT: EVENTS[PAGE_VISIT] + [tail]}, PRODUCTS, RELEVANT)
    late = {**EVENTS, PAGE_VISIT: EVENTS[PAGE_VISIT] + [tail] + [(101, "2100-01-01 00:00:00", 77)] * 100}
    root = write_world(tmp_path / "late", late, PRODUCTS, RELEVANT)
    t, ref = EventTable.build(root, "raw", progress=False), EventTable.build(clean, "raw", progress=False)
    assert t.cut_time == ref.cut_time == epoch("2022-08-20 16:00:00") + 1 and t.n_events == ref.n_events == 21
    late_2100 = {"after": "2022-08-21 15:30:00", "n": 100, "events": {PAGE_VISIT: 100},
                 "first": "2100-01-01 00:00:00", "last": "2100-01-01 00:00:00"}
    assert t.meta["after_end"] == {"end": END, "n": 101, "events": {PAGE_VISIT: 101}, "first": "2022-08-20 16:00:00",
                                   "last": "2100-01-01 00:00:00", "dropped": late_2100}
    assert ref.meta["after_end"]["n"] == 1 and ref.meta["after_end"]["dropped"]["n"] == 0
    ids = np.array(RELEVANT)
    a, b = (StatsEmbedder(progress=False).fit_transform(x, ids).vectors for x in (t, ref))
    np.testing.assert_array_equal(a, b)  # recency (and every other feature) as without them
    # the input layout never had them (the split's input period ends earlier)
    split(root, progress=False)
    assert EventTable.build(root, "input", progress=False).meta["after_end"] is None


def test_a_second_builder_waits_and_reuses_the_table(raw_world, capsys):
    """Two processes building one data folder's table: the second waits on the cache lock, then reuses it."""
    import subprocess
    import sys
    import time

    from competition.lock import LOCK_FILE
    cache = DataPaths(raw_world).cache
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from competition.lock import acquire; "
                               f"acquire({str(cache)!r}, 'test'); print('held', flush=True); time.sleep(1.5)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    t0 = time.monotonic()
    t = EventTable.build(raw_world, "raw", progress=False)
    assert time.monotonic() - t0 > 0.5 and t.n_events == 20
    assert holder.wait(30) == 0
    err = capsys.readouterr().err
    assert f"waiting for pid {holder.pid}" in err and "released after" in err, err
    assert not (cache / LOCK_FILE).exists()


def test_a_table_that_does_not_fit_the_disk_is_refused_before_writing(raw_world, monkeypatch):
    """Its arrays are memory maps (a write into one on a full disk is a crash, not an error): refused up front,
    naming the table and the bytes it needs; nothing is left in the cache."""
    import shutil
    from collections import namedtuple

    from competition.io import DiskFullError
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 100, 100))
    with pytest.raises(DiskFullError) as err:
        EventTable.build(raw_world, "raw", progress=False)
    assert "events_raw_" in str(err.value) and "it needs" in str(err.value) and "100 bytes free" in str(err.value)
    monkeypatch.undo()
    assert list(DataPaths(raw_world).cache.iterdir()) == []
    assert EventTable.build(raw_world, "raw", progress=False).n_events == 20


def test_read_range_reads_rows_like_the_memory_map(tmp_path):
    arrays = {"flat": np.arange(20, dtype=np.int64) * 7, "rows": np.arange(60, dtype=np.uint8).reshape(20, 3)}
    for name, values in arrays.items():
        np.save(tmp_path / f"{name}.npy", values)
        mapped = np.load(tmp_path / f"{name}.npy", mmap_mode="r")
        got = read_range(mapped, 5, 9)
        assert type(got) is np.ndarray and got.dtype == values.dtype
        np.testing.assert_array_equal(got, values[5:9])
        assert read_range(mapped, 4, 4).shape == (0, *values.shape[1:])
    np.testing.assert_array_equal(read_range(values, 2, 5), values[2:5])  # an in-memory array: a copy of the rows


def _resident_pages(array: np.ndarray) -> int:
    """Pages of ``array``'s mapping resident in this process (/proc/self/smaps' Rss of its mapping, in kB / 4)."""
    name, total, inside = os.path.realpath(array.filename), 0, False
    for line in open("/proc/self/smaps"):
        if "-" in line.split()[0] and not line.split()[0].endswith(":"):
            inside = line.rstrip().endswith(name)
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total // 4


def test_read_positions_reads_them_like_the_memory_map_and_leaves_its_pages_out_of_the_resident_set(tmp_path):
    values = np.arange(3_000_000, dtype=np.int64) * 3  # 24 MB: thousands of pages
    np.save(tmp_path / "v.npy", values)
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    rng = np.random.default_rng(0)
    pos = np.sort(rng.choice(len(values), 200_000, replace=False))
    got = read_positions(mapped, pos, span=250_000)
    assert type(got) is np.ndarray and got.dtype == values.dtype
    np.testing.assert_array_equal(got, values[pos])
    np.testing.assert_array_equal(read_positions(values, pos), values[pos])  # in memory: plain indexing
    assert read_positions(mapped, np.zeros(0, np.int64)).shape == (0,)
    if os.path.isfile("/proc/self/smaps"):
        assert _resident_pages(mapped) < 100  # read through the mapping, then dropped span by span
        np.asarray(mapped).sum()  # a plain read leaves the whole mapping resident ...
        assert _resident_pages(mapped) > 5_000
        release(mapped)  # ... until released; the values are the file's still
        assert _resident_pages(mapped) < 100
        np.testing.assert_array_equal(np.asarray(mapped), values)


def test_release_keeps_every_value_written_and_leaves_private_memory_alone(tmp_path):
    values = np.arange(1_000_000, dtype=np.int64)
    kept = values.copy()
    release(values)  # anonymous memory: the same call would zero it
    np.testing.assert_array_equal(values, kept)
    private = np.memmap(tmp_path / "c.bin", mode="w+", dtype=np.int64, shape=(1_000_000,))
    private[:] = 0
    private.flush()
    copy = np.memmap(tmp_path / "c.bin", mode="c", dtype=np.int64, shape=(1_000_000,))
    copy[:] = kept  # a private copy: its pages are the only place these values are
    release(copy)
    np.testing.assert_array_equal(copy, kept)
    # a shared writable map (how the event table is built): written pages leave the resident set, their values
    # stay (dirty in the page cache, written back), read through the map and from the file
    writable = np.lib.format.open_memmap(tmp_path / "w.npy", mode="w+", dtype=np.int64, shape=(1_000_000,))
    writable[:] = kept
    if os.path.isfile("/proc/self/smaps"):
        assert _resident_pages(writable) > 1_000
    release(writable)
    if os.path.isfile("/proc/self/smaps"):
        assert _resident_pages(writable) < 100
    np.testing.assert_array_equal(writable, kept)
    del writable
    np.testing.assert_array_equal(np.load(tmp_path / "w.npy"), kept)
