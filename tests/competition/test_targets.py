"""competition.targets: target lists and popularity, labels of the six tasks, task clients, task datasets.

The standard tiny world (tests/worlds.py), split at 2022-07-24 / 2022-08-07:
  train window:      101 buys sku 3 (cat 20, price 7) and sku 4 (cat 20, price 99); 100 buys sku 6 (cat 30, price 42)
  validation window: 102 buys sku 5 (cat 30, price 0); 100 buys sku 1 (cat 10, price 5)
  input skus: 1, 2, 3 (so the new skus of the train window are 4 and 6); active clients: 100, 103.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from competition.load import DataError
from competition.schema import (CATEGORY, CHURN, CLIENT_ID, CONVERSION, PRICE, PRODUCT_BUY, PROPENSITY_CATEGORY,
                                PROPENSITY_NEW_SKU, PROPENSITY_PRICE, PROPENSITY_SKU, PROPENSITY_TASKS, SKU, TASKS,
                                DataPaths)
from competition.split import split
from competition.targets import (compute_target_lists, input_skus, label_matrix, read_target_lists, read_window,
                                 task_clients, task_dataset, write_target_lists)
from tests.worlds import RELEVANT, write_world

TINY_LISTS = {
    PROPENSITY_CATEGORY: ([20, 30], [2, 1]),
    PROPENSITY_SKU: ([3, 4, 6], [1, 1, 1]),
    PROPENSITY_NEW_SKU: ([4, 6], [1, 1]),
    PROPENSITY_PRICE: ([7, 42, 99], [1, 1, 1]),
}
# labels of clients 100..104 (RELEVANT order) in the train and validation windows
TINY_LABELS = {
    "train": {
        CHURN: [0, 0, 1, 1, 1],
        CONVERSION: [0, 0, 1, 1, 1],
        PROPENSITY_CATEGORY: [[0, 1], [1, 0], [0, 0], [0, 0], [0, 0]],
        PROPENSITY_SKU: [[0, 0, 1], [1, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]],
        PROPENSITY_NEW_SKU: [[0, 1], [1, 0], [0, 0], [0, 0], [0, 0]],
        PROPENSITY_PRICE: [[0, 1, 0], [1, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]],
    },
    "validation": {
        CHURN: [0, 1, 0, 1, 1],
        CONVERSION: [0, 1, 0, 1, 1],
        PROPENSITY_CATEGORY: [[0, 0], [0, 0], [0, 1], [0, 0], [0, 0]],   # 100 bought cat 10: not a target
        PROPENSITY_SKU: [[0, 0, 0]] * 5,
        PROPENSITY_NEW_SKU: [[0, 0]] * 5,
        PROPENSITY_PRICE: [[0, 0, 0]] * 5,                                 # prices 0 and 5: not targets
    },
}


# ---------------------------------------------------------------------------------------------------------------
# target lists
# ---------------------------------------------------------------------------------------------------------------
def test_tiny_target_lists(split_world):
    lists = read_target_lists(split_world)
    assert set(lists) == set(PROPENSITY_TASKS)
    for task, (entries, popularity) in TINY_LISTS.items():
        got_entries, got_pop = lists[task]
        assert got_entries.dtype == np.int64 and got_pop.dtype == np.float64
        np.testing.assert_array_equal(got_entries, entries, err_msg=task)
        np.testing.assert_array_equal(got_pop, popularity, err_msg=task)
        # the files themselves (organisers' layout)
        paths = DataPaths(split_world)
        np.testing.assert_array_equal(np.load(paths.target_list(task)), entries)
        np.testing.assert_array_equal(np.load(paths.popularity(task)), popularity)


def big_world(root):
    """150 skus, each its own category (5000 - sku) and price bucket (sku % 100).

    Train window: skus 101..150 bought twice, skus 1..100 once. Input: skus 1..10 only added to a cart, sku 11
    only removed from one, sku 12 bought; skus 13.. never seen before the cut.
    """
    skus = range(1, 151)
    products = [(s, 5000 - s, s % 100) for s in skus]
    train = [(1000 + s, "2022-07-25 10:00:00", s) for s in skus]
    train += [(2000 + s, "2022-07-26 10:00:00", s) for s in range(101, 151)]
    events = {
        PRODUCT_BUY: train + [(1, "2022-07-01 00:00:00", 12), (1, "2022-08-20 15:30:00", 150)],
        "add_to_cart": [(2, "2022-07-01 00:00:00", s) for s in range(1, 11)],
        "remove_from_cart": [(3, "2022-07-01 00:00:00", 11)],
        "page_visit": [(4, "2022-07-01 00:00:00", 13)],  # url 13, not sku 13
    }
    write_world(root, events, products, [1, 2, 3])
    split(root, progress=False)
    write_target_lists(root)
    return root


def test_top_100_cut_and_ties(tmp_path):
    lists = read_target_lists(big_world(tmp_path / "big"))
    # count 2 first (ascending id among ties), then the smallest 50 ids with count 1
    entries, pop = lists[PROPENSITY_SKU]
    np.testing.assert_array_equal(entries, [*range(101, 151), *range(1, 51)])
    np.testing.assert_array_equal(pop, [2.0] * 50 + [1.0] * 50)
    # categories 4850..4899 (skus 150..101, count 2), then the smallest count-1 categories 4900..4949
    entries, pop = lists[PROPENSITY_CATEGORY]
    np.testing.assert_array_equal(entries, [*range(4850, 4900), *range(4900, 4950)])
    np.testing.assert_array_equal(pop, [2.0] * 50 + [1.0] * 50)


def test_new_sku_excludes_any_input_event(tmp_path):
    root = big_world(tmp_path / "big")
    np.testing.assert_array_equal(np.sort(input_skus(root)), range(1, 13))
    entries, pop = read_target_lists(root)[PROPENSITY_NEW_SKU]
    # skus 1..10 (add only), 11 (remove only) and 12 (bought) are excluded; sku 13 is new (its id is a url too)
    np.testing.assert_array_equal(entries, [*range(101, 151), *range(13, 63)])
    np.testing.assert_array_equal(pop, [2.0] * 50 + [1.0] * 50)


def test_price_lists_every_bought_bucket_ascending(tmp_path):
    entries, pop = read_target_lists(big_world(tmp_path / "big"))[PROPENSITY_PRICE]
    # bucket 0: sku 100 (1 buy); 1..50: sku b (1) + sku 100+b (2); 51..99: sku b (1)
    np.testing.assert_array_equal(entries, range(100))
    np.testing.assert_array_equal(pop, [1.0] + [3.0] * 50 + [1.0] * 49)


def test_price_list_may_be_short(split_world):
    entries, _ = read_target_lists(split_world)[PROPENSITY_PRICE]
    assert list(entries) == [7, 42, 99]  # only the buckets bought, not all 100


def test_compute_target_lists_skips_unknown_and_null():
    window = pl.DataFrame({CLIENT_ID: [1, 2, 3, 4], SKU: [5, 5, 9, 7], CATEGORY: [1, 1, None, 2],
                           PRICE: [3, 3, None, 0]})
    lists = compute_target_lists(window, input_skus=np.array([7]))
    np.testing.assert_array_equal(lists[PROPENSITY_CATEGORY][0], [1, 2])
    np.testing.assert_array_equal(lists[PROPENSITY_SKU][0], [5, 7, 9])
    np.testing.assert_array_equal(lists[PROPENSITY_SKU][1], [2, 1, 1])
    np.testing.assert_array_equal(lists[PROPENSITY_PRICE][0], [0, 3])
    np.testing.assert_array_equal(lists[PROPENSITY_NEW_SKU][0], [5, 9])
    assert PROPENSITY_NEW_SKU not in compute_target_lists(window)


def test_write_target_lists_keeps_shipped_lists(split_world):
    paths = DataPaths(split_world)
    np.save(paths.target_list(PROPENSITY_SKU), np.array([6, 3], dtype=np.int64))
    np.save(paths.popularity(PROPENSITY_SKU), np.array([0.5, 0.25]))
    paths.target_list(PROPENSITY_PRICE).unlink()
    lengths = write_target_lists(split_world)
    assert lengths == {PROPENSITY_CATEGORY: 2, PROPENSITY_SKU: 2, PROPENSITY_NEW_SKU: 2, PROPENSITY_PRICE: 3}
    np.testing.assert_array_equal(read_target_lists(split_world)[PROPENSITY_SKU][1], [0.5, 0.25])
    write_target_lists(split_world, overwrite=True)
    np.testing.assert_array_equal(read_target_lists(split_world)[PROPENSITY_SKU][0], [3, 4, 6])


def test_read_target_lists_checks_popularity(split_world):
    paths = DataPaths(split_world)
    np.save(paths.popularity(PROPENSITY_SKU), np.array([1.0]))
    with pytest.raises(DataError, match="1 values for 3") as err:
        read_target_lists(split_world)
    assert str(paths.popularity(PROPENSITY_SKU)) in str(err.value)
    paths.popularity(PROPENSITY_SKU).unlink()
    with pytest.raises(DataError, match="missing") as err:
        read_target_lists(split_world)
    assert str(paths.popularity(PROPENSITY_SKU)) in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# windows and labels
# ---------------------------------------------------------------------------------------------------------------
def test_read_window(split_world):
    frame = read_window(split_world, "train")
    assert frame.columns == [CLIENT_ID, SKU, CATEGORY, PRICE]
    assert all(dtype == pl.Int64 for dtype in frame.dtypes)
    assert sorted(frame.rows()) == [(100, 6, 30, 42), (101, 3, 20, 7), (101, 4, 20, 99)]
    with pytest.raises(ValueError):
        read_window(split_world, "test")


def test_read_window_missing(raw_world):
    with pytest.raises(DataError, match="competition.split") as err:
        read_window(raw_world, "validation")
    assert str(DataPaths(raw_world).validation_target) in str(err.value)


def test_read_window_missing_column(split_world):
    path = DataPaths(split_world).train_target
    pl.read_parquet(path).drop(PRICE).write_parquet(path)
    with pytest.raises(DataError) as err:
        read_window(split_world, "train")
    assert str(path) in str(err.value) and repr(PRICE) in str(err.value)


@pytest.mark.parametrize("which", ["train", "validation"])
@pytest.mark.parametrize("task", TASKS)
def test_label_matrix_tiny(split_world, task, which):
    entries = read_target_lists(split_world)[task][0] if task in PROPENSITY_TASKS else None
    labels = label_matrix(task, np.array(RELEVANT), read_window(split_world, which), entries)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, TINY_LABELS[which][task])


def test_label_matrix_client_order_absent_clients_and_unbought_entries():
    window = pl.DataFrame({CLIENT_ID: [7, 7, 3, 9], SKU: [1, 2, 2, 5], CATEGORY: [10, 10, 20, None],
                           PRICE: [0, 99, 99, None]})
    clients = np.array([9, 42, 3, 7])  # unsorted; 42 is absent from the window
    np.testing.assert_array_equal(label_matrix(CHURN, clients, window), [0, 1, 0, 0])
    np.testing.assert_array_equal(label_matrix(CONVERSION, clients, window), [0, 1, 0, 0])
    # entries in any order; 77 is never bought; sku 5's unknown category matches nothing
    np.testing.assert_array_equal(label_matrix(PROPENSITY_CATEGORY, clients, window, np.array([20, 77, 10])),
                                  [[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_array_equal(label_matrix(PROPENSITY_SKU, clients, window, np.array([2, 1])),
                                  [[0, 0], [0, 0], [1, 0], [1, 1]])
    np.testing.assert_array_equal(label_matrix(PROPENSITY_NEW_SKU, clients, window, np.array([5])),
                                  [[1], [0], [0], [0]])
    np.testing.assert_array_equal(label_matrix(PROPENSITY_PRICE, clients, window, np.array([0, 99])),
                                  [[0, 0], [0, 0], [0, 1], [1, 1]])


def test_label_matrix_edges():
    window = pl.DataFrame({CLIENT_ID: [1], SKU: [1], CATEGORY: [1], PRICE: [1]}, schema={c: pl.Int64 for c in (
        CLIENT_ID, SKU, CATEGORY, PRICE)})
    empty = window.clear()
    assert label_matrix(PROPENSITY_SKU, np.array([], dtype=np.int64), window, np.array([1])).shape == (0, 1)
    assert label_matrix(PROPENSITY_SKU, np.array([1, 2]), window, np.array([], dtype=np.int64)).shape == (2, 0)
    np.testing.assert_array_equal(label_matrix(CHURN, np.array([1, 2]), empty), [1, 1])
    np.testing.assert_array_equal(label_matrix(PROPENSITY_SKU, np.array([1, 2]), empty, np.array([1])),
                                  [[0], [0]])
    with pytest.raises(ValueError):
        label_matrix(PROPENSITY_SKU, np.array([1]), window)
    with pytest.raises(ValueError):
        label_matrix("nope", np.array([1]), window)


# ---------------------------------------------------------------------------------------------------------------
# task clients and datasets
# ---------------------------------------------------------------------------------------------------------------
def test_task_clients(split_world):
    for task in TASKS:
        expected = [100, 103] if task == CHURN else RELEVANT
        ids = task_clients(split_world, task)
        assert ids.dtype == np.int64
        np.testing.assert_array_equal(ids, expected, err_msg=task)
    with pytest.raises(ValueError):
        task_clients(split_world, "nope")


def test_task_clients_follow_relevant_file_order(split_world):
    np.save(DataPaths(split_world).relevant_clients, np.array([103, 101, 100], dtype=np.int64))
    np.testing.assert_array_equal(task_clients(split_world, CHURN), [103, 100])
    np.testing.assert_array_equal(task_clients(split_world, CONVERSION), [103, 101, 100])


@pytest.mark.parametrize("task", TASKS)
def test_task_dataset(split_world, task):
    data = task_dataset(split_world, task)
    rows = [0, 3] if task == CHURN else slice(None)  # churn: the active clients 100 and 103
    np.testing.assert_array_equal(data.client_ids, np.array(RELEVANT)[rows])
    assert data.y_train.dtype == np.float32 and data.y_valid.dtype == np.float32
    np.testing.assert_array_equal(data.y_train, np.array(TINY_LABELS["train"][task])[rows])
    np.testing.assert_array_equal(data.y_valid, np.array(TINY_LABELS["validation"][task])[rows])
    if task in PROPENSITY_TASKS:
        np.testing.assert_array_equal(data.entries, TINY_LISTS[task][0])
        np.testing.assert_array_equal(data.popularity, TINY_LISTS[task][1])
    else:
        assert data.entries is None and data.popularity is None


def test_task_dataset_explicit_clients_and_missing_list(split_world):
    data = task_dataset(split_world, CHURN, client_ids=np.array([104, 100]))
    np.testing.assert_array_equal(data.y_train, [1, 0])
    np.testing.assert_array_equal(data.y_valid, [1, 0])
    path = DataPaths(split_world).target_list(PROPENSITY_PRICE)
    path.unlink()
    with pytest.raises(DataError, match="write_target_lists") as err:
        task_dataset(split_world, PROPENSITY_PRICE)
    assert str(path) in str(err.value)
