"""Checks of the CUDA code paths, for a machine with a GPU (CI and the development machine have none).

    python benchmarks/check_cuda.py [--world DIR] [--out checks.json]

On a small synthetic world (made with ``competition.synth`` unless ``--world`` is given; ``--device cpu
--clients 100`` is a dry run of the script itself):

1. ``gru_ae`` trains on CUDA end to end (the packed-sequence GRU path) and writes a complete, finite block;
2. on CUDA a client's vector does not depend on who shares its batch (each client alone vs one big batch);
3. the CUDA packed path and the CPU padded-run path give the same vectors for the same weights;
   2 and 3 with cuDNN's default TF32 (differences of its rounding, < 2e-3) and with TF32 off (< 1e-5);
4. the MLP replica's task scores on CUDA and on CPU for the same data (float noise only: the organisers ran on GPU).

Exits 1 when a check fails; prints every figure and writes them as JSON with ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from competition.events import EventTable  # noqa: E402
from competition.schema import CHURN, EVENT_TYPES, PROPENSITY_CATEGORY  # noqa: E402
from competition.synth import generate_world  # noqa: E402
from competition.targets import task_clients, task_dataset  # noqa: E402
from embedders.gru_ae import GruAE  # noqa: E402
from embedders.gru_ae.model import batch_tensors  # noqa: E402
from embedders.gru_ae.tokens import tokenize  # noqa: E402
from validate.mlp import MLPProbe  # noqa: E402


def check_gru(world: Path, work: Path, seed: int, device: str = "cuda") -> dict:
    events = EventTable.build(world, "input", progress=False)
    t0 = time.perf_counter()
    emb = GruAE(variant="week_all", dim=64, field_dim=64, layers=2, epochs=2, batch_size=64, device=device,
                seed=seed, work_dir=work / "gru.work", progress=False).fit(events)
    fit_seconds = time.perf_counter() - t0
    ids = np.sort(events.client_ids)
    block = emb.transform(events, ids)
    rows = np.flatnonzero(events.lengths > 0)[:400]
    out = {"fit_seconds": fit_seconds, "block_shape": list(block.vectors.shape),
           "block_finite": bool(np.isfinite(block.vectors).all()),
           "block_covers_clients": bool(np.array_equal(np.sort(block.client_ids), ids)),
           "held_out_loss": [h.get("heldout_loss") for h in emb.history_]}
    # cuDNN runs RNNs in TF32 by default on Ampere and later (10-bit mantissa): differences of ~1e-4 are that
    # rounding. With TF32 off the paths must agree to float32 rounding; a real batch dependence would be O(0.1).
    tf32 = torch.backends.cudnn.allow_tf32
    try:
        for label, allow in (("tf32", True), ("fp32", False)):
            torch.backends.cudnn.allow_tf32 = allow
            out[label] = _compare_paths(emb, events, rows, device)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    return out


def _compare_paths(emb: GruAE, events: EventTable, rows: np.ndarray, device: str) -> dict:
    """Max abs differences: each client alone vs one big batch (on ``device``), and ``device`` (packed path on
    CUDA) vs CPU (padded run + gather) with the same weights."""
    together = emb.encode_rows(events, rows, batch_size=len(rows))
    alone = np.stack([emb.encode_rows(events, np.array([r]))[0] for r in rows[:32]])
    model_cpu = emb.model_.to("cpu")
    tok = tokenize(events, emb.vocab_, rows)
    batch, lens = batch_tensors(*tok.batch(np.arange(len(rows))), None, torch.device("cpu"))
    with torch.no_grad():
        cpu_vectors = model_cpu.user_vectors(batch, lens).numpy()
    emb.model_.to(device)
    return {"alone_vs_batch_max_abs": float(np.abs(alone - together[:32]).max()),
            "device_vs_cpu_max_abs": float(np.abs(cpu_vectors - together).max()),
            "vector_mean_abs": float(np.abs(together).mean())}


def check_mlp(world: Path, seed: int, n_clients: int, device: str = "cuda") -> dict:
    """Replica scores on CUDA vs CPU: the same rows, labels and (seeded) initial weights. Features: log counts of
    each event type per client, plus noise columns."""
    rng = np.random.default_rng(seed)
    events = EventTable.build(world, "input", progress=False)
    out = {}
    for task in (CHURN, PROPENSITY_CATEGORY):
        ids = task_clients(world, task)
        ids = np.sort(ids[rng.permutation(len(ids))[:n_clients]])
        td = task_dataset(world, task, ids)
        rows = events.rows_of(ids)
        lengths = np.where(rows >= 0, events.lengths[np.maximum(rows, 0)], 0)
        owner = np.repeat(np.arange(len(ids)), lengths)
        starts = events.offsets[np.maximum(rows, 0)]
        pos = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(lengths.sum())
        counts = np.zeros((len(ids), len(EVENT_TYPES)), np.float32)
        np.add.at(counts, (owner, events.event_type[pos]), 1)
        X = np.concatenate([np.log1p(counts), rng.standard_normal((len(ids), 27)).astype(np.float32)], axis=1)
        res = {}
        for dev in (device, "cpu"):
            r = MLPProbe(device=dev, progress=False).score(task, X, td.y_train, td.y_valid, td.popularity)
            res[dev] = {"score": r["score"], "best_epoch": r["best_epoch"], "seconds": r["seconds"]}
        res["abs_diff"] = abs(res[device]["score"] - res["cpu"]["score"])
        out[task] = res
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=Path, default=None, help="a split world (default: make a 2,000-client one)")
    p.add_argument("--clients", type=int, default=2000, help="relevant clients of the world made without --world")
    p.add_argument("--mlp-clients", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda", help="cpu: a dry run of this script on a machine without a GPU")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("check_cuda: no CUDA device here (--device cpu runs the same code as a dry run)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        world = args.world
        if world is None:
            world = work / "world"
            generate_world(world, clients=args.clients, seed=args.seed, progress=False)
        name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
        result = {"device": name, "torch": torch.__version__, "gru_ae": check_gru(world, work, args.seed, args.device),
                  "mlp": check_mlp(world, args.seed, args.mlp_clients, args.device)}
    g = result["gru_ae"]
    failures = [name for name, ok in [
        ("gru block complete and finite", g["block_finite"] and g["block_covers_clients"]),
        ("gru vector independent of the batch (fp32: 1e-5; tf32: 2e-3)",
         g["fp32"]["alone_vs_batch_max_abs"] < 1e-5 and g["tf32"]["alone_vs_batch_max_abs"] < 2e-3),
        ("gru device path == CPU padded path (fp32: 1e-5; tf32: 2e-3)",
         g["fp32"]["device_vs_cpu_max_abs"] < 1e-5 and g["tf32"]["device_vs_cpu_max_abs"] < 2e-3),
        ("mlp CUDA vs CPU within 0.002", all(v["abs_diff"] < 0.002 for v in result["mlp"].values())),
    ] if not ok]
    result["failures"] = failures
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print("FAILED: " + "; ".join(failures) if failures else "all CUDA checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
