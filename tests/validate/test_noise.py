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
