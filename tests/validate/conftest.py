"""A small world with a planted signal, and blocks that do or do not know it.

Each relevant client has a hidden group g in 0..3. Groups 0 and 1 buy in each target window with probability 0.85,
groups 2 and 3 with 0.1, always in their group's three categories (so churn, conversion and the propensity tasks
all depend on g). The "signal" block holds a noisy one-hot of g; the "random" block is pure noise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedders.base import Block, write_block
from tests.worlds import write_world

N_CLIENTS = 600
N_SKUS = 60           # sku s: category s % 12, price bucket (7 * s) % 25
N_INPUT_SKUS = 48     # skus 48..59 never appear in the input period: the "new" skus
FIRST_ID = 1000
END = "2022-08-20 15:30:00"


def _ts(day: np.ndarray, second: np.ndarray) -> list[str]:
    t = np.datetime64("2022-06-01T00:00:00") + day.astype("timedelta64[D]") + second.astype("timedelta64[s]")
    return [str(x).replace("T", " ") for x in t]


def build_planted_world(root: Path, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write the raw world, split it, write target lists. Returns (root, client ids, group per client)."""
    from competition.split import split
    from competition.targets import write_target_lists

    rng = np.random.default_rng(seed)
    ids = np.arange(FIRST_ID, FIRST_ID + N_CLIENTS, dtype=np.int64)
    group = rng.integers(0, 4, N_CLIENTS)
    skus = np.arange(N_SKUS)
    cat_of = skus % 12

    def group_skus(g: int, pool: int) -> np.ndarray:
        return skus[(np.isin(cat_of, [3 * g, 3 * g + 1, 3 * g + 2])) & (skus < pool)]

    buys, visits = [], []
    # input period: days 0..50 (June 1 .. July 21); every client visits, 70% buy once (-> active)
    for i, cid in enumerate(ids):
        for d, s in zip(rng.integers(0, 50, 3), rng.integers(0, 86_000, 3)):
            visits.append((int(cid), _ts(np.array([d]), np.array([s]))[0], int(rng.integers(1, 40))))
        if rng.random() < 0.7:
            buys.append((int(cid), _ts(np.array([rng.integers(0, 50)]), np.array([3600]))[0],
                         int(rng.choice(group_skus(group[i], N_INPUT_SKUS)))))
    # target windows: train = days 53..66 (Jul 24 .. Aug 6), validation = days 67..80 (Aug 7 .. Aug 20)
    for first_day in (53, 67):
        for i, cid in enumerate(ids):
            if rng.random() < (0.85 if group[i] < 2 else 0.1):
                for sku in rng.choice(group_skus(group[i], N_SKUS), size=rng.integers(1, 3)):
                    buys.append((int(cid), _ts(np.array([first_day + rng.integers(0, 13)]),
                                                np.array([rng.integers(0, 50_000)]))[0], int(sku)))
    buys.append((1, END, 0))  # a non-relevant client's purchase fixes the end of the period
    products = [(int(s), int(cat_of[s]), int((7 * s) % 25)) for s in skus]
    write_world(root, {"product_buy": buys, "page_visit": visits}, products, ids.tolist())
    split(root, progress=False)
    write_target_lists(root)
    return root, ids, group


def planted_blocks(ids: np.ndarray, group: np.ndarray, seed: int = 0) -> dict[str, Block]:
    """"signal": noisy one-hot of the group (8 columns); "random": noise (8 columns); clients in shuffled order."""
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(ids))
    onehot = np.eye(4, dtype=np.float32)[group]
    signal = np.concatenate([onehot + 0.3 * rng.standard_normal(onehot.shape),
                             rng.standard_normal((len(ids), 4))], axis=1).astype(np.float32)
    noise = rng.standard_normal((len(ids), 8)).astype(np.float32)
    return {"signal": Block(ids[order], signal[order], {"name": "signal", "embedder": "test"}),
            "random": Block(ids[order], noise[order], {"name": "random", "embedder": "test"})}


@pytest.fixture(scope="session")
def planted(tmp_path_factory):
    """(data_dir, client ids, groups, {name: block dir}) for the planted world."""
    root = tmp_path_factory.mktemp("planted")
    data_dir, ids, group = build_planted_world(root / "world")
    dirs = {name: write_block(b, root / "blocks" / name) for name, b in planted_blocks(ids, group).items()}
    return data_dir, ids, group, dirs
