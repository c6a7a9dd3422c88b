"""The replica's own noise: how much its score moves with row order and client sample alone.

``python -m validate.noise --data-dir D --embeddings-dir E [E2 ...] --sizes 3000 10000 [--orders 2] [--samples 2]
[--seed S] --out noise.json``

The organisers' network trains unshuffled from a fixed seed, so the same matrix in another row order gets another
score, and another sample of clients another again. Per size N this scores the concatenation of the blocks on
``--samples`` seeded samples of N relevant clients, the first of them also in ``--orders`` seeded row orders, and
reports the spread of the six-task sum (and per task): standard deviation over all runs, and separately over
orders of one sample. A difference between two candidates scored once each on the same clients is noise below
:data:`DIFFERENCE_FACTOR` x the order std (2 x the std of a difference of two independent runs, about 95%);
between different samples of clients below that factor x the std over all runs ("threshold_samples"), which is
much larger: measured at 2,000 clients, orders moved the sum by 0.014, another sample by 0.2.

:func:`noise_line` prints the "differences below X are noise at this size" line every score table ends with, from
the measured table shipped in ``validate/replica_noise.json`` (written by this command; the std is scaled by
sqrt(N_measured / N) from the nearest measured size).

:func:`sample_spread` measures the same for any probe across disjoint client samples, with candidates compared on
the same clients in each: the one-command run reports it for its search sample (the search's noise).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from competition.cli import HelpFormatter, add_no_progress
from competition.io import write_json
from competition.schema import TASKS
from competition.targets import WINDOWS, read_window
from validate.probe import TaskLabels, client_order, concat_blocks, load_blocks, score_matrix

#: The measured table shipped with the package (see the module doc).
MEASURED = Path(__file__).with_name("replica_noise.json")
DIFFERENCE_FACTOR = 2 * np.sqrt(2)


def run_plan(n_all: int, size: int, orders: int, samples: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """``(kind, row indices into the relevant clients)`` per run: sample 0 in ``orders`` orders (the first one is
    the sample's own seeded order), then ``samples - 1`` further samples."""
    rng = np.random.default_rng(seed)
    first = rng.permutation(n_all)[:size]
    plan = [("order", first)]
    plan += [("order", first[rng.permutation(size)]) for _ in range(orders - 1)]
    plan += [("sample", rng.permutation(n_all)[:size]) for _ in range(samples - 1)]
    return plan


def spread(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof 1); NaN with fewer than 2 values."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def measure(data_dir: str | Path, blocks: Sequence, sizes: Sequence[int], orders: int = 2, samples: int = 2,
            tasks: Sequence[str] = TASKS, probe: str = "mlp", seed: int = 0, progress: bool = True,
            mlp_width: tuple[int, int] | None = None, threads: int | None = None, out: Path | None = None) -> dict:
    """Score the blocks' concatenation per run of :func:`run_plan` at each size; returns the spread table."""
    blocks = load_blocks(blocks)
    ids_all = client_order(data_dir)
    tasks = list(tasks)
    windows = {w: read_window(data_dir, w) for w in WINDOWS}  # read once; each run selects its clients
    table = {"data_dir": str(data_dir), "blocks": [b.meta.get("name", b.meta.get("path")) for b in blocks],
             "probe": probe, "tasks": tasks, "seed": seed, "date": date.today().isoformat(), "sizes": {}}
    for size in sizes:
        size = min(int(size), len(ids_all))
        runs = []
        for kind, rows in run_plan(len(ids_all), size, orders, samples, seed):
            ids = ids_all[rows]
            res = score_matrix(data_dir, ids, concat_blocks(blocks, ids), tasks, probe, seed,
                               labels=TaskLabels.load(data_dir, tasks, ids, windows), progress=progress,
                               mlp_width=mlp_width, threads=threads)
            runs.append({"kind": kind, "sum": res["sum"], "seconds": res["seconds"],
                         "tasks": {t: r["score"] for t, r in res["tasks"].items()}})
            print(f"{size} clients, {kind}: sum {res['sum']:.4f} ({res['seconds']:.0f} s)", file=sys.stderr,
                  flush=True)
            table["sizes"][str(size)] = summarise_runs(runs, tasks)
            if out is not None:
                write_json(table, out)
    return table


