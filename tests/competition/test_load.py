"""competition.load: normalised dtypes, the 16-code format, client-id files and every bad-input case.

Bad inputs are made by rewriting one column of the standard tiny world (tests/worlds.py); each test checks that
the DataError names the file and (where one is at fault) the column.
"""
from __future__ import annotations

import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from competition.load import (DataError, DataWarning, check_data_dir, check_table, code_ok, codes_to_numpy,
                              count_unknown_skus, format_codes, parse_codes, read_active_clients, read_products,
                              read_relevant_clients, scan_table)
from competition.schema import (ADD_TO_CART, CATEGORY, CLIENT_ID, EVENT_TYPES, NAME, PAGE_VISIT, PRICE,
                                PRODUCT_BUY, PRODUCT_PROPERTIES, QUERY, REMOVE_FROM_CART, SEARCH_QUERY, SKU,
                                TIMESTAMP, URL, DataPaths)
from tests.worlds import EVENTS, PRODUCTS, RELEVANT, codes, write_world


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
def rewrite(data_dir: Path, table: str, **columns) -> Path:
    """Replace (or add) columns of a raw table; ``column=None`` drops it. Returns the file path."""
    path = DataPaths(data_dir).table(table)
    frame = pl.read_parquet(path)
    for name, values in columns.items():
        if values is None:
            frame = frame.drop(name)
        elif isinstance(values, (pl.Series, pl.Expr)):
            frame = frame.with_columns(values.alias(name))
        else:
            frame = frame.with_columns(pl.Series(name, values))
    frame.write_parquet(path)
    return path


def replace_first(data_dir: Path, table: str, column: str, value) -> Path:
    """Set the first row of ``column`` of a raw table to ``value`` (keeping the column's dtype)."""
    path = DataPaths(data_dir).table(table)
    frame = pl.read_parquet(path)
    values = frame[column].to_list()
    values[0] = value
    return rewrite(data_dir, table, **{column: pl.Series(column, values, dtype=frame[column].dtype)})


def assert_names(exc: DataError, path: Path, column: str | None) -> None:
    """The message names the file and the column."""
    msg = str(exc)
    assert str(path) in msg, msg
    assert exc.path == str(path)
    if column is not None:
        assert repr(column) in msg, msg
        assert exc.column == column


def code_string(values) -> str:
    return "[" + " ".join(str(v) for v in values) + "]"


GOOD16 = list(range(16))


# ---------------------------------------------------------------------------------------------------------------
# well-formed input
# ---------------------------------------------------------------------------------------------------------------
def test_scan_table_normalises_dtypes(raw_world):
    for event in EVENT_TYPES:
        frame = scan_table(raw_world, event).collect()
        assert frame[CLIENT_ID].dtype == pl.Int64
        assert frame[TIMESTAMP].dtype == pl.Datetime("us")
        assert len(frame) == len(EVENTS[event])
    buys = scan_table(raw_world, PRODUCT_BUY).collect()
    assert buys[SKU].dtype == pl.Int64
    assert buys[TIMESTAMP][0] == datetime(2022, 7, 1, 10, 0, 0)
    assert buys[SKU].to_list() == [r[2] for r in EVENTS[PRODUCT_BUY]]
    visits = scan_table(raw_world, PAGE_VISIT).collect()
    assert visits[URL].dtype == pl.Int64
    queries = scan_table(raw_world, SEARCH_QUERY).collect()
    assert queries[QUERY].dtype == pl.Array(pl.UInt8, 16)
    np.testing.assert_array_equal(codes_to_numpy(queries[QUERY]),
                                  np.concatenate([codes(r[2]) for r in EVENTS[SEARCH_QUERY]]))


def test_read_products(raw_world):
    products = read_products(raw_world)
    assert products.schema == pl.Schema({SKU: pl.Int64, CATEGORY: pl.Int64, PRICE: pl.Int64,
                                         NAME: pl.Array(pl.UInt8, 16)})
    assert products.select(SKU, CATEGORY, PRICE).rows() == PRODUCTS
    np.testing.assert_array_equal(codes_to_numpy(products[NAME]),
                                  np.concatenate([codes(p[0]) for p in PRODUCTS]))


def test_check_data_dir_counts_rows(raw_world):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # the tiny world has no unknown sku
        rows = check_data_dir(raw_world)
    assert rows == {**{ev: len(EVENTS[ev]) for ev in EVENT_TYPES}, PRODUCT_PROPERTIES: len(PRODUCTS),
                    "unknown_sku_events": 0}


