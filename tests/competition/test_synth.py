"""Synthetic worlds: determinism, file format, realism statistics and the split/targets they feed."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from competition import synth
from competition.schema import (CATEGORY, CLIENT_ID, CODE_PATTERN, EVENT_TYPES, ITEM_COLUMN, NAME, PAGE_VISIT,
                                PRICE, PRODUCT_BUY, PRODUCT_PROPERTIES, PROPENSITY_NEW_SKU, QUERY, SEARCH_QUERY, SKU,
                                SKU_EVENTS, TIMESTAMP, TIMESTAMP_FORMAT, DataPaths)

SMALL = 300          # relevant clients of the determinism worlds
MEDIUM = 2000        # relevant clients of the realism world


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root (relative path -> hex)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".cache" not in p.parts}


def _raw(root: Path, seed: int, chunk: int = 200) -> Path:
    synth.write_raw_world(root, synth.world_spec(SMALL, seed, chunk_clients=chunk), progress=False)
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A ~2000-relevant-client world, split and with target lists."""
    return synth.generate_world(tmp_path_factory.mktemp("w2k"), MEDIUM, seed=7, chunk_clients=1000, progress=False)


@pytest.fixture(scope="module")
def events(world) -> pl.DataFrame:
    """All raw events: client_id, kind."""
    return pl.concat([pl.read_parquet(DataPaths(world).table(ev), columns=[CLIENT_ID])
                      .with_columns(pl.lit(ev).alias("kind")) for ev in EVENT_TYPES])


# ---------------------------------------------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------------------------------------------
def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a, b, c = _raw(tmp_path / "a", 3), _raw(tmp_path / "b", 3), _raw(tmp_path / "c", 4)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert len(da) == 10  # 6 parquet + relevant_clients.npy + truth/{clients,products}.parquet + world.json
    assert da == db
    differing = [k for k in da if k.endswith(".parquet") and da[k] != dc.get(k)]
    assert len(differing) >= 6


def test_full_world_deterministic_including_split(tmp_path):
    a = synth.generate_world(tmp_path / "a", SMALL, seed=5, chunk_clients=200, progress=False)
    b = synth.generate_world(tmp_path / "b", SMALL, seed=5, chunk_clients=200, progress=False)
    da, db = _digest(a), _digest(b)
    assert any(k.startswith("target/") for k in da) and any(k.startswith("input/") for k in da)
    assert da == db


def test_chunking_gives_a_valid_world_too(tmp_path):
    """Different chunk sizes need not be identical, but the counts are of the same size."""
    one = synth.write_raw_world(tmp_path / "one", synth.world_spec(SMALL, 3, chunk_clients=10_000), progress=False)
    many = synth.write_raw_world(tmp_path / "many", synth.world_spec(SMALL, 3, chunk_clients=100), progress=False)
    assert 0.5 < sum(one.values()) / sum(many.values()) < 2.0


def test_no_temporary_files_left(tmp_path):
    root = _raw(tmp_path / "w", 1)
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]


# ---------------------------------------------------------------------------------------------------------------
# Format
# ---------------------------------------------------------------------------------------------------------------
def test_codes_match_numpy_style_and_load_format():
    codes = np.array([[0, 9, 10, 99, 100, 255, 1, 2, 3, 4, 5, 6, 7, 8, 200, 55]] * 2
                     + [list(range(240, 256))], dtype=np.uint8)
    got = synth.codes_to_arrow(codes).to_pylist()
    assert got[0] == "[  0   9  10  99 100 255   1   2   3   4   5   6   7   8 200  55]"
    assert got[2] == np.array2string(codes[2])
    from competition.load import format_codes
    assert got == format_codes(codes).to_list()


def test_timestamps_match_strftime():
    start = datetime(2022, 6, 23)
    fmt = synth.TimestampFormatter(start, 140)
    secs = np.array([0, 1, 59, 3600, 86_399, 86_400, 140 * 86_400 - 1, 10_345_678])
    assert fmt(secs).to_pylist() == [(start + timedelta(seconds=int(s))).strftime(TIMESTAMP_FORMAT) for s in secs]
    with pytest.raises(ValueError):
        fmt(np.array([140 * 86_400]))


