"""The rhythm block: gap statistics and the renewal share against a Python-loop reference, the price spread, the
block on the tiny world, validation and the CLI."""
from __future__ import annotations

import numpy as np
import pytest

from embedders.base import read_block
from embedders.rhythm import (DAY_FEATURES, MISSING, RhythmEmbedder, day_rhythm, feature_names, main,
                              price_spread)


def _reference_rhythm(days: list[int], horizon: float) -> list[float]:
    """DAY_FEATURES of one row from its event days (days before the cut), with plain Python."""
    distinct = sorted(set(days), reverse=True)              # oldest first
    if not distinct:
        return [0.0] + [MISSING] * 5
    out = [float(np.log1p(len(distinct)))]
    if len(distinct) < 2:
        return out + [MISSING] * 5
    gaps = [a - b for a, b in zip(distinct[:-1], distinct[1:])]
    mean = sum(gaps) / len(gaps)
    std = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5
    e = distinct[-1]
    longer = [g for g in gaps if g > e]
    renewal = (sum(1 for g in longer if g <= e + horizon) / len(longer)) if longer else 0.0
    return out + [mean, std / mean, float(gaps[-1]), e / mean, renewal]


def test_day_rhythm_matches_a_loop_reference_on_random_rows():
    rng = np.random.default_rng(5)
    n, m = 40, 400
    row = rng.integers(0, n - 5, m)                      # the last rows have no events
    day = rng.integers(0, 60, m) * rng.integers(0, 2, m)  # many events on day 0, duplicates included
    got = day_rhythm(row, day, n, horizon=7.0)
    assert got.shape == (n, len(DAY_FEATURES))
    for i in range(n):
        np.testing.assert_allclose(got[i], _reference_rhythm(day[row == i].tolist(), 7.0), rtol=1e-9, atol=1e-12,
                                   err_msg=f"row {i}")


def test_a_clockwork_buyer_is_due_and_a_burst_is_not():
    # row 0 bought every 10 days and last 9 days ago: due; row 1 bought on 3 consecutive days 9 days ago
    row = np.array([0, 0, 0, 0, 1, 1, 1])
    day = np.array([39, 29, 19, 9, 11, 10, 9])
    got = dict(zip(DAY_FEATURES, day_rhythm(row, day, 2, horizon=14.0).T))
    assert got["gap_mean"].tolist() == [10.0, 1.0] and got["gap_cv"].tolist() == [0.0, 0.0]
    assert got["overdue"].tolist() == [0.9, 9.0]
    assert got["renewal"].tolist() == [1.0, 0.0]


def test_price_spread_in_time_order():
    row = np.array([0, 0, 0, 2])
    price = np.array([10, 30, 20, 7], dtype=np.int16)
    mean, std, last = price_spread(row, price, 3)
    np.testing.assert_allclose(mean, [20.0, MISSING, 7.0])
    np.testing.assert_allclose(std, [np.std([10, 30, 20]), MISSING, 0.0])
    np.testing.assert_allclose(last, [20.0, MISSING, 7.0])


def test_block_on_the_tiny_world(tiny_events):
    emb = RhythmEmbedder(progress=False).fit(tiny_events)
    clients = np.r_[np.asarray(tiny_events.client_ids[:3]), 999_999].astype(np.int64)
    block = emb.transform(tiny_events, clients)
    names = feature_names()
    assert block.dim == emb.width == len(names) == 17 and block.meta["feature_names"] == names
    assert block.vectors.dtype == np.float32 and np.isfinite(block.vectors).all()
    unknown = dict(zip(names, block.vectors[-1]))                # a client without events
    assert unknown["buy_days"] == 0.0 and unknown["active_days"] == 0.0 and unknown["buy_gap_mean"] == MISSING
    assert unknown["price_product_mean"] == MISSING
    # every client with events has at least one active day
    assert (block.vectors[:3, names.index("active_days")] > 0).all()


def test_validation_names_the_parameter():
    with pytest.raises(ValueError, match="fixed width of 17"):
        RhythmEmbedder(dim=8).validate()
    with pytest.raises(ValueError, match="horizon_days must be > 0"):
        RhythmEmbedder(horizon_days=0).validate()
    RhythmEmbedder(dim=17).validate()


def test_cli_writes_the_block(tiny, tmp_path):
    assert main(["--data-dir", str(tiny), "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    block = read_block(tmp_path / "r")
    assert block.dim == 17 and block.meta["embedder"] == "rhythm"
