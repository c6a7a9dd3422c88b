"""embedders.next_event: the next-event causal Transformer and the shared sequence loop (docs/new_blocks.md)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from competition.events import EventTable
from competition.load import read_relevant_clients
from embedders.base import read_block
from embedders.gru_ae.tokens import END, MISSING, N_RESERVED, START
from embedders.next_event.__main__ import main
from embedders.next_event.inputs import GAP, SequenceInputs, gap_grid, parse_fields
from embedders.next_event.model import GPTConfig, NextEventGPT
from embedders.next_event.train import NextEventEmbedder

REPO = Path(__file__).resolve().parents[2]
NO_EVENTS = 10**12
SMALL = dict(dim=16, n_layer=1, n_head=2, epochs=2, batch_size=16, sku_negatives=64, device="cpu", threads=1,
             progress=False)


def test_gap_tokens_of_the_tiny_world(tiny_events):
    rows = tiny_events.rows_of(np.array([100, NO_EVENTS]))
    tok = SequenceInputs(("event_type", GAP)).fit(tiny_events, rows[:1]).tokens(tiny_events, rows)
    g = tok.grids[GAP]
    # 100's input events: search 09:57, visit 09:58, add 09:59, buy 10:00 (60 s apart: log2(61) -> 5), then the
    # buy of 07-23 23:59:59, 22 days later (log2(1 + 1_951_199) -> 20)
    assert g[0, :7].tolist() == [START, MISSING, N_RESERVED + 5, N_RESERVED + 5, N_RESERVED + 5, N_RESERVED + 20, END]
    assert g[1, :2].tolist() == [START, END] and tok.lengths.tolist() == [7, 2]
    with pytest.raises(ValueError, match="unknown sequence field 'colour'"):
        parse_fields("sku,colour")


def test_the_model_is_causal():
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=16, dropout=0.0, fields=("event_type",),
                    vocab_sizes={"event_type": 10})
    torch.manual_seed(0)
    model = NextEventGPT(cfg).eval()
    a = torch.tensor([[1, 5, 6, 7, 8, 2]])
    b = a.clone()
    b[0, 4] = 9  # change a later event
    ha, hb = model.hidden({"event_type": a}), model.hidden({"event_type": b})
    assert torch.equal(ha[0, :4], hb[0, :4]) and not torch.equal(ha[0, 4], hb[0, 4])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from competition.synth import generate_world
    return generate_world(tmp_path_factory.mktemp("next_event") / "w", 100, seed=8, chunk_clients=100, progress=False)


@pytest.fixture(scope="module")
def events(world):
    return EventTable.build(world, "input", progress=False)


def test_shapes_determinism_empty_clients_and_meta(events, tmp_path):
    ids = np.concatenate([read_relevant_clients(events.data_dir)[:40], [NO_EVENTS, NO_EVENTS + 1]])
    kw = {**SMALL, "max_train_clients": 64}
    a = NextEventEmbedder(work_dir=str(tmp_path / "a"), seed=1, **kw).fit(events).transform(events, ids)
    b = NextEventEmbedder(work_dir=str(tmp_path / "b"), seed=1, **kw).fit(events).transform(events, ids)
    assert a.vectors.shape == (42, 16) and np.array_equal(a.client_ids, ids) and np.isfinite(a.vectors).all()
    assert a.vectors.tobytes() == b.vectors.tobytes()
    np.testing.assert_array_equal(a.vectors[-1], a.vectors[-2])  # an empty history has one defined vector
    assert len(a.meta["history"]) == 2 and a.meta["n_parameters"] > 0 and a.meta["best_epoch"] in (1, 2)
    losses = [h["train_loss"] for h in a.meta["history"]]
    assert all(np.isfinite(losses))
    c = NextEventEmbedder(work_dir=str(tmp_path / "c"), seed=2, **{**kw, "epochs": 1}).fit(events).transform(events, ids)
    assert c.vectors.tobytes() != a.vectors.tobytes()


def _cli(world, out, *extra):
    return ["--data-dir", str(world), "--out", str(out), "--dim", "16", "--layers", "1", "--heads", "2",
            "--batch-size", "16", "--sku-negatives", "64", "--device", "cpu", "--threads", "1", "--no-progress",
            "--seed", "3", *extra]


def test_cli_layouts_and_resume(tiny, tmp_path, capsys):
    assert main(_cli(tiny, tmp_path / "in", "--epochs", "2")) == 0
    block = read_block(tmp_path / "in")
    assert block.client_ids.tolist() == [100, 101, 102, 103, 104] and block.vectors.shape == (5, 16)
    assert block.meta["embedder"] == "next_event" and block.meta["peak_rss_mb"] > 0 and block.meta["seconds"] >= 0
    assert main(_cli(tiny, tmp_path / "raw", "--epochs", "2", "--layout", "raw")) == 0
    raw = read_block(tmp_path / "raw")
    assert raw.meta["n_events"] > block.meta["n_events"]  # the raw layout holds the events after the cut
    # resume: one epoch, then continued to two, gives the uninterrupted bytes
    assert main(_cli(tiny, tmp_path / "part", "--epochs", "1")) == 0
    assert main(_cli(tiny, tmp_path / "part", "--epochs", "2", "--resume")) == 0
    assert read_block(tmp_path / "part").vectors.tobytes() == block.vectors.tobytes()
    with pytest.raises(SystemExit) as exc:
        main(_cli(tiny, tmp_path / "x", "--heads", "3"))
    assert exc.value.code == 2 and "multiple of n_head" in capsys.readouterr().err


def test_a_fitted_model_reads_post_cut_events_of_the_raw_table(tiny, tiny_events, tmp_path):
    emb = NextEventEmbedder(work_dir=str(tmp_path / "w"), seed=0, holdout=0.0, **{**SMALL, "epochs": 1})
    emb.fit(tiny_events)
    raw = EventTable.build(tiny, "raw", progress=False)
    ids = np.array([102, 103])
    a, b = emb.transform(tiny_events, ids).vectors, emb.transform(raw, ids).vectors
    assert not np.allclose(a[0], b[0])  # 102 bought and visited after the cut
    np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)  # 103 has no event after it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes(tiny, tmp_path):
    world = tiny
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "embedders.next_event", *_cli(world, out, "--epochs", "1", "--batch-size", "2")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    block = read_block(out)
    np.testing.assert_array_equal(np.sort(block.client_ids), np.sort(read_relevant_clients(world)))
    assert block.vectors.shape[1] == 16 and np.isfinite(block.vectors).all()
    assert block.meta["history"][0]["batches"] >= 1  # each rank's share of the 2-client batches
