import json
import shutil

import numpy as np
import optuna
import pytest

from embedders.base import Block, read_block, write_block
from validate import search
from validate.ensemble_ops import assemble
from validate.probe import TaskLabels, client_order
from validate.search import (BlockMatrices, SearchObjective, dim_options, find_blocks, run_search, split_folds)

TASKS = ["churn", "conversion"]


@pytest.fixture(scope="module")
def root(planted, tmp_path_factory):
    """Block root: the planted signal and random blocks plus a wide 1100-column noise block."""
    data_dir, ids, _, dirs = planted
    r = tmp_path_factory.mktemp("root")
    for name, d in dirs.items():
        shutil.copytree(d, r / name)
    rng = np.random.default_rng(5)
    write_block(Block(ids, rng.standard_normal((len(ids), 1100)).astype(np.float32), {"embedder": "noise"}),
                r / "wide")
    return r


def whole_world_objective(data_dir, root, probe: str, **kw) -> tuple[dict, np.ndarray, SearchObjective]:
    """(blocks, client ids, the objective over all clients of the planted world) for the blocks under ``root``."""
    blocks = {p.name: read_block(p) for p in find_blocks(root)}
    ids = client_order(data_dir)
    labels = TaskLabels.load(data_dir, TASKS, ids)
    return blocks, ids, SearchObjective(data_dir, blocks, BlockMatrices(blocks, ids), ids, np.arange(len(ids)),
                                        labels, TASKS, probe, 0, **kw)


def test_dim_options_and_folds():
    assert dim_options(8) == [8]
    assert dim_options(100) == [16, 32, 64, 100]
    assert dim_options(1100) == [16, 32, 64, 128, 256, 1100]
    ids = np.arange(1000, 1600, dtype=np.int64)
    s, r = split_folds(ids, seed=3)
    assert len(s) == len(r) == 300
    assert not np.intersect1d(s, r).size and np.array_equal(np.sort(np.r_[s, r]), ids)
    s2, r2 = split_folds(ids[::-1], seed=3)  # the same sets whatever the input order, in that order
    assert np.array_equal(np.sort(s2), np.sort(s)) and np.array_equal(s2, s[::-1])
    assert not np.array_equal(np.sort(split_folds(ids, seed=4)[0]), np.sort(s))


def test_over_the_cap_is_pruned_before_scoring(planted, root, monkeypatch):
    data_dir = planted[0]
    blocks, ids, objective = whole_world_objective(data_dir, root, "lgbm")
    calls = []
    monkeypatch.setattr(search, "score_matrix", lambda *a, **k: calls.append(a) or {"mean": 0.5, "sum": 1.0,
                                                                                      "tasks": {}, "seconds": 0})
    base = {f"weight_{n}": 1.0 for n in blocks}
    two_wide = {"use_signal": True, "use_random": True, "use_wide": True, "dims_signal": 8, "dims_random": 8,
                "dims_wide": 1100, **base}
    # 8 + 8 + 1100 fits; the objective scores it
    assert objective(optuna.trial.FixedTrial(two_wide)) == 0.5
    assert calls[-1][2].shape == (len(ids), 1116)
    monkeypatch.setattr(search, "MAX_EMBEDDING_COLUMNS", 1000)  # now 1116 > cap: pruned, not scored
    n_calls = len(calls)
    with pytest.raises(optuna.TrialPruned):
        objective(optuna.trial.FixedTrial(two_wide))
    assert len(calls) == n_calls
    with pytest.raises(optuna.TrialPruned):  # no block at all
        objective(optuna.trial.FixedTrial({**two_wide, "use_signal": False, "use_random": False,
                                           "use_wide": False}))