def test_narrow_integer_dtypes_are_accepted(raw_world):
    rewrite(raw_world, PRODUCT_BUY, **{CLIENT_ID: pl.col(CLIENT_ID).cast(pl.Int32),
                                       SKU: pl.col(SKU).cast(pl.UInt16)})
    rewrite(raw_world, PRODUCT_PROPERTIES, **{PRICE: pl.col(PRICE).cast(pl.Int8)})
    check_data_dir(raw_world)
    buys = scan_table(raw_world, PRODUCT_BUY).collect()
    assert buys[CLIENT_ID].dtype == pl.Int64 and buys[SKU].dtype == pl.Int64
    assert buys[SKU].to_list() == [r[2] for r in EVENTS[PRODUCT_BUY]]
    assert read_products(raw_world)[PRICE].to_list() == [p[2] for p in PRODUCTS]


@pytest.mark.parametrize("unit", ["us", "ns", "ms"])
def test_datetime_timestamps_load_like_strings(raw_world, unit):
    before = {ev: scan_table(raw_world, ev).collect() for ev in EVENT_TYPES}
    for ev in EVENT_TYPES:
        rewrite(raw_world, ev, **{TIMESTAMP: pl.col(TIMESTAMP).str.strptime(pl.Datetime(unit),
                                                                           "%Y-%m-%d %H:%M:%S")})
        assert pl.read_parquet(DataPaths(raw_world).table(ev))[TIMESTAMP].dtype == pl.Datetime(unit)
    check_data_dir(raw_world)
    for ev in EVENT_TYPES:
        assert scan_table(raw_world, ev).collect().equals(before[ev])


# ---------------------------------------------------------------------------------------------------------------
# the 16-code format
# ---------------------------------------------------------------------------------------------------------------
def test_format_codes_round_trips_through_parse_codes():
    arr = np.concatenate([codes(0, 50), np.zeros((1, 16), np.uint8), np.full((1, 16), 255, np.uint8),
                          np.arange(16, dtype=np.uint8)[None]])
    strings = format_codes(arr)
    assert strings.dtype == pl.String and len(strings) == len(arr)
    parsed = pl.DataFrame({"c": strings}).select(parse_codes("c"))["c"]
    assert parsed.null_count() == 0
    np.testing.assert_array_equal(codes_to_numpy(parsed), arr)


def test_format_codes_numpy_style():
    row = np.array([202, 151, 55, 9, 17, 0, 255, 1, 2, 3, 4, 5, 6, 7, 8, 10], dtype=np.uint8)
    s = format_codes(row[None])[0]
    assert s == "[202 151  55   9  17   0 255   1   2   3   4   5   6   7   8  10]"
    assert s == str(row)  # numpy's own str() of the row (max width 3)
    with pytest.raises(ValueError):
        format_codes(np.zeros((2, 15), np.uint8))


def test_parse_codes_accepts_numpy_str_of_any_width():
    rows = [np.arange(16, dtype=np.uint8), np.arange(16, dtype=np.uint8) * 3 + 10]
    strings = [str(r) for r in rows] + ["  [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16]  ",
                                        "[ 1\n  2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 ]"]
    parsed = pl.DataFrame({"c": strings}).select(parse_codes("c"))["c"]
    assert parsed.null_count() == 0
    np.testing.assert_array_equal(codes_to_numpy(parsed)[:2], np.stack(rows))
    np.testing.assert_array_equal(codes_to_numpy(parsed)[2], np.arange(1, 17))


@pytest.mark.parametrize("bad", [
    code_string(GOOD16[:15]),                 # too few
    code_string(GOOD16 + [1]),                # too many
    code_string(GOOD16[:15] + [256]),         # out of range
    code_string(GOOD16[:15] + [-1]),          # negative
    code_string(GOOD16[:15] + [1000]),        # 4 digits
    code_string(GOOD16[:15]) + " 7",          # value outside the brackets
    " ".join(map(str, GOOD16)),               # no brackets
    "garbage",
    "",
])
def test_code_ok_rejects(bad):
    frame = pl.DataFrame({"c": [bad, code_string(GOOD16)]}).select(code_ok("c").alias("ok"),
                                                                    parse_codes("c"))
    assert frame["ok"].to_list() == [False, True]
    assert frame["c"].null_count() == 1 and frame["c"][0] is None



