import json

import numpy as np
import pytest

from competition.targets import task_clients
from embedders.base import Block, read_block, write_block
from validate import probe
from validate.probe import TaskLabels, as_submitted, client_order, score_blocks, score_matrix

SMALL = (64, 128)  # not the replica: a small MLP keeps the test fast


def test_lgbm_finds_planted_signal(planted):
    data_dir, _, _, dirs = planted
    sig = score_blocks(data_dir, [dirs["signal"]], tasks=["churn", "conversion", "propensity_category"],
                       probe="lgbm", progress=False)
    rnd = score_blocks(data_dir, [dirs["random"]], tasks=["churn", "conversion", "propensity_category"],
                       probe="lgbm", progress=False)
    for task in ("churn", "conversion", "propensity_category"):
        assert sig["tasks"][task]["score"] > rnd["tasks"][task]["score"] + 0.1, task
    assert sig["tasks"]["propensity_category"]["proxy"] is True
    assert sig["tasks"]["churn"]["proxy"] is False
    assert sig["sum"] == pytest.approx(sum(t["score"] for t in sig["tasks"].values()))


def test_mlp_finds_planted_signal(planted):
    data_dir, _, _, dirs = planted
    kw = dict(tasks=["churn", "propensity_category"], probe="mlp", progress=False, mlp_width=SMALL, device="cpu")
    sig = score_blocks(data_dir, [dirs["signal"]], **kw)
    rnd = score_blocks(data_dir, [dirs["random"]], **kw)
    assert sig["tasks"]["churn"]["score"] > rnd["tasks"]["churn"]["score"] + 0.15
    assert sig["sum"] > rnd["sum"] + 0.2
    assert sig["replica"] is False
    assert len(sig["tasks"]["churn"]["epochs"]) == 3


def test_rows_follow_first_block_and_churn_keeps_active(planted):
    data_dir, ids, _, dirs = planted
    block = read_block(dirs["signal"])
    order = client_order(data_dir, block.client_ids)
    assert np.array_equal(order, block.client_ids)  # the block covers every relevant client
    partial = block.client_ids[::-1][:100]
    order = client_order(data_dir, partial)
    assert np.array_equal(order[:100], partial)
    assert sorted(order.tolist()) == sorted(ids.tolist())
    labels = TaskLabels.load(data_dir, ["churn", "conversion"], order)
    active = task_clients(data_dir, "churn")
    assert np.array_equal(labels.data["churn"].client_ids, order[np.isin(order, active)])
    assert np.array_equal(labels.rows["conversion"], np.arange(len(order)))
    sub = labels.restrict(order[::3])
    assert np.array_equal(sub.data["conversion"].y_valid, labels.data["conversion"].y_valid[::3])
    assert np.array_equal(sub.data["churn"].client_ids, order[::3][np.isin(order[::3], active)])


def test_clients_subset_and_concatenation(planted):
    data_dir, ids, _, dirs = planted
    subset = ids[:200]
    res = score_blocks(data_dir, [dirs["signal"], dirs["random"]], tasks=["conversion"], probe="lgbm",
                       clients=subset, progress=False)
    assert res["n_clients"] == 200 and res["dim"] == 16
    assert res["name"] == "signal+random"
    assert [b["covered"] for b in res["blocks"]] == [200, 200]


def test_shared_labels_give_the_same_scores_and_refuse_too_few_clients(planted):
    data_dir, ids, _, dirs = planted
    tasks = ["churn", "conversion", "propensity_category"]
    subset = ids[:300]
    labels = TaskLabels.load(data_dir, tasks, ids[::-1])  # more clients, in another order: restricted per call
    for name in ("signal", "random"):
        own = score_blocks(data_dir, [dirs[name]], tasks, probe="lgbm", clients=subset, progress=False)
        shared = score_blocks(data_dir, [dirs[name]], tasks, probe="lgbm", clients=subset, progress=False,
                              labels=labels)
        assert shared["sum"] == own["sum"] and shared["n_clients"] == own["n_clients"] == 300
        assert {t: f["n_clients"] for t, f in shared["tasks"].items()} == \
               {t: f["n_clients"] for t, f in own["tasks"].items()}
    with pytest.raises(ValueError, match="lack 200 of the 300"):
        score_blocks(data_dir, [dirs["signal"]], tasks, probe="lgbm", clients=subset, progress=False,
                     labels=TaskLabels.load(data_dir, tasks, ids[200:]))
    with pytest.raises(ValueError, match="propensity_sku"):
        score_blocks(data_dir, [dirs["signal"]], tasks + ["propensity_sku"], probe="lgbm", clients=subset,
                     progress=False, labels=labels)


def test_missing_clients_get_column_means(planted):
    data_dir, ids, _, _ = planted
    half = Block(ids[:300], np.ones((300, 2), dtype=np.float32) * np.array([1.0, 3.0], dtype=np.float32),
                 {"name": "half"})
    X = probe.concat_blocks([half], ids)
    assert np.allclose(X[300:], [1.0, 3.0])


