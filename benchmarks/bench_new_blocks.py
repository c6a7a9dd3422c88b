"""Cost and replica value of the issue-14 blocks (als, next_event, contrastive). See docs/new_blocks.md.

    python benchmarks/bench_new_blocks.py time --data-dir W --out-dir B [--blocks als next_event contrastive]
        [--extra "next_event=--epochs 1"] [--target-clients 1000000]
    python benchmarks/bench_new_blocks.py quality --data-dir W --blocks-dir B --new als [next_event ...]
        [--clients 3000] [--orders 1]

``time``: each block's CLI in its own process (``bench_embedders._run``: wall seconds and the peak RSS of that
process), the event table built once beforehand; prints fit+transform seconds and peak RSS, with a linear
extrapolation of the seconds and of the RSS (an upper bound: fixed costs do not grow) to ``--target-clients``; for
the neural blocks (run them with ``--extra "NAME=--max-batches 10"``: an epoch on a CPU is long) the seconds per
training batch, hence per epoch over every relevant client here and at the target, and the inference time per client.

``quality``: builds with constructor defaults (or reuses: build a block with other flags by its CLI into
``B/<name>`` first) the blocks in ``B`` from the split's input period, then scores
with the MLP replica (the organisers' model, probe ``mlp``) on a seeded sample of ``--clients`` of the report fold
(:func:`validate.search.split_folds`, the clients a search never sees), over ``--orders`` row orders:
``stats`` alone (the baseline), each new block alone, ``ens`` = stats (quantile) + tfidf_svd (l2) + the ``--base``
blocks (l2; each also alone), and ``ens+X`` =
ens plus the new block X (l2). Prints per candidate the six task scores, the sum and its difference to stats and to
ens on the same orders.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_embedders import _run  # noqa: E402

from competition.load import read_relevant_clients  # noqa: E402
from competition.schema import TASKS  # noqa: E402
from embedders import registry  # noqa: E402

NEW_BLOCKS = ("als", "next_event", "contrastive")


def time_blocks(args: argparse.Namespace) -> dict:
    extra = {k.strip(): shlex.split(v) for k, _, v in (e.partition("=") for e in args.extra)}
    py = sys.executable
    code, secs, rss0 = _run([py, "-c", "import sys; from competition.events import EventTable; "
                                       "EventTable.build(sys.argv[1], 'input', progress=False)", str(args.data_dir)],
                            args.nice, True)
    if code:
        raise SystemExit(f"event table of {args.data_dir}: exit {code}")
    n_rel = len(read_relevant_clients(args.data_dir))
    scale = args.target_clients / n_rel
    print(f"event table: {secs:.1f} s, {rss0:,.0f} MiB; {n_rel:,} relevant clients; extrapolation x{scale:.0f} to "
          f"{args.target_clients:,}")
    out: dict[str, dict] = {}
    for name in args.blocks:
        module = registry.BUILTIN[name].partition(":")[0]
        dest = args.out_dir / name
        cmd = [py, "-m", module, "--data-dir", str(args.data_dir), "--out", str(dest), "--seed", str(args.seed),
               "--no-progress", *extra.get(name, [])]
        code, wall, rss = _run(cmd, args.nice, False)
        if code:
            print(f"{name}: exit {code}")
            out[name] = {"exit": code}
            continue
        meta = json.loads((dest / "meta.json").read_text())
        hist = meta.get("history") or []
        rec = {"wall_s": round(wall, 1), "seconds": meta["seconds"], "peak_rss_mb": round(rss, 0),
               "n_parameters": meta.get("n_parameters"), "dim": meta["dim"], "n_clients": meta["n_clients"],
               "extrapolated_rss_mb": round(rss * scale, 0)}  # an upper bound: fixed costs do not grow
        if hist:  # neural: per batch of training, per client of inference; an epoch is every relevant client
            batch = meta["params"]["batch_size"]
            per_batch = sum(h["train_seconds"] for h in hist) / max(sum(h["batches"] for h in hist), 1)
            infer = max(meta["seconds"] - sum(h["seconds"] for h in hist), 0.0) / max(meta["n_clients"], 1)
            rec.update({"seconds_per_batch": round(per_batch, 2), "batch_size": batch,
                        "epoch_minutes": round(per_batch * n_rel / batch / 60, 1),
                        "epoch_minutes_target": round(per_batch * args.target_clients / batch / 60, 0),
                        "inference_ms_per_client": round(1000 * infer, 2),
                        "inference_minutes_target": round(infer * args.target_clients / 60, 0)})
            print(f"{name}: {per_batch:.2f} s per batch of {batch} -> {rec['epoch_minutes']} min per epoch here, "
                  f"~{rec['epoch_minutes_target']:.0f} min per epoch at {args.target_clients:,}; inference "
                  f"{rec['inference_ms_per_client']} ms per client (~{rec['inference_minutes_target']:.0f} min at "
                  f"{args.target_clients:,}); peak RSS {rss:,.0f} MiB", flush=True)
        else:
            rec["extrapolated_seconds"] = round(meta["seconds"] * scale, 0)
            print(f"{name}: {meta['seconds']} s fit+transform ({wall:.0f} s wall), peak RSS {rss:,.0f} MiB; at "
                  f"{args.target_clients:,} clients ~{rec['extrapolated_seconds'] / 60:.0f} min, "
                  f"<= {rec['extrapolated_rss_mb'] / 1024:.1f} GiB (linear: an upper bound)", flush=True)
        out[name] = rec
    return out


def ensure_block(name: str, data_dir: Path, blocks_dir: Path, seed: int) -> Path:
    from embedders.base import write_block
    from embedders.cli import embed
    out = blocks_dir / name
    if not (out / "meta.json").is_file():
        t0 = time.perf_counter()
        emb = registry.make_embedder(name, {}, seed, progress=False, work_dir=blocks_dir / f"{name}.work")
        write_block(embed(emb, data_dir, "input", progress=False), out)
        print(f"built {name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return out


def quality(args: argparse.Namespace) -> dict:
    from embedders.base import read_block
    from validate.ensemble_ops import block_matrix
    from validate.probe import TaskLabels, score_matrix
    from validate.search import sample_fold, split_folds

    names = ["stats", "tfidf_svd", *args.base, *args.new]
    blocks = {n: read_block(ensure_block(n, args.data_dir, args.blocks_dir, args.seed)) for n in names}
    _, report = split_folds(read_relevant_clients(args.data_dir), args.seed)
    ids = np.sort(sample_fold(report, args.clients, args.seed))
    cands: dict[str, list[tuple[str, str]]] = {"stats": [("stats", "none")]}
    cands.update({n: [(n, "l2")] for n in args.new})
    cands.update({n: [(n, "l2")] for n in args.base})
    cands["ens"] = [("stats", "quantile"), ("tfidf_svd", "l2"), *((n, "l2") for n in args.base)]
    cands.update({f"ens+{n}": cands["ens"] + [(n, "l2")] for n in args.new})
    if args.only:
        cands = {k: v for k, v in cands.items() if k in args.only}
    results: dict[str, list[dict]] = {k: [] for k in cands}
    for r in range(args.orders):
        order = ids[np.random.default_rng([args.seed, 6, r]).permutation(len(ids))]
        labels = TaskLabels.load(args.data_dir, list(TASKS), order)
        for cand, parts in cands.items():
            X = np.concatenate([block_matrix(blocks[b], order, kind, seed=args.seed) for b, kind in parts], axis=1)
            res = score_matrix(args.data_dir, order, X, list(TASKS), "mlp", labels=labels, progress=args.progress,
                               threads=args.threads)
            results[cand].append({"sum": res["sum"], "dim": res["dim"], "seconds": res["seconds"],
                                  **{t: res["tasks"][t]["score"] for t in TASKS}})
            print(f"order {r}: {cand:<18} sum {res['sum']:.4f}  ({res['seconds']:.0f} s)  "
                  + " ".join(f"{t} {res['tasks'][t]['score']:.4f}" for t in TASKS), file=sys.stderr, flush=True)
            if args.json:  # each candidate as it comes, so a cut run keeps what it scored
                args.json.parent.mkdir(parents=True, exist_ok=True)
                with open(args.json.with_suffix(".jsonl"), "a") as fh:
                    fh.write(json.dumps({"candidate": cand, "order": r, **results[cand][-1]}) + "\n")
    sums = {k: np.array([x["sum"] for x in v]) for k, v in results.items()}
    print(f"\nMLP replica, {len(ids):,} report-fold clients of {args.data_dir}, {args.orders} order(s), mean over orders")
    print("| candidate | dim | " + " | ".join(TASKS) + " | sum | - stats | - ens |\n|" + "---|" * (len(TASKS) + 5))
    for cand, runs in results.items():
        d = {b: (f"{(sums[cand] - sums[b]).mean():+.4f}" if b in sums and b != cand else "") for b in ("stats", "ens")}
        print(f"| {cand} | {runs[0]['dim']} | " + " | ".join(f"{np.mean([x[t] for x in runs]):.4f}" for t in TASKS)
              + f" | {sums[cand].mean():.4f} | {d['stats']} | {d['ens']} |")
    return {"clients": int(len(ids)), "orders": args.orders, "results": results}


def main(argv: list[str] | None = None) -> int:
    from competition.cli import HelpFormatter
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("time", help="time and peak RSS per block", formatter_class=HelpFormatter)
    t.add_argument("--data-dir", required=True, type=Path, help="split world")
    t.add_argument("--out-dir", required=True, type=Path, help="where the blocks are written")
    t.add_argument("--blocks", nargs="+", default=list(NEW_BLOCKS), choices=list(registry.BUILTIN),
                   help="blocks to time")
    t.add_argument("--extra", action="append", default=[], metavar="NAME=FLAGS", help="extra CLI flags of a block")
    t.add_argument("--target-clients", type=int, default=1_000_000, help="relevant clients to extrapolate to")
    t.add_argument("--nice", type=int, default=0, help="niceness of the block processes")
    q = sub.add_parser("quality", help="replica score of the new blocks", formatter_class=HelpFormatter)
    q.add_argument("--data-dir", required=True, type=Path, help="split world")
    q.add_argument("--blocks-dir", required=True, type=Path, help="where blocks are built or found")
    q.add_argument("--new", nargs="+", default=["als"], choices=list(NEW_BLOCKS), help="new blocks to score")
    q.add_argument("--base", nargs="*", default=[], help="more blocks (in B, l2) in ens besides stats + tfidf_svd, "
                   "e.g. multitask: the current best ensemble; each is scored alone too")
    q.add_argument("--only", nargs="+", default=None, help="score only these candidates")
    q.add_argument("--clients", type=int, default=3000, help="report-fold clients scored")
    q.add_argument("--orders", type=int, default=1, help="row orders per candidate")
    q.add_argument("--threads", type=int, default=2, help="CPU threads of the replica")
    q.add_argument("--progress", action="store_true", help="the replica's progress bars (stderr)")
    for sp_ in (t, q):
        sp_.add_argument("--seed", type=int, default=0, help="block seed (quality: also fold and sample)")
        sp_.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    res = time_blocks(args) if args.command == "time" else quality(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