def test_fixed_width_parser_agrees_with_the_regex(monkeypatch):
    """parse_codes' byte-table fast path gives what the regex parser gives, for well-formed strings of every
    numpy width and for strings it hands back to the regex (tabs, extra spaces, malformed), across batches."""
    import competition.load as load_mod
    rng = np.random.default_rng(3)
    rows = [rng.integers(0, top, 16).astype(np.uint8) for top in (10, 100, 256) for _ in range(20)]
    good = str(np.arange(16, dtype=np.uint8) * 17)
    strings = [str(r) for r in rows] + [
        good, " " + good, good + "\n", good.replace(" ", "  ", 1), good.replace(" ", "\t", 1),
        good.replace(" 17", "017"), good.replace("255", "256"), good.replace("255", " 2 5"), good[:-1] + " ]",
        good.replace("[", "]", 1), good[1:], "[" + good[1:-1].replace(" 34", "   ") + "]", "[" + "1 " * 15 + "x]",
        "[" + " ".join(["999"] * 16) + "]", "[ 1  2]", None, ""]
    series = pl.Series("c", strings, dtype=pl.String)
    want = pl.DataFrame({"c": series}).select(load_mod._parse_codes_expr("c"))["c"]
    assert want.null_count() > 5  # the malformed ones
    monkeypatch.setattr(load_mod, "_CODE_BATCH", 7)
    got = pl.DataFrame({"c": series}).select(parse_codes("c"))["c"]
    assert got.dtype == want.dtype and got.to_list() == want.to_list()
    np.testing.assert_array_equal(codes_to_numpy(got[:len(rows)]), np.stack(rows))


# ---------------------------------------------------------------------------------------------------------------
# bad input: every case names the file and the column
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("table", [*EVENT_TYPES, PRODUCT_PROPERTIES])
def test_missing_file(raw_world, table):
    path = DataPaths(raw_world).table(table)
    path.unlink()
    with pytest.raises(DataError, match="missing") as err:
        check_data_dir(raw_world)
    assert_names(err.value, path, None)
    with pytest.raises(DataError) as err:
        scan_table(raw_world, table)
    assert_names(err.value, path, None)


def test_not_parquet(raw_world):
    path = DataPaths(raw_world).table(PAGE_VISIT)
    path.write_text("client_id,timestamp,url\n1,2022-07-01 00:00:00,3\n")
    with pytest.raises(DataError, match="parquet") as err:
        check_data_dir(raw_world)
    assert_names(err.value, path, None)


@pytest.mark.parametrize("table,column", [
    (PRODUCT_BUY, CLIENT_ID), (PRODUCT_BUY, TIMESTAMP), (ADD_TO_CART, SKU), (REMOVE_FROM_CART, SKU),
    (PAGE_VISIT, URL), (SEARCH_QUERY, QUERY), (PRODUCT_PROPERTIES, SKU), (PRODUCT_PROPERTIES, CATEGORY),
    (PRODUCT_PROPERTIES, PRICE), (PRODUCT_PROPERTIES, NAME),
])
def test_missing_column(raw_world, table, column):
    path = rewrite(raw_world, table, **{column: None})
    with pytest.raises(DataError, match="missing") as err:
        check_data_dir(raw_world)
    assert_names(err.value, path, column)


@pytest.mark.parametrize("table,column,values", [
    (PRODUCT_BUY, CLIENT_ID, pl.col(CLIENT_ID).cast(pl.Float64)),
    (PRODUCT_BUY, CLIENT_ID, pl.col(CLIENT_ID).cast(pl.String)),
    (ADD_TO_CART, SKU, pl.col(SKU).cast(pl.String)),
    (PAGE_VISIT, URL, pl.col(URL).cast(pl.Float32)),
    (PAGE_VISIT, TIMESTAMP, pl.lit(1656669420, dtype=pl.Int64)),
    (SEARCH_QUERY, QUERY, pl.lit(3, dtype=pl.Int64)),
    (PRODUCT_PROPERTIES, PRICE, pl.col(PRICE).cast(pl.Float64)),
    (PRODUCT_PROPERTIES, CATEGORY, pl.col(CATEGORY).cast(pl.String)),
    (PRODUCT_PROPERTIES, NAME, pl.lit(1.5)),
])
def test_wrong_dtype(raw_world, table, column, values):
    path = rewrite(raw_world, table, **{column: values})
    with pytest.raises(DataError, match="expected") as err:
        check_data_dir(raw_world)
    assert_names(err.value, path, column)
    with pytest.raises(DataError) as err:
        scan_table(raw_world, table)
    assert_names(err.value, path, column)


