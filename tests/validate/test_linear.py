import numpy as np
import pytest

from validate.linear import LinearProbe, ridge_fit, standardise, to_logits
from validate.probe import score_blocks, score_matrix, TaskLabels, client_order
from embedders.base import read_block

TASKS = ["churn", "conversion", "propensity_category"]


def test_ridge_fit_matches_normal_equations():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((200, 5)), rng.standard_normal((200, 3))
    lam = 7.0
    W = ridge_fit(X, Y, np.array([lam]))[0]
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    expected = np.linalg.solve(Xc.T @ Xc + lam * np.eye(5), Xc.T @ Yc)
    assert np.allclose(W[:-1], expected)
    assert np.allclose(np.c_[X, np.ones(200)] @ W, Xc @ expected + Y.mean(0))


def test_standardise_drops_constant_columns_and_logits_keep_order():
    X = np.c_[np.arange(10.0), np.full(10, 3.0), np.arange(10.0) ** 2]
    Z = standardise(X)
    assert Z.shape == (10, 2) and np.allclose(Z.mean(0), 0) and np.allclose(Z.std(0), 1)
    p = np.array([[-0.2], [0.01], [0.3], [0.9]])
    logits = to_logits(p, np.array([0.05]))
    assert np.all(np.diff(logits[:, 0]) > 0)  # monotone, no ties from clipping negatives
    assert to_logits(np.array([[0.05]]), np.array([0.05]))[0, 0] == pytest.approx(np.log(0.05 / 0.95), abs=1e-6)


def test_linear_probe_finds_planted_signal_and_ignores_row_order(planted):
    data_dir, _, _, dirs = planted
    sig = score_blocks(data_dir, [dirs["signal"]], tasks=TASKS, probe="linear", progress=False)
    rnd = score_blocks(data_dir, [dirs["random"]], tasks=TASKS, probe="linear", progress=False)
    for task in TASKS:
        assert sig["tasks"][task]["score"] > rnd["tasks"][task]["score"] + 0.1, task
        assert sig["tasks"][task]["proxy"] is True and sig["tasks"][task]["penalty"] > 0
    block = read_block(dirs["signal"])
    ids = client_order(data_dir, block.client_ids)
    X = block.align(ids)[0]
    perm = np.random.default_rng(3).permutation(len(ids))
    a = score_matrix(data_dir, ids, X, TASKS, "linear", progress=False)
    b = score_matrix(data_dir, ids[perm], X[perm], TASKS, "linear", progress=False,
                     labels=TaskLabels.load(data_dir, TASKS, ids[perm]))
    # the same clients in another order: the same penalty choice is not guaranteed (held-out rows differ), so
    # compare with the penalty fixed through a single candidate
    assert a["replica"] is False and a["probe"] == "linear"
    assert abs(a["sum"] - b["sum"]) < 0.05


def test_linear_probe_single_penalty_is_order_invariant():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 6)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.standard_normal(300) > 0).astype(np.float32)
    probe = LinearProbe(holdout=0.0)
    a = probe.score("churn", X, y, y)
    perm = rng.permutation(300)
    b = probe.score("churn", X[perm], y[perm], y[perm])
    assert a["score"] == pytest.approx(b["score"], abs=1e-9) and a["score"] > 0.8
