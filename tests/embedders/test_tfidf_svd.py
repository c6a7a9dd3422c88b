"""embedders.tfidf_svd: token counts on the tiny world by hand, the sparse matrix against a pure-Python dict-count
reference, TF-IDF against scikit-learn, min_df pruning, determinism, fallbacks, modes, CLI errors."""
from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import scipy.sparse as sp

from competition.events import EventTable
from competition.schema import BLOCK_META_FILE, CLIENT_IDS_FILE, EMBEDDINGS_FILE
from embedders.chunks import gather
from embedders.tfidf_svd import (TfidfSvdEmbedder, Vocabulary, count_matrix, doc_freq, main, parse_families,
                                 tfidf_inplace)
from tests.embedders.test_stats import random_world
from tests.worlds import codes

# the random worlds hold events with skus missing from product_properties on purpose
pytestmark = pytest.mark.filterwarnings("ignore::competition.load.DataWarning")

FAMILY_OF_TYPE = {0: "buy", 1: "add", 2: "remove"}


@pytest.fixture(scope="module")
def rand_events(tmp_path_factory):
    root = random_world(tmp_path_factory.mktemp("tfidf_rand") / "world", seed=1, n_clients=30, n_events=700)
    return EventTable.build(root, "raw", progress=False)


def full_counts(emb: TfidfSvdEmbedder, ev: EventTable, group: int = 0) -> sp.csr_matrix:
    """Raw token counts of every client row with the fitted vocabulary."""
    c = gather(ev, np.arange(ev.n_clients))
    return count_matrix(c, emb.groups_[group], emb.vocab_, emb._col0, emb._n_cols[group], ev.query_codes)


def reference_counts(ev: EventTable, families) -> list[Counter]:
    """Pure-Python: one Counter of (family, value) tokens per client row."""
    docs = []
    for r in range(ev.n_clients):
        doc = Counter()
        for i in range(int(ev.offsets[r]), int(ev.offsets[r + 1])):
            t, sku, cat, price, url, q = (int(ev.event_type[i]), int(ev.sku[i]), int(ev.category[i]),
                                          int(ev.price[i]), int(ev.url[i]), int(ev.query[i]))
            if t in FAMILY_OF_TYPE and sku >= 0:
                doc[(FAMILY_OF_TYPE[t], sku)] += 1
            if t in FAMILY_OF_TYPE and cat >= 0:
                doc[("cat", cat)] += 1
            if t in FAMILY_OF_TYPE and price >= 0:
                doc[("price", price)] += 1
            if t == 3 and url >= 0:
                doc[("visit", url)] += 1
            if t == 4 and q >= 0:
                for pos, code in enumerate(ev.query_codes[q].tolist()):
                    doc[("query", pos * 256 + code)] += 1
        docs.append(Counter({k: v for k, v in doc.items() if k[0] in families}))
    return docs


def as_dicts(x: sp.csr_matrix, emb: TfidfSvdEmbedder, group: int = 0) -> list[dict]:
    """CSR rows back to {(family, value): count} using the fitted layout."""
    names = [(f, int(v)) for f in emb.groups_[group] for v in emb.vocab_[f].values]
    return [{names[j]: float(v) for j, v in zip(x.indices[x.indptr[r]:x.indptr[r + 1]],
                                                x.data[x.indptr[r]:x.indptr[r + 1]])} for r in range(x.shape[0])]


def test_tiny_world_token_counts(tiny_events):
    ev = tiny_events
    emb = TfidfSvdEmbedder(dim=4, families="all", min_df=1, progress=False).fit(ev)
    # input-period product events: buy 100:1, 100:2, 103:3, 105:1; add 100:1, 104:2; remove 104:2
    np.testing.assert_array_equal(emb.vocab_["buy"].values, [1, 2, 3])
    np.testing.assert_array_equal(emb.df_["buy"], [2, 1, 1])
    np.testing.assert_array_equal(emb.vocab_["visit"].values, [77, 78, 79])
    np.testing.assert_array_equal(emb.df_["visit"], [2, 1, 1])
    np.testing.assert_array_equal(emb.vocab_["cat"].values, [10, 20])  # category 10 held by 100, 104, 105
    np.testing.assert_array_equal(emb.df_["cat"], [3, 1])
    np.testing.assert_array_equal(emb.vocab_["price"].values, [5, 7, 50])
    np.testing.assert_array_equal(emb.df_["price"], [2, 1, 2])
    q11, q12 = codes(11)[0].astype(int), codes(12)[0].astype(int)
    assert len(emb.vocab_["query"]) == len(set(np.arange(16) * 256 + q11) | set(np.arange(16) * 256 + q12))
    docs = as_dicts(full_counts(emb, ev), emb)
    row = {int(c): i for i, c in enumerate(ev.client_ids)}
    expected_100 = {("buy", 1): 1, ("buy", 2): 1, ("add", 1): 1, ("visit", 77): 1, ("cat", 10): 3,
                    ("price", 5): 2, ("price", 50): 1, **{("query", p * 256 + int(c)): 1 for p, c in enumerate(q11)}}
    assert docs[row[100]] == expected_100
    assert docs[row[104]] == {("add", 2): 1, ("remove", 2): 1, ("visit", 77): 1, ("cat", 10): 2, ("price", 50): 2}
    assert docs[row[101]] == {("visit", 78): 1}
    assert emb.n_docs_ == 6