@pytest.mark.parametrize("table,column", [(SEARCH_QUERY, QUERY), (PRODUCT_PROPERTIES, NAME)])
@pytest.mark.parametrize("bad", [
    code_string(GOOD16[:15]), code_string(GOOD16 + [7]), code_string(GOOD16[:15] + [256]), "garbage",
])
def test_bad_code_string(raw_world, table, column, bad):
    path = replace_first(raw_world, table, column, bad)
    with pytest.raises(DataError, match="16 integers") as err:
        check_data_dir(raw_world)
    assert_names(err.value, path, column)
    assert "1 value(s)" in str(err.value) and repr(bad) in str(err.value)  # count and an example


@pytest.mark.parametrize("price", [100, -1, 1000])
def test_price_out_of_range(raw_world, price):
    path = replace_first(raw_world, PRODUCT_PROPERTIES, PRICE, price)
    with pytest.raises(DataError, match=r"outside 0\.\.99") as err:
        check_data_dir(raw_world)
    assert_names(err.value, path, PRICE)
    assert str(price) in str(err.value)


def test_price_bounds_accepted(raw_world):
    rewrite(raw_world, PRODUCT_PROPERTIES, **{PRICE: [0, 99, 0, 99, 50, 1]})
    check_data_dir(raw_world)


@pytest.mark.parametrize("table", EVENT_TYPES)
@pytest.mark.parametrize("bad", ["2022-07-01", "2022-02-30 10:00:00", "yesterday", "2022-07-01T10:00:00"])
def test_unparsable_timestamp(raw_world, table, bad):
    path = replace_first(raw_world, table, TIMESTAMP, bad)
    with pytest.raises(DataError, match="unparsable") as err:
        check_data_dir(raw_world)
    assert_names(err.value, path, TIMESTAMP)
    assert repr(bad) in str(err.value)


@pytest.mark.parametrize("table,column", [(PRODUCT_BUY, CLIENT_ID), (PAGE_VISIT, TIMESTAMP),
                                          (ADD_TO_CART, SKU), (PRODUCT_PROPERTIES, NAME)])
def test_null_values(raw_world, table, column):
    path = replace_first(raw_world, table, column, None)
    with pytest.raises(DataError, match="null") as err:
        check_data_dir(raw_world)
    assert_names(err.value, path, column)


def test_duplicate_product_sku(raw_world):
    path = replace_first(raw_world, PRODUCT_PROPERTIES, SKU, PRODUCTS[1][0])
    with pytest.raises(DataError, match="duplicate") as err:
        read_products(raw_world)
    assert_names(err.value, path, SKU)


# ---------------------------------------------------------------------------------------------------------------
# relevant / active clients
# ---------------------------------------------------------------------------------------------------------------
def test_read_relevant_clients(raw_world):
    ids = read_relevant_clients(raw_world)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, RELEVANT)


def test_relevant_clients_keep_file_order_and_accept_int32(raw_world):
    path = DataPaths(raw_world).relevant_clients
    np.save(path, np.array([104, 100, 102], dtype=np.int32))
    ids = read_relevant_clients(raw_world)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [104, 100, 102])


def test_duplicate_relevant_clients(raw_world):
    path = DataPaths(raw_world).relevant_clients
    np.save(path, np.array([100, 101, 100, 102], dtype=np.int64))
    for reader in (read_relevant_clients, check_data_dir):
        with pytest.raises(DataError, match="1 duplicate") as err:
            reader(raw_world)
        assert_names(err.value, path, None)


@pytest.mark.parametrize("array", [np.array([1.0, 2.0]), np.array([[1, 2], [3, 4]]), np.array(["a", "b"])])
def test_bad_relevant_clients_array(raw_world, array):
    path = DataPaths(raw_world).relevant_clients
    np.save(path, array)
    with pytest.raises(DataError, match="1-D integer") as err:
        read_relevant_clients(raw_world)
    assert_names(err.value, path, None)