def summarise_runs(runs: list[dict], tasks: Sequence[str]) -> dict:
    sums = [r["sum"] for r in runs]
    std = spread(sums)
    order_std = spread([r["sum"] for r in runs if r["kind"] == "order"])
    return {"runs": runs, "n_runs": len(runs), "std": std, "range": float(np.ptp(sums)) if sums else float("nan"),
            "order_std": order_std, "task_std": {t: spread([r["tasks"][t] for r in runs]) for t in tasks},
            # candidates compared on the same clients differ by chance as much as row orders do
            "threshold": DIFFERENCE_FACTOR * (order_std if np.isfinite(order_std) else std),
            "threshold_samples": DIFFERENCE_FACTOR * std}


def sample_spread(data_dir: str | Path, candidates: Mapping[str, Any], baseline: str, size: int, samples: int = 3,
                  tasks: Sequence[str] = TASKS, probe: str = "lgbm", seed: int = 0, progress: bool = True) -> dict:
    """How much a probe's verdict moves with the client sample alone (the search's sample noise).

    ``samples`` disjoint seeded samples of ``size`` relevant clients (fewer each when the data has fewer than
    ``samples x size``: disjoint keeps them independent); every candidate (name -> block folder(s), a packed
    submission included) is scored on each sample, all on the same clients. Returns ``n_clients`` (per sample),
    the sums per candidate and sample (``sums``), their std (``std``), the difference below which two scores on
    different samples are noise (``threshold``: :data:`DIFFERENCE_FACTOR` x the baseline's std, scaled by
    sqrt(n_clients / size) to ``size`` clients), and per other candidate its paired difference to ``baseline``
    (``difference``: values per sample, mean, std)."""
    if baseline not in candidates:
        raise ValueError(f"baseline {baseline!r} is not among the candidates {sorted(candidates)}")
    if samples < 2:
        raise ValueError(f"samples must be >= 2 (a spread needs two), got {samples}")
    ids_all = client_order(data_dir)
    n = min(int(size), len(ids_all) // samples)
    if n < 2:
        raise ValueError(f"{len(ids_all)} relevant clients cannot make {samples} samples of at least 2")
    perm = np.random.default_rng([seed, 31]).permutation(len(ids_all))
    blocks = {name: load_blocks(c) for name, c in candidates.items()}
    windows = {w: read_window(data_dir, w) for w in WINDOWS}
    sums: dict[str, list[float]] = {name: [] for name in candidates}
    for k in range(samples):
        ids = ids_all[perm[k * n:(k + 1) * n]]
        labels = TaskLabels.load(data_dir, tasks, ids, windows)
        for name, bl in blocks.items():
            res = score_matrix(data_dir, ids, concat_blocks(bl, ids), tasks, probe, seed, labels=labels,
                               progress=progress)
            sums[name].append(float(res["sum"]))
    std = {name: spread(v) for name, v in sums.items()}
    diffs = {}
    for name in candidates:
        if name != baseline:
            d = np.subtract(sums[name], sums[baseline])
            diffs[name] = {"values": d.tolist(), "mean": float(d.mean()), "std": spread(d)}
    return {"probe": probe, "tasks": list(tasks), "samples": samples, "n_clients": n, "size": int(size),
            "baseline": baseline, "sums": sums, "std": std, "difference": diffs,
            "threshold": DIFFERENCE_FACTOR * std[baseline] * np.sqrt(n / max(int(size), 1))}


def sample_noise_lines(result: Mapping[str, Any], label: str) -> list[str]:
    """The :func:`sample_spread` result in words: the baseline's spread and each candidate's paired difference."""
    n, k, base = result["n_clients"], result["samples"], result["baseline"]
    scaled = "" if n == result["size"] else f" (scaled from {n:,} to {result['size']:,} clients)"
    lines = [f"Sample noise ({label}, {k} disjoint samples of {n:,} clients): {base} moves by std "
             f"{result['std'][base]:.4f} between samples, so one candidate's scores on different samples differ "
             f"by noise below {result['threshold']:.3f}{scaled}."]
    for name, d in result["difference"].items():
        positive = sum(v > 0 for v in d["values"])
        lines.append(f"{name} - {base}: {d['mean']:+.4f} +- {d['std']:.4f} (mean +- std over the samples, on the "
                     f"same clients in each), above {base} in {positive} of {k}.")
    return lines


def load_measured(path: Path = MEASURED) -> dict | None:
    """The measured noise table, or None when there is none (or it cannot be read)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def noise_threshold(n_clients: int, table: dict | None = None) -> tuple[float, int, int] | None:
    """``(threshold, measured size, runs)``: the six-task-sum difference below which two single replica runs at
    ``n_clients`` clients do not differ, scaled from the nearest measured size; None when nothing is measured."""
    table = table if table is not None else load_measured()
    if not table or not table.get("sizes"):
        return None
    usable = {int(k): v for k, v in table["sizes"].items() if np.isfinite(v.get("threshold", float("nan")))}
    if not usable:
        return None
    size = min(usable, key=lambda k: abs(np.log(k / max(n_clients, 1))))
    return float(usable[size]["threshold"] * np.sqrt(size / max(n_clients, 1))), size, usable[size]["n_runs"]


def noise_line(n_clients: int, table: dict | None = None) -> str:
    """"Differences below X are noise at this size" for a table of replica scores at ``n_clients`` clients."""
    got = noise_threshold(n_clients, table)
    if got is None:
        return "The replica's noise at this size is not measured (python -m validate.noise)."
    x, size, runs = got
    scaled = "" if size == n_clients else f", scaled by sqrt({size}/{n_clients})"
    line = (f"Replica noise: six-task-sum differences below {x:.3f} are noise at {n_clients} clients, between "
            f"candidates scored on the same clients (measured at {size} clients over {runs} runs{scaled})")
    table = table if table is not None else load_measured()
    between = (table or {}).get("sizes", {}).get(str(size), {}).get("threshold_samples")
    if between is not None and np.isfinite(between):
        line += f"; between different client samples below {between * np.sqrt(size / max(n_clients, 1)):.3f}"
    return line + "."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m validate.noise", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--data-dir", required=True, type=Path, help="data directory, split, with target lists")
    p.add_argument("--embeddings-dir", required=True, nargs="+", type=Path,
                   help="block folder(s), concatenated (e.g. the stats block)")
    p.add_argument("--sizes", nargs="+", type=int, default=[3000, 10000], help="numbers of clients")
    p.add_argument("--orders", type=int, default=2, help="row orders of the first sample per size")
    p.add_argument("--samples", type=int, default=2, help="client samples per size (the first counts once)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), metavar="TASK",
                   help=f"tasks to score, among {', '.join(TASKS)}")
    p.add_argument("--seed", type=int, default=0, help="samples and orders")
    p.add_argument("--mlp-width", nargs=2, type=int, metavar=("THIN", "WIDE"), default=None,
                   help="hidden sizes; anything but 2048 4096 is NOT the replica (tests)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (see validate.probe --threads)")
    p.add_argument("--noise-probe", choices=("mlp", "mlp16", "narrow"), default="mlp",
                   help="whose noise: the replica (mlp, the shipped table's), its bfloat16 twin or the narrow MLP")
    p.add_argument("--out", required=True, type=Path,
                   help=f"JSON table (rewritten after each run); {MEASURED.name} is the one shipped")
    add_no_progress(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.orders < 1 or args.samples < 1:
        raise SystemExit("validate.noise: error: --orders and --samples must be >= 1")
    table = measure(args.data_dir, args.embeddings_dir, args.sizes, args.orders, args.samples, args.tasks,
                    args.noise_probe, args.seed, not args.no_progress, tuple(args.mlp_width) if args.mlp_width else None,
                    args.threads, args.out)
    print(f"{'clients':>8s} {'runs':>5s} {'std':>7s} {'range':>7s} {'noise below':>12s}")
    for size, s in table["sizes"].items():
        print(f"{size:>8s} {s['n_runs']:5d} {s['std']:7.4f} {s['range']:7.4f} {s['threshold']:12.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
