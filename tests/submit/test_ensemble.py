"""submit.ensemble: spec validation, alignment and fill, width limit, float16 safety."""
from __future__ import annotations

import json

import numpy as np
import pytest

from embedders.base import Block, write_block
from submit.ensemble import Float16Error, build_ensemble, float16_problems
from validate.spec import EnsembleSpec, SpecError

CLIENTS = np.arange(100, 160, dtype=np.int64)


def _blocks(tmp_path):
    rng = np.random.default_rng(0)
    a = Block(CLIENTS, rng.normal(size=(60, 8)), {"name": "a", "embedder": "gru_ae"})
    # b covers only the first 40 clients, in a shuffled order, with count-like values
    ids = rng.permutation(CLIENTS[:40])
    b = Block(ids, rng.poisson(5.0, size=(40, 5)).astype(np.float32) * 100, {"name": "b", "embedder": "stats"})
    write_block(a, tmp_path / "blocks" / "a")
    write_block(b, tmp_path / "blocks" / "b")
    return a, b


def _spec(**over):
    blocks = [{"name": "a", "path": "blocks/a", "transform": "l2", "weight": 1.0, "dims": None},
              {"name": "b", "path": "blocks/b", "transform": "quantile", "weight": 0.5, "dims": None}]
    for i, kw in over.items():
        blocks[int(i[1:])].update(kw)
    return {"version": 1, "blocks": blocks, "search": {"note": "test"}}


def _write_spec(tmp_path, spec) -> str:
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(spec))
    return str(p)


def test_assembles_in_client_order_with_fill(tmp_path):
    a, b = _blocks(tmp_path)
    order = CLIENTS[::-1]
    ens = build_ensemble(_write_spec(tmp_path, _spec()), client_ids=order)
    assert ens.embeddings.dtype == np.float16 and ens.embeddings.shape == (60, 13)
    assert np.array_equal(ens.client_ids, order)
    assert ens.columns == {"a": (0, 8), "b": (8, 13)}
    A = ens.embeddings[:, :8].astype(np.float32)
    # l2 rows, in the requested order
    np.testing.assert_allclose(np.linalg.norm(A, axis=1), 1.0, atol=2e-3)
    expect = a.vectors[::-1] / np.linalg.norm(a.vectors[::-1], axis=1, keepdims=True)
    np.testing.assert_allclose(A, expect, atol=2e-3)
    # clients 140..159 are not in b: one identical fill row (the block's column means)
    B = ens.embeddings[:, 8:].astype(np.float32)
    uncovered = np.isin(order, b.client_ids, invert=True)
    assert uncovered.sum() == 20
    assert np.all(B[uncovered] == B[uncovered][0])
    assert np.isfinite(ens.embeddings).all()


def test_pca_dims_and_zero_weight(tmp_path):
    _blocks(tmp_path)
    ens = build_ensemble(_write_spec(tmp_path, _spec(b0={"dims": 3}, b1={"weight": 0.0})), client_ids=CLIENTS)
    assert ens.embeddings.shape == (60, 3) and ens.dropped == ["b"]


@pytest.mark.parametrize("change, words", [
    ({"b1": {"name": "c", "path": "blocks/nope"}}, ["unknown block 'c'", "blocks/nope"]),
    ({"b0": {"dims": 4096}}, ["'a'", "dims 4096", "2048"]),
    ({"b1": {"weight": -0.5}}, ["'b'", "negative weight -0.5"]),
    ({"b0": {"transform": "zscore"}}, ["'a'", "unknown transform 'zscore'"]),
    ({"b0": {"dims": 0}}, ["'a'", "dims must be a positive integer"]),
    ({"b1": {"name": "a"}}, ["'a' appears twice"]),
    ({"b1": {"weight": float("nan")}}, ["'b'", "finite"]),
])
def test_spec_errors_are_clear(tmp_path, change, words):
    _blocks(tmp_path)
    path = _write_spec(tmp_path, _spec(**change))
    with pytest.raises(SpecError) as exc:
        build_ensemble(path, client_ids=CLIENTS)
    msg = str(exc.value)
    assert path in msg
    for w in words:
        assert w in msg, msg


