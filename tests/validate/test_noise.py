import json

import numpy as np
import pytest

from validate import noise
from validate.noise import DIFFERENCE_FACTOR, noise_line, noise_threshold, run_plan

SMALL = ("16", "32")


def test_run_plan_orders_share_clients_samples_do_not():
    plan = run_plan(1000, 200, orders=3, samples=3, seed=0)
    assert [k for k, _ in plan] == ["order", "order", "order", "sample", "sample"]
    first = plan[0][1]
    for _, rows in plan[1:3]:
        assert set(rows) == set(first) and not np.array_equal(rows, first)
    for _, rows in plan[3:]:
        assert len(rows) == 200 and set(rows) != set(first)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(plan, run_plan(1000, 200, 3, 3, seed=0)))


def test_noise_line_scales_from_the_nearest_measured_size():
    table = {"sizes": {"3000": {"std": 0.02, "threshold": DIFFERENCE_FACTOR * 0.02, "n_runs": 4},
                       "10000": {"std": 0.01, "threshold": DIFFERENCE_FACTOR * 0.01, "n_runs": 2}}}
    x, size, runs = noise_threshold(3000, table)
    assert size == 3000 and runs == 4 and x == pytest.approx(2 * np.sqrt(2) * 0.02)
    x, size, _ = noise_threshold(12000, table)
    assert size == 10000 and x == pytest.approx(DIFFERENCE_FACTOR * 0.01 * np.sqrt(10000 / 12000))
    assert "below 0.057" in noise_line(3000, table)
    assert "not measured" in noise_line(3000, {"sizes": {}})


def test_shipped_table_is_readable():
    table = noise.load_measured()
    assert table is None or noise_threshold(5000, table) is not None


def test_cli_measures_spread_over_orders_and_samples(planted, tmp_path, capsys):
    data_dir, _, _, dirs = planted
    out = tmp_path / "noise.json"
    rc = noise.main(["--data-dir", str(data_dir), "--embeddings-dir", str(dirs["signal"]), "--sizes", "300",
                     "--orders", "2", "--samples", "2", "--tasks", "churn", "--mlp-width", *SMALL,
                     "--out", str(out), "--no-progress"])
    assert rc == 0
    table = json.loads(out.read_text())
    s = table["sizes"]["300"]
    assert s["n_runs"] == 3 and [r["kind"] for r in s["runs"]] == ["order", "order", "sample"]
    sums = [r["sum"] for r in s["runs"]]
    assert s["std"] == pytest.approx(np.std(sums, ddof=1))
    assert s["order_std"] == pytest.approx(np.std(sums[:2], ddof=1))
    assert s["threshold"] == pytest.approx(DIFFERENCE_FACTOR * s["order_std"])
    assert s["threshold_samples"] == pytest.approx(DIFFERENCE_FACTOR * s["std"])
    assert s["std"] > 0  # the unshuffled MLP moves with row order and sample
    assert "between different client samples" in noise_line(300, table)
    assert "300" in capsys.readouterr().out


def test_sample_spread_scores_candidates_on_the_same_disjoint_samples(planted, monkeypatch):
    data_dir, ids, _, dirs = planted
    seen = []
    real = noise.score_matrix

    def spy(data_dir, client_ids, X, *args, **kwargs):
        seen.append(np.asarray(client_ids).copy())
        return real(data_dir, client_ids, X, *args, **kwargs)

    monkeypatch.setattr(noise, "score_matrix", spy)
    size = len(ids)  # more than a third of the clients: each sample is cut to len // 3
    res = noise.sample_spread(data_dir, {"random": dirs["random"], "signal": dirs["signal"]}, "random", size,
                              samples=3, tasks=["churn"], probe="lgbm", seed=0, progress=False)
    n = len(ids) // 3
    assert res["n_clients"] == n and len(seen) == 6 and all(len(s) == n for s in seen)
    for k in range(3):  # both candidates on one sample's clients, the samples disjoint
        assert np.array_equal(seen[2 * k], seen[2 * k + 1])
        for j in range(k):
            assert not set(seen[2 * k].tolist()) & set(seen[2 * j].tolist())
    d = res["difference"]["signal"]
    assert d["values"] == pytest.approx(np.subtract(res["sums"]["signal"], res["sums"]["random"]).tolist())
    assert d["mean"] > 0 and all(v > 0 for v in d["values"])  # the planted signal wins on every sample
    assert res["std"]["random"] == pytest.approx(np.std(res["sums"]["random"], ddof=1))
    assert res["threshold"] == pytest.approx(DIFFERENCE_FACTOR * res["std"]["random"] * np.sqrt(n / size))
    lines = noise.sample_noise_lines(res, "LightGBM")
    assert "3 disjoint samples" in lines[0] and "scaled from" in lines[0]
    assert lines[1].startswith("signal - random: +") and "in 3 of 3" in lines[1]
    # the same seed gives the same samples
    again = noise.sample_spread(data_dir, {"random": dirs["random"], "signal": dirs["signal"]}, "random", size,
                                samples=3, tasks=["churn"], probe="lgbm", seed=0, progress=False)
    assert again["sums"] == res["sums"]


def test_sample_spread_refuses_what_cannot_be_measured(planted):
    data_dir, ids, _, dirs = planted
    with pytest.raises(ValueError, match="baseline"):
        noise.sample_spread(data_dir, {"signal": dirs["signal"]}, "stats", 100, tasks=["churn"])
    with pytest.raises(ValueError, match="samples must be >= 2"):
        noise.sample_spread(data_dir, {"signal": dirs["signal"]}, "signal", 100, samples=1, tasks=["churn"])
    with pytest.raises(ValueError, match="cannot make"):
        noise.sample_spread(data_dir, {"signal": dirs["signal"]}, "signal", 100, samples=len(ids), tasks=["churn"])
