"""The shared training-loop pieces (embedders.training, embedders.checkpoints' epoch save / resume)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embedders.checkpoints import load_best, resume_training, save_epoch
from embedders.training import (adamw, cap_clients, check_positive_ints, epoch_batches, holdout_split, length_batches,
                                seed_of)


def test_holdout_split_is_seeded_sorted_and_disjoint():
    rows = np.arange(100, 140, dtype=np.int64)
    train, val = holdout_split(rows, 0.25, seed=3)
    assert len(val) == 10 and len(train) == 30
    assert np.array_equal(np.sort(np.concatenate([train, val])), rows)
    assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()
    again = holdout_split(rows, 0.25, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    # positions and values split alike (multitask splits positions, next_event rows)
    pos_train, _ = holdout_split(np.arange(len(rows)), 0.25, seed=3)
    assert np.array_equal(rows[pos_train], train)
    assert len(holdout_split(rows[:9], 0.5, seed=3)[1]) == 0  # under 10 clients: nothing held out


def test_cap_clients_samples_and_refuses_fewer_than_two():
    ids = np.arange(50, dtype=np.int64) * 7
    capped = cap_clients(ids, 12, seed=1, name="x")
    assert len(capped) == 12 and np.isin(capped, ids).all() and (np.diff(capped) > 0).all()
    assert np.array_equal(cap_clients(ids, None, seed=1, name="x"), ids)
    with pytest.raises(ValueError, match="1 training client.*needs at least 2"):
        cap_clients(ids[:1], None, seed=1, name="x")


def test_epoch_batches_cover_the_rows_once_per_world_and_reseed():
    lengths = np.random.default_rng(0).integers(3, 40, size=53)
    batches, gen = epoch_batches(lengths, 8, seed=5, epoch=2, rank=0, world=1)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(53))
    first = torch.rand(3)
    batches2, gen2 = epoch_batches(lengths, 8, seed=5, epoch=2, rank=0, world=1, max_batches=2)
    assert torch.equal(first, torch.rand(3))  # torch's global RNG reseeded at each epoch start
    assert len(batches2) == 2 and all(np.array_equal(a, b) for a, b in zip(batches2, batches))
    assert torch.equal(torch.rand(4, generator=gen), torch.rand(4, generator=gen2))
    ranks = [epoch_batches(lengths, 8, 5, 2, r, 2)[0] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4
    assert seed_of(5, 2, 0, 1) != seed_of(5, 2, 1, 1)
    assert len(length_batches(lengths, 8, np.random.default_rng(1))) == 7


def test_save_epoch_then_resume_training_restores_the_state(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    key = {"params": {"lr": 1.0}, "fingerprint": "f", "world": 1}
    history = [{"epoch": 1, "train_loss": 0.5}]
    save_epoch(tmp_path, model, opt, key, 0, 0.4, 0.4, 1, history, rng=True)
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()
    state = torch.get_rng_state()
    torch.rand(5)
    fresh = torch.nn.Linear(3, 2)
    got = resume_training(tmp_path / "last.pt", key, fresh, torch.optim.Adam(fresh.parameters()), "cpu", True, 3,
                          lambda m: None)
    assert got == (1, 0.4, 1, history)
    assert torch.equal(fresh.weight, model.weight) and torch.equal(torch.get_rng_state(), state)
    assert resume_training(tmp_path / "last.pt", key, fresh, opt, "cpu", False, 3, print) == (0, math.inf, -1, [])
    with pytest.raises(ValueError, match="lr: 1.0 -> 2.0"):
        resume_training(tmp_path / "last.pt", {**key, "params": {"lr": 2.0}}, fresh, opt, "cpu", True, 3, print)
    other = torch.nn.Linear(3, 2)
    load_best(other, tmp_path, "cpu", best_epoch=1)
    assert torch.equal(other.weight, model.weight)


def test_check_positive_ints_names_the_first_bad_one():
    check_positive_ints({"a": 1, "b": np.int64(3)})
    with pytest.raises(ValueError, match="b must be an integer >= 1, got 0"):
        check_positive_ints({"a": 2, "b": 0, "c": 1.5})
    with pytest.raises(ValueError, match="c must be an integer >= 1, got 1.5"):
        check_positive_ints({"c": 1.5})


def test_adamw_is_fused_and_steps_like_the_default_loop():
    def net() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Flatten(), torch.nn.Linear(8, 3))

    fused_net, loop_net = net(), net()
    fused = adamw(fused_net, 1e-2, 0.01)
    loop = torch.optim.AdamW(loop_net.parameters(), lr=1e-2, weight_decay=0.01)
    assert fused.defaults["fused"] is True and not loop.defaults.get("fused")
    assert fused.defaults["lr"] == 1e-2 and fused.defaults["weight_decay"] == 0.01
    x = torch.tensor([[1, 2], [3, 9]])
    for model, opt in ((fused_net, fused), (loop_net, loop)):
        for _ in range(5):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for a, b in zip(fused_net.parameters(), loop_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # the same update up to float rounding
    assert not torch.equal(fused_net[2].weight, net()[2].weight)  # and it did move