def test_file_schema_and_string_formats(world):
    paths = DataPaths(world)
    start, stop = datetime(2022, 6, 23), datetime(2022, 6, 23) + timedelta(days=140)
    for ev in EVENT_TYPES:
        table = pq.read_table(paths.table(ev))
        assert table.column_names == [CLIENT_ID, TIMESTAMP, ITEM_COLUMN[ev]]
        frame = pl.from_arrow(table)
        assert frame.schema[CLIENT_ID] == pl.Int64 and frame.schema[TIMESTAMP] == pl.String
        ts = frame[TIMESTAMP].str.strptime(pl.Datetime("us"), TIMESTAMP_FORMAT, strict=True)
        assert ts.min() >= start and ts.max() < stop
        if ev == SEARCH_QUERY:
            assert frame[QUERY].str.contains(CODE_PATTERN).all()
        else:
            assert frame.schema[ITEM_COLUMN[ev]] == pl.Int64
    props = pl.read_parquet(paths.table(PRODUCT_PROPERTIES))
    assert props.columns == [SKU, CATEGORY, "price", NAME]
    assert props[NAME].str.contains(CODE_PATTERN).all()
    assert props[SKU].is_unique().all() and props["price"].is_between(0, 99).all()
    assert sorted(props["price"].unique().to_list()) == list(range(100))  # quantile buckets
    meta = pq.ParquetFile(paths.table(PAGE_VISIT)).metadata.metadata
    assert set(meta) == {b"ARROW:schema"}  # no pandas metadata, no timestamps


def test_load_and_check_accept_the_world(world):
    from competition.load import check_data_dir
    rows = check_data_dir(world)
    assert rows["unknown_sku_events"] == 0 and rows[PAGE_VISIT] > 0


# ---------------------------------------------------------------------------------------------------------------
# Realism
# ---------------------------------------------------------------------------------------------------------------
def test_event_mix_close_to_target(events):
    share = events["kind"].value_counts(normalize=True)
    share = dict(zip(share["kind"], share["proportion"]))
    target = dict(zip(EVENT_TYPES, synth.TARGET_MIX))
    for kind, tol in [(PAGE_VISIT, 0.03), (SEARCH_QUERY, 0.015), ("add_to_cart", 0.01), ("remove_from_cart", 0.005),
                      (PRODUCT_BUY, 0.005)]:
        assert abs(share[kind] - target[kind]) < tol, (kind, share[kind])


def test_heavy_tailed_activity_and_relevant_subset(world, events):
    per_client = events.group_by(CLIENT_ID).len()
    counts = per_client["len"].to_numpy()
    assert counts.max() > 20 * np.median(counts)
    assert np.median(counts) < counts.mean() / 2
    relevant = np.load(DataPaths(world).relevant_clients)
    assert len(relevant) == MEDIUM and len(np.unique(relevant)) == MEDIUM and relevant.dtype == np.int64
    with_events = per_client[CLIENT_ID].to_numpy()
    assert np.isin(relevant, with_events).all()
    assert (~np.isin(with_events, relevant)).sum() > MEDIUM // 4  # non-relevant clients have events too


def test_names_similar_within_category(world):
    props = pl.read_parquet(DataPaths(world).table(PRODUCT_PROPERTIES))
    names = np.stack(props[NAME].str.extract_all(r"\d+").to_list()).astype(np.float64)
    cats = props[CATEGORY].to_numpy()
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(cats), (2, 20_000))
    dist = np.linalg.norm(names[i] - names[j], axis=1)
    same = cats[i] == cats[j]
    order = np.argsort(cats, kind="stable")  # neighbours in category order: mostly the same category
    a, b = order[:-1], order[1:]
    intra = np.linalg.norm(names[a] - names[b], axis=1)[cats[a] == cats[b]].mean()
    inter = dist[~same].mean()
    assert intra < 0.7 * inter


def test_queries_resemble_product_names(world):
    paths = DataPaths(world)
    props = pl.read_parquet(paths.table(PRODUCT_PROPERTIES))
    names = np.stack(props[NAME].str.extract_all(r"\d+").to_list()).astype(np.float32)
    queries = pl.read_parquet(paths.table(SEARCH_QUERY))[QUERY].head(1000)
    q = np.stack(queries.str.extract_all(r"\d+").to_list()).astype(np.float32)
    rng = np.random.default_rng(0)
    shuffled = np.take_along_axis(q, rng.permuted(np.tile(np.arange(16), (len(q), 1)), axis=1), axis=1)

    def nearest(x):
        d = (x ** 2).sum(1)[:, None] - 2 * x @ names.T + (names ** 2).sum(1)[None, :]
        return np.sqrt(np.maximum(d.min(axis=1), 0)).mean()

    assert nearest(q) < 0.6 * nearest(shuffled)