def test_score_matrix_checks_inputs(planted):
    data_dir, ids, _, _ = planted
    with pytest.raises(ValueError, match="unknown task"):
        score_matrix(data_dir, ids, np.zeros((len(ids), 2)), tasks=["nope"], probe="lgbm")
    with pytest.raises(ValueError, match="shape"):
        score_matrix(data_dir, ids, np.zeros((3, 2)), tasks=["churn"], probe="lgbm")


def test_as_submitted_rounds_to_float16_and_clips():
    x = np.array([[1.0001, 70000.0]], dtype=np.float32)
    with pytest.warns(UserWarning, match="float16"):
        y = as_submitted(x)
    assert y.dtype == np.float32
    assert y[0, 0] == np.float32(np.float16(1.0001)) and y[0, 1] == np.finfo(np.float16).max


def test_cli_writes_table_json_and_png(planted, tmp_path, capsys):
    data_dir, _, _, dirs = planted
    out = tmp_path / "report.json"
    rc = probe.main(["--data-dir", str(data_dir), "--embeddings-dir", str(dirs["signal"]), str(dirs["random"]),
                     "--each", "--tasks", "churn", "propensity_sku", "--probe", "lgbm", "--out", str(out),
                     "--no-progress"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "signal+random" in table and "propensity_sku" in table and "sum" in table and "proxy" in table
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"signal", "random", "signal+random"}
    fig = report["results"]["signal"]["tasks"]["churn"]
    assert {"score", "auroc", "seconds", "n_clients"} <= set(fig)
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_cli_bad_block_folder_is_one_clear_error(planted, tmp_path, capsys):
    data_dir = planted[0]
    rc = probe.main(["--data-dir", str(data_dir), "--embeddings-dir", str(tmp_path / "nope"), "--probe", "lgbm"])
    assert rc == 2
    assert "nope/embeddings.npy: missing" in capsys.readouterr().err


def test_blocks_of_the_same_embedder_keep_apart_names(tmp_path):
    ids = np.arange(5, dtype=np.int64)
    for folder in ("queries", "urls"):
        write_block(Block(ids, np.ones((5, 2), np.float32), {"name": "tfidf_svd"}), tmp_path / folder)
    same = [Block(ids, np.zeros((5, 2), np.float32), {"name": "x"}) for _ in range(2)]
    blocks = probe.load_blocks([tmp_path / "queries", tmp_path / "urls", *same])
    assert [b.meta["name"] for b in blocks] == ["queries", "urls", "x#1", "x#2"]


def test_table_states_coverage_width_and_casts(planted, tmp_path, capsys):
    """Nothing silent: a block missing clients, a float64 block and an over-wide one are all said."""
    data_dir, ids, _, dirs = planted
    rng = np.random.default_rng(3)
    partial = write_block(Block(ids[:450], rng.standard_normal((450, 4)).astype(np.float32), {"name": "partial"}),
                          tmp_path / "partial")
    np.save(partial / "embeddings.npy", np.load(partial / "embeddings.npy").astype(np.float64))
    wide = write_block(Block(ids, rng.standard_normal((len(ids), 2049)).astype(np.float16), {"name": "wide"}),
                       tmp_path / "wide", dtype="float16")
    rc = probe.main(["--data-dir", str(data_dir), "--embeddings-dir", str(dirs["signal"]), str(partial),
                     "--each", "--tasks", "churn", "--probe", "lgbm", "--no-progress"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "notice: block 'partial'" in captured.err and "stored as float64; cast to float32" in captured.err
    lines = captured.out.splitlines()
    row = next(line for line in lines if line.startswith("coverage (least)"))
    assert row.split()[2:] == ["100.0%", "75.0%", "75.0%"]  # signal, partial, signal+partial
    assert "note: block partial covers 450 of 600 scored clients; the other 150 got its column means" in lines
    assert not any("over the submission limit" in line for line in lines)
    rc = probe.main(["--data-dir", str(data_dir), "--embeddings-dir", str(wide), "--tasks", "churn",
                     "--probe", "lgbm", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "note: wide is 2,049 columns wide, over the submission limit of 2,048: a probe of an over-wide block" in out


def test_duplicate_client_ids_are_one_clear_error(planted, tmp_path, capsys):
    data_dir, ids, _, _ = planted
    d = write_block(Block(ids, np.ones((len(ids), 2), np.float32), {"name": "dup"}), tmp_path / "dup")
    np.save(d / "client_ids.npy", np.r_[ids[:-1], ids[0]])
    rc = probe.main(["--data-dir", str(data_dir), "--embeddings-dir", str(d), "--probe", "lgbm", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "client_ids.npy: 1 duplicate client id(s)" in err
