"""item2vec: corpus encoding and construction against slow references, determinism, fallbacks, the content
projection of out-of-vocabulary skus, recency-weighted means, the CLI and its errors."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from competition.events import EventTable
from competition.load import DataError
from competition.schema import (ADD_TO_CART, BLOCK_META_FILE, CLIENT_IDS_FILE, EMBEDDINGS_FILE, EVENT_CODE,
                                PAGE_VISIT, PRODUCT_BUY, REMOVE_FROM_CART, SKU_EVENTS)
from embedders.item2vec import (Item2Vec, encode_lines, hash_uniform, main, row_chunks, sample_rows, write_corpus)
from tests.worlds import codes, write_world

N_CLIENTS = 120
OOV_SKU = 99          # bought once by client 0: below min_count=2, but in product_properties
UNKNOWN_SKU = 555     # bought once by client 1: neither in the vocabulary nor in product_properties
VISIT_ONLY = (200, 201)  # clients with page visits only
FAST = dict(vector_size=8, epochs=20, window=3, min_count=2, sample=0.0, deterministic=True, progress=False)


def _ts(day: int, minute: int) -> str:
    return f"2022-07-{day:02d} 10:{minute:02d}:00"


def _group_world(root):
    """Two taste groups: even clients use skus 1..6 (category 10) and urls 1001..1006, odd ones skus 11..16
    (category 20) and urls 1011..1016. Client 0 also buys OOV_SKU, client 1 UNKNOWN_SKU; VISIT_ONLY only visit."""
    rng = np.random.default_rng(7)
    events = {k: [] for k in (PRODUCT_BUY, ADD_TO_CART, REMOVE_FROM_CART, PAGE_VISIT)}
    kinds = [PRODUCT_BUY, ADD_TO_CART, ADD_TO_CART, REMOVE_FROM_CART, PAGE_VISIT, PAGE_VISIT]
    for c in range(N_CLIENTS):
        base = 1 + 10 * (c % 2)
        for j in range(int(rng.integers(4, 9))):
            kind = kinds[int(rng.integers(len(kinds)))]
            item = base + int(rng.integers(6))
            events[kind].append((c, _ts(1 + j, c % 60), item + 1000 if kind == PAGE_VISIT else item))
    events[PRODUCT_BUY] += [(0, _ts(20, 0), OOV_SKU), (1, _ts(20, 0), UNKNOWN_SKU)]
    events[PAGE_VISIT] += [(c, _ts(3, 0), 1001) for c in VISIT_ONLY]
    products = [(s, 10 if s < 10 else 20, s % 100) for s in [*range(1, 7), *range(11, 17), OOV_SKU]]
    return write_world(root, events, products, [*range(N_CLIENTS), *VISIT_ONLY, 300])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return _group_world(tmp_path_factory.mktemp("i2v") / "world")


@pytest.fixture(scope="module")
def events(world):
    return EventTable.build(world, "raw", progress=False)


@pytest.fixture(scope="module")
def fitted(events):
    return Item2Vec(dim=12, seed=3, sequences="sku,url", **FAST).fit(events)


# ---------------------------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------------------------
def test_encode_lines_matches_python_join():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, size=50)
    counts[:3] = 0
    tokens = rng.integers(0, 10 ** rng.integers(1, 12, size=counts.sum()))
    tokens[:2] = [0, 9]
    text, i = [], 0
    for n in counts:
        if n:
            text.append(" ".join(str(t) for t in tokens[i:i + n]) + "\n")
        i += n
    assert encode_lines(tokens, counts) == "".join(text).encode()
    assert encode_lines(np.zeros(0, np.int64), np.zeros(3, np.int64)) == b""
    with pytest.raises(ValueError, match="counts sum"):
        encode_lines(np.array([1, 2]), np.array([1]))


def test_row_chunks_cover_every_row_once():
    offsets = np.array([0, 3, 3, 10, 11, 30, 31])
    chunks = row_chunks(offsets, 5)
    assert chunks[0][0] == 0 and chunks[-1][1] == 6
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    assert all(offsets[r1] - offsets[r0] <= 5 or r1 - r0 == 1 for r0, r1 in chunks)


def _reference_sentences(ev, kinds, max_len, url_rate, seed):
    """Slow pure-Python corpus: per client row, per kind, (row, the time-ordered values, the last max_len of them),
    empty sentences included."""
    sku_codes = {EVENT_CODE[e] for e in SKU_EVENTS}
    seqs = []
    for r in range(ev.n_clients):
        for kind in kinds:
            seq = []
            for p in range(int(ev.offsets[r]), int(ev.offsets[r + 1])):
                t = int(ev.event_type[p])
                if kind == "url":
                    kept = hash_uniform(np.array([p]), seed)[0] < url_rate
                    if t == EVENT_CODE[PAGE_VISIT] and ev.url[p] >= 0 and kept:
                        seq.append(("url", int(ev.url[p])))
                elif t in sku_codes:
                    v = int(ev.sku[p] if kind == "sku" else ev.category[p])
                    if v >= 0:
                        seq.append((kind, v))
            seqs.append((r, seq[-max_len:]))
    return seqs


def _reference_corpus(ev, kinds, max_len, url_rate, seed):
    return [s for _, s in _reference_sentences(ev, kinds, max_len, url_rate, seed) if s]


def _decode(corpus, path):
    decoded = []
    for line in path.read_text().splitlines():
        kind_ix, values = corpus.token_values(np.array(line.split(), dtype=np.int64))
        decoded.append([(corpus.kinds[k], int(v)) for k, v in zip(kind_ix, values)])
    return decoded


@pytest.mark.parametrize("kinds,max_len,url_rate,chunk_events", [
    (("sku",), 200, 1.0, 10_000_000),
    (("sku", "category", "url"), 3, 0.6, 50),
])
def test_corpus_file_equals_python_reference(events, tmp_path, kinds, max_len, url_rate, chunk_events):
    corpus = write_corpus(events, tmp_path / "c.txt", kinds, max_len, url_rate, seed=5, chunk_events=chunk_events,
                          progress=False)
    lines = (tmp_path / "c.txt").read_text().splitlines()
    decoded = _decode(corpus, tmp_path / "c.txt")
    assert decoded == _reference_corpus(events, kinds, max_len, url_rate, seed=5)
    assert corpus.n_sentences == len(lines) and corpus.n_tokens == sum(len(s) for s in decoded)
    all_tokens = np.array(" ".join(lines).split(), dtype=np.int64)
    assert np.array_equal(corpus.counts, np.bincount(all_tokens, minlength=len(corpus.counts)))


def test_sample_rows_keeps_the_capped_share_of_clients_reproducibly():
    row_tokens = np.full(20_000, 5, dtype=np.int64)
    assert sample_rows(row_tokens, 0, seed=1) is None                       # 0: no cap
    assert sample_rows(row_tokens, int(row_tokens.sum()), seed=1) is None   # at the cap: every row
    keep = sample_rows(row_tokens, 25_000, seed=1)
    assert keep.dtype == bool and len(keep) == len(row_tokens)
    assert abs(row_tokens[keep].sum() - 25_000) < 1_500                    # about the cap (binomial spread ~160 rows)
    assert np.array_equal(keep, sample_rows(row_tokens, 25_000, seed=1))
    assert not np.array_equal(keep, sample_rows(row_tokens, 25_000, seed=2))


@pytest.mark.parametrize("chunk_events", [10_000_000, 40])
def test_capped_corpus_is_the_reference_of_the_sampled_clients(events, tmp_path, chunk_events):
    kinds, max_len, url_rate = ("sku", "category", "url"), 4, 0.6
    full = write_corpus(events, tmp_path / "full.txt", kinds, max_len, url_rate, seed=5, progress=False)
    cap = full.n_tokens // 3
    capped = write_corpus(events, tmp_path / "c.txt", kinds, max_len, url_rate, seed=5, chunk_events=chunk_events,
                          progress=False, max_tokens=cap)
    sentences = _reference_sentences(events, kinds, max_len, url_rate, seed=5)
    row_tokens = np.bincount([r for r, s in sentences for _ in s], minlength=events.n_clients)
    keep = sample_rows(row_tokens, cap, seed=5)
    assert _decode(capped, tmp_path / "c.txt") == [s for r, s in sentences if s and keep[r]]
    assert capped.tokens_before_cap == full.n_tokens and capped.clients_kept == int(keep.sum())
    assert 0 < capped.n_tokens < full.n_tokens
    for kind in kinds:                                          # the dictionary covers every client, not the sample
        assert np.array_equal(capped.keys[kind], full.keys[kind])


# ---------------------------------------------------------------------------------------------------------------
# The embedder
# ---------------------------------------------------------------------------------------------------------------
def test_deterministic_same_seed_same_block(events, fitted):
    ids = np.array([*range(N_CLIENTS), *VISIT_ONLY, 300])
    again = Item2Vec(dim=12, seed=3, sequences="sku,url", **FAST).fit(events)
    a, b = fitted.transform(events, ids), again.transform(events, ids)
    assert np.array_equal(a.vectors, b.vectors)
    other = Item2Vec(dim=12, seed=4, sequences="sku,url", **FAST).fit(events).transform(events, ids)
    assert not np.allclose(a.vectors, other.vectors)
    assert a.vectors.shape == (len(ids), 12) and np.isfinite(a.vectors).all()


def test_corpus_cap_above_the_corpus_keeps_the_bytes_below_it_still_embeds_everyone(events, fitted):
    ids = np.array([*range(N_CLIENTS), *VISIT_ONLY, 300])
    a = fitted.transform(events, ids)
    assert fitted.stats_["corpus_tokens"] == fitted.stats_["corpus_tokens_before_cap"]
    uncapped = Item2Vec(dim=12, seed=3, sequences="sku,url", max_corpus_tokens=0, **FAST).fit(events)
    assert np.array_equal(a.vectors, uncapped.transform(events, ids).vectors)
    cap = fitted.stats_["corpus_tokens"] // 2
    capped = Item2Vec(dim=12, seed=3, sequences="sku,url", max_corpus_tokens=cap, **FAST).fit(events)
    assert capped.stats_["corpus_tokens"] < fitted.stats_["corpus_tokens"]
    assert capped.stats_["corpus_clients"] < events.n_clients
    b = capped.transform(events, ids)
    assert b.vectors.shape == a.vectors.shape and np.isfinite(b.vectors).all()
    # clients sampled out of training are still embedded (from the items the sample kept in the vocabulary)
    assert b.meta["clients_with_items"] > capped.stats_["corpus_clients"] + 50


def test_groups_learn_separate_item_vectors(fitted):
    keys, vecs = fitted.item_keys_["sku"], fitted.item_vectors_["sku"]
    ga, gb = vecs[np.isin(keys, range(1, 7))], vecs[np.isin(keys, range(11, 17))]
    within = (ga @ ga.T)[np.triu_indices(6, 1)].mean() + (gb @ gb.T)[np.triu_indices(6, 1)].mean()
    assert within / 2 > (ga @ gb.T).mean() + 0.2


def test_fallback_rows(events, fitted):
    """Clients without events (300, 999) and without embeddable items get the zero row; visit-only clients are
    embedded through their urls when url sequences are on, and fall back to zero with sku only."""
    ids = np.array([300, 999, *VISIT_ONLY, 5])
    block = fitted.transform(events, ids)
    assert np.all(block.vectors[:2] == 0) and block.meta["clients_without_items"] == 2
    assert np.abs(block.vectors[2:]).sum(axis=1).min() > 0
    sku_only = Item2Vec(dim=12, seed=3, **FAST).fit(events).transform(events, ids)
    assert np.all(sku_only.vectors[:4] == 0) and np.abs(sku_only.vectors[4]).sum() > 0
    assert sku_only.meta["fallback"].startswith("zero row")


def test_oov_sku_gets_ridge_projection_of_its_content(events, fitted):
    from sklearn.linear_model import Ridge

    keys, vecs = fitted.item_keys_["sku"], fitted.item_vectors_["sku"]
    assert OOV_SKU in keys and UNKNOWN_SKU not in keys
    products = events.products
    skus = products["sku"].to_numpy()
    x_all = np.concatenate([codes(int(s)) for s in skus]).astype(np.float64)
    x_std = (x_all - x_all.mean(0)) / x_all.std(0)
    in_vocab = skus != OOV_SKU
    y = vecs[np.searchsorted(keys, skus[in_vocab])]
    ridge = Ridge(alpha=fitted.ridge_alpha).fit(x_std[in_vocab], y)
    expected = ridge.predict(x_std[~in_vocab])[0]
    got = vecs[np.searchsorted(keys, OOV_SKU)]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fitted.content_vectors(codes(OOV_SKU))[0], expected, rtol=1e-4, atol=1e-5)
    skip = Item2Vec(dim=12, seed=3, sequences="sku,url", oov="skip", **FAST).fit(events)
    assert OOV_SKU not in skip.item_keys_["sku"] and skip.content_coef_ is None
    # Client 0's last buy is the OOV sku: its bought part is that projection under 'content', absent under 'skip'.
    raw_c, _ = fitted._raw(events, events.rows_of(np.array([0])))
    raw_s, _ = skip._raw(events, events.rows_of(np.array([0])))
    assert not np.allclose(raw_c[0, :8], raw_s[0, :8])


def test_part_means_are_recency_weighted(events, fitted):
    """The bought / carted / viewed parts of one client, recomputed slowly with 0.5 ** (age_days / half_life)."""
    row = int(events.rows_of(np.array([4]))[0])
    raw, has = fitted._raw(events, np.array([row]))
    assert has[0]
    sl = range(int(events.offsets[row]), int(events.offsets[row + 1]))
    cut = events.cut_time
    for j, (part, kind, codes_) in enumerate(fitted._part_specs()):
        num, den = np.zeros(8), 0.0
        for p in sl:
            if int(events.event_type[p]) not in set(codes_.tolist()):
                continue
            value = int(events.url[p] if kind == "url" else events.sku[p])
            keys = fitted.item_keys_[kind]
            if value not in keys:
                continue
            w = 0.5 ** ((cut - int(events.timestamp[p])) / 86400 / fitted.half_life_days)
            num += w * fitted.item_vectors_[kind][np.searchsorted(keys, value)]
            den += w
        expected = num / den if den else np.zeros(8)
        np.testing.assert_allclose(raw[0, j * 8:(j + 1) * 8], expected, rtol=1e-4, atol=1e-6, err_msg=part)


def test_block_is_centred_projection_of_parts(events, fitted):
    ids = np.array([4, 7, 300])
    block = fitted.transform(events, ids)
    raw, _ = fitted._raw(events, events.rows_of(ids[:2]))
    np.testing.assert_allclose(block.vectors[:2], (raw - fitted.mean_) @ fitted.components_.T, atol=1e-5)
    assert fitted.components_.shape == (12, 3 * 8)


def test_bad_parameters_raise_clear_errors():
    with pytest.raises(ValueError, match="sequences must be"):
        Item2Vec(sequences="sku,query").validate()
    with pytest.raises(ValueError, match="oov must be"):
        Item2Vec(oov="mean").validate()
    with pytest.raises(ValueError, match="max_len"):
        Item2Vec(max_len=0).validate()


def test_no_events_of_the_kind_is_a_data_error(tmp_path):
    root = write_world(tmp_path / "w", {PAGE_VISIT: [(1, _ts(1, 0), 5)]}, [(1, 10, 1)], [1])
    ev = EventTable.build(root, "raw", progress=False)
    with pytest.raises(DataError, match="no events of the kinds sku"):
        Item2Vec(**FAST).fit(ev)
    with pytest.raises(DataError, match="min_count=50"):
        Item2Vec(**{**FAST, "min_count": 50}, sequences="url", url_rate=1.0).fit(ev)


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------
def test_cli_writes_block_with_meta(split_world, tmp_path, capsys):
    out = tmp_path / "emb"
    rc = main(["--data-dir", str(split_world), "--out", str(out), "--dim", "6", "--vector-size", "4",
               "--min-count", "1", "--epochs", "2", "--deterministic", "--no-progress"])
    assert rc == 0
    ids = np.load(out / CLIENT_IDS_FILE)
    emb = np.load(out / EMBEDDINGS_FILE)
    meta = json.loads((out / BLOCK_META_FILE).read_text())
    assert sorted(ids.tolist()) == [100, 101, 102, 103, 104] and emb.shape == (5, 6)
    assert meta["embedder"] == "item2vec" and meta["params"]["oov"] == "content" and meta["seed"] == 0
    assert meta["parts"] == ["bought", "carted", "viewed"] and "peak_rss_mb" in meta
    # 101 and 102 have no sku events in the input period: zero row.
    assert np.all(emb[np.isin(ids, [101, 102])] == 0)


def test_cli_help_and_bad_flags(split_world, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "--half-life-days" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", str(split_world), "--out", str(tmp_path / "e"), "--sequences", "sku,bogus"])
    assert exc.value.code == 2 and "sequences must be" in capsys.readouterr().err
    rc = main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "e"), "--no-progress"])
    assert rc == 2 and "missing" in capsys.readouterr().err


def test_corpora_of_killed_runs_are_removed_from_the_work_dir(events, tmp_path, capsys):
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = tmp_path / f"item2vec-{proc.pid}-abc_1234"  # what a killed fit leaves (TemporaryDirectory never ran)
    dead.mkdir()
    (dead / "corpus.txt").write_text("1 2 3\n")
    live = tmp_path / f"item2vec-{os.getpid()}-xyz_9876"  # a fit still running (here: this process)
    live.mkdir()
    (tmp_path / "item2vec-notes").mkdir()  # not one of ours
    Item2Vec(work_dir=str(tmp_path), **FAST).fit(events)
    assert "removed 1 leftover temporary" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["item2vec-notes", live.name])