def test_new_products_have_no_input_events_and_are_bought(world):
    paths = DataPaths(world)
    truth = pl.read_parquet(paths.truth / "products.parquet")
    times = json.loads(paths.split_times.read_text())
    cut_day = (datetime.fromisoformat(times["train_target_start"]) - datetime(2022, 6, 23)).days
    late = truth.filter(pl.col("is_new") & (pl.col("release_day") >= cut_day))[SKU].to_numpy()
    assert len(late) > 0
    input_skus = pl.concat([pl.read_parquet(paths.table(ev, "input"), columns=[SKU]) for ev in SKU_EVENTS])[SKU]
    assert not np.isin(late, input_skus.to_numpy()).any()
    new_targets = np.load(paths.target_list(PROPENSITY_NEW_SKU))
    # Targets are skus without input events: mostly late releases (the rest: rarely seen old products).
    assert np.isin(new_targets, late).sum() >= 3
    bought = pl.concat([pl.read_parquet(p, columns=[SKU]) for p in (paths.train_target, paths.validation_target)])
    assert np.isin(late, bought[SKU].to_numpy()).sum() >= 3


def test_buyers_churn_and_targets(world):
    from competition.targets import task_dataset
    paths = DataPaths(world)
    active = np.load(paths.active_clients)
    assert 0.1 * MEDIUM < len(active) < 0.6 * MEDIUM
    churn = task_dataset(world, "churn")
    assert 0.4 < churn.y_train.mean() < 0.85
    times = __import__("json").loads(paths.split_times.read_text())
    end = datetime.fromisoformat(times["end"])
    assert datetime(2022, 6, 23) + timedelta(days=139) <= end < datetime(2022, 6, 23) + timedelta(days=140)
    for task in ("propensity_category", "propensity_sku", "propensity_price"):
        entries = np.load(paths.target_list(task))
        assert len(entries) >= 50


def test_truth_is_apart_and_complete(world, events):
    truth = DataPaths(world).truth
    clients = pl.read_parquet(truth / "clients.parquet")
    assert clients[CLIENT_ID].is_unique().all()
    assert set(events[CLIENT_ID].unique().to_list()) <= set(clients[CLIENT_ID].to_list())
    assert clients["relevant"].sum() == MEDIUM
    for column in ("session_rate", "price_level", "hazard", "taste_end_category", "taste_end_weight"):
        assert column in clients.columns
    weights = np.stack(clients["taste_start_weight"].to_list())
    assert np.allclose(weights.sum(axis=1), 1.0, atol=1e-4)
    products = pl.read_parquet(truth / "products.parquet")
    assert products[SKU].is_unique().all() and products["is_new"].sum() > 0


def test_cli_writes_raw_world(tmp_path, capsys):
    out = tmp_path / "cli"
    assert synth.main(["--out", str(out), "--clients", "50", "--seed", "1", "--no-split", "--no-progress"]) == 0
    assert "product_buy" in capsys.readouterr().out
    assert all(DataPaths(out).table(ev).is_file() for ev in EVENT_TYPES)
    with pytest.raises(SystemExit):
        synth.main(["--out", str(out), "--clients", "0"])


