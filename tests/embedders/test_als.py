"""embedders.als: the implicit-ALS embedder (docs/new_blocks.md) on hand-made worlds."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from competition.events import EventTable
from embedders.als import AlsEmbedder, fit_factors, main, parse_matrices, user_factors, weigh
from embedders.base import read_block


def test_planted_two_communities_separate():
    # 40 clients x 20 items: clients 0-19 use items 0-9, clients 20-39 items 10-19 (each 6 random ones)
    rng = np.random.default_rng(0)
    rows, cols = [], []
    for u in range(40):
        base = 0 if u < 20 else 10
        items = base + rng.choice(10, size=6, replace=False)
        rows += [u] * 6
        cols += list(items)
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(40, 20))
    model = fit_factors(x, dim=2, seed=1, iterations=10, regularization=0.1)
    u = user_factors(model, x)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    sim = u @ u.T
    same = np.equal.outer(np.arange(40) < 20, np.arange(40) < 20) & ~np.eye(40, dtype=bool)
    other = ~np.equal.outer(np.arange(40) < 20, np.arange(40) < 20)
    assert sim[same].min() > sim[other].max() + 0.3, (sim[same].min(), sim[other].max())  # no overlap
    # every client is closer to the mean of its own community than to the other's
    centre = np.stack([u[:20].mean(0), u[20:].mean(0)])
    assert np.array_equal((u @ centre.T).argmax(1), (np.arange(40) >= 20).astype(int))


def test_empty_rows_give_zero_and_weighting_keeps_cells_finite():
    x = sp.csr_matrix(np.array([[3, 0, 1], [0, 0, 0], [0, 2, 0.5]], np.float32))
    model = fit_factors(x, dim=2, seed=0, iterations=3)
    assert np.array_equal(user_factors(model, x)[1], np.zeros(2, np.float32))
    idf = np.array([0.5, 0.0, 1.0], np.float32)
    y = weigh(x.copy(), "bm25", idf, avg_len=2.0, k1=100.0, b=0.8)
    assert np.isfinite(y.data).all() and (y.data > 0).all() and y[0, 1] == 0 and y[2, 1] == 0  # idf 0 dropped
    assert np.allclose(weigh(x.copy(), "tfidf", idf, 1.0, 1.0, 0.5)[0, 0], np.sqrt(3) * 0.5)


def test_parse_matrices_errors():
    assert parse_matrices("url, sku") == ("url", "sku")
    with pytest.raises(ValueError, match="unknown matrix 'items'"):
        parse_matrices("items")
    with pytest.raises(ValueError, match="twice"):
        parse_matrices("url,url")
    with pytest.raises(ValueError, match="dim"):
        AlsEmbedder(dim=2, matrices="category,sku,url")


def test_cli_input_and_raw_layouts(tiny, tmp_path):
    out = tmp_path / "als"
    assert main(["--data-dir", str(tiny), "--out", str(out), "--dim", "4", "--seed", "2", "--no-progress"]) == 0
    block = read_block(out)
    assert block.vectors.shape == (5, 4)
    assert block.client_ids.tolist() == [100, 101, 102, 103, 104]  # the relevant clients, in their file's order
    assert block.meta["embedder"] == "als" and block.meta["params"]["matrices"] == "category,url"
    assert block.meta["peak_rss_mb"] > 0 and block.meta["seconds"] >= 0 and block.meta["n_parameters"] > 0
    # 102's only input event is a search: no row in either matrix -> zeros; 103 (one buy) has no url part
    assert not block.vectors[2].any() and block.vectors[3, :2].any() and not block.vectors[3, 2:].any()
    raw = tmp_path / "raw"
    assert main(["--data-dir", str(tiny), "--out", str(raw), "--dim", "4", "--seed", "2", "--no-progress",
                 "--layout", "raw"]) == 0
    assert read_block(raw).vectors[2].any()  # 102's buy and visit after the cut are seen in the raw layout
    assert main(["--data-dir", str(tiny), "--out", str(tmp_path / "again"), "--dim", "4", "--seed", "2",
                 "--no-progress"]) == 0
    assert (tmp_path / "again" / "embeddings.npy").read_bytes() == (out / "embeddings.npy").read_bytes()


def test_cli_rejects_a_bad_matrix(tiny, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", str(tiny), "--out", str(tmp_path / "x"), "--matrices", "cat"])
    assert exc.value.code == 2 and "unknown matrix 'cat'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def world_events(tmp_path_factory):
    from competition.synth import generate_world
    root = generate_world(tmp_path_factory.mktemp("als") / "w", 300, seed=5, chunk_clients=300, progress=False)
    return EventTable.build(root, "input", progress=False)


@pytest.mark.parametrize("mode,weighting", [("per-matrix", "bm25"), ("joint", "tfidf")])
def test_modes_weightings_threads_and_determinism(world_events, mode, weighting):
    ids = np.asarray(world_events.client_ids[:80])
    ids = np.concatenate([ids, [10**12]])
    kw = dict(dim=9, seed=4, matrices="category,sku,url", mode=mode, weighting=weighting, iterations=4,
              progress=False)
    a = AlsEmbedder(threads=1, **kw).fit(world_events).transform(world_events, ids)
    b = AlsEmbedder(threads=2, **kw).fit(world_events).transform(world_events, ids)
    assert a.vectors.shape == (81, 9) and np.isfinite(a.vectors).all()
    assert a.vectors.tobytes() == b.vectors.tobytes()  # threads change speed, not bytes
    assert not a.vectors[-1].any()  # a client without events: zeros
    c = AlsEmbedder(threads=1, **{**kw, "seed": 5}).fit(world_events).transform(world_events, ids)
    assert c.vectors.tobytes() != a.vectors.tobytes()
    assert len(a.meta["groups"]) == (3 if mode == "per-matrix" else 1)
