"""embedders.stats: hand-computed features on the tiny world, a slow pure-Python reference on a random world,
chunking invariance, fallbacks, transforms, CLI errors."""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timezone

import numpy as np
import pytest

from competition.events import EventTable
from competition.schema import BLOCK_META_FILE, EMBEDDINGS_FILE, EVENT_TYPES
import embedders.chunks as chunks
from embedders.stats import (FEATURE_NAMES, FEATURES, N_FEATURES, CountTable, StatsEmbedder, distinct_count, main,
                             row_chunks)
from tests.worlds import TRAIN_START, write_world

# the random worlds hold events with skus missing from product_properties on purpose
pytestmark = pytest.mark.filterwarnings("ignore::competition.load.DataWarning")

DAY = 86_400.0


def epoch(s: str) -> int:
    return int(datetime.fromisoformat(s).replace(tzinfo=timezone.utc).timestamp())


@pytest.fixture(scope="module")
def tiny_feats(tiny_events):
    ids = np.array([100, 101, 102, 103, 104, 105, 999], dtype=np.int64)  # 999: no events at all
    block = StatsEmbedder(progress=False).fit(tiny_events).transform(tiny_events, ids)
    return {int(c): dict(zip(FEATURE_NAMES, row.tolist())) for c, row in zip(ids, block.vectors)}, block


def test_feature_table_is_documented():
    assert N_FEATURES >= 60
    assert len(set(FEATURE_NAMES)) == N_FEATURES
    assert all(desc.strip() for _, desc in FEATURES)
    import embedders.stats as mod
    for stem in ("count_", "days_since_first_", "trend_", "price_", "weekday_share_", "hour_share_", "pop_url_mean",
                 "cart_open_share", "sessions_28d", "events_per_active_day"):
        assert stem in mod.__doc__


