import numpy as np
import pytest

from embedders.base import Block
from validate.ensemble_ops import (apply_transform, assemble, block_matrix, default_transform, fit_pca,
                                   quantile_uniform)


def _block(name, ids, X, embedder="test"):
    return Block(ids, X, {"name": name, "embedder": embedder, "path": f"/nowhere/{name}"})


def test_transforms():
    X = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    assert np.allclose(apply_transform(X, "l2"), [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]])
    assert np.allclose(apply_transform(X, "log"), np.sign(X) * np.log1p(np.abs(X)))
    assert np.array_equal(apply_transform(X, "none"), X)
    with pytest.raises(ValueError, match="unknown transform"):
        apply_transform(X, "zscore")
    assert default_transform({"embedder": "stats"}) == "quantile"
    assert default_transform({"embedder": "gru_ae"}) == "l2"


def test_quantile_is_uniform_and_averages_ties():
    rng = np.random.default_rng(0)
    x = rng.exponential(size=(5000, 1)).astype(np.float32) ** 3  # heavy tail
    u = quantile_uniform(x)[:, 0]
    assert u.min() >= 0 and u.max() <= 1
    assert np.histogram(u, bins=4, range=(0, 1))[0] == pytest.approx([1250] * 4, rel=0.05)
    counts = np.r_[np.zeros(600), np.arange(1, 401)].astype(np.float32)[:, None]  # 60% zeros
    z = quantile_uniform(counts)[:, 0]
    assert z[0] == pytest.approx(0.3, abs=0.01)  # the zeros sit at the middle of their mass
    assert np.all(np.diff(z[600:]) >= 0)
    assert np.all(quantile_uniform(np.ones((10, 1), dtype=np.float32)) == 0)


def test_pca_prefix_and_determinism():
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((400, 12)) * np.arange(12, 0, -1)).astype(np.float32)
    big, small = fit_pca(X, 8), fit_pca(X, 3)
    assert np.allclose(big.components[:, :3], small.components, atol=1e-5)
    assert np.allclose(big.transform(X, 3), small.transform(X), atol=1e-4)
    var = big.transform(X).var(axis=0)
    assert np.all(np.diff(var) <= 1e-3)  # decreasing variance
    assert np.allclose(np.abs(big.components[:, 0]).max(), big.components[:, 0].max())  # sign rule
    with pytest.raises(ValueError):
        fit_pca(X, 13)


def test_assemble_widths_weights_and_missing_clients():
    rng = np.random.default_rng(2)
    ids = np.arange(100, dtype=np.int64)
    a = _block("a", ids, rng.standard_normal((100, 40)).astype(np.float32))
    s = _block("s", ids[::-1][:80], rng.poisson(3, (80, 5)).astype(np.float32), embedder="stats")
    spec = {"version": 1, "blocks": [
        {"name": "a", "path": "x", "transform": "l2", "weight": 2.0, "dims": 16},
        {"name": "s", "path": "y", "transform": "quantile", "weight": 1.0, "dims": None}]}
    M = assemble({"a": a, "s": s}, spec, ids)
    assert M.shape == (100, 21) and M.dtype == np.float32
    assert np.allclose(np.linalg.norm(M[:, :16], axis=1), 2.0, atol=1e-4)  # unit rows after PCA, times weight
    assert np.linalg.norm(M[:, 16:], axis=1).mean() == pytest.approx(1.0, rel=1e-4)
    assert np.array_equal(M[:, :16], 2.0 * block_matrix(a, ids, "l2", 16))
    # rows follow client_ids; a client missing from "s" gets the same (column-mean) row
    M2 = assemble([a, s], spec, ids[::-1])
    assert np.allclose(M2, M[::-1], atol=1e-5)
    missing = ~np.isin(ids, s.client_ids)
    assert np.allclose(M[missing, 16:], M[missing, 16:][0])


def test_assemble_enforces_the_column_cap():
    ids = np.arange(10, dtype=np.int64)
    wide = _block("w", ids, np.ones((10, 1500), dtype=np.float32))
    spec = {"version": 1, "blocks": [{"name": "w", "path": "p", "transform": "none", "weight": 1.0, "dims": None},
                                     {"name": "w2", "path": "p", "transform": "none", "weight": 1.0, "dims": None}]}
    with pytest.raises(ValueError, match="limit is 2048"):
        assemble({"w": wide, "w2": wide}, spec, ids)
    with pytest.raises(ValueError, match="transform"):
        assemble({"w": wide}, {"version": 1, "blocks": [dict(spec["blocks"][0], transform="zz")]}, ids)
