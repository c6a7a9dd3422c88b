"""A user's own embedder, named in a spec by its dotted path, is built, rebuilt when stale and packed by
``submit.pack --final`` exactly like ours (issue 11's "done means")."""
from __future__ import annotations

import json

import numpy as np

from competition.schema import CLIENT_IDS_FILE, EMBEDDINGS_FILE
from embedders.base import Block, Embedder, read_block
from submit.check import check_submission
from submit.pack import main, pack
from validate.ensemble_ops import block_matrix

DOTTED = "tests.submit.test_user_embedder:MyEmbedder"


class MyEmbedder(Embedder):
    """Two columns per client: its number of events times ``scale``, and log1p of that number."""

    name = "my_embedder"  # not the dotted path: blocks pack builds record the name they were built by

    def __init__(self, dim: int = 2, seed: int = 0, scale: float = 1.0):
        super().__init__(2, seed)
        self.scale = scale

    def fit(self, events) -> "MyEmbedder":
        self.n_clients_ = events.n_clients
        return self

    def transform(self, events, client_ids: np.ndarray) -> Block:
        rows = events.rows_of(client_ids)
        n = np.where(rows >= 0, np.asarray(events.lengths)[np.maximum(rows, 0)], 0).astype(np.float32)
        return Block(client_ids, np.stack([n * self.scale, np.log1p(n)], axis=1), {"name": self.name})


def _spec(tmp_path, scale: float):
    spec = {"version": 1, "blocks": [{"name": "mine", "path": str(tmp_path / "blocks" / "mine"), "transform": "none",
                                      "weight": 1.0, "dims": None, "embedder": DOTTED, "params": {"scale": scale}}]}
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(spec))
    return p


def test_a_user_embedder_by_dotted_path_is_built_rebuilt_and_packed(split_world, tmp_path, capsys):
    out = tmp_path / "submission"
    assert main(["--data-dir", str(split_world), "--spec", str(_spec(tmp_path, 2.0)), "--out", str(out), "--final",
                 "--no-progress"]) == 0
    assert "block mine: missing; building with " + DOTTED in capsys.readouterr().out
    block = read_block(tmp_path / "blocks-final" / "mine")
    assert block.meta["embedder"] == DOTTED and block.meta["layout"] == "raw"
    assert block.meta["params"]["scale"] == 2.0
    assert check_submission(split_world, out) == []
    ids = np.load(out / CLIENT_IDS_FILE)
    counts = block.align(ids)[0]
    np.testing.assert_allclose(counts[:, 1], np.log1p(counts[:, 0] / 2.0), rtol=1e-6)  # its own vectors
    np.testing.assert_allclose(np.load(out / EMBEDDINGS_FILE), block_matrix(block, ids, "none"), rtol=2e-3)

    logs = []
    pack(split_world, _spec(tmp_path, 2.0), out, final=True, progress=False, log=logs.append)
    assert any("block mine: fresh" in m for m in logs) and not any("building" in m for m in logs)

    logs.clear()
    pack(split_world, _spec(tmp_path, 3.0), out, final=True, progress=False, log=logs.append)
    assert any("block mine: stale (params ['scale']" in m for m in logs), logs
    rebuilt = read_block(tmp_path / "blocks-final" / "mine")
    np.testing.assert_allclose(rebuilt.align(ids)[0][:, 0], 1.5 * counts[:, 0])
    np.testing.assert_allclose(np.load(out / EMBEDDINGS_FILE), block_matrix(rebuilt, ids, "none"), rtol=2e-3)
    assert json.loads((out / "pack.json").read_text())["columns"] == {"mine": [0, 2]}


STATELESS = "tests.embedders.test_contract:IdHash"


def test_a_stateless_user_embedder_is_built_rebuilt_and_packed_final(split_world, tmp_path, capsys):
    """Issue 28 (2): a plugin whose fit learns nothing (returns self) is fitted once fit ran."""
    spec = {"version": 1, "blocks": [{"name": "hash", "path": str(tmp_path / "blocks" / "hash"), "transform": "none",
                                      "weight": 1.0, "dims": None, "embedder": STATELESS, "params": {"dim": 3}}]}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "submission"
    argv = ["--data-dir", str(split_world), "--spec", str(path), "--out", str(out), "--final", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "block hash: missing; building with " + STATELESS in capsys.readouterr().out
    assert check_submission(split_world, out) == []
    assert read_block(tmp_path / "blocks-final" / "hash").meta["layout"] == "raw"
    spec["blocks"][0]["params"] = {"dim": 4}
    path.write_text(json.dumps(spec))
    assert main(argv) == 0
    assert "block hash: stale (params ['dim']" in capsys.readouterr().out
    assert read_block(tmp_path / "blocks-final" / "hash").dim == 4 and check_submission(split_world, out) == []
    assert np.load(out / EMBEDDINGS_FILE).shape[1] == 4
