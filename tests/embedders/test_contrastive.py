"""embedders.contrastive: CoLES-style slices, losses and the trained ranking on a planted world
(docs/new_blocks.md)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from competition.events import EventTable
from embedders.base import read_block
from embedders.contrastive.__main__ import main
from embedders.contrastive.model import info_nce, margin_loss
from embedders.contrastive.train import ContrastiveEmbedder, random_slices
from embedders.gru_ae.model import batch_tensors
from embedders.gru_ae.tokens import END, PAD, START
from tests.worlds import write_world

NO_EVENTS = 10**12


def test_random_slices_are_contiguous_runs_of_each_row():
    t = 40
    grid = np.zeros((3, t), dtype=np.int64)
    lengths = np.array([32, 2, 7])  # 30 events, none, 5
    for i, k in enumerate(lengths - 2):
        grid[i, 0], grid[i, 1:k + 1], grid[i, k + 1] = START, 100 * (i + 1) + np.arange(k), END
    out, ln, src = random_slices({"x": grid}, lengths, 4, 10, 20, np.random.default_rng(0))
    g = out["x"]
    assert src.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and g.shape[0] == 12
    for j in range(12):
        k, body = ln[j] - 2, g[j, 1:ln[j] - 1]
        assert g[j, 0] == START and g[j, ln[j] - 1] == END and (g[j, ln[j]:] == PAD).all()
        assert np.all(np.diff(body) == 1) if k > 1 else True  # contiguous
        if src[j] == 0:
            assert 10 <= k <= 20 and body[0] >= 100 and body[-1] <= 129
        elif src[j] == 1:
            assert k == 0
        else:
            assert k == 5 and body.tolist() == [300, 301, 302, 303, 304]  # a short history is taken whole


def test_losses_prefer_matching_slices():
    torch.manual_seed(0)
    centres = torch.randn(8, 16)
    z = torch.repeat_interleave(centres, 3, dim=0) + 0.05 * torch.randn(24, 16)
    labels = torch.repeat_interleave(torch.arange(8), 3)
    shuffled = labels[torch.randperm(24)]
    assert info_nce(z, labels) < info_nce(z, shuffled) and margin_loss(z, labels) < margin_loss(z, shuffled)
    assert torch.isfinite(margin_loss(torch.ones(4, 3), torch.tensor([0, 0, 1, 1])))  # zero distances: finite


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """24 clients with 60 events each; client i shops a pair of categories of its own (12 categories of 3 skus;
    no two clients share the pair, many share one category) between page visits to 20 urls shared by all."""
    rng = np.random.default_rng(4)
    products = [(s, s // 3, (7 * s) % 100) for s in range(36)]
    pairs = [(a, b) for a in range(12) for b in range(a + 1, 12)]
    pairs = [pairs[j] for j in rng.permutation(len(pairs))[:24]]
    ev = {"product_buy": [], "add_to_cart": [], "page_visit": []}
    t0 = np.datetime64("2022-06-01T00:00:00")
    for i in range(24):
        cats = pairs[i]
        for e in range(60):
            ts = str(t0 + np.timedelta64(3600 * e + 7 * i, "s")).replace("T", " ")
            if rng.random() < 0.4:
                ev["page_visit"].append((1000 + i, ts, int(rng.integers(1, 21))))
            else:
                sku = 3 * cats[int(rng.integers(2))] + int(rng.integers(3))
                ev["add_to_cart" if rng.random() < 0.7 else "product_buy"].append((1000 + i, ts, sku))
    root = write_world(tmp_path_factory.mktemp("planted") / "w", ev, products, list(range(1000, 1024)))
    return EventTable.build(root, "raw", progress=False)


def _rank_of_own_slice(emb, events, seed):
    rows = events.rows_of(np.arange(1000, 1024))
    tok = emb.inputs_.tokens(events, rows)
    g, ln, src = random_slices(tok.grids, tok.lengths, 2, 25, 25, np.random.default_rng(seed))
    with torch.no_grad():
        z = torch.nn.functional.normalize(emb.model_(*batch_tensors(g, ln, None, torch.device("cpu"))), dim=1)
    a, b = z[0::2], z[1::2]
    sim = a @ b.T
    return (sim > sim.diagonal()[:, None]).sum(1).numpy()  # 0 = own slice ranked first


def test_trained_encoder_ranks_a_clients_own_slice_first(planted, tmp_path):
    kw = dict(dim=16, field_dim=16, fields="event_type,category,sku,url,gap", n_splits=3, min_len=10, max_len=25,
              batch_size=24, holdout=0.0, lr=1e-2, device="cpu", threads=1, progress=False, seed=1)
    short = ContrastiveEmbedder(epochs=1, max_batches=1, work_dir=str(tmp_path / "a"), **kw).fit(planted)
    trained = ContrastiveEmbedder(epochs=40, work_dir=str(tmp_path / "b"), **kw).fit(planted)
    ranks = np.concatenate([_rank_of_own_slice(trained, planted, s) for s in range(3)])
    before = np.concatenate([_rank_of_own_slice(short, planted, s) for s in range(3)])
    assert (ranks == 0).mean() >= 0.8, ranks
    assert (ranks == 0).mean() > (before == 0).mean()
    h = trained.history_
    assert h[-1]["train_loss"] < h[0]["train_loss"]


def test_cli_shapes_layouts_determinism_and_empty_clients(tiny, tmp_path, capsys):
    cli = lambda out, *x: ["--data-dir", str(tiny), "--out", str(out), "--dim", "8", "--field-dim", "16",  # noqa
                           "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--threads", "1", "--no-progress",
                           "--seed", "5", *x]
    assert main(cli(tmp_path / "a")) == 0 and main(cli(tmp_path / "b")) == 0
    a = read_block(tmp_path / "a")
    assert a.client_ids.tolist() == [100, 101, 102, 103, 104] and a.vectors.shape == (5, 8)
    assert a.meta["embedder"] == "contrastive" and a.meta["peak_rss_mb"] > 0 and a.meta["n_parameters"] > 0
    assert (tmp_path / "a" / "embeddings.npy").read_bytes() == (tmp_path / "b" / "embeddings.npy").read_bytes()
    assert main(cli(tmp_path / "t", "--encoder", "transformer", "--loss", "margin", "--layout", "raw")) == 0
    raw = read_block(tmp_path / "t")
    assert raw.meta["n_events"] > a.meta["n_events"] and np.isfinite(raw.vectors).all()
    with pytest.raises(SystemExit) as exc:
        main(cli(tmp_path / "x", "--splits", "1"))
    assert exc.value.code == 2 and "n_splits must be >= 2" in capsys.readouterr().err


def test_empty_history_vector_is_defined(planted, tmp_path):
    emb = ContrastiveEmbedder(dim=8, field_dim=16, epochs=1, max_batches=1, device="cpu", threads=1, progress=False,
                              work_dir=str(tmp_path / "w")).fit(planted)
    v = emb.transform(planted, np.array([NO_EVENTS, 1003, NO_EVENTS + 1])).vectors
    assert np.isfinite(v).all() and np.array_equal(v[0], v[2]) and not np.array_equal(v[0], v[1])
