"""The Embedder contract, for every embedder of the registry (docs/design.md, embedders/): params round-trip
through meta.json, rows aligned to the requested clients, same seed same bytes, clients without events get a
defined row, and fit never reads target/ (the world they are fitted on has none). Also the plugin shapes a user
writes: a stateless embedder (``fit`` learns nothing and returns ``self``) is fitted once ``fit`` ran."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from competition.events import EventTable
from competition.io import json_default
from competition.load import read_relevant_clients
from competition.synth import generate_world
from embedders import registry
from embedders.base import Block, Embedder, EventSource, NotFittedError, read_block, write_block
from embedders.cli import embed

#: Small CPU params of each registered embedder (every name of registry.BUILTIN must be here).
PARAMS = {
    "stats": {"progress": False},
    "tfidf_svd": {"dim": 8, "n_iter": 2, "min_df": 1, "progress": False},
    "item2vec": {"dim": 8, "vector_size": 8, "epochs": 1, "min_count": 1, "progress": False},
    "gru_ae": {"variant": "day_event", "dim": 8, "field_dim": 4, "epochs": 1, "batch_size": 64, "device": "cpu",
               "progress": False},
    "multitask": {"dim": 8, "thin": 16, "wide": 16, "residual_blocks": 1, "item_dim": 8, "epochs": 1, "windows": 2,
                  "inputs": ("stats",), "device": "cpu", "progress": False},
    "als": {"dim": 8, "matrices": "category,sku,url", "iterations": 3, "threads": 1, "progress": False},
    "next_event": {"dim": 16, "n_layer": 1, "n_head": 2, "epochs": 1, "sku_negatives": 32, "device": "cpu",
                   "threads": 1, "progress": False},
    "contrastive": {"dim": 8, "field_dim": 16, "epochs": 1, "batch_size": 32, "device": "cpu", "threads": 1,
                    "progress": False},
    "content": {"components": 4, "progress": False},
    "rhythm": {"horizon_days": 7.0, "progress": False},
}
NO_EVENTS = 10**12  # a client id no world holds


def _norm(params: dict) -> dict:
    return json.loads(json.dumps(params, default=json_default))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A split 300-client synthetic world, copied without its target/ folder: embedders are fitted on the copy."""
    full = generate_world(tmp_path_factory.mktemp("contract") / "full", 300, seed=31, chunk_clients=300,
                          progress=False)
    blind = full.parent / "no_target"
    shutil.copytree(full, blind)
    shutil.rmtree(blind / "target")
    return blind


@pytest.fixture(scope="module")
def clients(world):
    """Relevant clients in a shuffled order, one id without events in the middle."""
    ids = np.random.default_rng(0).permutation(read_relevant_clients(world))[:60]
    return np.insert(ids, 30, NO_EVENTS)


def _make(name, tmp_path):
    params = dict(PARAMS[name])
    if "work_dir" in registry.constructor_params(registry.embedder_class(name)):
        params["work_dir"] = str(tmp_path / f"{name}.work")
    return registry.make_embedder(name, params, seed=3)


def test_every_registered_embedder_is_covered():
    assert set(PARAMS) == set(registry.BUILTIN)


@pytest.mark.parametrize("name", list(registry.BUILTIN))
def test_params_round_trip_and_default_transform(name):
    cls = registry.embedder_class(name)
    first = registry.make_embedder(name, PARAMS[name], seed=3).get_params()
    assert set(first) <= registry.constructor_params(cls), "get_params returns only constructor arguments"
    again = cls(**_norm(first)).get_params()
    assert _norm(again) == _norm(first)
    # hand-made statistics are quantile-mapped in an ensemble, learned vectors get unit rows
    assert registry.default_transform(name) == ("quantile" if name in ("stats", "content", "rhythm") else "l2")


def test_default_transform_of_an_unknown_embedder_is_l2():
    assert registry.default_transform("not-an-embedder") == "l2"
    assert registry.default_transform(None) == "l2"


