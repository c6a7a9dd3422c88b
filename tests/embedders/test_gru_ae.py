"""Tests of the GRU autoencoder embedder (tiny worlds, tiny networks)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from competition.events import EventTable
from competition.load import read_relevant_clients
from competition.schema import EVENT_TYPES, ITEM_COLUMN, QUERY, SKU, URL
from embedders.base import read_block
from embedders.gru_ae import GruAE
from embedders.gru_ae.__main__ import main
from embedders.gru_ae.evaluate import sku_accuracy_by_frequency
from embedders.gru_ae.model import batch_tensors
from embedders.gru_ae.sku_table import SkuTable, content_units
from embedders.gru_ae.tokens import (END, MAX_EVENTS, MISSING, N_RESERVED, OTHER, PAD, SEQ_LEN, START, Vocab,
                                     tokenize)
from embedders.gru_ae.train import length_batches, shard
from tests.worlds import write_world

REPO = Path(__file__).resolve().parents[2]
TINY = dict(dim=8, field_dim=8, layers=2, batch_size=8, progress=False, device="cpu")


def random_world(root: Path, n_clients: int = 48, n_products: int = 40, seed: int = 0, long_client: bool = True):
    """A small random world: clients 1000.. with 0-40 events each (client 1000 has 140 events, client 1001 none),
    events on skus 0..n_products-1 (the catalogue has 10 more skus without events),
    the last buy on 2022-08-20 so the split keeps ~3 months of input."""
    rng = np.random.default_rng(seed)
    t0 = datetime(2022, 5, 1)
    events: dict[str, list[tuple]] = {k: [] for k in EVENT_TYPES}
    kinds = rng.choice(len(EVENT_TYPES), size=4000, p=[0.08, 0.12, 0.05, 0.6, 0.15])
    n_ev = rng.integers(0, 40, size=n_clients)
    n_ev[0], n_ev[1] = 140, 0
    clients = np.repeat(1000 + np.arange(n_clients), n_ev)
    for i, c in enumerate(clients):
        kind = EVENT_TYPES[kinds[i % len(kinds)]]
        ts = (t0 + timedelta(seconds=int(rng.integers(0, 80 * 86400)))).strftime("%Y-%m-%d %H:%M:%S")
        item = int(rng.integers(0, n_products)) if ITEM_COLUMN[kind] == SKU else \
            int(rng.integers(500, 530)) if ITEM_COLUMN[kind] == URL else int(rng.integers(0, 50))
        events[kind].append((int(c), ts, item))
    events["product_buy"].append((1002, "2022-08-20 12:00:00", 1))
    events["product_buy"].append((1003, "2022-08-01 12:00:00", 2))
    products = [(s, int(s % 7), int(rng.integers(0, 100))) for s in range(n_products + 10)]  # 10 never seen
    write_world(root, events, products, list(range(1000, 1000 + n_clients)))
    from competition.split import split
    from competition.targets import write_target_lists
    split(root, progress=False)
    write_target_lists(root)
    return root


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks run fastest (and least disturbed by other load) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return random_world(tmp_path_factory.mktemp("gru") / "world")


@pytest.fixture(scope="module")
def events(world):
    return EventTable.build(world, "input", progress=False)


@pytest.fixture(scope="module")
def fitted(events, tmp_path_factory):
    return GruAE(variant="week_all", epochs=2, seed=0, work_dir=tmp_path_factory.mktemp("w"), **TINY).fit(events)


# -- tokens ----------------------------------------------------------------------------------------------------------
def test_tokens_layout(events):
    rows = events.rows_of(np.array([1000, 1001, 1002], dtype=np.int64))
    assert rows[1] == -1  # client 1001 has no events
    vocab = Vocab.fit(events, rows[rows >= 0], ("event_type", "sku", "url", "day"), query=True)
    tok = tokenize(events, vocab, rows, with_sku_ids=True)
    assert tok.grids["sku"].shape == (3, SEQ_LEN)
    n0 = int(events.lengths[rows[0]])
    assert n0 > MAX_EVENTS and tok.lengths[0] == MAX_EVENTS + 2  # the long client is cut to its last 126 events
    assert tok.lengths[1] == 2 and list(tok.grids["event_type"][1, :3]) == [START, END, PAD]
    et = tok.grids["event_type"][0]
    assert et[0] == START and et[-1] == END
    last = events.offsets[rows[0] + 1]
    np.testing.assert_array_equal(et[1:-1], N_RESERVED + np.asarray(events.event_type[last - MAX_EVENTS:last]))
    # fields a kind lacks are 'missing'; sku ids and tokens agree
    sku, ids = tok.grids["sku"][0, 1:-1], tok.grids["sku_id"][0, 1:-1]
    np.testing.assert_array_equal(sku == MISSING, ids < 0)
    np.testing.assert_array_equal(vocab.sku_token_to_id(sku[ids >= 0]), ids[ids >= 0])
    q = tok.grids[QUERY][0, 1:-1]
    np.testing.assert_array_equal(q >= 0, et[1:-1] == N_RESERVED + EVENT_TYPES.index("search_query"))
    days = tok.grids["day"][0, 1:-1].astype(int)
    assert np.all(np.diff(days) >= 0) and days.min() >= N_RESERVED
    first = np.array([int(np.argmin(events.timestamp))])  # the first event: day 0 and week 0
    assert vocab.field_values(events, first, "day")[0] == N_RESERVED
    weeks = Vocab.fit(events, rows[rows >= 0], ("week",))
    assert weeks.field_values(events, first, "week")[0] == N_RESERVED
    assert weeks.sizes["week"] - N_RESERVED == weeks.n_weeks >= (weeks.n_days + 6) // 7


def test_id_vocab_caps_skus(events):
    rows = np.arange(events.n_clients)
    vocab = Vocab.fit(events, rows, ("sku",), sku_mode="id", vocab_cap=5)
    assert vocab.sizes["sku"] == N_RESERVED + 5
    tok = tokenize(events, vocab, rows)
    real = tok.grids["sku"][tok.grids["sku"] >= N_RESERVED]
    assert real.max() < N_RESERVED + 5 and (tok.grids["sku"] == OTHER).any()


def test_batches_cover_and_shard():
    lengths = np.random.default_rng(0).integers(2, 128, size=103)
    b = length_batches(lengths, 10, np.random.default_rng(1))
    assert sorted(np.concatenate(b).tolist()) == list(range(103))
    assert all(np.ptp(lengths[x]) <= np.ptp(lengths) for x in b)
    s0, s1 = shard(b, 0, 2), shard(b, 1, 2)
    assert len(s0) == len(s1) == 6 and s0[0] is b[0] and s1[0] is b[1] and s1[-1] is b[0]  # wrapped


# -- sku table ------------------------------------------------------------------------------------------------------
def test_unseen_skus_get_exactly_their_content_vector():
    names = np.random.default_rng(0).integers(0, 256, size=(10, 16), dtype=np.uint8)
    seen = np.zeros(10, bool)
    seen[[1, 4]] = True
    table = SkuTable("content", 10, 32, names=names, seen=seen, delta_max=0.5, seed=3)
    with torch.no_grad():
        table.delta.fill_(1.0)
        table.clip_()
        table.scale.fill_(2.5)
    rows = table.rows(torch.arange(N_RESERVED, N_RESERVED + 10)).detach()
    content = torch.from_numpy(content_units(names)) @ table.proj
    np.testing.assert_allclose(content.norm(dim=1).numpy(), 1.0, atol=1e-5)  # unit content vectors
    unseen = ~torch.from_numpy(seen)
    assert torch.equal(rows[unseen], 2.5 * content[unseen])
    assert torch.allclose((rows[~unseen] / 2.5 - content[~unseen]).norm(dim=1), torch.tensor(0.5))
    assert len(table.delta) == 2


def test_delta_rows_bounded_after_training(events, tmp_path):
    emb = GruAE(variant="all", epochs=2, seed=1, sku_init="content", delta_max=0.05, lr=0.05, work_dir=tmp_path,
                **TINY).fit(events)
    norms = emb.model_.sku.delta.detach().norm(dim=1)
    assert len(norms) == int((emb.vocab_.catalogue_counts > 0).sum()) > 0
    assert norms.max() <= 0.05 + 1e-6 and norms.max() > 0.04  # the bound binds
    table = emb.model_.sku  # after training, unseen catalogue skus still have exactly their content row
    unseen = torch.from_numpy(np.flatnonzero(emb.vocab_.catalogue_counts == 0))
    assert len(unseen) > 0
    with torch.no_grad():
        assert torch.equal(table.rows(unseen + N_RESERVED), table.scale * table.content(unseen))
    free = GruAE(variant="all", epochs=2, seed=1, sku_init="content-finetune", lr=0.05, work_dir=tmp_path / "f",
                 **TINY).fit(events)
    assert free.model_.sku.delta.detach().norm(dim=1).max() > 0.05
    frozen = GruAE(variant="all", epochs=1, seed=1, sku_init="content-frozen", work_dir=tmp_path / "z",
                   **TINY).fit(events)
    assert frozen.model_.sku.delta is None



def test_sparse_sku_updates_move_only_looked_up_rows_and_stay_bounded(events, tmp_path):
    # row-sparse deltas (what a 1.26M-sku catalogue gets by default): SparseAdam moves only the rows a batch looked
    # up, the touched-rows clip keeps every row within the bound, and the block differs from dense Adam's
    kw = dict(variant="all", epochs=2, seed=1, sku_init="content", delta_max=0.05, lr=0.05, **TINY)
    sparse = GruAE(sku_updates="sparse", work_dir=tmp_path / "s", **kw).fit(events)
    table = sparse.model_.sku
    assert table.sparse_rows and isinstance(sparse.model_.sku.delta, torch.nn.Parameter)
    norms = table.delta.detach().norm(dim=1)
    assert norms.max() <= 0.05 + 1e-6 and norms.max() > 0.04
    dense = GruAE(sku_updates="dense", work_dir=tmp_path / "d", **kw).fit(events)
    assert not dense.model_.sku.sparse_rows
    assert not torch.equal(dense.model_.sku.delta, table.delta)
    auto = GruAE(sku_updates="auto", work_dir=tmp_path / "a", **dict(kw, epochs=1)).fit(events)
    assert not auto.model_.sku.sparse_rows  # a tiny catalogue: below SPARSE_ROWS_MIN, dense as before
    with pytest.raises(ValueError, match="sku_updates"):
        GruAE(sku_updates="lazy", **kw).fit(events)


def test_sparse_clip_bounds_the_touched_rows_only():
    names = np.random.default_rng(0).integers(0, 256, size=(6, 16), dtype=np.uint8)
    table = SkuTable("content", 6, 8, names=names, delta_max=0.5, seed=0, sparse_rows=True)
    with torch.no_grad():
        table.delta.fill_(1.0)
    loss = table.rows(torch.tensor([N_RESERVED + 1, N_RESERVED + 4, N_RESERVED + 4])).sum()  # rows 1 and 4
    loss.backward()
    assert table.delta.grad.is_sparse
    table.clip_()
    norms = table.delta.detach().norm(dim=1)
    np.testing.assert_allclose(norms[[1, 4]].numpy(), 0.5, rtol=1e-5)
    np.testing.assert_allclose(norms[[0, 2, 3, 5]].numpy(), np.sqrt(8), rtol=1e-5)  # not looked up: untouched
    table.clip_()  # nothing touched since: a no-op
    np.testing.assert_allclose(table.delta.detach().norm(dim=1)[0].item(), np.sqrt(8), rtol=1e-5)


# -- the embedder ---------------------------------------------------------------------------------------------------
def test_shapes_determinism_and_empty_clients(events, fitted, world, tmp_path):
    clients = read_relevant_clients(world)
    block = fitted.transform(events, clients)
    assert block.vectors.shape == (len(clients), 8) and np.isfinite(block.vectors).all()
    again = GruAE(variant="week_all", epochs=2, seed=0, work_dir=tmp_path, **TINY).fit(events)
    np.testing.assert_array_equal(again.transform(events, clients).vectors, block.vectors)
    other = GruAE(variant="week_all", epochs=2, seed=5, work_dir=tmp_path / "s5", **TINY).fit(events)
    assert not np.array_equal(other.transform(events, clients).vectors, block.vectors)
    # 1001 has no events: it gets the vector of [start, end] (not zeros), like any unknown client
    empty = fitted.encode_rows(events, np.array([-1]))[0]
    row = block.vectors[list(clients).index(1001)]
    np.testing.assert_allclose(row, empty, atol=1e-6)
    assert np.abs(empty).sum() > 0
    assert len(fitted.history_) == 2 and fitted.best_epoch_ in (1, 2)


def test_training_sample_trains_on_fewer_clients_and_embeds_everyone(events, world, tmp_path):
    clients = read_relevant_clients(world)
    full = GruAE(variant="day_event", epochs=1, seed=0, holdout=0.0, work_dir=tmp_path / "all", **TINY).fit(events)
    cut = GruAE(variant="day_event", epochs=1, seed=0, holdout=0.0, max_train_clients=12, work_dir=tmp_path / "cut",
                **TINY).fit(events)
    assert full.n_train_ > 12 and cut.n_train_ == 12
    block = cut.transform(events, clients)
    assert block.vectors.shape == (len(clients), 8) and np.isfinite(block.vectors).all()
    assert not np.array_equal(block.vectors, full.transform(events, clients).vectors)
    again = GruAE(variant="day_event", epochs=1, seed=0, holdout=0.0, max_train_clients=12,
                  work_dir=tmp_path / "cut2", **TINY).fit(events)
    np.testing.assert_array_equal(again.transform(events, clients).vectors, block.vectors)  # a seeded sample
    with pytest.raises(ValueError, match="max_train_clients must be >= 2"):
        GruAE(variant="day_event", max_train_clients=1, work_dir=tmp_path / "bad", **TINY).fit(events)


def test_packing_makes_vectors_independent_of_the_batch(events, fitted):
    rows = np.arange(events.n_clients)
    together = fitted.encode_rows(events, rows, batch_size=len(rows))
    alone = np.stack([fitted.encode_rows(events, np.array([r]))[0] for r in rows[:6]])
    np.testing.assert_allclose(alone, together[:6], atol=1e-5)
    tok = tokenize(events, fitted.vocab_, rows)
    assert tok.lengths.max() == SEQ_LEN and tok.lengths.min() < 10  # lengths really differ within the batch
    # the padded-run + gather path (CPU default) computes what pack_padded_sequence computes
    model = fitted.model_
    batch, lens = batch_tensors(*tok.batch(rows), None, torch.device("cpu"))
    try:
        with torch.no_grad():
            gathered = (model.user_vectors(batch, lens), {k: v[0] for k, v in model.losses(batch, lens).items()})
            model.encoder.pack = model.decoder.pack = True
            packed = (model.user_vectors(batch, lens), {k: v[0] for k, v in model.losses(batch, lens).items()})
    finally:
        model.encoder.pack = model.decoder.pack = None
    torch.testing.assert_close(gathered[0], packed[0], atol=1e-5, rtol=1e-5)
    for f in gathered[1]:
        torch.testing.assert_close(gathered[1][f], packed[1][f], atol=1e-3, rtol=1e-5)


def test_batches_side_by_side_give_the_same_bytes(events, fitted, monkeypatch):
    import embedders.chunks as chunks
    from embedders.threads import torch_threads

    rows = np.arange(events.n_clients)
    with torch_threads(1):
        monkeypatch.setattr(chunks, "free_cores", lambda: 1)
        one = fitted.encode_rows(events, rows, batch_size=7)  # many batches of mixed lengths
        monkeypatch.setattr(chunks, "free_cores", lambda: 3)
        three = fitted.encode_rows(events, rows, batch_size=7)
    assert three.tobytes() == one.tobytes() and np.abs(one).sum() > 0


def test_sampled_softmax_and_query_field(events, tmp_path):
    emb = GruAE(variant="all", epochs=1, seed=0, query=True, full_softmax_max=10, sku_negatives=5,
                work_dir=tmp_path, **TINY).fit(events)
    assert np.isfinite(emb.history_[0]["train_loss"])
    acc = sku_accuracy_by_frequency(emb, events, np.arange(events.n_clients))
    assert acc["all"]["n"] == sum(acc[b]["n"] for b in ("unseen", "1-5", "6-50", ">50")) > 0
    assert 0.0 <= acc["all"]["accuracy"] <= 1.0


def test_id_mode_reconstruction_counts_other_as_wrong(events, tmp_path):
    emb = GruAE(variant="all", epochs=1, seed=0, sku_init="id", sku_cap=3, work_dir=tmp_path, **TINY).fit(events)
    rows = np.arange(events.n_clients)
    acc = sku_accuracy_by_frequency(emb, events, rows)
    kept = set(emb.vocab_.skus.tolist())
    assert len(kept) == 3 and emb.model_.sku.mode == "id"
    tok = tokenize(events, emb.vocab_, rows, with_sku_ids=True)
    ids = tok.grids["sku_id"]
    share_kept = np.isin(ids[ids >= 0], list(kept)).mean()
    assert acc["all"]["accuracy"] <= share_kept + 1e-9  # only the 3 kept skus can ever be right


# -- CLI: resume, errors, torchrun -------------------------------------------------------------------------------------
def _cli(world, out, *extra):
    return ["--data-dir", str(world), "--out", str(out), "--variant", "all", "--dim", "8", "--field-dim", "8",
            "--layers", "1", "--batch-size", "8", "--device", "cpu", "--no-progress", "--seed", "3", "--threads", "1",
            *extra]


@pytest.mark.parametrize("sku_updates", ["dense", "sparse"])
def test_resume_gives_the_uninterrupted_result(world, tmp_path, capsys, sku_updates):
    flags = ["--sku-updates", sku_updates]  # sparse: the two optimisers' states go through the checkpoint
    assert main(_cli(world, tmp_path / "full", "--epochs", "3", *flags)) == 0
    assert main(_cli(world, tmp_path / "part", "--epochs", "1", *flags)) == 0
    assert main(_cli(world, tmp_path / "part", "--epochs", "3", "--resume", *flags)) == 0
    full, part = read_block(tmp_path / "full"), read_block(tmp_path / "part")
    np.testing.assert_array_equal(full.vectors, part.vectors)
    losses = [[(h["train_loss"], h["heldout_loss"]) for h in b.meta["history"]] for b in (full, part)]
    assert losses[0] == losses[1] and len(losses[0]) == 3
    assert (tmp_path / "part.work" / "last.pt").is_file() and (tmp_path / "part.work" / "best.pt").is_file()
    # a checkpoint of another configuration is refused, with the reason
    assert main(_cli(world, tmp_path / "part", "--epochs", "4", "--resume", "--lr", "0.01", *flags)) == 2
    assert "lr: 0.001 -> 0.01" in capsys.readouterr().err


def test_bad_flags_and_missing_inputs(world, tmp_path, capsys):
    for bad in (["--variant", "nope"], ["--dim", "0"], ["--delta-max", "-1"], ["--holdout", "1.5"],
                ["--sku-init", "magic"]):
        with pytest.raises(SystemExit) as exc:
            main(_cli(world, tmp_path / "o", *bad))
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "dim must be >= 1" in err and "delta_max must be > 0" in err and "invalid choice: 'nope'" in err
    with pytest.raises(SystemExit):
        main(_cli(tmp_path / "nowhere", tmp_path / "o"))
    assert "nowhere" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(_cli(empty, tmp_path / "o")) == 2
    assert "error:" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes(world, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "embedders.gru_ae", *_cli(world, out, "--epochs", "2", "--holdout", "0.2")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    hashes = [(out.parent / "ddp.work" / f"weights_rank{r}.sha256").read_text() for r in (0, 1)]
    assert hashes[0] == hashes[1]
    block = read_block(out)
    np.testing.assert_array_equal(np.sort(block.client_ids), np.sort(read_relevant_clients(world)))
    assert block.vectors.shape == (len(block.client_ids), 8) and np.isfinite(block.vectors).all()
    assert block.meta["history"][0]["batches"] >= 2
