"""The oracle block of a synthetic world: shape, ids aligned to the relevant clients, flags, and the errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from competition import synth
from competition.schema import DataPaths
from embedders.base import Block, read_block
from validate import oracle

CLIENTS = 300


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return synth.generate_world(tmp_path_factory.mktemp("oracle") / "w", CLIENTS, seed=11, chunk_clients=500,
                                progress=False)


@pytest.fixture(scope="module")
def block_dir(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("oracle_block") / "oracle"
    assert oracle.main(["--data-dir", str(world), "--out", str(out), "--no-progress"]) == 0
    return out


def test_block_shape_ids_and_meta(world, block_dir):
    block = read_block(block_dir)
    relevant = np.load(DataPaths(world).relevant_clients)
    assert np.array_equal(block.client_ids, relevant)           # the relevant clients, in their file's order
    assert block.vectors.dtype == np.float32 and np.isfinite(block.vectors).all()
    assert np.load(block_dir / "embeddings.npy").dtype == np.float32
    meta = json.loads((block_dir / "meta.json").read_text())
    assert meta["oracle"] is True and meta["embedder"] == "oracle"
    assert len(meta["columns"]) == block.dim
    # standardised columns (constant ones are 0)
    assert np.allclose(block.vectors.mean(axis=0), 0.0, atol=1e-3)
    sd = block.vectors.std(axis=0)
    assert np.all((np.abs(sd - 1.0) < 1e-3) | (sd < 1e-6))
    # every latent of truth/ is there: activity, death day, price level, style; and one column per target entry
    for column in ("log_session_rate", "death_day", "price_level", "style_0", "replenish_pace",
                   "validation_log_purchase_sessions"):
        assert column in meta["columns"], column
    n_targets = sum(len(np.load(DataPaths(world).target_list(t)))
                    for t in ("propensity_category", "propensity_sku", "propensity_new_sku", "propensity_price"))
    assert sum(c.startswith("propensity_") for c in meta["columns"]) == n_targets


def test_oracle_knows_the_category_tastes(world):
    """The oracle's category column is high for the clients that buy that category in the validation window."""
    import polars as pl
    block = oracle.oracle_block(world, progress=False)
    names = block.meta["columns"]
    cats = np.load(DataPaths(world).target_list("propensity_category"))
    window = pl.read_parquet(DataPaths(world).validation_target)
    top = int(cats[0])
    buyers = np.isin(block.client_ids, window.filter(pl.col("category") == top)["client_id"].to_numpy())
    col = block.vectors[:, names.index(f"propensity_category_{top}")]
    assert buyers.sum() > 0 and col[buyers].mean() > col[~buyers].mean() + 0.5


def test_is_oracle(block_dir):
    block = read_block(block_dir)
    assert oracle.is_oracle(block) and oracle.is_oracle(block.meta) and oracle.is_oracle(block_dir)
    assert oracle.is_oracle({"embedder": "oracle"}) and oracle.is_oracle({"oracle": True})
    plain = Block(np.arange(3), np.zeros((3, 2)), {"name": "stats", "embedder": "stats"})
    assert not oracle.is_oracle(plain) and not oracle.is_oracle({}) and not oracle.is_oracle(block_dir / "absent")