def test_tiny_world_client_100(tiny_feats):
    f = tiny_feats[0][100]
    cut = epoch(TRAIN_START)
    # 100: search 07-01 09:57, visit 09:58, add sku1 09:59, buy sku1 10:00, buy sku2 07-23 23:59:59
    expected = {
        "count_all": 5, "count_buy": 2, "count_add": 1, "count_remove": 0, "count_visit": 1, "count_search": 1,
        "count_all_7d": 1, "count_buy_7d": 1, "count_all_14d": 1, "count_all_28d": 5, "count_search_28d": 1,
        "days_since_last_buy": 1 / DAY, "days_since_last_all": 1 / DAY,
        "days_since_first_all": (cut - epoch("2022-07-01 09:57:00")) / DAY,
        "days_since_first_buy": (cut - epoch("2022-07-01 10:00:00")) / DAY,
        "active_days": 2, "active_weeks": 2, "active_days_28d": 2,
        "trend_buy": 0.0, "trend_all": np.log(2) - np.log(5), "trend_search": -np.log(2),
        "distinct_skus": 2, "distinct_skus_buy": 2, "distinct_skus_add": 1, "distinct_categories": 1,
        "distinct_categories_buy": 1, "distinct_urls": 1, "distinct_queries": 1,
        "cart_bought_share": 1.0, "cart_removed_share": 0.0, "cart_open_share": 0.0,
        "price_buy_mean": 27.5, "price_buy_min": 5, "price_buy_max": 50,
        "price_add_mean": 5, "price_add_min": 5, "price_add_max": 5,
        "weekday_share_4": 0.8, "weekday_share_5": 0.2, "weekday_share_0": 0.0,
        "hour_share_8": 0.8, "hour_share_20": 0.2, "hour_share_0": 0.0,
        # sku 1: buy 100, add 100, buy 105 -> 3; sku 2: buy 100, add 104, remove 104 -> 3; category 10: 6; url 77: 2
        "pop_sku_mean": np.log(4), "pop_category_mean": np.log(7), "pop_url_mean": np.log(3),
        "sessions": 2, "sessions_28d": 2, "events_per_session": 2.5, "session_minutes_mean": 1.5,
        "days_between_sessions": (epoch("2022-07-23 23:59:59") - epoch("2022-07-01 09:57:00")) / DAY,
        "events_per_active_day": 2.5,
    }
    for name, value in expected.items():
        assert f[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_tiny_world_fallbacks(tiny_feats, tiny_events):
    feats, block = tiny_feats
    sentinel = (tiny_events.cut_time - tiny_events.start_time) / DAY + 1
    # 104: add sku2, visit, remove sku2 on Wednesday 07-20 between 00:00 and 00:05; never bought
    f = feats[104]
    assert f["cart_removed_share"] == 1.0 and f["cart_bought_share"] == 0.0 and f["cart_open_share"] == 0.0
    assert f["price_buy_mean"] == -1 and f["price_buy_min"] == -1 and f["price_add_max"] == 50
    assert f["days_since_first_buy"] == pytest.approx(sentinel)
    assert f["days_since_last_search"] == pytest.approx(sentinel)
    assert f["weekday_share_2"] == 1.0 and f["hour_share_0"] == 1.0
    assert f["sessions"] == 1 and f["session_minutes_mean"] == pytest.approx(5.0) and f["days_between_sessions"] == -1
    # 102: one search only -> no products, no urls
    f = feats[102]
    assert f["distinct_queries"] == 1 and f["cart_bought_share"] == -1 and f["pop_sku_mean"] == -1
    assert f["pop_url_mean"] == -1 and f["count_search"] == 1 and f["count_all"] == 1
    # 999: no event at all: counts 0, days-since sentinel, means -1, and exactly the empty row
    f = feats[999]
    assert f["count_all"] == 0 and f["sessions"] == 0 and f["active_days"] == 0 and f["events_per_session"] == 0
    assert all(f[f"days_since_{w}_{k}"] == pytest.approx(sentinel) for w in ("first", "last")
               for k in ("all", "buy", "visit"))
    assert f["price_add_mean"] == -1 and f["pop_category_mean"] == -1 and f["cart_open_share"] == -1
    np.testing.assert_array_equal(block.vectors[-1], StatsEmbedder(progress=False).fit(tiny_events).empty_row_)
    assert block.meta["clients_without_events"] == 1
    assert np.isfinite(block.vectors).all() and block.vectors.dtype == np.float32


# ---------------------------------------------------------------------------------------------------------------
# A random world against a slow pure-Python reference
# ---------------------------------------------------------------------------------------------------------------
def random_world(root, seed=0, n_clients=25, n_events=600):
    rng = np.random.default_rng(seed)
    products = [(s, 10 + s % 4, int(rng.integers(0, 100))) for s in range(1, 16)]
    t0 = epoch("2022-06-01 00:00:00")
    events = defaultdict(list)
    for _ in range(n_events):
        kind = EVENT_TYPES[rng.choice(5, p=[0.15, 0.2, 0.1, 0.35, 0.2])]
        client = int(rng.integers(1, n_clients + 1))
        # bursts: times clustered so sessions and same-day events occur
        ts = t0 + int(rng.integers(0, 40)) * 86_400 + int(rng.integers(0, 3)) * 3600 + int(rng.integers(0, 2400))
        stamp = datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        item = int(rng.integers(1, 17)) if kind in EVENT_TYPES[:3] else int(rng.integers(0, 9))  # sku 16: unknown
        events[kind].append((client, stamp, item))
    return write_world(root, dict(events), products, list(range(1, n_clients + 1)))


def slow_reference(ev: EventTable, client_row: int) -> dict[str, float]:
    """A handful of features for one client row with plain Python loops."""
    lo, hi = int(ev.offsets[client_row]), int(ev.offsets[client_row + 1])
    evs = [(int(ev.timestamp[i]), int(ev.event_type[i]), int(ev.sku[i]), int(ev.category[i]), int(ev.price[i]),
            int(ev.url[i]), tuple(ev.query_codes[ev.query[i]].tolist()) if ev.query[i] >= 0 else None)
           for i in range(lo, hi)]
    cut = ev.cut_time
    out = {"count_all": len(evs), "count_buy_7d": sum(1 for e in evs if e[1] == 0 and cut - e[0] <= 7 * DAY)}
    out["active_days"] = len({e[0] // 86_400 for e in evs})
    out["distinct_skus"] = len({e[2] for e in evs if e[1] in (0, 1, 2) and e[2] >= 0})
    out["distinct_categories"] = len({e[3] for e in evs if e[1] in (0, 1, 2) and e[3] >= 0})
    out["distinct_urls"] = len({e[5] for e in evs if e[1] == 3})
    out["distinct_queries"] = len({e[6] for e in evs if e[1] == 4})
    buys = [e for e in evs if e[1] == 0 and e[4] >= 0]
    out["price_buy_max"] = max((e[4] for e in buys), default=-1)
    out["price_buy_mean"] = sum(e[4] for e in buys) / len(buys) if buys else -1
    first_add = {}
    for e in evs:
        if e[1] == 1 and e[2] >= 0:
            first_add.setdefault(e[2], e[0])
    bought = {s for s, t in first_add.items() if any(e[1] == 0 and e[2] == s and e[0] >= t for e in evs)}
    removed = {s for s, t in first_add.items() if any(e[1] == 2 and e[2] == s and e[0] >= t for e in evs)}
    n_add = len(first_add)
    out["cart_bought_share"] = len(bought) / n_add if n_add else -1
    out["cart_removed_share"] = len(removed) / n_add if n_add else -1
    out["cart_open_share"] = len(set(first_add) - bought - removed) / n_add if n_add else -1
    sessions, prev = 0, None
    for e in evs:
        if prev is None or e[0] - prev > 1800:
            sessions += 1
        prev = e[0]
    out["sessions"] = sessions
    out["days_since_last_visit"] = next(((cut - e[0]) / DAY for e in reversed(evs) if e[1] == 3),
                                        (cut - ev.start_time) / DAY + 1)
    out["weekday_share_6"] = sum(1 for e in evs if (e[0] // 86_400 + 3) % 7 == 6) / len(evs)
    return out


@pytest.fixture(scope="module")
def rand_events(tmp_path_factory):
    root = random_world(tmp_path_factory.mktemp("stats_rand") / "world")
    return EventTable.build(root, "raw", progress=False)


def test_matches_slow_reference_and_chunking(rand_events, monkeypatch):
    ev = rand_events
    ids = np.asarray(ev.client_ids)
    small = StatsEmbedder(chunk_events=37, progress=False).fit(ev).transform(ev, ids).vectors
    big = StatsEmbedder(progress=False).fit(ev).transform(ev, ids).vectors
    np.testing.assert_array_equal(small, big)  # chunk boundaries change nothing
    for threads in (1, 3):  # nor the threads that compute the chunks
        monkeypatch.setattr(chunks, "free_cores", lambda: threads)
        again = StatsEmbedder(chunk_events=37, progress=False).fit(ev).transform(ev, ids).vectors
        assert again.tobytes() == small.tobytes()
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    for r in range(len(ids)):
        for name, value in slow_reference(ev, r).items():
            assert big[r, col[name]] == pytest.approx(value, rel=1e-5, abs=1e-5), (int(ids[r]), name)
    # a permuted, partial, non-contiguous request returns the same rows in the requested order
    pick = ids[[7, 2, 11, 3]]
    sub = StatsEmbedder(progress=False).fit(ev).transform(ev, pick).vectors
    np.testing.assert_array_equal(sub, big[[7, 2, 11, 3]])


def test_transforms(rand_events):
    ev = rand_events
    ids = np.asarray(ev.client_ids)
    raw = StatsEmbedder(progress=False).fit(ev).transform(ev, ids).vectors
    log = StatsEmbedder(transform="log", progress=False).fit(ev).transform(ev, ids).vectors
    np.testing.assert_allclose(log, np.sign(raw) * np.log1p(np.abs(raw)), rtol=1e-6)
    q1 = StatsEmbedder(transform="quantile", seed=3, progress=False).fit(ev).transform(ev, ids).vectors
    q2 = StatsEmbedder(transform="quantile", seed=3, progress=False).fit(ev).transform(ev, ids).vectors
    np.testing.assert_array_equal(q1, q2)
    assert q1.min() >= 0 and q1.max() <= 1 and np.isfinite(q1).all()
    # the quantiles are fitted in fit (on the clients given, default all), so any request is scaled alike
    q = StatsEmbedder(transform="quantile", seed=3, progress=False)
    both = q.fit_transform(ev, ids[:20]).vectors
    np.testing.assert_array_equal(q.fit(ev, ids[:20]).transform(ev, ids[:20]).vectors, both)
    np.testing.assert_array_equal(q.transform(ev, ids[[4, 2]]).vectors, both[[4, 2]])


def test_helpers():
    import dataclasses

    from embedders.chunks import CHUNK_COLUMNS, EventChunk, empty_chunk
    assert tuple(f.name for f in dataclasses.fields(EventChunk))[2:] == CHUNK_COLUMNS  # n_rows, row, the columns
    assert empty_chunk(3).n_rows == 3 and all(len(getattr(empty_chunk(), c)) == 0 for c in CHUNK_COLUMNS)
    assert row_chunks(np.array([3, 3, 10, 1, 1]), 5) == [(0, 2), (2, 3), (3, 5)]
    assert row_chunks(np.array([], dtype=np.int64), 5) == []
    row = np.array([0, 0, 0, 2, 2])
    np.testing.assert_array_equal(distinct_count(row, 3, np.array([5, 5, 6, 1, 1])), [2, 0, 1])
    np.testing.assert_array_equal(distinct_count(row, 3, np.array([5, 5, 6, 1, 1]) - (1 << 40)), [2, 0, 1])
    np.testing.assert_array_equal(distinct_count(row, 3, np.array([5, 5, 6, 1, 1]), np.array([0, 1, 0, 0, 0])),
                                  [3, 0, 1])


def test_count_table_dense_and_sorted():
    t = CountTable().add(np.array([3, 1, 3])).add(np.array([7, 3]), np.array([2, 5]))
    np.testing.assert_array_equal(t.values, [1, 3, 7])
    np.testing.assert_array_equal(t.counts, [1, 7, 2])
    np.testing.assert_array_equal(t.lookup(np.array([3, 0, 7, 99, -1])), [7, 0, 2, 0, 0])
    t.add(np.array([-5, 1 << 40, 3]))  # out of the dense range: switches to sorted arrays, same answers
    np.testing.assert_array_equal(t.values, [-5, 1, 3, 7, 1 << 40])
    np.testing.assert_array_equal(t.counts, [1, 1, 8, 2, 1])
    np.testing.assert_array_equal(t.lookup(np.array([3, 0, 1 << 40, -5])), [8, 0, 1, 1])
    assert len(CountTable().lookup(np.array([1, 2]))) == 2


def test_dim_is_fixed():
    with pytest.raises(ValueError, match=str(N_FEATURES)):
        StatsEmbedder(dim=N_FEATURES - 1).validate()
    with pytest.raises(ValueError, match="transform"):
        StatsEmbedder(transform="zscore").validate()
    assert StatsEmbedder(transform="zscore").get_params()["transform"] == "zscore"  # params verbatim


def test_cli(tiny, tmp_path, capsys):
    out = tmp_path / "blocks" / "stats"
    assert main(["--data-dir", str(tiny), "--out", str(out), "--no-progress", "--transform", "log"]) == 0
    meta = json.loads((out / BLOCK_META_FILE).read_text())
    assert meta["feature_names"] == FEATURE_NAMES and meta["dim"] == N_FEATURES and meta["seconds"] >= 0
    assert "peak_rss_mb" in meta and meta["params"]["transform"] == "log"
    assert np.load(out / EMBEDDINGS_FILE).shape == (5, N_FEATURES)
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", str(tiny), "--out", str(out), "--dim", "10"])
    assert exc.value.code == 2 and "fixed width" in capsys.readouterr().err
    missing = tmp_path / "nowhere"
    assert main(["--data-dir", str(missing), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and ".parquet" in err


def test_gather_paths_agree(rand_events):
    """Contiguous rows, a short span (read then indexed) and far-apart rows (memory-map gather) give the same
    events as plain slicing."""
    from embedders.chunks import CHUNK_COLUMNS, gather
    ev = rand_events
    for rows in (np.arange(ev.n_clients), np.array([2, 3, 7, 11]), np.array([0, ev.n_clients - 1]), np.array([5])):
        c = gather(ev, rows)
        spans = [np.arange(ev.offsets[r], ev.offsets[r + 1]) for r in rows]
        pos = np.concatenate(spans)
        np.testing.assert_array_equal(c.row, np.repeat(np.arange(len(rows)), [len(s) for s in spans]))
        for col in CHUNK_COLUMNS:
            np.testing.assert_array_equal(getattr(c, col), np.asarray(getattr(ev, col))[pos], err_msg=col)
