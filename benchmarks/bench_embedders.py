"""Time embedders on a data directory, one subprocess each, and optionally score each block alone.

``python benchmarks/bench_embedders.py --data-dir D --out-dir E [--embedders stats tfidf_svd item2vec]
[--extra "tfidf_svd=--dim 64 --min-df 3"] [--probe lgbm --tasks churn propensity_category] [--nice 10]
[--json report.json]``

Names are those of :data:`embedders.registry.BUILTIN`. For every name, ``python -m <its module> --data-dir D --out
E/<name> --seed S --no-progress [extra]`` runs in its own process (under ``nice``), so its peak RSS (from
``wait4``'s rusage, the child and what it waited for) is its own. The event table is built once
beforehand in a separate process, so its one-off cost is not charged to the first embedder. Printed per embedder:
wall seconds of the process, fit+transform seconds and events/s (from the block's meta.json), peak RSS.
With ``--probe``, each block is then scored alone by ``validate.probe`` (lgbm: fast proxy; mlp: the replica).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedders import registry  # noqa: E402

#: Embedders benchmarked by default: the CPU-sized ones (gru_ae and multitask want a GPU at scale).
DEFAULT_EMBEDDERS = ("stats", "tfidf_svd", "item2vec")


def _run(cmd: list[str], nice: int, quiet: bool) -> tuple[int, float, float]:
    """Run ``cmd``; returns (exit code, wall seconds, peak RSS MiB of the process tree it waited for)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    out = subprocess.DEVNULL if quiet else None
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out,
                            preexec_fn=(lambda: os.nice(nice)) if nice else None)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - t0, usage.ru_maxrss / 1024.0


def bench(args: argparse.Namespace) -> dict:
    extra = {}
    for item in args.extra:
        name, _, rest = item.partition("=")
        extra[name.strip()] = shlex.split(rest)
    results: dict[str, dict] = {}
    py = sys.executable
    code, secs, rss = _run([py, "-c", "import sys; from competition.events import EventTable; "
                                      f"EventTable.build(sys.argv[1], {args.layout!r}, progress=False)",
                            str(args.data_dir)], args.nice, args.quiet)
    if code != 0:
        raise SystemExit(f"building the event table of {args.data_dir} failed (exit {code})")
    print(f"event table: {secs:.1f} s wall (cached afterwards), peak RSS {rss:,.0f} MiB", flush=True)
    for name in args.embedders:
        out = args.out_dir / name
        module = registry.BUILTIN[name].partition(":")[0]
        cmd = [py, "-m", module, "--data-dir", str(args.data_dir), "--out", str(out), "--seed",
               str(args.seed), "--layout", args.layout, "--no-progress", *extra.get(name, [])]
        print(f"{name}: {' '.join(shlex.quote(c) for c in cmd[1:])}", flush=True)
        code, wall, rss = _run(cmd, args.nice, args.quiet)
        if code != 0:
            print(f"{name}: FAILED (exit {code})", flush=True)
            results[name] = {"failed": code}
            continue
        meta = json.loads((out / "meta.json").read_text())
        r = {"wall_seconds": round(wall, 2), "seconds": meta.get("seconds"),
             "events_per_second": meta.get("events_per_second"), "n_events": meta.get("n_events"),
             "peak_rss_mb": round(rss, 1), "dim": meta.get("dim"), "n_clients": meta.get("n_clients"),
             "block": str(out)}
        results[name] = r
        print(f"{name}: {r['n_clients']:,} clients x {r['dim']}, {r['n_events']:,} events: fit+transform "
              f"{r['seconds']} s ({r['events_per_second']:,.0f} events/s), process {r['wall_seconds']} s, "
              f"peak RSS {r['peak_rss_mb']:,.0f} MiB", flush=True)
    if args.probe != "none":
        _probe(args, results)
    return results


def _probe(args: argparse.Namespace, results: dict) -> None:
    try:
        from validate.probe import score_blocks
    except ImportError as exc:  # validate not there yet
        print(f"probe skipped: {exc}", flush=True)
        return
    for name, r in results.items():
        if "block" not in r:
            continue
        res = score_blocks(args.data_dir, [r["block"]], args.tasks, args.probe, args.seed, progress=False)
        r["probe"] = {"kind": args.probe, "sum": res["sum"],
                      **{t: round(f["score"], 4) for t, f in res["tasks"].items()}}
        print(f"{name}: {args.probe} " + "  ".join(f"{t} {f['score']:.4f}" for t, f in res["tasks"].items()),
              flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_embedders.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", required=True, type=Path, help="data directory (split already run)")
    p.add_argument("--out-dir", required=True, type=Path, help="blocks are written to OUT_DIR/<embedder>")
    p.add_argument("--embedders", nargs="+", default=list(DEFAULT_EMBEDDERS), choices=list(registry.BUILTIN),
                   metavar="NAME", help=f"embedders of the registry, among {', '.join(registry.BUILTIN)}")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=ARGS",
                   help='extra flags for one embedder, e.g. "tfidf_svd=--dim 64 --min-df 3" (repeatable)')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=("input", "raw"), default="input")
    p.add_argument("--nice", type=int, default=10, help="niceness of the child processes (0: none)")
    p.add_argument("--probe", choices=("none", "lgbm", "mlp"), default="none", help="score each block alone")
    p.add_argument("--tasks", nargs="+", default=["churn", "propensity_category"], help="tasks for --probe")
    p.add_argument("--quiet", action="store_true", help="hide the embedders' own output")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = bench(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"data_dir": str(args.data_dir), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
