"""validate.spec: the one ensemble-spec model (JSON round trip, the width rule, entries made from blocks)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from embedders.base import Block, read_block, write_block
from validate.spec import BlockSpec, EnsembleSpec, SpecError

IDS = np.arange(10, dtype=np.int64)


def test_json_round_trip(tmp_path):
    d = {"version": 1, "blocks": [
        {"name": "a", "path": "blocks/a", "transform": "l2", "weight": 2.0, "dims": 4},
        {"name": "s", "path": "blocks/s", "transform": "quantile", "weight": 1.0, "dims": None,
         "embedder": "stats", "params": {"chunk_events": 1000}}], "search": {"note": 1}}
    (tmp_path / "spec.json").write_text(json.dumps(d))
    spec = EnsembleSpec.load(tmp_path / "spec.json")
    assert spec.blocks[1] == BlockSpec("s", tmp_path / "blocks/s", "quantile", 1.0, None, "stats",
                                       {"chunk_events": 1000})
    spec.save(tmp_path / "again.json")
    again = EnsembleSpec.load(tmp_path / "again.json")
    assert again.blocks == spec.blocks and again.search == {"note": 1}
    assert "embedder" not in again.to_dict()["blocks"][0]  # a block without a recipe stays without one


def test_the_width_rule():
    spec = EnsembleSpec.from_dict({"version": 1, "blocks": [
        {"name": "a", "path": "a", "transform": "l2", "weight": 1.0, "dims": 4},
        {"name": "b", "path": "b", "transform": "l2", "weight": 0.0, "dims": None},
        {"name": "c", "path": "c", "transform": "l2", "weight": 1.0, "dims": None}]})
    # dims above a block's width keep its width; weight-0 blocks take no columns
    assert spec.columns({"a": 3, "b": 7, "c": 5}) == {"a": (0, 3), "c": (3, 8)}
    assert spec.columns({"a": 10, "c": 5}) == {"a": (0, 4), "c": (4, 9)}
    with pytest.raises(SpecError, match="2052 columns .*limit is 2048"):
        spec.columns({"a": 10, "c": 2048})


def test_from_block_records_the_embedder_and_rebuild_params(tmp_path):
    meta = {"embedder": "stats", "params": {"dim": 83, "seed": 3, "progress": False, "chunk_events": 1000}}
    write_block(Block(IDS, np.ones((10, 3)), meta), tmp_path / "s")
    b = BlockSpec.from_block("s", read_block(tmp_path / "s"), "quantile", 1.0, None)
    assert b.path == (tmp_path / "s").resolve() and b.embedder == "stats"
    assert b.params == {"dim": 83, "chunk_events": 1000}  # runtime-only params (seed, progress) left out
    write_block(Block(IDS, np.ones((10, 3)), {"embedder": "not-registered"}), tmp_path / "x")
    x = BlockSpec.from_block("x", read_block(tmp_path / "x"), "l2")
    assert x.embedder is None and set(x.to_dict()) == {"name", "path", "transform", "weight", "dims"}
