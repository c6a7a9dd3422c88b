"""Two kernels of the multitask embedder, each against what it replaced, alternated in one process so that the
ratio holds on a noisy machine.

    python benchmarks/bench_kernels.py [--rows 1000000] [--columns 147] [--steps 300] [--rounds 2] [--seed 0]

- quantile: ``QuantileTransformer.transform`` against :func:`embedders.quantile.quantile_transform` on a float32
  matrix of multitask's input shape at 1M clients (skewed counts with ties and zeros; a normal-output map fitted on
  100,000 rows, as multitask fits it); the two outputs must be the same bytes.
- adamw: ``torch.optim.AdamW``'s default loop against :func:`embedders.training.adamw` (fused), ``--steps`` steps
  on a net of the multitask trunk's layout at the 1M run's size (a 147-column input, bottleneck 128, trunk
  512 / 1024 with 2 residual blocks, the heads' linear layers); gradients are random and fixed, so only the step is
  timed.

Prints seconds per round and kernel, then the median old / new ratio.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from competition.cli import HelpFormatter  # noqa: E402


def quantile_round(X: np.ndarray, qt) -> tuple[float, float, bool]:
    from embedders.quantile import quantile_transform

    t0 = time.perf_counter()
    old = qt.transform(X)
    t1 = time.perf_counter()
    new = quantile_transform(qt, X)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, old.tobytes() == new.tobytes()


def trunk_like(columns: int):
    """The multitask net's trainable layout for ``--input blocks`` (embedders.multitask.model), without its item
    tables."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    dim, thin, wide = 128, 512, 1024
    layers = [nn.Linear(columns, dim), nn.Linear(dim, thin), nn.LayerNorm(thin)]
    for _ in range(2):
        layers += [nn.LayerNorm(thin), nn.Linear(thin, wide), nn.Linear(wide, thin)]
    layers += [nn.LayerNorm(thin), nn.Linear(thin, 1), nn.Linear(thin, 1), nn.Linear(thin, 100)]
    layers += [nn.Linear(thin, 64) for _ in range(3)]
    return nn.ModuleList(layers)


def adamw_round(columns: int, steps: int) -> tuple[float, float, int]:
    import torch

    from embedders.training import adamw

    seconds = []
    for fused in (False, True):
        net = trunk_like(columns)
        opt = adamw(net, 1e-3, 0.01) if fused else torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
        g = torch.Generator().manual_seed(1)
        for p in net.parameters():
            p.grad = torch.randn(p.shape, generator=g) * 1e-3
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.step()
        seconds.append(time.perf_counter() - t0)
    return seconds[0], seconds[1], sum(p.numel() for p in trunk_like(columns).parameters())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_kernels.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the quantile matrix")
    p.add_argument("--columns", type=int, default=147, help="columns (multitask's stats + tfidf_svd inputs: 147)")
    p.add_argument("--steps", type=int, default=300, help="AdamW steps per round")
    p.add_argument("--rounds", type=int, default=2, help="rounds, each timing old then new")
    p.add_argument("--seed", type=int, default=0, help="seed of the matrix")
    args = p.parse_args(argv)
    from sklearn.preprocessing import QuantileTransformer

    rng = np.random.default_rng(args.seed)
    X = (rng.gamma(0.5, size=(args.rows, args.columns)) * (rng.random((args.rows, args.columns)) < 0.6))
    X = np.round(X * 4).astype(np.float32) / 4  # ties, as counts have
    fit = X[np.sort(rng.choice(args.rows, size=min(args.rows, 100_000), replace=False))]
    qt = QuantileTransformer(n_quantiles=min(1000, len(fit)), output_distribution="normal", subsample=len(fit),
                             random_state=args.seed).fit(fit)
    ratios: dict[str, list[float]] = {"quantile": [], "adamw": []}
    for r in range(args.rounds):
        old, new, same = quantile_round(X, qt)
        ratios["quantile"].append(old / new)
        print(f"round {r + 1} quantile {args.rows:,} x {args.columns}: transform {old:.1f} s, quantile_transform "
              f"{new:.1f} s ({old / new:.2f}x), same bytes: {same}", flush=True)
        old, new, n_params = adamw_round(args.columns, args.steps)
        ratios["adamw"].append(old / new)
        print(f"round {r + 1} adamw {args.steps} steps, {n_params:,} parameters: loop {old:.2f} s, fused {new:.2f} s "
              f"({old / new:.1f}x)", flush=True)
    print("median old / new: " + ", ".join(f"{k} {np.median(v):.2f}x" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
