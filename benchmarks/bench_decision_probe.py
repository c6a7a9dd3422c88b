"""What the decision probe (``mlp16``) costs against the replica (``mlp``): one training step and one prediction of
the organisers' network, fp32 and bfloat16 alternated in one process, so the ratio holds on a noisy machine.

``python benchmarks/bench_decision_probe.py [--dim 400] [--outputs 100] [--steps 12] [--rounds 3] [--threads 1 2]``

Prints per mode (the replica, ``mlp16``) and thread count the median seconds of a step (forward, backward, fused AdamW) and of a
2,048-row prediction, and the fp32 / bf16 ratios; then what one candidate costs at 1,000 / 2,000 / 10,000 clients
(6 tasks x 3 epochs x n / 128 steps, 3 predictions per task). Agreement with the replica's figures is measured by
``python -m validate.agreement --probes mlp16 ...`` (docs/probes.md).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from validate.mlp import BATCH_SIZE, EPOCHS, PREDICT_BATCH, build_model, logits_at, predict

#: (label, precision): the replica, the decision probe.
MODES = (("fp32 (replica)", "fp32"), ("bf16 (mlp16)", "bf16"))


def time_step(dim: int, outputs: int, precision: str, steps: int) -> tuple[float, float]:
    """Median seconds of a training step and of one PREDICT_BATCH-row prediction."""
    x = torch.randn(BATCH_SIZE * steps, dim)
    y = (torch.rand(BATCH_SIZE * steps, outputs) < 0.05).float()
    net, opt = build_model(dim, outputs)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    times = []
    for i in range(steps):
        s = i * BATCH_SIZE
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(logits_at(net, x[s:s + BATCH_SIZE], precision), y[s:s + BATCH_SIZE]).backward()
        opt.step()
        times.append(time.perf_counter() - t)
    xp = torch.randn(PREDICT_BATCH, dim)
    predict(net, xp, precision=precision)  # warm-up
    t = time.perf_counter()
    predict(net, xp, precision=precision)
    return float(np.median(times[2:])), time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=400, help="input columns (the CPU default blocks together: 403)")
    p.add_argument("--outputs", type=int, default=100, help="outputs (a propensity task's 100 targets)")
    p.add_argument("--steps", type=int, default=12, help="training steps timed per round (the first 2 dropped)")
    p.add_argument("--rounds", type=int, default=3, help="fp32 / bf16 alternations")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch CPU thread counts to time")
    args = p.parse_args()
    print(f"dim {args.dim}, outputs {args.outputs}, batch {BATCH_SIZE}; median over {args.rounds} alternated rounds")
    print("threads | mode | step (s) | predict 2,048 rows (s) | step vs the first mode")
    per = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        got: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in MODES}
        for _ in range(args.rounds):
            for label, precision in MODES:
                got[label].append(time_step(args.dim, args.outputs, precision, args.steps))
        for label, runs in got.items():
            step, pred = (float(np.median([r[i] for r in runs])) for i in (0, 1))
            per[(threads, label)] = (step, pred)
            ref = per[(threads, MODES[0][0])][0]
            print(f"{threads} | {label} | {step:.3f} | {pred:.3f} | {ref / step:.2f}x faster")
    print("\none candidate, six tasks (3 epochs of n/128 steps + 3 predictions each), seconds:")
    print("threads | mode | " + " | ".join(f"{n:,} clients" for n in (1_000, 2_000, 10_000)))
    for (threads, label), (step, pred) in per.items():
        cost = [6 * (EPOCHS * np.ceil(n / BATCH_SIZE) * step + EPOCHS * pred * n / PREDICT_BATCH)
                for n in (1_000, 2_000, 10_000)]
        print(f"{threads} | {label} | " + " | ".join(f"{c:.0f}" for c in cost))


if __name__ == "__main__":
    main()