def test_spec_structure_errors(tmp_path):
    with pytest.raises(SpecError, match="version"):
        EnsembleSpec.from_dict({"version": 2, "blocks": []})
    with pytest.raises(SpecError, match="non-empty 'blocks'"):
        EnsembleSpec.from_dict({"version": 1, "blocks": []})
    with pytest.raises(SpecError, match=r"lacks \['weight'\]"):
        EnsembleSpec.from_dict({"version": 1, "blocks": [{"name": "a", "path": "x", "transform": "l2",
                                                          "dims": None}]})
    with pytest.raises(SpecError, match="spec file not found"):
        EnsembleSpec.load(tmp_path / "missing.json")


def test_total_width_limit(tmp_path):
    rng = np.random.default_rng(1)
    write_block(Block(CLIENTS, rng.normal(size=(60, 2000)), {"name": "w1"}), tmp_path / "w1")
    write_block(Block(CLIENTS, rng.normal(size=(60, 100)), {"name": "w2"}), tmp_path / "w2")
    spec = {"version": 1, "blocks": [
        {"name": "w1", "path": str(tmp_path / "w1"), "transform": "l2", "weight": 1.0, "dims": None},
        {"name": "w2", "path": str(tmp_path / "w2"), "transform": "l2", "weight": 1.0, "dims": None}]}
    with pytest.raises(SpecError, match="2100 columns .*limit is 2048"):
        build_ensemble(spec, client_ids=CLIENTS)
    spec["blocks"][1]["dims"] = 40
    assert build_ensemble(spec, client_ids=CLIENTS).dim == 2040


def test_float16_overflow_and_precision_name_the_block(tmp_path):
    _blocks(tmp_path)
    with pytest.raises(Float16Error) as exc:
        build_ensemble(_write_spec(tmp_path, _spec(b1={"weight": 1e6})), client_ids=CLIENTS)
    assert "block 'b'" in str(exc.value) and "overflow float16" in str(exc.value)
    assert "block 'a'" not in str(exc.value)
    with pytest.raises(Float16Error) as exc:
        build_ensemble(_write_spec(tmp_path, _spec(b0={"weight": 1e-12})), client_ids=CLIENTS)
    assert "block 'a'" in str(exc.value) and "constant in float16" in str(exc.value)


def test_float16_problems_unit():
    ok = np.linspace(-3, 3, 20, dtype=np.float32).reshape(10, 2)
    assert float16_problems(ok, "x") == []
    assert float16_problems(np.full((3, 1), 7.0, np.float32), "x") == []  # constant stays constant: fine
    big = ok.copy()
    big[0, 0] = 7e4
    assert "overflow" in float16_problems(big, "x")[0]
    flat = np.array([[1000.0], [1000.1]], dtype=np.float32)  # below float16's spacing at 1000 (0.5)
    assert "constant in float16" in float16_problems(flat, "x")[0]
    # the same verdicts when the rows are read in several chunks
    assert "overflow" in float16_problems(big, "x", chunk_rows=3)[0]
    assert float16_problems(ok, "x", chunk_rows=3) == []


def test_relative_paths_resolve_against_the_spec_folder_only(tmp_path, monkeypatch):
    """A spec naming blocks/a, read from another working folder holding blocks/a, never takes that one."""
    _blocks(tmp_path / "world")
    spec = EnsembleSpec.load(_write_spec(tmp_path / "world", _spec()))
    assert [b.path for b in spec.blocks] == [tmp_path / "world" / "blocks" / "a", tmp_path / "world" / "blocks" / "b"]
    elsewhere = tmp_path / "elsewhere"
    _blocks(elsewhere)
    (tmp_path / "spec_only").mkdir()
    monkeypatch.chdir(elsewhere)  # ./blocks/a exists here, but not beside the spec
    spec = EnsembleSpec.load(_write_spec(tmp_path / "spec_only", _spec()))
    assert spec.blocks[0].path == tmp_path / "spec_only" / "blocks" / "a"
    with pytest.raises(SpecError, match="unknown block 'a': no block folder at .*spec_only/blocks/a"):
        spec.check_blocks()


@pytest.mark.parametrize("path", ["blocks/.a.old-1a2b3c4d", "blocks/.a.tmp-4242-1a2b3c4d"])
def test_a_leftover_temporary_is_not_a_block_path(tmp_path, path):
    with pytest.raises(SpecError, match="temporary folder left by an interrupted write"):
        EnsembleSpec.from_dict(_spec(b0={"path": path}), base_dir=tmp_path)