def test_world_shape_flags_products_and_light_visitors(tmp_path):
    """--products sets the catalogue; --other-clients beyond the default adds light visitors: every one appears,
    with far fewer events each than the default's non-relevant clients, and the relevant ones are unchanged."""
    default = synth.world_spec(200, 3, chunk_clients=10_000)
    assert default.n_other == 100 and default.other_activity == 1.0
    wide = synth.world_spec(200, 3, chunk_clients=10_000, products=900, other_clients=2_000)
    assert (wide.n_products, wide.n_other, wide.other_activity) == (900, 2_000, 0.05)
    assert synth.world_spec(200, 3, other_clients=50).other_activity == 1.0   # fewer: same activity

    def per_client(root: Path) -> pl.DataFrame:
        truth = pl.read_parquet(DataPaths(root).truth / "clients.parquet", columns=[CLIENT_ID, "relevant"])
        n = pl.concat([pl.read_parquet(DataPaths(root).table(ev), columns=[CLIENT_ID]) for ev in EVENT_TYPES])
        return truth.join(n.group_by(CLIENT_ID).len(), on=CLIENT_ID, how="left").fill_null(0)

    synth.write_raw_world(tmp_path / "d", default, progress=False)
    synth.write_raw_world(tmp_path / "w", wide, progress=False)
    d, w = per_client(tmp_path / "d"), per_client(tmp_path / "w")
    assert pq.read_metadata(DataPaths(tmp_path / "w").table(PRODUCT_PROPERTIES)).num_rows == 900
    visitors, others = w.filter(~pl.col("relevant")), d.filter(~pl.col("relevant"))
    assert visitors.height == 2_000 and visitors["len"].min() >= 1
    assert visitors["len"].mean() < 0.5 * others["len"].mean()
    assert visitors["len"].sum() < 3 * others["len"].sum()       # about the same non-relevant volume
    assert w.filter(pl.col("relevant")).height == 200
    with pytest.raises(ValueError, match="--products"):
        synth.world_spec(200, 3, products=10)
    with pytest.raises(ValueError, match="--other-clients"):
        synth.world_spec(200, 3, other_clients=-1)


def test_zipf_rank_bounds_and_skew():
    rng = np.random.default_rng(0)
    ranks = synth.zipf_rank(rng.random(100_000), 50, 1.2)
    assert ranks.min() == 0 and ranks.max() <= 49
    counts = np.bincount(ranks, minlength=50)
    assert counts[0] > 5 * counts[10] > 0


def test_zipf_rank_c_matches_the_truncated_formula():
    """The clipped fast path gives the ranks of min(int(x), n - 1), float32 and float64, including the top."""
    rng = np.random.default_rng(1)
    n = rng.integers(2, 5_000, 200_000)
    for dtype in (np.float32, np.float64):
        u = rng.random(len(n), dtype=dtype)
        u[:50] = np.nextafter(dtype(1), dtype(0))   # the largest uniforms land on the top rank
        c = (np.power(n + 1.0, 1.0 - 0.9) - 1.0).astype(dtype)
        x = np.exp(np.log1p(u * c) * (1.0 / (1.0 - 0.9))) - 1.0
        expected = np.minimum(x.astype(np.int64), n - 1)
        got = synth.zipf_rank_c(u, c, (n - 1).astype(dtype), 0.9)
        assert got.dtype == np.int64 and np.array_equal(got, expected)
        assert (got == n - 1).any()


def test_fast_paths_give_the_reference_values():
    """The packed sort equals np.lexsort (ties kept in order) and style_match equals (a * b).sum(axis=1)."""
    rng = np.random.default_rng(2)
    client, seconds = np.sort(rng.integers(0, 300, 50_000)), rng.integers(0, 1_000, 50_000)
    client = np.concatenate([client, rng.integers(0, 300, 20_000)])   # a second, unsorted part, as in _sessions
    seconds = np.concatenate([seconds, rng.integers(0, 1_000, 20_000)])
    tag = np.arange(len(client))
    order = np.lexsort((seconds, client))
    for got, want in zip(synth._by_client_time(client, seconds, tag), (client[order], seconds[order], order)):
        assert np.array_equal(got, want)
    negative = seconds - 500   # the lexsort fallback
    assert np.array_equal(synth._by_client_time(client, negative, tag)[2], np.lexsort((negative, client)))
    a, b = (rng.standard_normal((100_000, synth.STYLE_DIM)).astype(np.float32) for _ in range(2))
    assert np.array_equal(synth.style_match(a, b), (a * b).sum(axis=1))


def test_event_files_keep_dictionaries_except_for_timestamps(world):
    for ev in EVENT_TYPES:
        column = {c.path_in_schema: c for c in (pq.ParquetFile(DataPaths(world).table(ev)).metadata
                                                .row_group(0).column(i) for i in range(3))}
        assert not any("DICTIONARY" in e for e in column[TIMESTAMP].encodings), ev
        assert any("DICTIONARY" in e for e in column[CLIENT_ID].encodings), ev


