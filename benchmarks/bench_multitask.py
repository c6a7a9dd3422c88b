"""What the multitask embedder adds, scored by the MLP replica (the organisers' model) on clients of the report fold.

    python benchmarks/bench_multitask.py --data-dir W --blocks-dir B [--clients 5000] [--orders 3]

Builds (or reuses) the blocks in ``B``: stats, tfidf_svd, multitask with stacked inputs (``mt_blocks``) and with
the sequence input (``mt_sequence``), each with its CLI defaults unless flags say otherwise, all from the split's
input period (nothing here reads target/ except the scorer). Then scores, on a seeded sample of ``--clients`` of
the report fold (:func:`validate.search.split_folds`, the clients a search would not see), over ``--orders`` row
orders (the replica trains unshuffled, so the order alone moves its score):

- ``stats``: the raw stats block alone (the baseline);
- each multitask block alone;
- ``ens``: stats (quantile) + tfidf_svd (l2), the ensemble without it;
- ``ens+mt_*``: the same plus the multitask block (l2).

Prints per task the mean over orders, the sum's mean and spread, and each candidate's difference to the baseline
on the same orders (mean and min..max over orders). ``--out`` writes everything as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from competition.load import read_relevant_clients
from competition.schema import TASKS
from embedders.base import read_block, write_block
from embedders.cli import embed
from embedders.registry import make_embedder
from validate.ensemble_ops import block_matrix
from validate.probe import TaskLabels, score_matrix
from validate.search import split_folds

#: name -> (embedder, params)
BLOCKS = {
    "stats": ("stats", {}),
    "tfidf_svd": ("tfidf_svd", {}),
    "mt_blocks": ("multitask", {"input": "blocks"}),
    "mt_sequence": ("multitask", {"input": "sequence"}),
}


def ensure_block(name: str, data_dir: Path, blocks_dir: Path, seed: int, extra: dict) -> Path:
    out = blocks_dir / name
    if (out / "meta.json").is_file():
        return out
    embedder, params = BLOCKS[name]
    params = {**params, **extra.get(name, {})}
    t0 = time.perf_counter()
    emb = make_embedder(embedder, params, seed, progress=False, work_dir=blocks_dir / f"{name}.work")
    write_block(embed(emb, data_dir, "input", progress=False), out)
    print(f"built {name} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return out


def candidates(names: list[str]) -> dict[str, list[tuple[str, str]]]:
    out = {"stats": [("stats", "none")]}
    for mt in (n for n in names if n.startswith("mt_")):
        out[mt] = [(mt, "none")]
    out["ens"] = [("stats", "quantile"), ("tfidf_svd", "l2")]
    for mt in (n for n in names if n.startswith("mt_")):
        out[f"ens+{mt}"] = out["ens"] + [(mt, "l2")]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, type=Path, help="split world")
    p.add_argument("--blocks-dir", required=True, type=Path, help="where blocks are built or found")
    p.add_argument("--blocks", nargs="+", default=list(BLOCKS), choices=list(BLOCKS), help="blocks to use")
    p.add_argument("--epochs", type=int, default=None, help="multitask epochs (default: the CLI's)")
    p.add_argument("--clients", type=int, default=5000, help="report-fold clients scored")
    p.add_argument("--orders", type=int, default=3, help="row orders per candidate")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--only", nargs="+", default=None, help="score only these candidates")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the replica")
    p.add_argument("--device", default=None, help="replica device (default: cuda when present)")
    p.add_argument("--seed", type=int, default=0, help="block seed, fold and client sample")
    p.add_argument("--out", type=Path, default=None, help="JSON results")
    args = p.parse_args(argv)

    extra = {n: {"epochs": args.epochs} for n in BLOCKS if n.startswith("mt_") and args.epochs}
    paths = {n: ensure_block(n, args.data_dir, args.blocks_dir, args.seed, extra) for n in args.blocks}
    blocks = {n: read_block(path) for n, path in paths.items()}
    _, report = split_folds(read_relevant_clients(args.data_dir), args.seed)
    rng = np.random.default_rng([args.seed, 5])
    ids = np.sort(rng.choice(report, size=min(args.clients, len(report)), replace=False))
    cands = candidates(list(paths))
    if args.only:
        cands = {k: v for k, v in cands.items() if k in args.only}
    results: dict[str, list[dict]] = {k: [] for k in cands}
    for r in range(args.orders):
        order = ids[np.random.default_rng([args.seed, 6, r]).permutation(len(ids))]
        labels = TaskLabels.load(args.data_dir, args.tasks, order)
        for name, parts in cands.items():
            X = np.concatenate([block_matrix(blocks[b], order, kind, seed=args.seed) for b, kind in parts], axis=1)
            res = score_matrix(args.data_dir, order, X, args.tasks, "mlp", labels=labels, progress=False,
                               device=args.device, threads=args.threads)
            results[name].append({"sum": res["sum"], "dim": res["dim"], "seconds": res["seconds"],
                                  **{t: res["tasks"][t]["score"] for t in args.tasks}})
            print(f"order {r}: {name:<16} sum {res['sum']:.4f}  ({res['seconds']:.0f} s)", file=sys.stderr, flush=True)
    base = np.array([x["sum"] for x in results["stats"]]) if "stats" in results else None
    print(f"\nMLP replica, {len(ids):,} report-fold clients of {args.data_dir}, {args.orders} row order(s); "
          f"mean over orders (sum: mean +- std; diff = sum - stats on the same order, mean [min, max])")
    head = "| candidate | dim | " + " | ".join(args.tasks) + " | sum | diff vs stats |"
    print(head + "\n|" + "---|" * (head.count("|") - 1))
    for name, runs in results.items():
        sums = np.array([x["sum"] for x in runs])
        diff = "" if base is None or name == "stats" else \
            f"{(sums - base).mean():+.4f} [{(sums - base).min():+.4f}, {(sums - base).max():+.4f}]"
        print(f"| {name} | {runs[0]['dim']} | " + " | ".join(f"{np.mean([x[t] for x in runs]):.4f}" for t in args.tasks)
              + f" | {sums.mean():.4f} +- {sums.std():.4f} | {diff} |")
    if base is not None and len(base) > 1:
        print(f"\nrow order alone moves the stats sum by {base.max() - base.min():.4f} (max - min over {len(base)} "
              f"orders): differences below that are noise at this size")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"data_dir": str(args.data_dir), "clients": int(len(ids)),
                                        "orders": args.orders, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
