"""Time of the MLP replica probe (a script, not a test): all six tasks on N clients with a D-wide block.

The replica's cost is linear in rows: per task, building the net once, and per epoch ``ceil(rows / 128)`` steps of the 51.6M-parameter
net, one forward pass over every row, and the task's metrics. This script measures each of the three on this
machine (random inputs and labels of the real shapes: the cost does not depend on the values) and adds them up for
the six tasks, instead of spending hours on a full CPU run:

    python benchmarks/bench_probe.py --clients 100000 --dim 512 --threads 1 2 [--active-share 0.29] [--steps 20]

``--run`` instead trains and scores the replica for real on random data of those shapes (measured, not
extrapolated; what a GPU makes affordable, and on CPU at small ``--clients`` a check of the extrapolation):

    python benchmarks/bench_probe.py --run --clients 100000 --dim 512 --device cuda

``--data-dir W`` takes the row counts (relevant and active clients) from a world instead. Prints a markdown table
(per thread count: seconds per step, forward rows/s, metric seconds, extrapolated minutes per task and in total)
and, with ``--out``, writes the figures as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from competition.schema import CHURN, CHURN_TASKS, N_TARGETS, TASKS  # noqa: E402
from competition.targets import task_clients  # noqa: E402
from validate.metrics import task_score  # noqa: E402
from validate.mlp import BATCH_SIZE, EPOCHS, MLPProbe, build_model, predict  # noqa: E402



def task_rows(args) -> dict[str, int]:
    """Rows each task is trained and scored on."""
    if args.data_dir:
        return {t: len(task_clients(args.data_dir, t)) for t in TASKS}
    return {t: round(args.clients * args.active_share) if t == CHURN else args.clients for t in TASKS}


def outputs_of(task: str) -> int:
    return 1 if task in CHURN_TASKS else N_TARGETS


def measure(dim: int, outputs: int, steps: int, rows_for_metric: int, task: str, seed: int) -> dict:
    """Seconds per training step, forward rows/s and metric seconds at the current torch thread count."""
    rng = np.random.default_rng(seed)
    t_build = time.perf_counter()
    net, opt = build_model(dim, outputs)
    build = time.perf_counter() - t_build
    loss_fn = nn.BCEWithLogitsLoss()
    x = torch.from_numpy(rng.standard_normal((BATCH_SIZE * (steps + 2), dim), dtype=np.float32))
    y = torch.from_numpy((rng.random((len(x), outputs)) < 0.05).astype(np.float32))
    times = []
    for i in range(steps + 2):  # the first two steps warm up allocators and kernels
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]), y[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    step = float(np.median(times[2:]))
    setup = build + sum(times[:2]) - 2 * step  # paid once per task: initialising the net, the first steps' allocations
    t0 = time.perf_counter()
    predict(net, x)
    forward_rate = len(x) / (time.perf_counter() - t0)
    labels = (rng.random((rows_for_metric, outputs)) < 0.05).astype(np.int8)
    scores = rng.standard_normal((rows_for_metric, outputs)).astype(np.float32)
    popularity = np.sort(rng.random(outputs))[::-1] if outputs > 1 else None
    t0 = time.perf_counter()
    task_score(task, labels.ravel() if outputs == 1 else labels, scores.ravel() if outputs == 1 else scores,
               popularity)
    return {"step_seconds": step, "setup_seconds": setup, "forward_rows_per_second": forward_rate,
            "metric_seconds": time.perf_counter() - t0}


def run_full(rows: dict[str, int], dim: int, device: str | None, seed: int, threads: int | None = None) -> dict:
    """Train and score the replica on random data of each task's shape; measured seconds per task."""
    rng = np.random.default_rng(seed)
    out = {}
    for task in TASKS:
        n, k = rows[task], outputs_of(task)
        X = rng.standard_normal((n, dim), dtype=np.float32)
        y_train = (rng.random((n, k)) < 0.05).astype(np.float32)
        y_valid = (rng.random((n, k)) < 0.05).astype(np.float32)
        if k == 1:
            y_train, y_valid = y_train[:, 0], y_valid[:, 0]
        popularity = np.sort(rng.random(k))[::-1] if k > 1 else None
        r = MLPProbe(device=device, threads=threads, progress=False).score(task, X, y_train, y_valid, popularity)
        out[task] = {"rows": n, "seconds": r["seconds"], "minutes": r["seconds"] / 60}
        print(f"{task}: {n:,} rows, {r['seconds']:.1f} s", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=100_000, help="relevant clients (ignored with --data-dir)")
    p.add_argument("--active-share", type=float, default=0.29,
                   help="share of relevant clients that are active (churn's rows); the synthetic worlds have ~0.29")
    p.add_argument("--data-dir", type=Path, default=None, help="take the row counts from this world")
    p.add_argument("--dim", type=int, default=512, help="block width")
    p.add_argument("--steps", type=int, default=20, help="training steps timed per measurement")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", action="store_true", help="train and score for real instead of extrapolating")
    p.add_argument("--device", default=None, help="with --run: cpu or cuda (default: CUDA when present)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    rows = task_rows(args)
    if args.run:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        name = torch.cuda.get_device_name() if device == "cuda" else f"{os.cpu_count()} CPUs"
        tasks = run_full(rows, args.dim, device, args.seed, args.threads[0] if device == "cpu" else None)
        total = sum(t["minutes"] for t in tasks.values())
        print(f"\nMLP replica run for real on {name} (torch {torch.__version__}), {args.dim}-d block, rows {rows}:\n")
        print("| device | " + " | ".join(TASKS) + " | total |")
        print("|---|" + "---|" * (len(TASKS) + 1))
        print(f"| {name} | " + " | ".join(f"{tasks[t]['minutes']:.2f} min" for t in TASKS) + f" | {total:.2f} min |")
        if args.out:
            args.out.write_text(json.dumps({"device": name, "dim": args.dim, "rows": rows, "tasks": tasks,
                                            "total_minutes": total}, indent=2))
        return 0
    result = {"machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, load {os.getloadavg()[0]:.1f}",
              "dim": args.dim, "rows": rows, "epochs": EPOCHS, "batch_size": BATCH_SIZE, "threads": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        per_task = {}
        cache: dict[int, dict] = {}
        for task in TASKS:
            k = outputs_of(task)
            m = cache.get(k) or measure(args.dim, k, args.steps, rows[task], task, args.seed)
            cache[k] = m
            n = rows[task]
            seconds = m["setup_seconds"] + EPOCHS * (math.ceil(n / BATCH_SIZE) * m["step_seconds"]
                                                     + n / m["forward_rows_per_second"] + m["metric_seconds"])
            per_task[task] = {**m, "rows": n, "minutes": seconds / 60}
            print(f"threads {threads} {task}: {m['step_seconds']:.3f} s/step, {n:,} rows -> {seconds / 60:.1f} min",
                  flush=True)
        result["threads"][threads] = {"tasks": per_task, "total_minutes": sum(t["minutes"] for t in per_task.values())}
    print(f"\nMLP replica, {args.dim}-d block, rows {rows} ({result['machine']}); minutes extrapolated from "
          f"{args.steps} timed steps:\n")
    print("| threads | s/step (100 outputs) | forward rows/s | " + " | ".join(TASKS) + " | total |")
    print("|---|---|---|" + "---|" * (len(TASKS) + 1))
    for threads, r in result["threads"].items():
        t = r["tasks"]
        print(f"| {threads} | {t['propensity_sku']['step_seconds']:.3f} | "
              f"{t['propensity_sku']['forward_rows_per_second']:,.0f} | "
              + " | ".join(f"{t[k]['minutes']:.1f}" for k in TASKS) + f" | {r['total_minutes']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