def test_report_shows_learnable_tasks(world):
    from competition import synth_report
    report = synth_report.build_report(world, seed=0, n_targets=1, progress=False)
    assert set(report["auroc"]) == set(report["labels"]) and len(report["auroc"]) == 6
    assert abs(sum(report["events"]["mix"].values()) - 1) < 1e-9
    churn = report["auroc"]["churn"]
    assert churn["rf"] > 0.6 and churn["latent"] > 0.6
    cat = report["auroc"]["propensity_category"]
    assert cat["targets_evaluated"] == 1 and cat["latent+rf"] > 0.6
    assert "AUROC" in synth_report.format_report(report)


# ---------------------------------------------------------------------------------------------------------------
# Mechanisms (docs/synthetic_worlds.md): each visible in the events and tied to its latent in truth/
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def truth(world):
    t = DataPaths(world).truth
    return pl.read_parquet(t / "clients.parquet"), pl.read_parquet(t / "products.parquet")


def _buys(world) -> pl.DataFrame:
    return pl.read_parquet(DataPaths(world).table(PRODUCT_BUY)).with_columns(
        pl.col(TIMESTAMP).str.to_datetime(TIMESTAMP_FORMAT))


def _style_match(frame: pl.DataFrame, truth) -> np.ndarray:
    """<product style, client style> per row of a frame with client_id and sku."""
    clients, products = truth
    f = (frame.join(clients.select(CLIENT_ID, pl.col("style").alias("cs")), on=CLIENT_ID)
         .join(products.select(SKU, pl.col("style").alias("ps")), on=SKU))
    return (np.stack(f["cs"].to_list()) * np.stack(f["ps"].to_list())).sum(axis=1)


def test_style_is_written_in_the_names_and_drives_choices(world, truth):
    _, products = truth
    names = np.stack(pl.read_parquet(DataPaths(world).table(PRODUCT_PROPERTIES))
                     .join(products.select(SKU), on=SKU, how="right")  # products truth order
                     .select(pl.col(NAME).str.extract_all(r"\d+"))[NAME].to_list()).astype(np.float64)
    style = np.stack(products["style"].to_list())
    cat = products["category_index"].to_numpy()
    means = np.stack([np.bincount(cat, names[:, j]) / np.bincount(cat) for j in range(names.shape[1])], axis=1)
    x = np.hstack([names - means[cat], np.ones((len(cat), 1))])
    fit = np.linalg.lstsq(x, style, rcond=None)[0]
    r2 = 1 - ((x @ fit - style) ** 2).sum() / ((style - style.mean(0)) ** 2).sum()
    assert r2 > 0.6                                   # a product's style can be read from its name codes
    assert _style_match(_buys(world), truth).mean() > 0.25   # 0 for choices blind to style


def test_new_products_are_adopted_by_style_affinity(world, truth):
    _, products = truth
    new = products.filter(pl.col("is_new"))[SKU].to_numpy()
    buys = _buys(world).filter(pl.col(SKU).is_in(new))
    assert len(buys) > 20 and _style_match(buys, truth).mean() > 0.4


def test_consumables_are_replenished_on_their_cycle(world, truth):
    _, products = truth
    buys = (_buys(world).join(products.select(SKU, "consumable", "cycle_days"), on=SKU).sort(CLIENT_ID, TIMESTAMP)
            .with_columns(gap=pl.col(TIMESTAMP).diff().dt.total_seconds().over(CLIENT_ID, SKU) / 86_400))
    share = buys.group_by("consumable").agg(pl.col("gap").is_not_null().mean())
    share = dict(zip(share["consumable"], share["gap"]))
    assert share[True] > 2 * share[False]             # consumables are re-bought far more often
    ratio = buys.filter(pl.col("consumable") & pl.col("gap").is_not_null()).select(
        pl.col("gap") / pl.col("cycle_days"))["gap"].to_numpy()
    assert len(ratio) > 50 and 0.6 < np.median(ratio) < 1.6   # ... about one cycle after the previous buy


