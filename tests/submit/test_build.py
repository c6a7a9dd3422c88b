"""submit.build: blocks built through pack are those their own CLI builds (thread policy), and an interrupted
gru_ae build resumes from its checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import embedders.gru_ae.train as gru_train
from competition.schema import EMBEDDINGS_FILE
from embedders.base import read_block
from submit.pack import pack

REPO = Path(__file__).resolve().parents[2]
#: A tiny gru_ae, as spec params and as the CLI flags that mean the same.
PARAMS = {"variant": "day_event", "dim": 8, "field_dim": 4, "layers": 1, "epochs": 2, "batch_size": 2,
          "device": "cpu"}
FLAGS = ["--variant", "day_event", "--dim", "8", "--field-dim", "4", "--layers", "1", "--epochs", "2",
         "--batch-size", "2", "--device", "cpu"]


def _spec(folder: Path, file: str = "spec.json", **params) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"version": 1, "blocks": [{"name": "gru_ae", "path": "blocks/gru_ae", "transform": "l2", "weight": 1.0,
                                      "dims": None, "embedder": "gru_ae", "params": {**PARAMS, **params}}]}
    (folder / file).write_text(json.dumps(spec))
    return folder / file


@pytest.fixture
def many_threads():
    """The test process at several torch threads: a path that did not apply the policy would train with them."""
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


def test_cli_built_and_pack_built_gru_ae_are_the_same_bytes(split_world, tmp_path, monkeypatch, many_threads):
    cli_out = tmp_path / "cli" / "blocks" / "gru_ae"
    run = subprocess.run([sys.executable, "-m", "embedders.gru_ae", "--data-dir", str(split_world), "--out",
                          str(cli_out), *FLAGS, "--no-progress"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    seen = []
    real_build = gru_train.GruAE.build_model

    def build_model(self, vocab):
        seen.append(torch.get_num_threads())
        return real_build(self, vocab)

    monkeypatch.setattr(gru_train.GruAE, "build_model", build_model)
    pack(split_world, _spec(tmp_path / "pack"), tmp_path / "pack" / "out", progress=False, log=lambda m: None)
    assert seen == [1]  # trained under the policy, not the caller's 4 threads
    assert torch.get_num_threads() == 4  # and the caller's setting is restored
    pack_out = tmp_path / "pack" / "blocks" / "gru_ae"
    assert (pack_out / EMBEDDINGS_FILE).read_bytes() == (cli_out / EMBEDDINGS_FILE).read_bytes()
    # the CLI's block records the params pack asks for: pack takes it as fresh
    logs = []
    pack(split_world, _spec(tmp_path / "cli"), tmp_path / "cli" / "out", progress=False, log=logs.append)
    assert "block gru_ae: fresh" in " ".join(logs), logs
    assert read_block(cli_out).meta["params"]["threads"] == 1


def test_a_killed_pack_resumes_gru_ae_from_its_checkpoint(split_world, tmp_path, monkeypatch, capfd):
    from embedders import checkpoints
    real_save = checkpoints.save_atomic  # the one writer of last.pt / best.pt (embedders.checkpoints.save_epoch)

    def save_then_die(obj, path):
        real_save(obj, path)
        if path.name == "last.pt" and obj["epoch"] == 1:
            raise KeyboardInterrupt("killed after epoch 1")

    spec = _spec(tmp_path / "run")
    with monkeypatch.context() as m:
        m.setattr(checkpoints, "save_atomic", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            pack(split_world, spec, tmp_path / "run" / "out", progress=False, log=lambda m: None)
    work = tmp_path / "run" / "blocks" / "gru_ae.work"
    assert (work / "last.pt").is_file() and not (tmp_path / "run" / "blocks" / "gru_ae").exists()
    capfd.readouterr()
    pack(split_world, spec, tmp_path / "run" / "out", progress=False, log=lambda m: None)
    err = capfd.readouterr().err
    assert f"resumed from {work / 'last.pt'} after epoch 1" in err
    assert "epoch 2/2" in err and "epoch 1/2" not in err  # only the missing epoch is trained
    # the same bytes as an uninterrupted build
    pack(split_world, _spec(tmp_path / "fresh"), tmp_path / "fresh" / "out", progress=False, log=lambda m: None)
    assert ((tmp_path / "run" / "blocks" / "gru_ae" / EMBEDDINGS_FILE).read_bytes()
            == (tmp_path / "fresh" / "blocks" / "gru_ae" / EMBEDDINGS_FILE).read_bytes())
    history = read_block(tmp_path / "run" / "blocks" / "gru_ae").meta["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_another_runs_checkpoint_is_not_resumed(split_world, tmp_path, capfd):
    """Other params or a broken last.pt: trained from scratch, said in one line."""
    spec = _spec(tmp_path / "run")
    pack(split_world, spec, tmp_path / "run" / "out", progress=False, log=lambda m: None)
    last = tmp_path / "run" / "blocks" / "gru_ae.work" / "last.pt"
    capfd.readouterr()
    pack(split_world, _spec(tmp_path / "run", "other.json", field_dim=6), tmp_path / "run" / "out", progress=False,
         log=lambda m: None)
    err = capfd.readouterr().err
    assert f"{last}: checkpoint of another run (field_dim: 4 -> 6); training from scratch" in err
    assert "epoch 1/2" in err and "resumed" not in err
    last.write_bytes(last.read_bytes()[:100])
    pack(split_world, spec, tmp_path / "run" / "out", progress=False, log=lambda m: None)
    err = capfd.readouterr().err
    assert f"{last}: unreadable checkpoint" in err and "training from scratch" in err
    assert np.isfinite(read_block(tmp_path / "run" / "blocks" / "gru_ae").vectors).all()


def test_a_multitask_block_reuses_the_stats_block_its_spec_built_before_it(split_world, tmp_path):
    """ensure_blocks hands the blocks built so far to multitask, whose stats input at the period's end is the stats
    block itself (read, not built again; the bytes are those of a standalone build: tests/embedders)."""
    small = {"dim": 8, "thin": 16, "wide": 16, "residual_blocks": 1, "item_dim": 8, "epochs": 1, "windows": 2,
             "inputs": ["stats"], "device": "cpu"}
    spec = {"version": 1, "blocks": [
        {"name": "stats", "path": "blocks/stats", "transform": "quantile", "weight": 1.0, "dims": None,
         "embedder": "stats", "params": {}},
        {"name": "multitask", "path": "blocks/multitask", "transform": "l2", "weight": 1.0, "dims": None,
         "embedder": "multitask", "params": small},
        {"name": "mt_heads", "path": "blocks/mt_heads", "transform": "quantile", "weight": 1.0, "dims": None,
         "embedder": "multitask", "params": {**small, "export": "heads"}}]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    pack(split_world, tmp_path / "spec.json", tmp_path / "out", seed=0, progress=False, log=lambda m: None)
    meta = json.loads((tmp_path / "blocks" / "multitask" / "meta.json").read_text())
    assert meta["reused_inputs"] == [str(tmp_path / "blocks" / "stats")]
    # the heads block after it reads its training and its bottleneck: nothing trained or built again
    heads = json.loads((tmp_path / "blocks" / "mt_heads" / "meta.json").read_text())
    assert heads["trained_by"] == str(tmp_path / "blocks" / "multitask.work")
    assert heads["bottleneck_from"] == str(tmp_path / "blocks" / "multitask")
    assert not (tmp_path / "blocks" / "mt_heads.work" / "last.pt").exists()
    stats_width = np.load(tmp_path / "blocks" / "stats" / EMBEDDINGS_FILE, mmap_mode="r").shape[1]
    assert np.load(tmp_path / "out" / EMBEDDINGS_FILE).shape[1] == 8 + stats_width + 2 + 100 + 3 * 8
    # and the block is fresh for the next pack: what it reused is not a param that would make it stale
    lines = []
    pack(split_world, tmp_path / "spec.json", tmp_path / "again", seed=0, progress=False, log=lines.append)
    assert any(line.startswith("block multitask: fresh") for line in lines), lines
    assert any(line.startswith("block mt_heads: fresh") for line in lines), lines
