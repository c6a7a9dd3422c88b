"""competition.partition: the event table build's split by client-id range, and competition.events' catalogue
lookup that the ranges are written with."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import competition.partition as partition_mod
from competition.events import _Catalogue
from competition.partition import RangePartition
from competition.schema import ADD_TO_CART, CATEGORY, EVENT_CODE, PAGE_VISIT, PRICE, PRODUCT_BUY, SEARCH_QUERY, SKU


@pytest.mark.parametrize("dense_span", [1 << 27, 0])  # a client's range from the id table, or a binary search
def test_ranges_keep_each_kinds_file_order_and_stack_the_kinds(tmp_path, monkeypatch, dense_span):
    monkeypatch.setattr(partition_mod, "DENSE_SPAN", dense_span)
    rng = np.random.default_rng(3)
    bounds = np.array([10, 25, 40])
    parts = RangePartition(tmp_path / "p", bounds, (0, 59))
    assert (parts.dense is not None) == bool(dense_span)
    sent = {}
    for kind in (PAGE_VISIT, PRODUCT_BUY, SEARCH_QUERY):
        batches = []
        for size in (7, 0, 30):  # batches appended one after the other, an empty one among them
            client = rng.integers(0, 60, size)
            ts = np.arange(size, dtype=np.int64) + 1000 * len(batches)
            item = (rng.integers(0, 256, (size, 16)).astype(np.uint8) if kind == SEARCH_QUERY
                    else rng.integers(0, 99, size))
            parts.add(kind, client, ts, item)
            batches.append((client, ts, item))
        sent[kind] = [np.concatenate(col) for col in zip(*batches)]
    seen = 0
    for b in range(parts.n_ranges):
        r = parts.read(b)
        lo, hi = ([0, *bounds][b], [*bounds, 60][b])
        # kinds in code order (buys, then visits, then searches), each in the order it was added
        want_types = []
        for kind in (PRODUCT_BUY, PAGE_VISIT, SEARCH_QUERY):
            client, ts, item = sent[kind]
            mine = (client >= lo) & (client < hi)
            want_types += [EVENT_CODE[kind]] * int(mine.sum())
            rows = np.flatnonzero(r.event_type == EVENT_CODE[kind])
            np.testing.assert_array_equal(r.client[rows], client[mine])
            np.testing.assert_array_equal(r.timestamp[rows], ts[mine])
            if kind == SEARCH_QUERY:
                np.testing.assert_array_equal(r.codes, item[mine])
                assert r.search_start == (rows[0] if len(rows) else r.search_start)
                assert (r.item[rows] == -1).all()
            else:
                np.testing.assert_array_equal(r.item[rows], item[mine])
        np.testing.assert_array_equal(r.event_type, want_types)
        seen += len(r)
        for worker in parts._removals:  # a range's files go once read, in a background thread
            worker.join()
        assert not (tmp_path / "p" / str(b)).exists()
    assert seen == sum(len(v[0]) for v in sent.values())
    parts.remove()
    assert not (tmp_path / "p").exists()


def test_a_range_without_events_reads_none(tmp_path):
    parts = RangePartition(tmp_path / "p", np.array([100]), (0, 200))
    parts.add(ADD_TO_CART, np.array([150, 160]), np.array([1, 2]), np.array([5, 6]))
    assert parts.read(0) is None
    r = parts.read(1)
    np.testing.assert_array_equal(r.item, [5, 6])
    assert r.codes.shape == (0, 16)


@pytest.mark.parametrize("skus", [[3, 1, 2], [10**12, 5, -7]])  # a dense sku table, or a binary search
def test_catalogue_reads_category_and_price_and_minus_one_for_unknown_or_no_sku(skus):
    products = pl.DataFrame({SKU: skus, CATEGORY: [30, 10, 20], PRICE: [3, 1, 2]})
    cat = _Catalogue(products)
    assert (cat.dense is not None) == (skus == [3, 1, 2])
    query = np.array([skus[0], -1, skus[1], 999_999, skus[2], skus[0], 4, -(2**40)], dtype=np.int64)
    rows = cat.rows(query)
    np.testing.assert_array_equal(cat.category[rows], [30, -1, 10, -1, 20, 30, -1, -1])
    np.testing.assert_array_equal(cat.price[rows], [3, -1, 1, -1, 2, 3, -1, -1])
    assert cat.price.dtype == np.int16