def test_sessions_narrow_towards_the_product_bought(world, truth):
    """Views of the product finally bought are more frequent late in its session than early (order matters)."""
    _, products = truth
    paths = DataPaths(world)
    url_sku = products.select(pl.col("url").alias(ITEM_COLUMN[PAGE_VISIT]), SKU)
    views = (pl.read_parquet(paths.table(PAGE_VISIT)).join(url_sku, on=ITEM_COLUMN[PAGE_VISIT])
             .select(CLIENT_ID, TIMESTAMP, SKU, pl.lit(0).alias("buy")))
    buys = pl.read_parquet(paths.table(PRODUCT_BUY)).select(CLIENT_ID, TIMESTAMP, SKU, pl.lit(1).alias("buy"))
    ev = (pl.concat([views, buys]).with_columns(pl.col(TIMESTAMP).str.to_datetime(TIMESTAMP_FORMAT))
          .sort(CLIENT_ID, TIMESTAMP, "buy")
          .with_columns(gap=pl.col(TIMESTAMP).diff().dt.total_seconds().over(CLIENT_ID))
          .with_columns(session=(pl.col("gap").is_null() | (pl.col("gap") > 1800)).cast(pl.Int64).cum_sum()))
    first_buy = ev.filter(pl.col("buy") == 1).group_by("session").agg(
        pl.col(SKU).first().alias("bought"), pl.col(TIMESTAMP).min().alias("t_buy"))
    seen = (ev.filter(pl.col("buy") == 0).join(first_buy, on="session").filter(pl.col(TIMESTAMP) < pl.col("t_buy"))
            .with_columns(rel=pl.int_range(pl.len()).over("session") / pl.len().over("session"),
                          hit=pl.col(SKU) == pl.col("bought"))
            .filter(pl.len().over("session") >= 3))
    early = seen.filter(pl.col("rel") < 0.34)["hit"].mean()
    late = seen.filter(pl.col("rel") >= 0.67)["hit"].mean()
    assert late > 1.5 * early


def test_buy_now_and_abandoned_carts(world):
    from competition.synth_report import realism_statistics
    r = realism_statistics(world)
    assert 0.15 < r["buy_after_cart_share"] < 0.7     # many buys without an add_to_cart (was 1.0)
    assert r["cart_abandoned_share"] > 0.5 and 0.02 < r["cart_removed_share"] < 0.4
    assert r["adds_per_buy"] > 1.5
    assert 2 <= r["events_per_session_p50"] <= 5 and 30 <= r["session_gap_p50_seconds"] <= 90


# ---------------------------------------------------------------------------------------------------------------
# Realism statistics
# ---------------------------------------------------------------------------------------------------------------
def test_realism_statistics_by_hand(raw_world):
    """The standard tiny world (tests/worlds.py): relevant clients 100..104 (105 is not relevant)."""
    from competition.synth_report import realism_statistics
    r = realism_statistics(raw_world)
    assert r["clients"] == 5
    assert r["repeat_buy_share"] == pytest.approx(1 / 8)       # 100 buys sku 1 twice; 8 buys
    assert r["buy_after_cart_share"] == pytest.approx(2 / 8)   # both of 100's sku-1 buys follow its add
    assert r["adds_per_buy"] == pytest.approx(3 / 8)
    assert r["cart_abandoned_share"] == pytest.approx(2 / 3)   # adds (100, 1) bought, (104, 2), (101, 6) not
    assert r["cart_removed_share"] == pytest.approx(1 / 3)     # (104, 2) removed
    assert r["repeat_visit_share"] == 0.0
    short = realism_statistics(raw_world, window_days=1)       # the last day: 100's buy at the end only
    assert short["repeat_buy_share"] == 0.0 and short["buy_after_cart_share"] == 0.0


def test_realism_cli(world, capsys):
    from competition import synth_report
    assert synth_report.main(["--data-dir", str(world), "--realism", "--max-clients", "500"]) == 0
    out = capsys.readouterr().out
    assert "repeat_visit_share" in out and "taobao" in out and "last 9d" in out


# ---------------------------------------------------------------------------------------------------------------
# New arrivals (WorldSpec.new_arrivals): new-product purchases predictable from the user's content taste
# ---------------------------------------------------------------------------------------------------------------
ARRIVALS = 0.3