def test_search_respects_cap_separates_folds_and_matches_assemble(planted, root, tmp_path, monkeypatch):
    data_dir = planted[0]
    monkeypatch.setattr(search, "MAX_EMBEDDING_COLUMNS", 300)  # the wide block at full width (1100) breaks it
    seen = []
    real = search.score_matrix
    monkeypatch.setattr(search, "score_matrix", lambda d, ids, X, *a, **k: seen.append(ids) or real(d, ids, X, *a, **k))
    spec = run_search(data_dir, root, tmp_path / "spec.json", trials=12, tasks=TASKS, progress=False)
    study = optuna.load_study(study_name=search.STUDY_NAME, storage=f"sqlite:///{tmp_path / 'search.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(t.user_attrs["columns"] <= 300 for t in complete)
    assert all(t.user_attrs["columns"] > 300 or t.user_attrs["columns"] == 0 for t in pruned)
    assert spec["search"]["columns"] <= 300
    # every trial scored the search fold; the final figure the report fold; the two are disjoint
    search_ids, report_ids = seen[0], seen[-1]
    assert all(np.array_equal(s, search_ids) for s in seen[:-1])
    assert not np.intersect1d(search_ids, report_ids).size
    assert len(search_ids) + len(report_ids) == len(planted[1])
    assert spec["search"]["report_fold"]["n_clients"] == len(report_ids)
    # the spec file is what submit consumes, and it rebuilds the matrix the search scored
    on_disk = json.loads((tmp_path / "spec.json").read_text())
    assert on_disk["version"] == 1 and on_disk["blocks"] == spec["blocks"]
    for b in on_disk["blocks"]:
        assert set(b) == {"name", "path", "transform", "weight", "dims"}
    ids = client_order(data_dir)
    blocks = {p.name: read_block(p) for p in find_blocks(root)}
    chosen = [(b["name"], b["weight"], b["dims"] or blocks[b["name"]].dim) for b in spec["blocks"]]
    assert np.allclose(assemble(blocks, on_disk, ids), BlockMatrices(blocks, ids).ensemble(chosen), atol=1e-5)
    assert (tmp_path / "search_history.png").is_file()


def test_resume_continues_the_stored_study(planted, root, tmp_path):
    data_dir = planted[0]
    out = tmp_path / "spec.json"
    run_search(data_dir, root, out, trials=3, tasks=["conversion"], progress=False)
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    first = [t.params for t in optuna.load_study(study_name=search.STUDY_NAME, storage=storage).trials]
    with pytest.raises(FileExistsError, match="--resume"):
        run_search(data_dir, root, out, trials=1, tasks=["conversion"], progress=False)
    with pytest.raises(ValueError, match="other settings"):
        run_search(data_dir, root, out, trials=1, tasks=["churn"], resume=True, progress=False)
    spec = run_search(data_dir, root, out, trials=2, tasks=["conversion"], resume=True, progress=False)
    trials = optuna.load_study(study_name=search.STUDY_NAME, storage=storage).trials
    assert len(trials) == 5 and spec["search"]["trials_total"] == 5
    assert [t.params for t in trials[:3]] == first
    assert all(t.params not in first for t in trials[3:])  # new suggestions, not a replay of the start


def test_new_study_starts_from_all_blocks_then_each_alone(planted, root, tmp_path):
    data_dir = planted[0]
    names = sorted(p.name for p in find_blocks(root))
    n = 1 + len(names)
    run_search(data_dir, root, tmp_path / "spec.json", trials=n, tasks=["conversion"], progress=False)
    trials = optuna.load_study(study_name=search.STUDY_NAME, storage=f"sqlite:///{tmp_path / 'search.db'}").trials
    used = [{k[4:] for k, v in t.params.items() if k.startswith("use_") and v} for t in trials]
    assert used == [set(names)] + [{name} for name in names]
    blocks = {p.name: read_block(p) for p in find_blocks(root)}
    assert all(t.params[f"dims_{name}"] == blocks[name].dim for t in trials for name in names)


def test_find_blocks_ignores_leftovers_of_a_killed_write(tmp_path):
    """A killed atomic write leaves hidden '.<name>.old-*' / '.<name>.tmp-*' copies: they are never blocks."""
    ids = np.arange(5, dtype=np.int64)
    write_block(Block(ids, np.ones((5, 2), np.float32), {"embedder": "stats"}), tmp_path / "stats")
    for name in (".stats.old-1a2b3c4d", ".stats.tmp-123-1a2b3c4d"):
        shutil.copytree(tmp_path / "stats", tmp_path / name)
    assert [p.name for p in find_blocks(tmp_path)] == ["stats"]
    shutil.rmtree(tmp_path / "stats")
    with pytest.raises(FileNotFoundError, match="no block folders"):
        find_blocks(tmp_path)


def test_objective_averages_row_orders(planted, root, monkeypatch):
    data_dir = planted[0]
    blocks, ids, objective = whole_world_objective(data_dir, root, "narrow", repeats=3)
    seen = []

    def fake(d, order_ids, X, tasks, *a, labels=None, **k):
        assert np.array_equal(labels.client_ids, order_ids)  # each order's labels follow its rows
        seen.append(order_ids)
        v = float(order_ids[0] % 7)  # an order-dependent score
        return {"mean": v, "sum": 2 * v, "seconds": 1.0, "tasks": {t: {"score": v} for t in tasks}}

    monkeypatch.setattr(search, "score_matrix", fake)
    params = {"use_signal": True, "use_random": False, "use_wide": False, "dims_signal": 8, "dims_random": 8,
              "dims_wide": 1100, **{f"weight_{n}": 1.0 for n in blocks}}
    trial = optuna.trial.FixedTrial(params)
    value = objective(trial)
    assert len(seen) == 3 and np.array_equal(seen[0], ids)
    assert all(set(s) == set(ids) for s in seen) and not np.array_equal(seen[1], ids)
    assert value == pytest.approx(np.mean([float(s[0] % 7) for s in seen]))


def test_max_clients_keeps_the_report_fold_inside_the_full_one(planted, root, tmp_path, monkeypatch):
    data_dir = planted[0]
    seen = []
    real = search.score_matrix
    monkeypatch.setattr(search, "score_matrix", lambda d, ids, X, *a, **k: seen.append(ids) or real(d, ids, X, *a, **k))
    run_search(data_dir, root, tmp_path / "spec.json", trials=1, tasks=["conversion"], progress=False,
               max_clients=200)
    full_search, full_report = split_folds(client_order(data_dir), 0)
    assert len(seen[0]) == 100 and np.isin(seen[0], full_search).all()
    assert len(seen[-1]) == 100 and np.isin(seen[-1], full_report).all()
    assert np.isin(search.report_sample(data_dir, 50, 0), full_report).all()


def test_confirm_with_replica_scores_ensemble_beside_each_block(planted, root, tmp_path):
    data_dir = planted[0]
    spec = run_search(data_dir, root, tmp_path / "spec.json", trials=2, tasks=["churn"], progress=False,
                      confirm_clients=150, mlp_width=(16, 32))
    c = spec["search"]["confirm"]
    assert c["n_clients"] == 150 and c["replica"] is False
    assert set(c["candidates"]) == {"searched", "signal", "random", "wide"}
    best_other = max(v["sum"] for k, v in c["candidates"].items() if k != "searched")
    assert c["margin"] == pytest.approx(c["candidates"]["searched"]["sum"] - best_other)
    assert "searched minus the best other" in search.format_confirm(c)


def test_search_refuses_an_oracle_block(planted, root, tmp_path):
    from validate.oracle import is_oracle

    data_dir, ids = planted[0], planted[1]
    r = tmp_path / "root"
    shutil.copytree(root / "signal", r / "signal")
    write_block(Block(ids, np.zeros((len(ids), 2), np.float32), {"embedder": "oracle", "oracle": True}), r / "truth")
    assert is_oracle(read_block(r / "truth").meta)
    with pytest.raises(ValueError, match="oracle"):
        run_search(data_dir, r, tmp_path / "spec.json", trials=1, tasks=["churn"], progress=False)


def test_a_non_finite_score_prunes_the_trial_with_its_reason(planted, root, monkeypatch):
    data_dir = planted[0]
    blocks, ids, objective = whole_world_objective(data_dir, root, "lgbm")
    monkeypatch.setattr(search, "score_matrix", lambda *a, **k: {
        "mean": float("nan"), "sum": float("nan"), "seconds": 0,
        "tasks": {"churn": {"score": 0.7}, "conversion": {"score": float("nan")}}})
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"use_signal": True, "use_random": False, "use_wide": False, "dims_signal": 8,
                         "dims_random": 8, "dims_wide": 1100})
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.state == optuna.trial.TrialState.PRUNED and "conversion" in t.user_attrs["pruned_because"]