def test_clear_error_without_truth(world, tmp_path, capsys):
    real = tmp_path / "real"
    shutil.copytree(world, real, ignore=shutil.ignore_patterns("truth"))
    with pytest.raises(oracle.OracleError, match="truth"):
        oracle.oracle_block(real, progress=False)
    assert oracle.main(["--data-dir", str(real), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truth" in err[0] and "synthetic" in err[0]
    assert not (tmp_path / "o").exists()


def test_clear_error_without_target_lists(world, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(world, raw)
    DataPaths(raw).target_list("propensity_sku").unlink()
    with pytest.raises(oracle.OracleError, match="target lists"):
        oracle.oracle_block(raw, progress=False)


def test_oracle_on_a_client_sample_is_the_full_block_restricted(world):
    """client_ids: the same latents for those clients (restandardised over them; a heavy-tail log is decided on
    the sample, so a few columns may differ in form), in sorted order; clients outside the relevant ones are
    refused."""
    full = oracle.oracle_block(world, progress=False)
    sample = np.random.default_rng(0).choice(full.client_ids, 60, replace=False)
    part = oracle.oracle_block(world, progress=False, client_ids=sample)
    assert np.array_equal(part.client_ids, np.sort(sample))
    common = [c for c in part.meta["columns"] if c in full.meta["columns"]]
    assert len(common) > 0.9 * len(full.meta["columns"])
    rows = full.vectors[np.searchsorted(full.client_ids, part.client_ids)][
        :, [full.meta["columns"].index(c) for c in common]]
    part_vectors = part.vectors[:, [part.meta["columns"].index(c) for c in common]]
    varying = (rows.std(axis=0) > 1e-3) & (part_vectors.std(axis=0) > 1e-3)
    assert varying.sum() > 10
    r = [np.corrcoef(rows[:, j], part_vectors[:, j])[0, 1] for j in np.flatnonzero(varying)]
    assert min(r) > 0.999
    with pytest.raises(oracle.OracleError, match="not relevant"):
        oracle.oracle_block(world, progress=False, client_ids=np.array([-5], dtype=np.int64))


def test_choice_model_follows_new_arrivals(world):
    """With new-arrivals sessions (competition.synth WorldSpec.new_arrivals) the oracle's choice model moves a
    client's purchases towards recent releases in proportion to its arrival share, and keeps them a distribution."""
    import polars as pl
    truth = DataPaths(world).truth
    clients, products = pl.read_parquet(truth / "clients.parquet"), pl.read_parquet(truth / "products.parquet")
    spec = json.loads((truth / "world.json").read_text())["spec"]
    day = spec["days"] - 10.0
    off = oracle.ChoiceModel(products, {**spec, "new_arrivals": 0.0}, day)
    on = oracle.ChoiceModel(products, {**spec, "new_arrivals": 0.5}, day)
    assert on.recent.any()
    p_off, p_on = off.product_probability(clients), on.product_probability(clients)
    recent_off, recent_on = p_off[:, off.recent].sum(axis=1), p_on[:, on.recent].sum(axis=1)
    share = np.minimum(0.5 * clients["novelty"].to_numpy(), 1.0)
    assert np.allclose(recent_on, (1 - share) * recent_off + share, atol=1e-4)
    assert np.allclose(p_on.sum(axis=1), (1 - share) * p_off.sum(axis=1) + share, atol=1e-4)


def test_knowable_oracle_reads_nothing_after_the_cut(world, tmp_path, capsys):
    """The knowable oracle censors the alive interval and the purchasing phase at the input period's end: moving
    every death, purchasing start and stop that falls after the cut to another day after it changes the oracle but
    not the knowable oracle (same seed, same bytes); the realised past is kept (a day before the cut moved does
    change it)."""
    import polars as pl
    from datetime import datetime

    from competition.split import read_split_times
    truth = DataPaths(world).truth
    spec = json.loads((truth / "world.json").read_text())["spec"]
    cut = (read_split_times(world).train_target_start - datetime.fromisoformat(spec["start"])).total_seconds() / 86400
    moved = tmp_path / "moved"
    shutil.copytree(world, moved)
    clients = pl.read_parquet(truth / "clients.parquet")
    later = {c: pl.when(pl.col(c) > cut).then(pl.col(c) + 7.0).otherwise(pl.col(c)).alias(c)
             for c in oracle.FUTURE_DAYS}
    clients.with_columns(*later.values()).write_parquet(DataPaths(moved).truth / "clients.parquet")
    assert oracle.main(["--data-dir", str(world), "--out", str(tmp_path / "k"), "--knowable", "--seed", "3",
                        "--no-progress"]) == 0
    assert "knowable_oracle" in capsys.readouterr().out
    same = oracle.oracle_block(moved, progress=False, seed=3, knowable=True)
    knowable = read_block(tmp_path / "k")
    assert knowable.meta["knowable"] is True and knowable.meta["name"] == "knowable_oracle"
    assert oracle.is_oracle(knowable)
    assert same.vectors.tobytes() == knowable.vectors.tobytes()
    plain, plain_moved = (oracle.oracle_block(w, progress=False) for w in (world, moved))
    assert not np.array_equal(plain.vectors, plain_moved.vectors)
    names = knowable.meta["columns"]
    assert {f"{c}_passed" for c in oracle.FUTURE_DAYS} <= set(names)
    bare = lambda cols: {c.removeprefix("log_") for c in cols}  # noqa: E731 (a censored day may lose its log form)
    assert bare(plain.meta["columns"]) <= bare(names)
    # the past is known: a death before the cut moved earlier changes it
    died = clients.filter(pl.col("relevant") & (pl.col("death_day") < cut - 2))
    assert died.height > 0
    earlier = clients.with_columns(pl.when(pl.col("death_day") < cut - 2).then(pl.col("death_day") - 1.0)
                                   .otherwise(pl.col("death_day")).alias("death_day"))
    earlier.write_parquet(DataPaths(moved).truth / "clients.parquet")
    assert not np.array_equal(oracle.oracle_block(moved, progress=False, seed=3, knowable=True).vectors,
                              knowable.vectors)


def test_knowable_oracle_draws_by_chunks_of_clients(world, monkeypatch):
    """Above FUTURE_CHUNK clients the futures are drawn a chunk at a time (the draws are clients x futures x 3):
    the same columns, the same bytes twice, and window columns that agree with one draw for all."""
    whole = oracle.oracle_block(world, progress=False, seed=3, knowable=True)
    monkeypatch.setattr(oracle, "FUTURE_CHUNK", 100)
    chunked = oracle.oracle_block(world, progress=False, seed=3, knowable=True)
    again = oracle.oracle_block(world, progress=False, seed=3, knowable=True)
    assert chunked.meta["columns"] == whole.meta["columns"] and chunked.vectors.tobytes() == again.vectors.tobytes()
    j = whole.meta["columns"].index("validation_buying_share")
    assert not np.array_equal(chunked.vectors[:, j], whole.vectors[:, j])  # other draws ...
    assert np.corrcoef(chunked.vectors[:, j], whole.vectors[:, j])[0, 1] > 0.99  # ... of the same expectation
