"""Does the fast LightGBM probe rank blocks like the MLP replica? Score blocks with both, compare the rankings.

``python -m validate.agreement --data-dir D [--embeddings-dir E1 E2 ...] [--reference-blocks]
[--clients N] [--tasks ...] [--seed S] --out agreement.json``

Every block is scored alone by both probes on the same clients (a seeded sample of ``--clients`` relevant
clients when given, to bound the replica's time); the JSON holds every figure and the Spearman correlation of the
two probes' six-task sums (and per task). ``--reference-blocks`` adds blocks of known quality built from the data:
``random`` (noise) and ``leak_s<sigma>`` (the train-window labels of churn, propensity_category and propensity_sku,
randomly projected to 64 columns, plus Gaussian noise of scale sigma). Leak blocks see the train targets, which a
real embedder never may: they exist only to calibrate probes, never to be submitted.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from competition.cli import HelpFormatter, add_no_progress
from competition.io import write_json
from competition.schema import CHURN, PROPENSITY_CATEGORY, PROPENSITY_SKU, TASKS
from embedders.base import Block
from validate.probe import TaskLabels, client_order, load_blocks, score_blocks

LEAK_SIGMAS = (0.5, 1.5, 4.0)
REFERENCE_DIM = 64


def reference_blocks(data_dir: str | Path, seed: int = 0, sigmas: Sequence[float] = LEAK_SIGMAS,
                     dim: int = REFERENCE_DIM) -> list[Block]:
    """``random`` and ``leak_s<sigma>`` blocks (float32 ``(n_relevant, dim)``) for every relevant client."""
    rng = np.random.default_rng(seed)
    ids = client_order(data_dir)
    labels = TaskLabels.load(data_dir, [CHURN, PROPENSITY_CATEGORY, PROPENSITY_SKU], ids)
    parts = []
    for task, td in labels.data.items():
        y = np.zeros((len(ids), 1 if td.y_train.ndim == 1 else td.y_train.shape[1]), dtype=np.float32)
        y[labels.rows[task]] = td.y_train.reshape(len(td.y_train), -1)
        parts.append(y)
    F = np.concatenate(parts, axis=1)
    F = (F - F.mean(axis=0)) / np.maximum(F.std(axis=0), 1e-6)
    projected = F @ rng.standard_normal((F.shape[1], dim)).astype(np.float32) / np.sqrt(F.shape[1])
    projected /= projected.std()
    blocks = [Block(ids, rng.standard_normal((len(ids), dim)).astype(np.float32), {"name": "random"})]
    for s in sigmas:
        noisy = projected + s * rng.standard_normal(projected.shape).astype(np.float32)
        blocks.append(Block(ids, noisy, {"name": f"leak_s{s:g}", "leak_sigma": s}))
    return blocks


def rank_agreement(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman correlation of two score lists (NaN with fewer than 3 values or a constant list)."""
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def compare(data_dir: str | Path, blocks: Sequence[Block], tasks: Sequence[str] = TASKS, seed: int = 0,
            clients: np.ndarray | None = None, progress: bool = True,
            mlp_width: tuple[int, int] | None = None, threads: int | None = None, out: Path | None = None) -> dict:
    """Scores of every block by both probes on ``clients``, and the Spearman correlations of their rankings.

    out: JSON rewritten after every block, so a long run leaves its figures so far."""
    results = {"mlp": {}, "lgbm": {}}
    summary = {}
    for i, b in enumerate(blocks):
        name = str(b.meta.get("name", f"block{i}"))
        for probe in ("lgbm", "mlp"):
            res = score_blocks(data_dir, [b], tasks, probe, seed, clients=clients, progress=progress,
                               mlp_width=mlp_width, threads=threads)
            results[probe][name] = res
            print(f"{name:>24s} {probe:>5s}: sum {res['sum']:.4f} ({res['seconds']:.0f} s)", file=sys.stderr,
                  flush=True)
        summary = _summary(results, tasks)
        if out is not None:
            write_json(summary, out)
    return summary


def _summary(results: dict, tasks: Sequence[str]) -> dict:
    names = list(results["mlp"])
    sums = {p: [results[p][n]["sum"] for n in names] for p in results}
    per_task = {t: rank_agreement([results["mlp"][n]["tasks"][t]["score"] for n in names],
                                  [results["lgbm"][n]["tasks"][t]["score"] for n in names]) for t in tasks}
    return {"blocks": names, "tasks": list(tasks), "n_clients": results["mlp"][names[0]]["n_clients"],
            "sums": sums, "spearman_sum": rank_agreement(sums["mlp"], sums["lgbm"]), "spearman_task": per_task,
            "seconds": {p: sum(r["seconds"] for r in results[p].values()) for p in results},
            "results": results}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m validate.agreement", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--data-dir", required=True, type=Path, help="data directory, split, with target lists")
    p.add_argument("--embeddings-dir", nargs="*", type=Path, default=[], help="block folders, each scored alone")
    p.add_argument("--reference-blocks", action="store_true", help="add the random and label-leak blocks")
    p.add_argument("--clients", type=int, default=None, help="score a seeded sample of this many relevant clients")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), metavar="TASK",
                   help=f"tasks to score, among {', '.join(TASKS)}")
    p.add_argument("--seed", type=int, default=0,
                   help="client sample, LightGBM seed and fold, reference blocks (the replica's seed is fixed)")
    p.add_argument("--mlp-width", nargs=2, type=int, metavar=("THIN", "WIDE"), default=None,
                   help="MLP hidden sizes; anything but 2048 4096 is NOT the replica")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (see validate.probe --threads)")
    p.add_argument("--out", required=True, type=Path, help="JSON with every figure (rewritten after each block)")
    add_no_progress(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    blocks = load_blocks(args.embeddings_dir) if args.embeddings_dir else []
    if args.reference_blocks:
        blocks += reference_blocks(args.data_dir, args.seed)
    if len(blocks) < 3:
        raise SystemExit("need at least 3 blocks to compare rankings (add --reference-blocks)")
    clients = None
    if args.clients:
        ids = client_order(args.data_dir)
        clients = ids[np.random.default_rng(args.seed).permutation(len(ids))[:args.clients]]
    out = compare(args.data_dir, blocks, args.tasks, args.seed, clients, not args.no_progress,
                  tuple(args.mlp_width) if args.mlp_width else None, args.threads, args.out)
    print(f"{'block':>24s} {'mlp sum':>9s} {'lgbm sum':>9s}")
    for n, m, g in zip(out["blocks"], out["sums"]["mlp"], out["sums"]["lgbm"]):
        print(f"{n:>24s} {m:9.4f} {g:9.4f}")
    print(f"Spearman (sums) {out['spearman_sum']:.3f}; per task "
          + ", ".join(f"{t} {v:.2f}" for t, v in out["spearman_task"].items()))
    print(f"seconds: mlp {out['seconds']['mlp']:.0f}, lgbm {out['seconds']['lgbm']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
