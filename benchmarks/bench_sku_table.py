"""Seconds per optimiser step of gru_ae's sku table at a given catalogue size: dense Adam against row-sparse updates.

A script, not a test (issue 17). One step is what gru_ae's training does to the table: look up the rows of a batch
of sku tokens (``--batch`` clients x ``--tokens`` events) and of the sampled-softmax candidates (the batch's skus and
``--negatives`` uniform ones), a tied-softmax loss, backward, the optimiser step and the delta clip. Everything else
in a gru_ae step (the GRUs) does not depend on the catalogue, so the difference between the sizes is what a large
catalogue costs per step::

    python benchmarks/bench_sku_table.py --skus 25000 1260000 --dim 32 --tokens 32 --steps 8 --threads 1

prints, per catalogue size and update mode, the median seconds per step (after one warm-up step) and the dense /
sparse ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from competition.cli import HelpFormatter  # noqa: E402
from embedders.gru_ae.sku_table import SkuTable  # noqa: E402
from embedders.gru_ae.tokens import N_RESERVED  # noqa: E402
from embedders.training import RowSparseAdam  # noqa: E402


def step_seconds(n_skus: int, dim: int, sparse: bool, batch: int, tokens_per_client: int, negatives: int,
                 steps: int, seed: int) -> float:
    """Median seconds of ``steps`` optimiser steps on a content table of ``n_skus`` seen skus (module docstring)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    names = rng.integers(0, 256, size=(n_skus, 16), dtype=np.uint8)
    table = SkuTable("content", n_skus, dim, names=names, seed=seed, sparse_rows=sparse)
    head = torch.nn.Linear(dim, dim, bias=False)
    opt = RowSparseAdam(list(table.parameters()) + list(head.parameters()), table.sparse_parameters, 1e-3)
    times = []
    for _ in range(steps + 1):
        tokens = torch.from_numpy(rng.integers(0, n_skus, size=batch * tokens_per_client)) + N_RESERVED
        t0 = time.perf_counter()
        cands = torch.unique(torch.cat([tokens, torch.randint(0, n_skus, (negatives,)) + N_RESERVED]))
        out = head(table.rows(tokens))
        loss = F.cross_entropy(out @ table.rows(cands).T, torch.searchsorted(cands, tokens))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        table.clip_()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_sku_table.py", formatter_class=HelpFormatter,
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--skus", type=int, nargs="+", default=[25_000, 1_260_000], help="seen skus (table rows)")
    parser.add_argument("--dim", type=int, default=32, help="row width (the cpu preset's field_dim: 32)")
    parser.add_argument("--batch", type=int, default=64, help="clients per batch (x --tokens sku tokens)")
    parser.add_argument("--tokens", type=int, default=32, help="sku tokens per client (gru_ae keeps at most 128)")
    parser.add_argument("--negatives", type=int, default=4096, help="uniform negative skus per step")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (gru_ae trains on 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{'skus':>10} {'dense s/step':>13} {'sparse s/step':>14} {'dense/sparse':>13}")
    for n in args.skus:
        dense, sparse = (step_seconds(n, args.dim, s, args.batch, args.tokens, args.negatives, args.steps,
                                     args.seed)
                         for s in (False, True))
        print(f"{n:>10,} {dense:>13.4f} {sparse:>14.4f} {dense / sparse:>13.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
