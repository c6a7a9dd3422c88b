"""embedders.multitask: windows and their labels, the no-leak guarantee, determinism, resume, stacking, the CLI."""
from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from competition import synth
from competition.events import EventTable
from competition.load import read_relevant_clients
from competition.schema import (PRODUCT_BUY, PROPENSITY_CATEGORY, PROPENSITY_NEW_SKU, PROPENSITY_PRICE,
                                PROPENSITY_SKU, SKU_EVENTS, DataPaths, EVENT_TYPES)
from embedders.base import Block, read_block, write_block
from embedders.cli import embed
from embedders.multitask import MultiTaskEmbedder
from embedders.multitask.inputs import BlockInputs, InputError, check_anchor, parse_input
from embedders.multitask.train import parse_loss_weights
from embedders.multitask.windows import DAY_S, anchor_times, first_seen, window_labels, windows_labels
from embedders.stats import StatsEmbedder

REPO = Path(__file__).resolve().parents[2]
#: A network small enough for a test: a few seconds per fit on a 300-client world.
SMALL = dict(dim=12, thin=24, wide=32, residual_blocks=1, item_dim=8, epochs=2, batch_size=64, windows=3,
             progress=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return synth.generate_world(tmp_path_factory.mktemp("mt") / "w", 300, seed=31, chunk_clients=300, progress=False)


@pytest.fixture(scope="module")
def events(world):
    return EventTable.build(world, "input", progress=False)


def fit_block(events, work: Path, **kw) -> Block:
    params = {**SMALL, "work_dir": str(work), **kw}
    emb = MultiTaskEmbedder(**params)
    return emb.fit(events).transform(events, read_relevant_clients(events.data_dir))


# -- EventTable.before -------------------------------------------------------------------------------------------
def test_before_keeps_exactly_the_earlier_events(events):
    t = int(events.cut_time) - 20 * DAY_S
    cut = events.before(t, chunk_events=997)  # chunks that split clients
    assert cut.cut_time == t and cut.fingerprint != events.fingerprint
    keep = np.asarray(events.timestamp) < t
    owner = np.repeat(np.asarray(events.client_ids), events.lengths)
    np.testing.assert_array_equal(cut.timestamp, np.asarray(events.timestamp)[keep])
    np.testing.assert_array_equal(cut.sku, np.asarray(events.sku)[keep])
    np.testing.assert_array_equal(cut.client_ids, np.unique(owner[keep]))
    np.testing.assert_array_equal(np.repeat(cut.client_ids, cut.lengths), owner[keep])
    assert cut.n_clients < events.n_clients  # some clients start after t and are gone
    with pytest.raises(ValueError, match="cannot be cut later"):
        events.before(int(events.cut_time) + 1)


def test_before_a_sample_keeps_exactly_its_earlier_events(events):
    t = int(events.cut_time) - 20 * DAY_S
    ids = np.asarray(events.client_ids)[::3]
    cut = events.before(t, client_ids=np.concatenate([ids[::-1], [-5]]))  # any order; an unknown id is ignored
    whole = events.before(t)
    assert cut.cut_time == t and cut.fingerprint not in (whole.fingerprint, events.fingerprint)
    owner = np.repeat(np.asarray(events.client_ids), events.lengths)
    keep = (np.asarray(events.timestamp) < t) & np.isin(owner, ids)
    for col in ("timestamp", "sku", "event_type", "url", "query"):
        np.testing.assert_array_equal(getattr(cut, col), np.asarray(getattr(events, col))[keep])
    np.testing.assert_array_equal(cut.client_ids, np.unique(owner[keep]))
    np.testing.assert_array_equal(np.repeat(cut.client_ids, cut.lengths), owner[keep])
    assert 0 < cut.n_clients < whole.n_clients


def test_training_sample_cuts_hold_the_sample_alone(events, tmp_path, monkeypatch):
    sizes = []
    real = EventTable.before

    def spy(self, t, chunk_events=20_000_000, client_ids=None):
        cut = real(self, t, chunk_events, client_ids)
        sizes.append(cut.n_clients)
        return cut

    monkeypatch.setattr(EventTable, "before", spy)
    block = fit_block(events, tmp_path, max_train_clients=40, epochs=1)
    assert sizes and max(sizes) <= 40  # each window's table: the 40 training clients' events
    ids = read_relevant_clients(events.data_dir)
    assert block.vectors.shape[0] == len(ids) and np.isfinite(block.vectors).all()  # everyone embedded


# -- windows -----------------------------------------------------------------------------------------------------
def test_anchor_times_step_back_from_the_end(events):
    got = anchor_times(events, 3)
    cut = int(events.cut_time)
    assert got == [cut - 14 * DAY_S, cut - 28 * DAY_S, cut - 42 * DAY_S]
    assert anchor_times(events, 2, horizon_days=7, stride_days=10) == [cut - 7 * DAY_S, cut - 17 * DAY_S]
    assert len(anchor_times(events, 100)) < 100  # anchors without a week of history before them are dropped
    with pytest.raises(ValueError, match="too short"):
        anchor_times(events, 1, horizon_days=400)


def _slow_labels(world: Path, anchor: int, clients: np.ndarray) -> dict:
    """The six tasks' definitions written out with Python loops over the input files."""
    paths = DataPaths(world)
    ts = lambda s: int(datetime.strptime(s, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp())  # noqa
    props = {r["sku"]: (r["category"], r["price"]) for r in pl.read_parquet(paths.table("product_properties")).iter_rows(named=True)}
    end = anchor + 14 * DAY_S
    window, old, buyers_before = [], set(), set()
    for kind in SKU_EVENTS:
        for r in pl.read_parquet(paths.table(kind, "input")).iter_rows(named=True):
            t = ts(r["timestamp"]) if isinstance(r["timestamp"], str) else int(r["timestamp"].timestamp())
            if t < anchor:
                old.add(r["sku"])
                if kind == PRODUCT_BUY:
                    buyers_before.add(r["client_id"])
            elif t < end and kind == PRODUCT_BUY:
                window.append((r["client_id"], r["sku"]) + props.get(r["sku"], (None, None)))

    def top(values, k=100):
        counts = {}
        for v in values:
            if v is not None:
                counts[v] = counts.get(v, 0) + 1
        return [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:k]

    lists = {PROPENSITY_CATEGORY: top(w[2] for w in window), PROPENSITY_SKU: top(w[1] for w in window),
             PROPENSITY_NEW_SKU: top(w[1] for w in window if w[1] not in old),
             PROPENSITY_PRICE: sorted({w[3] for w in window if w[3] is not None})}
    col = {PROPENSITY_CATEGORY: 2, PROPENSITY_SKU: 1, PROPENSITY_NEW_SKU: 1, PROPENSITY_PRICE: 3}
    bought = {c: [w for w in window if w[0] == c] for c in clients}
    return {"lists": lists, "no_buy": [int(not bought[c]) for c in clients],
            "active": [c in buyers_before for c in clients],
            "labels": {t: [[int(any(w[col[t]] == e for w in bought[c])) for e in lists[t]] for c in clients]
                       for t in lists}}


def test_window_labels_equal_a_slow_reference(world, events):
    clients = read_relevant_clients(world)
    for anchor in anchor_times(events, 2):
        got = window_labels(events, anchor, clients)
        ref = _slow_labels(world, anchor, clients)
        np.testing.assert_array_equal(got.no_buy, ref["no_buy"])
        np.testing.assert_array_equal(got.active, ref["active"])
        assert (got.no_buy == 0).sum() > 5  # the window has buyers: the comparison means something
        for task, entries in ref["lists"].items():
            np.testing.assert_array_equal(got.entries[task], entries, err_msg=task)
            np.testing.assert_array_equal(got.labels[task], np.array(ref["labels"][task]).reshape(len(clients), -1),
                                          err_msg=task)


def test_windows_labels_in_one_pass_equal_each_window_alone(events):
    clients = read_relevant_clients(events.data_dir)
    anchors = anchor_times(events, 3)
    together = windows_labels(events, anchors, clients)
    assert [w.anchor for w in together] == anchors
    for anchor, got in zip(anchors, together):
        alone = window_labels(events, anchor, clients)
        np.testing.assert_array_equal(got.no_buy, alone.no_buy)
        np.testing.assert_array_equal(got.active, alone.active)
        for task in alone.labels:
            np.testing.assert_array_equal(got.entries[task], alone.entries[task], err_msg=task)
            np.testing.assert_array_equal(got.labels[task], alone.labels[task], err_msg=task)
    # the windows differ: a shared pass did not give every window the same labels
    assert not np.array_equal(together[0].no_buy, together[-1].no_buy)
    with pytest.raises(ValueError, match="runs past the end"):
        windows_labels(events, [anchors[0], int(events.cut_time)], clients)


def test_first_seen_is_each_skus_earliest_time_dense_or_not(monkeypatch):
    import embedders.multitask.windows as windows
    skus = np.array([5, -1, 3, 5, 3, 9, -1, 5], dtype=np.int32)
    times = np.array([50, 1, 40, 20, 60, 10, 0, 30], dtype=np.int64)
    want = (np.array([3, 5, 9]), np.array([40, 20, 10]))
    for dense_max in (100, 4):  # the dense table, then the group-by (ids above the dense limit)
        monkeypatch.setattr(windows, "DENSE_SKU_MAX", dense_max)
        got = first_seen(skus, times)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[0].dtype == np.int64 and got[1].dtype == np.int64
    empty = first_seen(np.array([-1, -1]), np.array([1, 2]))
    assert len(empty[0]) == 0 and len(empty[1]) == 0


# -- the block ---------------------------------------------------------------------------------------------------
def test_block_shape_ids_determinism_and_empty_clients(events, tmp_path):
    relevant = read_relevant_clients(events.data_dir)
    a = fit_block(events, tmp_path / "a")
    b = fit_block(events, tmp_path / "b")
    c = fit_block(events, tmp_path / "c", seed=1)
    assert a.vectors.shape == (len(relevant), SMALL["dim"]) and np.isfinite(a.vectors).all()
    np.testing.assert_array_equal(a.client_ids, relevant)
    assert a.vectors.tobytes() == b.vectors.tobytes()  # same seed, same bytes
    assert not np.array_equal(a.vectors, c.vectors)
    assert a.vectors.std(axis=0).max() > 0  # clients differ
    emb = MultiTaskEmbedder(**SMALL, work_dir=str(tmp_path / "d")).fit(events)
    ghosts = emb.transform(events, np.array([-5, 10**12], dtype=np.int64)).vectors
    # no events: the empty-history vector (equal up to the last float bits a matmul kernel may give each row)
    np.testing.assert_allclose(ghosts[0], ghosts[1], rtol=1e-5, atol=1e-6)
    assert np.isfinite(ghosts).all()
    assert a.meta["anchors"] == anchor_times(events, SMALL["windows"])
    assert len(a.meta["history"]) == SMALL["epochs"]


def test_sequence_input_is_deterministic(events, tmp_path):
    kw = dict(input="sequence", field_dim=8, gru_hidden=16)
    a = fit_block(events, tmp_path / "a", **kw)
    b = fit_block(events, tmp_path / "b", **kw)
    assert a.vectors.tobytes() == b.vectors.tobytes()
    assert a.vectors.shape[1] == SMALL["dim"] and a.vectors.std(axis=0).max() > 0


def test_resume_continues_like_an_uninterrupted_run(events, tmp_path):
    whole = fit_block(events, tmp_path / "whole", epochs=3)
    fit_block(events, tmp_path / "parts", epochs=2)
    resumed = fit_block(events, tmp_path / "parts", epochs=3, resume=True)
    assert resumed.vectors.tobytes() == whole.vectors.tobytes()
    assert [h["epoch"] for h in resumed.meta["history"]] == [1, 2, 3]
    with pytest.raises(ValueError, match="checkpoint of another run"):
        fit_block(events, tmp_path / "parts", epochs=3, resume=True, lr=0.5)


def test_never_reads_targets_or_later_events(tmp_path):
    """Every target file and every event at or after the cut changed: the block is byte-identical."""
    root = synth.generate_world(tmp_path / "w", 200, seed=32, chunk_clients=200, progress=False)

    def block() -> bytes:
        shutil.rmtree(DataPaths(root).cache, ignore_errors=True)
        emb = MultiTaskEmbedder(**SMALL, work_dir=str(tmp_path / "work"))
        out = tmp_path / "block"
        write_block(embed(emb, root, "input", progress=False), out)
        shutil.rmtree(tmp_path / "work")
        return (out / "embeddings.npy").read_bytes()

    before = block()
    paths = DataPaths(root)
    rng = np.random.default_rng(0)
    for f in paths.target_list(PROPENSITY_SKU).parent.glob("*.npy"):
        x = np.load(f)
        np.save(f, rng.permutation(x) + (1 if x.dtype.kind in "iu" else 0.5))
    for f in paths.target_list(PROPENSITY_SKU).parent.glob("*.parquet"):
        frame = pl.read_parquet(f)
        frame.with_columns(pl.col("client_id").shuffle(seed=1)).write_parquet(f)
    cut = EventTable.build(root, "input", progress=False).cut_time
    for kind in EVENT_TYPES:  # the raw files after the cut
        f = paths.table(kind)
        frame = pl.read_parquet(f)
        late = pl.col("timestamp").str.to_datetime().dt.epoch("s") >= cut
        frame.filter(~late).vstack(frame.filter(late).with_columns(pl.col("client_id").reverse())).write_parquet(f)
    assert block() == before


# -- stacking ----------------------------------------------------------------------------------------------------
class LateStats(StatsEmbedder):
    """A user's embedder that says it read events up to the end of time."""

    def transform(self, events, client_ids):
        block = super().transform(events, client_ids)
        block.meta["cut_time"] = 2**40
        return block


def test_stacking_refuses_a_block_built_after_its_anchor(events, tmp_path):
    late = Block(np.arange(3), np.zeros((3, 2)), {"name": "x", "fit_cut_time": 10, "cut_time": 500})
    check_anchor(late, 500)
    with pytest.raises(InputError, match="after its anchor 499"):
        check_anchor(late, 499)
    with pytest.raises(InputError, match="cannot prove"):
        check_anchor(Block(np.arange(3), np.zeros((3, 2)), {"name": "y"}), 499)
    spec = parse_input(f"{__name__}:LateStats")
    inputs = BlockInputs([spec], progress=False).fit(events.before(anchor_times(events, 1)[0]))
    with pytest.raises(InputError, match="LateStats.*after its anchor"):
        inputs.matrix(events.before(anchor_times(events, 1)[0]), read_relevant_clients(events.data_dir))


def test_stacking_fits_learnt_bases_once_and_refits_stats(events):
    anchors = sorted(anchor_times(events, 2))
    inputs = BlockInputs([parse_input("stats"), parse_input("tfidf_svd@dim=4")], progress=False)
    inputs.fit(events.before(anchors[0]))
    ids = read_relevant_clients(events.data_dir)
    blocks = inputs.blocks(events.before(anchors[1]), ids)
    assert [b.meta["fit_cut_time"] for b in blocks] == [anchors[1], anchors[0]]
    assert all(b.meta["cut_time"] == anchors[1] for b in blocks)
    assert inputs.matrix(events, ids).shape == (len(ids), blocks[0].dim + 4)


def test_a_prebuilt_stats_block_is_reused_at_the_end_only_when_it_is_the_same(world, events, tmp_path):
    ids = read_relevant_clients(world)
    write_block(embed(StatsEmbedder(progress=False), world, "input", progress=False), tmp_path / "stats")
    write_block(embed(StatsEmbedder(quantile_subsample=1000, progress=False), world, "input", progress=False),
                tmp_path / "other")
    cut = events.before(sorted(anchor_times(events, 2))[0])
    plain = BlockInputs([parse_input("stats")], progress=False).fit(cut)
    reusing = BlockInputs([parse_input("stats")], progress=False, prebuilt=[tmp_path / "other", tmp_path / "stats"])
    reusing.fit(cut)
    assert reusing.matrix(cut, ids).tobytes() == plain.matrix(cut, ids).tobytes() and reusing.reused_ == []
    assert reusing.matrix(events, ids).tobytes() == plain.matrix(events, ids).tobytes()
    assert reusing.reused_ == [str(tmp_path / "stats")]  # not the block of other params, not at a cut
    # another set of clients: built, not reused
    reusing.matrix(events, ids[:50])
    assert reusing.reused_ == [str(tmp_path / "stats")]


def test_the_multitask_block_is_the_same_bytes_with_a_reused_input(world, events, tmp_path):
    write_block(embed(StatsEmbedder(progress=False), world, "input", progress=False), tmp_path / "stats")
    plain = fit_block(events, tmp_path / "a", inputs=("stats",))
    emb = MultiTaskEmbedder(**SMALL, inputs=("stats",), work_dir=str(tmp_path / "b"))
    params = emb.get_params()
    reused = emb.use_prebuilt([tmp_path / "stats"]).fit(events).transform(events, read_relevant_clients(world))
    assert emb.get_params() == params  # not a param: a block with or without it is not stale
    assert reused.vectors.tobytes() == plain.vectors.tobytes()
    assert reused.meta["reused_inputs"] == [str(tmp_path / "stats")] and plain.meta["reused_inputs"] == []


def test_heads_export_is_the_heads_of_the_same_network(events, tmp_path):
    """export=heads: churn and conversion logits, 100 price logits, three query vectors, from the network that
    gives the bottleneck (training does not depend on the export); its ensemble transform is quantile."""
    import torch
    from competition.schema import N_PRICE_BUCKETS
    from embedders import registry
    ids = read_relevant_clients(events.data_dir)
    emb = MultiTaskEmbedder(**SMALL, work_dir=str(tmp_path / "a")).fit(events)
    bottleneck = emb.transform(events, ids)
    emb.export = "heads"
    heads = emb.transform(events, ids)
    assert heads.vectors.shape == (len(ids), 2 + N_PRICE_BUCKETS + 3 * SMALL["item_dim"])
    assert heads.meta["export"] == "heads" and bottleneck.meta["export"] == "bottleneck"
    # the heads are the trunk's linear read-outs of the bottleneck
    model = emb.model_.eval()
    with torch.no_grad():
        h = model.trunk(torch.from_numpy(bottleneck.vectors))
        churn = model.binary["churn"](h).squeeze(1).numpy()
        price = model.price(h).numpy()
    np.testing.assert_allclose(heads.vectors[:, 0], churn, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(heads.vectors[:, 2:2 + N_PRICE_BUCKETS], price, rtol=1e-4, atol=1e-5)
    assert registry.default_transform("multitask", {"export": "heads"}) == "quantile"
    assert registry.default_transform("multitask", {"export": "bottleneck"}) == "l2"
    assert registry.default_transform("multitask") == "l2"
    with pytest.raises(ValueError, match="export must be one of"):
        MultiTaskEmbedder(**SMALL, export="logits", work_dir=str(tmp_path / "b")).validate()


def test_a_heads_block_reads_the_weights_of_its_prebuilt_twin(world, events, tmp_path):
    """A heads block beside a built bottleneck block of the same training reads that training's weights (no
    epoch runs) and gives the bytes a training of its own gives; a twin of other params is not used."""
    ids = read_relevant_clients(world)
    twin = MultiTaskEmbedder(**SMALL, work_dir=str(tmp_path / "mt.work"))
    block = twin.fit(events).transform(events, ids)
    block.meta.update(embedder="multitask", params=twin.get_params(), events_fingerprint=events.fingerprint)
    write_block(block, tmp_path / "mt")
    alone = fit_block(events, tmp_path / "alone", export="heads")
    emb = MultiTaskEmbedder(**SMALL, export="heads", work_dir=str(tmp_path / "heads.work"))
    reading = emb.use_prebuilt([tmp_path / "mt"]).fit(events).transform(events, ids)
    assert reading.meta["trained_by"] == str(tmp_path / "mt.work") and alone.meta["trained_by"] is None
    assert reading.meta["bottleneck_from"] == str(tmp_path / "mt")  # its inputs were not built again
    assert reading.vectors.tobytes() == alone.vectors.tobytes()
    # for other clients than the twin embedded, the bottleneck is computed: the same rows
    some = ids[::3]
    part = emb.transform(events, some)
    assert part.meta["bottleneck_from"] is None
    assert part.vectors.tobytes() == alone.vectors[::3].tobytes()
    assert not (tmp_path / "heads.work" / "last.pt").exists()  # nothing trained
    other = MultiTaskEmbedder(**SMALL, export="heads", lr=0.5, work_dir=str(tmp_path / "other.work"))
    assert other.use_prebuilt([tmp_path / "mt"]).fit(events).trained_by_ is None


def test_content_input_is_refitted_at_each_anchor(events):
    """content's axes come from product_properties only: refitting it per anchor keeps its columns' meaning while
    its recent window and counts move with the cut (no event at or after the anchor is read)."""
    anchors = sorted(anchor_times(events, 2))
    assert parse_input("content").refits
    inputs = BlockInputs([parse_input("content@components=2")], progress=False).fit(events.before(anchors[0]))
    ids = read_relevant_clients(events.data_dir)
    early, late = (inputs.blocks(events.before(a), ids)[0] for a in anchors)
    assert (early.meta["fit_cut_time"], late.meta["fit_cut_time"]) == tuple(anchors)
    assert early.dim == late.dim == 12
    counts = early.meta["feature_names"].index("log_count_product")
    assert (late.vectors[:, counts] >= early.vectors[:, counts]).all()  # later cut: as many product events or more


def test_parse_input_and_loss_weights():
    spec = parse_input("tfidf_svd@dim=32,families=\"items\",refit=true")
    assert (spec.embedder, spec.params, spec.refits) == ("tfidf_svd", {"dim": 32, "families": "items"}, True)
    assert parse_input("stats").refits and not parse_input("item2vec").refits
    assert parse_input({"embedder": "stats", "params": {"transform": "log"}}).params == {"transform": "log"}
    with pytest.raises(InputError):
        parse_input("stats@dim")
    w = parse_loss_weights("propensity_sku=2,churn=0")
    assert w["propensity_sku"] == 2 and w["churn"] == 0 and w["conversion"] == 1
    with pytest.raises(ValueError, match="unknown task"):
        parse_loss_weights("sku=2")


# -- CLI ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--windows", "0"], "windows must be an integer >= 1"),
    (["--loss-weights", "skuu=1"], "unknown task"),
    (["--inputs", "nosuch"], "unknown embedder 'nosuch'"),
    (["--input", "sequence", "--fields", "event_type,colour"], "unknown sequence field"),
])
def test_cli_bad_flags_one_clear_error(world, tmp_path, flags, message):
    run = subprocess.run([sys.executable, "-m", "embedders.multitask", "--data-dir", str(world), "--out",
                          str(tmp_path / "o"), "--no-progress", *flags], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2
    assert message in run.stderr and "Traceback" not in run.stderr


def test_cli_writes_a_block(world, tmp_path):
    out = tmp_path / "mt"
    run = subprocess.run([sys.executable, "-m", "embedders.multitask", "--data-dir", str(world), "--out", str(out),
                          "--no-progress", "--dim", "8", "--hidden", "16", "32", "--residual-blocks", "1",
                          "--epochs", "1", "--windows", "2", "--inputs", "stats"],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    block = read_block(out)
    assert block.dim == 8 and block.meta["embedder"] == "multitask" and block.meta["params"]["windows"] == 2
    assert (tmp_path / "mt.work" / "best.pt").is_file()
