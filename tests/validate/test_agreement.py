import json

import numpy as np
import pytest

from embedders.base import read_block
from validate import agreement
from validate.agreement import (candidate_matrices, parse_ensemble, rank_agreement, reference_blocks, summarise)
from validate.probe import client_order

SMALL = ["--mlp-width", "16", "32"]


def test_rank_agreement():
    assert rank_agreement([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert rank_agreement([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert np.isnan(rank_agreement([1, 2], [1, 2]))


def test_parse_ensemble():
    assert parse_ensemble("stats+tfidf_svd@32") == [("stats", None), ("tfidf_svd", 32)]
    with pytest.raises(ValueError, match="name\\[@dims\\]"):
        parse_ensemble("stats+@3")


def test_summarise_planted_rankings():
    """A probe that ranks like the replica on one task and against it on another."""
    names = ["a", "b", "c", "d"]
    ref = {n: {"sum": s, "seconds": 10.0, "tasks": {"churn": s, "conversion": s}} for n, s in zip(names, [1, 2, 3, 4])}
    fast = {n: {"sum": s, "seconds": 1.0, "tasks": {"churn": s, "conversion": -s}} for n, s in zip(names, [1, 2, 3, 4])}
    out = summarise({"mlp": ref, "fast": fast}, ["churn", "conversion"], np.arange(5), names)
    a = out["agreement"]["fast"]
    assert a["spearman_task"] == {"churn": 1.0, "conversion": -1.0} and a["worst_task"] == -1.0
    assert a["time_ratio"] == pytest.approx(0.1) and a["candidates"] == 4
    assert "| fast | 1.00 | -1.00 |" in agreement.format_table(out)


def test_reference_blocks_and_candidates(planted, tmp_path):
    data_dir, ids, _, dirs = planted
    blocks = reference_blocks(data_dir, seed=0, sigmas=(0.3, 3.0), dim=16)
    assert [b.meta["name"] for b in blocks] == ["random", "leak_s0.3", "leak_s3"]
    assert all(b.vectors.shape == (len(ids), 16) for b in blocks)
    real = [read_block(dirs["signal"]), read_block(dirs["random"])]
    order = client_order(data_dir)[::-1]
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"version": 1, "blocks": [
        {"name": "signal", "path": str(dirs["signal"]), "transform": "l2", "weight": 2.0, "dims": None}]}))
    mats = candidate_matrices(real, ["signal", "noise"], ["signal+noise@4"], order, specs=[spec])
    assert list(mats) == ["signal", "noise", "signal+noise@4", "spec:s"]
    assert mats["signal+noise@4"].shape == (len(ids), 12) and mats["spec:s"].shape == (len(ids), 8)
    assert np.allclose(np.linalg.norm(mats["spec:s"], axis=1), 2.0, atol=1e-4)
    with pytest.raises(ValueError, match="no block named"):
        candidate_matrices(real, ["signal", "noise"], ["signal+nope"], order)


def test_cli_compares_probes_and_resumes(planted, tmp_path, monkeypatch):
    data_dir, _, _, dirs = planted
    out = tmp_path / "agree.json"
    argv = ["--data-dir", str(data_dir), "--embeddings-dir", str(dirs["signal"]), "--reference-blocks",
            "--tasks", "conversion", "--probes", "linear", "lgbm", "--subsample", "300", *SMALL,
            "--out", str(out), "--no-progress"]
    assert agreement.main(argv) == 0
    res = json.loads(out.read_text())
    assert set(res["results"]) == {"mlp", "linear", "lgbm", "mlp@300"}
    assert set(res["agreement"]) == {"linear", "lgbm", "mlp@300"}
    lin = {n: r["sum"] for n, r in res["results"]["linear"].items()}
    assert lin["leak_s0.5"] > lin["leak_s4"] > lin["random"] - 0.05
    assert all(-1 <= a["spearman_sum"] <= 1 for a in res["agreement"].values())
    # a rerun on the same clients reuses every stored score
    monkeypatch.setattr(agreement, "score_matrix", lambda *a, **k: pytest.fail("rescored"))
    assert agreement.main(argv) == 0
