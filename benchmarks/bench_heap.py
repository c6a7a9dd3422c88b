"""What the heap policy (:mod:`competition.heap`) saves: one decision candidate (the organisers' network on the six
tasks, ``mlp16`` by default) scored with the policy off and on, alternated in one process so the ratio holds on a
noisy machine, and the scores compared (they must be the same bytes).

``python benchmarks/bench_heap.py --data-dir W --embeddings-dir B/stats [--clients 1000] [--rounds 2]
[--probe mlp16]``

Prints per round and mode the seconds, the minor page faults and the system CPU-seconds of the candidate, then the
median off / on ratio and whether every task's score matched.
"""
from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

from competition.heap import ENV_SWITCH, available
from validate.probe import client_order, concat_blocks, load_blocks, score_matrix


def run_once(data_dir: str, ids: np.ndarray, X: np.ndarray, probe: str, policy: bool) -> tuple[dict, float, int, float]:
    """(scores per task, seconds, minor page faults, system CPU-seconds) of one candidate."""
    os.environ[ENV_SWITCH] = "1" if policy else "0"
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    res = score_matrix(data_dir, ids, X, probe=probe, progress=False)
    dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return ({t: r["score"] for t, r in res["tasks"].items()}, dt, r1.ru_minflt - r0.ru_minflt,
            r1.ru_stime - r0.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="a split world (input/ and target/)")
    p.add_argument("--embeddings-dir", nargs="+", required=True, help="block folder(s), concatenated")
    p.add_argument("--clients", type=int, default=1000, help="the first N relevant clients in the organisers' order")
    p.add_argument("--rounds", type=int, default=2, help="off / on alternations")
    p.add_argument("--probe", default="mlp16", choices=["mlp16", "mlp"], help="the organisers' network, bf16 or fp32")
    args = p.parse_args()
    if not available():
        raise SystemExit("the heap policy cannot act here (no glibc): nothing to measure")
    ids = client_order(args.data_dir)[:args.clients]
    X = concat_blocks(load_blocks(args.embeddings_dir), ids)
    print(f"{len(ids):,} clients x {X.shape[1]} columns, probe {args.probe}, {args.rounds} round(s)")
    print("round | policy | seconds | minor faults | system s")
    got: dict[bool, list[tuple]] = {False: [], True: []}
    for r in range(args.rounds):
        for policy in (False, True):
            out = run_once(args.data_dir, ids, X, args.probe, policy)
            got[policy].append(out)
            print(f"{r + 1} | {'on' if policy else 'off'} | {out[1]:.1f} | {out[2]:,} | {out[3]:.1f}", flush=True)
    off, on = (float(np.median([o[1] for o in got[k]])) for k in (False, True))
    same = all(o[0] == got[False][0][0] for k in got for o in got[k])
    print(f"median seconds: off {off:.1f}, on {on:.1f}: off / on {off / on:.2f}x; scores identical: {same}")


if __name__ == "__main__":
    main()