@pytest.fixture(scope="module")
def arrivals_world(tmp_path_factory) -> Path:
    """The realism world's seed and size with new-arrivals sessions."""
    return synth.generate_world(tmp_path_factory.mktemp("arrivals"), MEDIUM, seed=7, chunk_clients=1000,
                                progress=False, new_arrivals=ARRIVALS)


def _new_buys(world: Path) -> tuple[pl.DataFrame, tuple]:
    """Every buy with its product's is_new and price bucket, and the world's (clients, products) truth."""
    t = DataPaths(world).truth
    truth = pl.read_parquet(t / "clients.parquet"), pl.read_parquet(t / "products.parquet")
    buys = _buys(world).join(truth[1].select(SKU, "is_new", PRICE), on=SKU)
    return buys, truth


def test_new_arrivals_off_by_default_and_validated(tmp_path):
    assert synth.world_spec(200, 3).new_arrivals == 0.0
    with pytest.raises(ValueError, match="--new-arrivals"):
        synth.world_spec(200, 3, new_arrivals=1.5)
    a = synth.write_raw_world(tmp_path / "a", synth.world_spec(SMALL, 3, chunk_clients=200), progress=False)
    b = synth.write_raw_world(tmp_path / "b", synth.world_spec(SMALL, 3, chunk_clients=200, new_arrivals=0.3),
                              progress=False)
    c = synth.write_raw_world(tmp_path / "c", synth.world_spec(SMALL, 3, chunk_clients=200, new_arrivals=0.3),
                              progress=False)
    assert a.keys() == b.keys()
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert db == dc                                              # deterministic
    assert da[f"{PRODUCT_PROPERTIES}.parquet"] == db[f"{PRODUCT_PROPERTIES}.parquet"]   # same catalogue
    assert da[f"{PRODUCT_BUY}.parquet"] != db[f"{PRODUCT_BUY}.parquet"]


def test_new_arrivals_latent_in_truth(arrivals_world):
    t = DataPaths(arrivals_world).truth
    clients = pl.read_parquet(t / "clients.parquet")
    share = clients["arrival_share"].to_numpy()
    assert np.allclose(share, np.minimum(ARRIVALS * clients["novelty"].to_numpy(), 1.0))
    assert __import__("json").loads((t / "world.json").read_text())["spec"]["new_arrivals"] == ARRIVALS


def test_new_arrivals_sell_new_products_by_content_taste(world, arrivals_world):
    """More purchases go to new products, chosen across categories by the client's content taste: much closer to
    its price level than the default world's new-product purchases (same seed), as well matched in style."""
    stats = {}
    for name, w in (("default", world), ("arrivals", arrivals_world)):
        buys, truth = _new_buys(w)
        new = buys.filter(pl.col("is_new"))
        level = new.join(truth[0].select(CLIENT_ID, "price_level"), on=CLIENT_ID)
        stats[name] = {"share": new.height / buys.height, "match": _style_match(new, truth).mean(),
                       "price_gap": (level[PRICE] - level["price_level"]).abs().mean()}
    d, a = stats["default"], stats["arrivals"]
    assert a["share"] > 1.5 * d["share"]
    assert a["price_gap"] < 0.8 * d["price_gap"]        # measured 17.7 vs 27.7 buckets
    assert a["match"] > d["match"] - 0.02               # style still decides (0.70 vs 0.68)


def test_new_arrivals_targets_depend_on_the_arrival_share(arrivals_world):
    """Clients with a larger share of new-arrivals sessions buy more of the propensity_new_sku targets."""
    paths = DataPaths(arrivals_world)
    targets = np.load(paths.target_list(PROPENSITY_NEW_SKU))
    bought = pl.concat([pl.read_parquet(p, columns=[CLIENT_ID, SKU]) for p in
                        (paths.train_target, paths.validation_target)]).filter(pl.col(SKU).is_in(targets))
    clients = pl.read_parquet(paths.truth / "clients.parquet", columns=[CLIENT_ID, "arrival_share", "relevant"])
    n = clients.join(bought.group_by(CLIENT_ID).len(), on=CLIENT_ID, how="left").fill_null(0)
    hi = n.filter(pl.col("arrival_share") > pl.col("arrival_share").median())["len"].mean()
    lo = n.filter(pl.col("arrival_share") <= pl.col("arrival_share").median())["len"].mean()
    assert hi > 1.3 * lo
