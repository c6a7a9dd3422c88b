"""Headroom of a synthetic world: how far knowing the user (the oracle block) beats counting its events (stats).

A script, not a test (the replica is slow on CPU). On one world, with the MLP replica (probe "mlp", the organisers'
model) on the same clients, it scores the stats block alone (transform quantile), the oracle block of
:mod:`validate.oracle` alone, and stats + oracle, and prints the per-task table, the gain of stats + oracle over
stats and whether every task's oracle beats stats (docs/synthetic_worlds.md, "Headroom"):

    python benchmarks/bench_headroom.py --data-dir W [--clients 5000] [--seed 404] [--probe mlp] [--out h.json]
    python benchmarks/bench_headroom.py --world W --make 20000 --seed 404     # writes the world first
    python benchmarks/bench_headroom.py --data-dir W --only stats --out h.json   # one candidate per run, completed

Clients: a seeded sample of ``--clients`` relevant clients of the **report fold** (the half of the relevant clients
that :func:`validate.search.split_folds` keeps away from a search with the same seed). The blocks are built once per
world (``W.blocks/stats``, ``W.blocks/oracle``) and reused.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from competition.cli import HelpFormatter, add_no_progress, peak_rss_mb  # noqa: E402
from competition.io import write_json  # noqa: E402
from competition.load import read_relevant_clients  # noqa: E402
from competition.schema import TASKS  # noqa: E402
from validate.cli import PROBE_CHOICES, resolve_probe  # noqa: E402


def build_blocks(world: Path, progress: bool) -> tuple[Path, Path]:
    """The stats (quantile) and oracle blocks of a world, built once into ``<world>.blocks/``."""
    from embedders.base import write_block
    from embedders.cli import embed
    from embedders.stats import StatsEmbedder
    from validate.oracle import oracle_block
    root = world.parent / f"{world.name}.blocks"
    stats, oracle = root / "stats", root / "oracle"
    if not (stats / "embeddings.npy").is_file():
        write_block(embed(StatsEmbedder(transform="quantile", progress=progress), world, progress=progress), stats)
    if not (oracle / "embeddings.npy").is_file():
        write_block(oracle_block(world, progress=progress), oracle)
    return stats, oracle


def report_sample(world: Path, n: int, seed: int) -> np.ndarray:
    """A seeded sample of ``n`` relevant clients from the report fold of :func:`validate.search.split_folds`
    (:func:`validate.search.sample_fold`, the sample of bench_new_blocks' quality runs too), sorted."""
    from validate.search import sample_fold, split_folds
    return np.sort(sample_fold(split_folds(read_relevant_clients(world), seed)[1], n, seed))


CANDIDATES = ("stats", "oracle", "stats+oracle")


def headroom(world: Path, clients: int, seed: int, probe: str, progress: bool, only: tuple[str, ...] = CANDIDATES,
             done: dict | None = None, save=None) -> dict:
    """Scores of stats, oracle and stats + oracle on the same clients, and the summary figures.

    only: the candidates to score now; done: results of earlier runs (same world, clients, seed, probe) to complete;
    save(out): called after every candidate with the figures so far (a long run keeps what it measured)."""
    from validate.probe import score_blocks
    stats, oracle = build_blocks(world, progress)
    sample = report_sample(world, clients, seed)
    results = dict(done or {})
    blocks = {"stats": [stats], "oracle": [oracle], "stats+oracle": [stats, oracle]}
    out: dict = {}
    for name in only:
        results[name] = score_blocks(world, blocks[name], probe=probe, seed=seed, clients=sample, progress=progress)
        results = {k: results[k] for k in CANDIDATES if k in results}
        out = summary(world, probe, seed, sample, results)
        if save:
            save(out)
    return out or summary(world, probe, seed, sample, results)


def summary(world: Path, probe: str, seed: int, sample: np.ndarray, results: dict) -> dict:
    """The figures of the candidates scored so far (gains once stats and the other one are in)."""
    per_task = {t: {k: results[k]["tasks"][t]["score"] for k in results} for t in TASKS}
    out = {"world": str(world), "probe": probe, "replica": any(r.get("replica") for r in results.values()),
           "seed": seed, "n_clients": int(len(sample)), "results": results, "per_task": per_task}
    if "stats" in results:
        for other in ("oracle", "stats+oracle"):
            if other in results:
                out[f"gain_{other}_over_stats"] = results[other]["sum"] - results["stats"]["sum"]
                out[f"{other}_above_stats_every_task"] = all(per_task[t][other] > per_task[t]["stats"]
                                                             for t in TASKS)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_headroom.py", formatter_class=HelpFormatter,
                                description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", type=Path, help="a split synthetic world (with truth/)")
    where.add_argument("--world", type=Path, help="where to write a world of --make relevant clients first "
                       "(reused when it exists)")
    p.add_argument("--make", type=int, default=20_000, help="relevant clients of the world written at --world")
    p.add_argument("--clients", type=int, default=5_000, help="report-fold clients scored")
    p.add_argument("--seed", type=int, default=404, help="world seed (with --world), fold and sample seed")
    p.add_argument("--probe", choices=PROBE_CHOICES, default="mlp", help="probe of the three candidates (default "
                   "mlp: the organisers' replica; any other is a proxy)")
    p.add_argument("--only", nargs="+", choices=CANDIDATES, default=list(CANDIDATES),
                   help="candidates to score in this run (the replica takes ~5 min per candidate at 5k clients on "
                        "CPU); with --out, results already in that file are kept and completed")
    p.add_argument("--out", type=Path, help="write every figure as JSON here (after each candidate)")
    add_no_progress(p)
    args = p.parse_args(argv)
    progress = not args.no_progress
    t0 = time.perf_counter()
    world = args.data_dir
    if world is None:
        world = args.world
        if not (world / "truth" / "world.json").is_file() or not (world / "target").is_dir():
            from competition.synth import generate_world
            generate_world(world, args.make, args.seed, progress=progress)
    probe = resolve_probe(args.probe)
    done = {}
    if args.out and args.out.is_file():
        old = json.loads(args.out.read_text())
        if (old.get("world"), old.get("probe"), old.get("seed"), old.get("n_clients")) == (
                str(world), probe, args.seed, min(args.clients, old.get("n_clients", -1))):
            done = {k: v for k, v in old.get("results", {}).items() if k not in args.only}
    out = headroom(world, args.clients, args.seed, probe, progress, tuple(args.only), done,
                   save=(lambda o: write_json(o, args.out)) if args.out else None)
    from validate.report import format_table
    print(f"headroom of {world} on {out['n_clients']:,} report-fold clients (seed {args.seed}), probe {probe}"
          f"{' (the replica)' if out['replica'] else ' (a proxy)'}:")
    print(format_table(out["results"], TASKS))
    for other in ("oracle", "stats+oracle"):
        if f"gain_{other}_over_stats" in out:
            print(f"{other} - stats: {out[f'gain_{other}_over_stats']:+.4f}; {other} above stats on every task: "
                  f"{out[f'{other}_above_stats_every_task']}")
    print(f"took {time.perf_counter() - t0:.0f}s, peak RSS {peak_rss_mb():,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