def test_matrix_equals_python_reference_with_min_df(rand_events):
    ev = rand_events
    emb = TfidfSvdEmbedder(dim=6, families="all", min_df=3, chunk_events=50, progress=False).fit(ev)
    ref = reference_counts(ev, set(emb.groups_[0]))
    df = Counter(tok for doc in ref for tok in doc)
    kept = {tok for tok, n in df.items() if n >= 3}
    assert {(f, int(v)) for f in emb.groups_[0] for v in emb.vocab_[f].values} == kept
    assert len(kept) < len(df)  # pruning did drop something
    counts = full_counts(emb, ev)
    assert as_dicts(counts, emb) == [{k: float(v) for k, v in doc.items() if k in kept} for doc in ref]
    # TF-IDF equals scikit-learn's TfidfTransformer(sublinear_tf, smooth_idf) fitted on the (pruned) counts
    from sklearn.feature_extraction.text import TfidfTransformer
    expected = TfidfTransformer(sublinear_tf=True, smooth_idf=True).fit_transform(counts.astype(np.float64))
    got = tfidf_inplace(counts.copy(), emb._idf[0])
    np.testing.assert_allclose(got.toarray(), expected.toarray(), rtol=1e-5, atol=1e-6)


def test_determinism_cache_and_projection(rand_events):
    ev = rand_events
    ids = np.asarray(ev.client_ids)[::-1].copy()
    a = TfidfSvdEmbedder(dim=5, seed=7, families="all", progress=False).fit(ev).transform(ev, ids)
    b = TfidfSvdEmbedder(dim=5, seed=7, families="all", progress=False).fit(ev).transform(ev, ids)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.client_ids, ids)
    assert a.vectors.shape == (len(ids), 5) and a.vectors.dtype == np.float32
    # cached fit embeddings equal a fresh projection of the same clients
    emb = TfidfSvdEmbedder(dim=5, seed=7, families="all", progress=False).fit(ev)
    fresh = emb._project(gather(ev, np.arange(ev.n_clients)), ev.query_codes)
    np.testing.assert_allclose(fresh, emb._fit_z, rtol=1e-4, atol=1e-5)
    # clients outside a subsampled fit are projected, the rest come from the fit
    sub = TfidfSvdEmbedder(dim=5, seed=7, families="all", fit_max_clients=10, progress=False).fit(ev)
    blk = sub.transform(ev, np.asarray(ev.client_ids))
    assert blk.meta["projected_outside_fit"] == ev.n_clients - 10 and sub.n_docs_ == 10
    np.testing.assert_allclose(blk.vectors, sub._project(gather(ev, np.arange(ev.n_clients)), ev.query_codes),
                               rtol=1e-4, atol=1e-5)


def test_threads_and_chunks_change_no_byte(rand_events, monkeypatch):
    import embedders.chunks as chunks

    ev = rand_events
    ids = np.asarray(ev.client_ids)
    params = dict(dim=5, seed=7, families="all", fit_max_clients=40, progress=False)  # a fit and a projection
    one = TfidfSvdEmbedder(**params).fit(ev).transform(ev, ids).vectors
    for threads in (1, 3):
        monkeypatch.setattr(chunks, "free_cores", lambda: threads)
        got = TfidfSvdEmbedder(chunk_events=29, **params).fit(ev).transform(ev, ids).vectors
        assert got.tobytes() == one.tobytes(), threads