def test_relevant_clients_missing_or_corrupt(raw_world):
    path = DataPaths(raw_world).relevant_clients
    path.write_bytes(b"not a numpy file")
    with pytest.raises(DataError, match="npy") as err:
        read_relevant_clients(raw_world)
    assert_names(err.value, path, None)
    path.unlink()
    with pytest.raises(DataError, match="missing") as err:
        check_data_dir(raw_world)
    assert_names(err.value, path, None)


def test_read_active_clients(raw_world):
    path = DataPaths(raw_world).active_clients
    with pytest.raises(DataError, match="missing") as err:
        read_active_clients(raw_world)
    assert_names(err.value, path, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.array([103, 100], dtype=np.int64))
    np.testing.assert_array_equal(read_active_clients(raw_world), [103, 100])
    np.save(path, np.array([103, 103], dtype=np.int64))
    with pytest.raises(DataError, match="duplicate") as err:
        read_active_clients(raw_world)
    assert_names(err.value, path, None)


# ---------------------------------------------------------------------------------------------------------------
# unknown skus: warned and counted, never fatal
# ---------------------------------------------------------------------------------------------------------------
def test_unknown_skus_warn_and_count(tmp_path):
    events = {PRODUCT_BUY: [(1, "2022-07-01 10:00:00", 999), (1, "2022-07-02 10:00:00", 1)],
              ADD_TO_CART: [(2, "2022-07-01 10:00:00", 998), (2, "2022-07-01 11:00:00", 998)],
              REMOVE_FROM_CART: [(2, "2022-07-01 12:00:00", 1)],
              PAGE_VISIT: [(3, "2022-07-01 10:00:00", 999)],  # a url, not a sku: never "unknown"
              SEARCH_QUERY: []}
    root = write_world(tmp_path / "w", events, [(1, 10, 5)], [1, 2, 3])
    with pytest.warns(DataWarning) as record:
        rows = check_data_dir(root)
    assert rows["unknown_sku_events"] == 3
    messages = [str(w.message) for w in record if issubclass(w.category, DataWarning)]
    assert len(messages) == 2  # one per file with unknown skus
    assert any(str(DataPaths(root).table(PRODUCT_BUY)) in m and "1 event" in m for m in messages)
    assert any(str(DataPaths(root).table(ADD_TO_CART)) in m and "2 event" in m for m in messages)
    with pytest.warns(DataWarning):
        assert count_unknown_skus(root) == 3


def test_check_table_returns_rows(raw_world):
    assert check_table(raw_world, PAGE_VISIT) == len(EVENTS[PAGE_VISIT])
    with pytest.raises(ValueError):
        scan_table(raw_world, "no_such_table")


# ---------------------------------------------------------------------------------------------------------------
# codes given as integer lists / arrays instead of strings
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [pl.List(pl.Int64), pl.Array(pl.UInt8, 16), pl.List(pl.UInt8)])
def test_integer_list_codes_load_like_strings(raw_world, dtype):
    want = scan_table(raw_world, SEARCH_QUERY).collect()
    values = np.concatenate([codes(r[2]) for r in EVENTS[SEARCH_QUERY]]).tolist()
    rewrite(raw_world, SEARCH_QUERY, **{QUERY: pl.Series(QUERY, values, dtype=dtype)})
    check_data_dir(raw_world)
    assert scan_table(raw_world, SEARCH_QUERY).collect().equals(want)


@pytest.mark.parametrize("table,column", [(SEARCH_QUERY, QUERY), (PRODUCT_PROPERTIES, NAME)])
@pytest.mark.parametrize("bad", [list(range(15)), list(range(17)), list(range(15)) + [256],
                                 list(range(15)) + [-1], list(range(15)) + [None]])
def test_bad_integer_list_codes(raw_world, table, column, bad):
    path = DataPaths(raw_world).table(table)
    n = pl.read_parquet(path).height
    values = [bad] + [list(range(16))] * (n - 1)
    rewrite(raw_world, table, **{column: pl.Series(column, values, dtype=pl.List(pl.Int64))})
    with pytest.raises(DataError, match="16 integers") as err:
        check_data_dir(raw_world)
    assert_names(err.value, path, column)
    assert "1 value(s)" in str(err.value)


def test_unique_ints_equals_np_unique():
    from competition.load import unique_ints

    rng = np.random.default_rng(0)
    for values in (rng.integers(-5, 50, 1000), rng.permutation(10_000), np.array([7]), np.array([], dtype=np.int64),
                   rng.integers(0, 3, (20, 4))):
        got, want = unique_ints(values), np.unique(values)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