@pytest.mark.parametrize("name", list(registry.BUILTIN))
def test_contract(name, world, clients, tmp_path):
    block = embed(_make(name, tmp_path), world, "input", progress=False, client_ids=clients)
    # rows aligned to the requested clients, in that order; finite everywhere, the client without events too
    assert np.array_equal(block.client_ids, clients)
    assert block.vectors.shape[0] == len(clients) and np.isfinite(block.vectors).all()
    # params round-trip through meta.json: the constructor takes them and gives the same params back
    write_block(block, tmp_path / "block")
    meta = read_block(tmp_path / "block").meta
    rebuilt = registry.embedder_class(name)(**meta["params"])
    assert _norm(rebuilt.get_params()) == _norm(meta["params"])
    # same seed, same bytes (a fresh embedder, fitted again); the same fitted embedder aligns any order
    fresh = _make(name, tmp_path / "again")
    events = EventTable.build(world, "input", progress=False)
    fresh.fit(events)
    again = fresh.transform(events, clients)
    assert again.vectors.tobytes() == block.vectors.tobytes()
    order = np.argsort(clients)
    sorted_rows = fresh.transform(events, clients[order]).vectors
    np.testing.assert_allclose(sorted_rows, again.vectors[order], rtol=1e-5, atol=1e-6)
    # clients without events get one defined row (not NaN), whoever else is asked for
    empty = fresh.transform(events, np.array([NO_EVENTS, NO_EVENTS + 1], dtype=np.int64)).vectors
    assert np.isfinite(empty).all()
    np.testing.assert_allclose(empty[0], empty[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(registry.BUILTIN))
def test_params_are_checked_in_validate_and_transform_needs_fit(name, world, tmp_path):
    events = EventTable.build(world, "input", progress=False)
    assert isinstance(events, EventSource)  # the table is what the embedders' Protocol describes
    emb = _make(name, tmp_path)
    emb.validate()
    assert not [k for k in vars(emb) if k.endswith("_") and not k.startswith("_")], "fitted attributes end in _"
    with pytest.raises(NotFittedError, match="not fitted: call fit"):
        emb.transform(events, np.array([NO_EVENTS]))


class IdHash(Embedder):
    """A stateless plugin (hashing): ``fit`` learns nothing; a client's row is a hash of its id and event count."""

    name = "id_hash"

    def __init__(self, dim: int = 4, seed: int = 0):
        super().__init__(dim, seed)

    def fit(self, events) -> "IdHash":
        return self

    def transform(self, events, client_ids: np.ndarray) -> Block:
        ids = np.asarray(client_ids, dtype=np.int64)
        rows = events.rows_of(ids)
        n = np.where(rows >= 0, np.asarray(events.lengths)[np.maximum(rows, 0)], 0)
        h = (ids[:, None] * (np.arange(self.dim) + 1 + self.seed) * 2654435761) % 1000
        return Block(ids, np.c_[h[:, :-1] / 1000.0, np.log1p(n)].astype(np.float32), {"name": self.name})


STATELESS = "tests.embedders.test_contract:IdHash"


def test_a_stateless_plugin_is_fitted_once_fit_ran(world, clients, tmp_path):
    events = EventTable.build(world, "input", progress=False)
    emb = registry.make_embedder(STATELESS, {"dim": 3}, seed=3)
    assert not emb.__sklearn_is_fitted__()
    with pytest.raises(NotFittedError, match="not fitted: call fit"):  # the check still catches transform before fit
        emb.transform(events, clients)
    assert emb.fit(events) is emb and emb.__sklearn_is_fitted__()
    assert emb.get_params() == {"dim": 3, "seed": 3}  # the mark is not a param, nor a fitted attribute
    assert not [k for k in vars(emb) if k.endswith("_") and not k.startswith("_")]
    block = emb.transform(events, clients)
    assert np.array_equal(block.client_ids, clients) and block.vectors.shape == (len(clients), 3)
    # through the shared embed (fit_transform), and its meta rebuilds it
    block = embed(registry.make_embedder(STATELESS, {"dim": 3}, seed=3), world, "input", progress=False,
                  client_ids=clients)
    write_block(block, tmp_path / "block")
    meta = read_block(tmp_path / "block").meta
    assert meta["embedder"] == STATELESS and registry.make_embedder(meta["embedder"], meta["params"], 3).dim == 3


def test_a_failed_fit_leaves_the_embedder_unfitted(world):
    class Failing(IdHash):
        def fit(self, events):
            raise RuntimeError("no")

    emb = Failing()
    with pytest.raises(RuntimeError):
        emb.fit(EventTable.build(world, "input", progress=False))
    assert not emb.__sklearn_is_fitted__()
    with pytest.raises(NotFittedError):
        emb.transform(None, np.array([1]))