def test_clients_without_events_or_tokens(tiny_events):
    ev = tiny_events
    ids = np.array([999, 100, 101, 102], dtype=np.int64)
    emb = TfidfSvdEmbedder(dim=4, families="queries,urls", mode="per-family", min_df=1, progress=False).fit(ev)
    blk = emb.transform(ev, ids)
    assert blk.vectors.shape == (4, 4) and np.isfinite(blk.vectors).all()
    np.testing.assert_array_equal(blk.vectors[0], 0)  # no events: the empty document's projection (origin)
    assert emb.dims_ == [2, 2] and [g["families"] for g in blk.meta["groups"]] == [["query"], ["visit"]]
    # 101 only visited (no query tokens): zero query part; 102 only searched: zero url part
    np.testing.assert_array_equal(blk.vectors[2, :2], 0)
    np.testing.assert_array_equal(blk.vectors[3, 2:], 0)
    assert np.abs(blk.vectors[1, :2]).sum() > 0 and np.abs(blk.vectors[1, 2:]).sum() > 0  # 100 has both
    assert np.abs(blk.vectors[3, :2]).sum() > 0
    assert blk.meta["clients_without_events"] == 1
    # a group with fewer tokens than dims pads with zero columns
    small = TfidfSvdEmbedder(dim=8, families="buy", min_df=1, progress=False).fit(ev)
    assert small.stats_[0]["dim_used"] <= 3
    assert np.all(small.transform(ev, ids).vectors[:, 3:] == 0)


def test_parse_families_and_params():
    assert parse_families("items,urls", "joint") == [("buy", "add", "remove", "visit", "cat", "price")]
    assert parse_families("items,queries", "per-family") == [("buy", "add", "remove", "cat", "price"), ("query",)]
    assert parse_families("all") == [("buy", "add", "remove", "visit", "cat", "price", "query")]
    assert TfidfSvdEmbedder().families == "items,urls"  # query tokens are opt-in
    with pytest.raises(ValueError, match="unknown token family 'skus'"):
        parse_families("items,skus")
    with pytest.raises(ValueError, match="two groups"):
        parse_families("items,buy", "per-family")
    with pytest.raises(ValueError, match="at least the number"):
        TfidfSvdEmbedder(dim=1, families="buy,visit", mode="per-family").validate()
    with pytest.raises(ValueError, match="min_df"):
        TfidfSvdEmbedder(min_df=0).validate()
    for big in (0, 1 << 40, -(1 << 40)):  # dense columns, and ranks of huge / negative values
        v, df = doc_freq(np.array([0, 0, 1, 1, 1, 3]), np.array([9, 9, 9, 4, 4, 4]) + big, 4)
        np.testing.assert_array_equal(v, np.array([4, 9]) + big)
        np.testing.assert_array_equal(df, [2, 2])
        voc = Vocabulary(np.array([4, 9, 12]) + big)
        np.testing.assert_array_equal(voc.index(np.array([12, 5, 4, 9, -3]) + big), [2, -1, 0, 1, -1])


def test_cli(tiny, tmp_path, capsys):
    out = tmp_path / "blocks" / "tfidf"
    args = ["--data-dir", str(tiny), "--out", str(out), "--dim", "6", "--min-df", "1", "--seed", "3", "--no-progress"]
    assert main(args) == 0
    meta = json.loads((out / BLOCK_META_FILE).read_text())
    assert meta["embedder"] == "tfidf_svd" and meta["dim"] == 6 and meta["params"]["min_df"] == 1
    assert "peak_rss_mb" in meta and meta["seconds"] >= 0 and meta["groups"][0]["nnz"] > 0
    first = np.load(out / EMBEDDINGS_FILE)
    np.testing.assert_array_equal(np.load(out / CLIENT_IDS_FILE), [100, 101, 102, 103, 104])
    assert main(args) == 0
    np.testing.assert_array_equal(np.load(out / EMBEDDINGS_FILE), first)  # same seed, same block
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", str(tiny), "--out", str(out), "--families", "nope"])
    assert exc.value.code == 2 and "unknown token family" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data-dir", str(tiny), "--out", str(out), "--dim", "0"])
    assert main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and ".parquet" in err


def test_idf_formula(tiny_events):
    emb = TfidfSvdEmbedder(dim=2, families="urls", min_df=1, progress=False).fit(tiny_events)
    # url 77 held by 2 of 6 documents
    assert emb._idf[0][0] == pytest.approx(math.log(7 / 3) + 1)
