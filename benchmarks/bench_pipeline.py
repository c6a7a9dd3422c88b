"""The whole pipeline at a given size, stage by stage: wall seconds, peak RSS and the growth between sizes.

A script, not a test (issue 17; docs/scale.md). For each size N (relevant clients) it

1. writes (or reuses) a synthetic world of the real data's shape: ``--other-per-relevant`` light non-relevant
   clients per relevant one (the real data: ~19M clients for 1M relevant) and ``--products-per-relevant`` products
   per relevant client (1.26M at 1M), timed with its peak RSS (``python -m competition.synth``);
2. runs the one-command pipeline on it (``python -m submit.pack --data-dir W --out O``, local and final) and reads
   the run's report (split, blocks, search, pack, final, table) and every block's meta.json (seconds, peak RSS);
3. measures, one right after the other, a bare polars scan of the split's five input parquet files (every column
   decoded), the floor of any build (``event_table_floor.py``: read and parse, one sort, write) and the build of
   the event table from the same files, and prints the build's and the floor's ratios to the scan (target <= 3).

Then it prints one table per size and, between consecutive sizes, each stage's growth exponent
``log(t2 / t1) / log(N2 / N1)`` (1 = linear in clients; above ~1.15 the stage grows faster than linearly):

    python benchmarks/bench_pipeline.py --root /tmp/scale --sizes 100000 300000 1000000 --seed 17 \\
        [--blocks stats tfidf_svd item2vec] [--budget 100] [--train-clients 50000]
        [--out /tmp/scale/bench_pipeline.json]

Results are kept per size in the JSON (``--out``), so a long series can be run one size at a time and printed
together (``--print-only``). Every stage runs in its own process, so the peak RSS figures are per process.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_embedders import _run  # noqa: E402

from competition.cli import HelpFormatter  # noqa: E402
from competition.io import write_json  # noqa: E402
from competition.schema import EVENT_TYPES, DataPaths  # noqa: E402

#: Real data (docs/challenge.md): ~19M distinct clients and 1,260,365 products for 1M relevant clients.
OTHER_PER_RELEVANT, PRODUCTS_PER_RELEVANT = 18.0, 1.26

SCAN = "import sys, polars as pl; [pl.scan_parquet(p).select(pl.all().max()).collect() for p in sys.argv[1:]]"
EVENT_TABLE = ("import sys; from competition.events import EventTable; "
               "EventTable.build(sys.argv[1], 'input', progress=False, rebuild=True)")


def world_matches(world: Path, n: int, seed: int, others: int, products: int) -> bool:
    """True when ``world`` holds a split synthetic world of exactly these sizes."""
    info = DataPaths(world).truth / "world.json"
    if not info.is_file() or not DataPaths(world).split_times.is_file():
        return False
    spec = json.loads(info.read_text()).get("spec", {})
    return (spec.get("n_relevant"), spec.get("seed"), spec.get("n_other"), spec.get("n_products")) == (
        n, seed, others, products)


def run_size(args: argparse.Namespace, n: int, before: dict | None = None) -> dict:
    """Stages of one size (module docstring); every figure is (seconds, peak RSS MiB) of its own process.

    before: this size's earlier record (its synth figures are kept when the world is reused). The run folder and
    the world's event-table cache are removed first, so that every stage is measured, none reused."""
    py, root = sys.executable, args.root
    world, out = root / f"w{n}", root / f"o{n}"
    others, products = int(round(args.other_per_relevant * n)), int(round(args.products_per_relevant * n))
    rec: dict = {"clients": n, "other_clients": others, "products": products, "stages": {}}

    def stage(name: str, cmd: list[str]) -> None:
        print(f"[{n:,}] {name}: {' '.join(shlex.quote(c) for c in cmd[1:])}", flush=True)
        code, secs, rss = _run(cmd, args.nice, args.quiet)
        if code != 0:
            raise SystemExit(f"bench_pipeline: {name} at {n:,} clients failed (exit {code}); see its output above")
        rec["stages"][name] = {"seconds": round(secs, 1), "peak_rss_mb": round(rss, 1)}
        print(f"[{n:,}] {name}: {secs:,.1f} s, peak RSS {rss:,.0f} MiB", flush=True)

    if world_matches(world, n, args.seed, others, products):
        print(f"[{n:,}] synth: reusing {world}", flush=True)
        if before and "synth" in before.get("stages", {}):
            rec["stages"]["synth"] = before["stages"]["synth"]
    else:
        stage("synth", [py, "-m", "competition.synth", "--out", str(world), "--clients", str(n), "--seed",
                        str(args.seed), "--other-clients", str(others), "--products", str(products),
                        "--no-progress"])
    info = json.loads((DataPaths(world).truth / "world.json").read_text())
    rec["events"] = int(sum(info["events"].values()))
    pipeline = [py, "-m", "submit.pack", "--data-dir", str(world), "--out", str(out), "--seed", str(args.seed),
                "--no-progress"]
    for flag, value in (("--blocks", args.blocks), ("--budget", args.budget), ("--trials", args.trials),
                        ("--epochs", args.epochs), ("--train-clients", args.train_clients),
                        ("--search-clients", args.search_clients), ("--probe", args.probe)):
        if value is not None:
            pipeline += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    for folder in (out, DataPaths(world).cache):
        shutil.rmtree(folder, ignore_errors=True)
    stage("pipeline", pipeline)
    report = json.loads((out / "run" / "report.json").read_text())
    rec["pipeline"] = {s["stage"]: {"seconds": s["seconds"], "peak_rss_mb": s["peak_rss_mb"],
                                    "peak_anon_mb": s.get("peak_anon_mb"), "start_anon_mb": s.get("start_anon_mb")}
                       for s in report["stages"]}
    rec["blocks"] = {}
    for meta_path in sorted((out / "run" / "blocks").glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        rec["blocks"][meta_path.parent.name] = {"seconds": meta.get("seconds"), "peak_rss_mb": meta.get("peak_rss_mb"),
                                                "dim": meta.get("dim")}
    rec["sizes"] = report.get("sizes")
    files = [str(DataPaths(world).table(kind, "input")) for kind in EVENT_TYPES]
    stage("bare_scan", [py, "-c", SCAN, *files])
    stage("event_floor", [py, str(ROOT / "benchmarks" / "event_table_floor.py"), "--data-dir", str(world),
                          "--work", str(root)])
    stage("event_table", [py, "-c", EVENT_TABLE, str(world)])
    scan = max(rec["stages"]["bare_scan"]["seconds"], 1e-9)
    rec["event_table_vs_scan"] = round(rec["stages"]["event_table"]["seconds"] / scan, 2)
    rec["event_floor_vs_scan"] = round(rec["stages"]["event_floor"]["seconds"] / scan, 2)
    return rec


def flat(rec: dict) -> dict[str, tuple[float, float, float | None, float | None]]:
    """stage name -> (seconds, peak RSS MiB, peak anonymous MiB or None, anonymous MiB at the stage's start or None)
    of one size's record, in display order."""
    rows = {k: (v["seconds"], v["peak_rss_mb"], None, None) for k, v in rec["stages"].items() if k != "pipeline"}
    rows.update({f"pipeline/{k}": (v["seconds"], v["peak_rss_mb"], v.get("peak_anon_mb"), v.get("start_anon_mb"))
                 for k, v in rec.get("pipeline", {}).items()})
    rows.update({f"  block {k}": (v["seconds"] or 0.0, v["peak_rss_mb"] or 0.0, None, None)
                 for k, v in rec.get("blocks", {}).items()})
    if "pipeline" in rec["stages"]:
        rows["pipeline (whole)"] = (rec["stages"]["pipeline"]["seconds"], rec["stages"]["pipeline"]["peak_rss_mb"],
                                    None, None)
    return rows


def format_results(results: dict[str, dict]) -> str:
    """Per-size tables, then the growth exponents between consecutive sizes."""
    lines: list[str] = []
    sizes = sorted(results.values(), key=lambda r: r["clients"])
    for rec in sizes:
        lines.append(f"\n{rec['clients']:,} relevant clients, {rec['other_clients']:,} others, "
                     f"{rec['products']:,} products, {rec['events']:,} events; event table / bare scan "
                     f"= {rec.get('event_table_vs_scan', float('nan')):.2f} (the floor of any build / bare scan "
                     f"= {rec.get('event_floor_vs_scan', float('nan')):.2f})")
        lines.append(f"  {'stage':<26} {'seconds':>10} {'peak RSS MiB':>13} {'anonymous':>10} {'at start':>9}")
        num = lambda v, w: f"{v:>{w},.0f}" if v is not None else " " * w  # noqa: E731
        lines += [f"  {name:<26} {s:>10,.1f} {r:>13,.0f} {num(a, 10)} {num(a0, 9)}"
                  for name, (s, r, a, a0) in flat(rec).items()]
    for a, b in zip(sizes, sizes[1:]):
        fa, fb = flat(a), flat(b)
        ratio = math.log(b["clients"] / a["clients"])
        lines.append(f"\ngrowth {a['clients']:,} -> {b['clients']:,} clients (exponent: 1 = linear)")
        for name in fa:
            if name in fb and fa[name][0] > 0.5 and fb[name][0] > 0:
                k = math.log(fb[name][0] / fa[name][0]) / ratio
                lines.append(f"  {name:<26} x{fb[name][0] / fa[name][0]:>7.2f}  exponent {k:5.2f}"
                             + ("  <- above linear" if k > 1.15 else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_pipeline.py", formatter_class=HelpFormatter,
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, type=Path, help="folder for the worlds (w<N>) and runs (o<N>)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000], help="relevant clients per world")
    parser.add_argument("--seed", type=int, default=17, help="seed of the worlds and the pipeline (default 17)")
    parser.add_argument("--other-per-relevant", type=float, default=OTHER_PER_RELEVANT,
                        help="non-relevant clients per relevant one (default 18, the real data's ratio)")
    parser.add_argument("--products-per-relevant", type=float, default=PRODUCTS_PER_RELEVANT,
                        help="products per relevant client (default 1.26, the real data's ratio)")
    parser.add_argument("--blocks", nargs="+", default=None, help="submit.pack --blocks (default: all)")
    parser.add_argument("--budget", type=float, default=None, help="submit.pack --budget MINUTES")
    parser.add_argument("--trials", type=int, default=None, help="submit.pack --trials")
    parser.add_argument("--epochs", type=int, default=None, help="submit.pack --epochs")
    parser.add_argument("--train-clients", type=int, default=None, help="submit.pack --train-clients")
    parser.add_argument("--search-clients", type=int, default=None, help="submit.pack --search-clients")
    parser.add_argument("--probe", default=None, help="submit.pack --probe (default: its auto)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default ROOT/bench_pipeline.json); "
                        "sizes already in it are kept and printed")
    parser.add_argument("--print-only", action="store_true", help="print the results in --out and stop")
    parser.add_argument("--nice", type=int, default=0, help="niceness of the measured processes (default 0)")
    parser.add_argument("--quiet", action="store_true", help="hide the stages' own output")
    args = parser.parse_args(argv)
    out = args.out or args.root / "bench_pipeline.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    if not args.print_only:
        args.root.mkdir(parents=True, exist_ok=True)
        for n in args.sizes:
            results[str(n)] = run_size(args, n, results.get(str(n)))
            write_json(results, out)
    print(format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
