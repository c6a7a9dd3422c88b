"""benchmarks/estimated_oracle.py: the R^2 summary by column group and the regression it reports on."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from estimated_oracle import fit_predict, r2_by_group  # noqa: E402


def test_r2_by_group_groups_entries_and_skips_constant_columns():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(200, 5)).astype(np.float32)
    y[:, 4] = 3.0  # constant on the rows: no R^2
    pred = y.copy()
    pred[:, 2:4] = y[:, 2:4].mean(axis=0)  # the group's mean: R^2 0
    names = ["propensity_sku_12", "propensity_sku_7", "style_0", "style_1", "log_session_rate"]
    r2 = r2_by_group(y, pred, names, np.arange(200))
    assert r2 == pytest.approx({"propensity_sku": 1.0, "style": 0.0}, abs=1e-6)


def test_fit_predict_learns_a_smooth_map_and_is_reproducible():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1200, 6)).astype(np.float32)
    y = np.stack([x[:, 0] + 0.5 * x[:, 1], np.tanh(x[:, 2])], axis=1).astype(np.float32)
    fit, held = np.arange(800), np.arange(800, 1200)
    a = fit_predict(x, y, fit, seed=3, hidden=32, epochs=60, log=lambda *_: None)
    b = fit_predict(x, y, fit, seed=3, hidden=32, epochs=60, log=lambda *_: None)
    assert a.tobytes() == b.tobytes()
    r2 = r2_by_group(y, a, ["linear", "curved"], held)
    assert r2["linear"] > 0.9 and r2["curved"] > 0.8
