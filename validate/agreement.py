"""Do the fast probes rank blocks and ensembles like the MLP replica? Score candidates with all, compare rankings.

``python -m validate.agreement --data-dir D --embeddings-dir E1 E2 ... [--ensembles a+b a@16 ...] [--specs S.json]
[--reference-blocks] [--probes narrow linear lgbm] [--subsample N] [--clients N] [--fold all|report] [--seed S]
--out agreement.json``

Candidates, all scored on the same clients (a seeded sample of ``--clients`` relevant clients, in a seeded order):

- every block of ``--embeddings-dir`` alone (named by its folder);
- ``--ensembles``: packed ensembles of those blocks, ``name[@dims]`` joined by ``+`` (``stats+tfidf_svd@32``),
  assembled exactly as the search and ``submit.pack`` assemble them (:class:`validate.search.BlockMatrices`:
  each block's default transform, PCA to ``dims``, weight 1);
- ``--specs``: searched ensembles (spec files), assembled exactly as ``submit.pack`` assembles them;
- ``--reference-blocks``: blocks of known quality made from the data, ``random`` (noise) and ``leak_s<sigma>``
  (the train-window labels of churn, propensity_category and propensity_sku, randomly projected to 64 columns, plus
  Gaussian noise of scale sigma: graded strength). Leak blocks see the train targets, which a real embedder never
  may: they exist only to calibrate probes, never to be submitted.

Probes: the replica (``mlp``, the reference), each of ``--probes`` and, with ``--subsample N``, the replica trained
and scored on only the first N of the sampled clients (``mlp@N``). Per probe the JSON holds every figure, the
Spearman correlation with the replica's ranking per task and of the six-task sums, the worst task, and the probe's
time as a share of the replica's on the same candidates (same data, same threads). Every finished score is stored
in the JSON at once, and a rerun with the same clients reuses it, so an interrupted run continues where it stopped.
The table ends with the replica's noise line at this size (:mod:`validate.noise`).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from competition.cli import HelpFormatter, add_no_progress
from competition.io import write_json
from competition.schema import CHURN, PROPENSITY_CATEGORY, PROPENSITY_SKU, TASKS
from embedders.base import Block
from validate.cli import PROBES
from validate.noise import noise_line
from validate.ensemble_ops import assemble
from validate.probe import TaskLabels, client_order, load_blocks, score_matrix
from validate.search import BlockMatrices, report_sample
from validate.spec import EnsembleSpec

LEAK_SIGMAS = (0.5, 1.5, 4.0)
REFERENCE_DIM = 64
REFERENCE_PROBE = "mlp"
FAST_PROBES = tuple(p for p in PROBES if p != REFERENCE_PROBE)


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


def parse_ensemble(text: str) -> list[tuple[str, int | None]]:
    """``"stats+tfidf_svd@32"`` -> ``[("stats", None), ("tfidf_svd", 32)]`` (None: full width)."""
    parts = []
    for item in text.split("+"):
        name, _, dims = item.partition("@")
        if not name or (dims and not dims.isdigit()):
            raise ValueError(f"ensemble {text!r}: expected name[@dims] joined by '+', got {item!r}")
        parts.append((name, int(dims) if dims else None))
    return parts


def candidate_matrices(blocks: Sequence[Block], names: Sequence[str], ensembles: Sequence[str],
                       client_ids: np.ndarray, seed: int = 0,
                       specs: Sequence[str | Path] = ()) -> dict[str, np.ndarray]:
    """Every candidate's float32 ``(n, D)`` matrix for ``client_ids``: each block alone (raw, as the probe reads a
    block folder), then each ensemble as the search and pack assemble it, then each spec file's ensemble
    (:func:`validate.ensemble_ops.assemble`, named ``spec:<file stem>``)."""
    by_name = dict(zip(names, blocks))
    out = {name: b.align(client_ids)[0] for name, b in by_name.items()}
    mats = BlockMatrices(by_name, client_ids, seed=seed)
    for text in ensembles:
        parts = parse_ensemble(text)
        unknown = [n for n, _ in parts if n not in by_name]
        if unknown:
            raise ValueError(f"ensemble {text!r}: no block named {unknown} (blocks: {sorted(by_name)})")
        out[text] = mats.ensemble([(n, 1.0, d or by_name[n].dim) for n, d in parts])
    for path in specs:
        out[f"spec:{Path(path).stem}"] = assemble(by_name, EnsembleSpec.load(path), client_ids, seed)
    return out


def _load_previous(out: Path | None, client_ids: np.ndarray) -> dict:
    """Scores stored by an earlier run on exactly these clients (empty otherwise)."""
    if out is None or not out.exists():
        return {}
    try:
        prev = json.loads(out.read_text())
    except (OSError, ValueError):
        return {}
    if prev.get("client_ids_head") != client_ids[:20].tolist() or prev.get("n_clients") != len(client_ids):
        return {}
    return prev.get("results", {})


def compare(data_dir: str | Path, candidates: dict[str, np.ndarray], client_ids: np.ndarray,
            probes: Sequence[str] = FAST_PROBES, tasks: Sequence[str] = TASKS, seed: int = 0,
            subsample: int | None = None, progress: bool = True, mlp_width: tuple[int, int] | None = None,
            threads: int | None = None, out: Path | None = None) -> dict:
    """Scores of every candidate (rows of ``client_ids``) by the replica and every probe, and the agreement.

    mlp_width: hidden sizes of the reference (tests only: anything but the default is not the replica).
    out: JSON rewritten after every score; a rerun with the same clients reuses what it holds."""
    tasks = list(tasks)
    labels = TaskLabels.load(data_dir, tasks, client_ids)
    results = _load_previous(out, client_ids)
    runs = [(REFERENCE_PROBE, None)] + [(p, None) for p in probes if p != REFERENCE_PROBE]
    if subsample:
        runs.append((REFERENCE_PROBE, int(subsample)))
    sub_labels = labels.restrict(client_ids[:subsample]) if subsample else None
    for name, X in candidates.items():
        for probe, n_sub in runs:
            key = probe if n_sub is None else f"{probe}@{n_sub}"
            if name in results.get(key, {}):
                continue
            rows = slice(None) if n_sub is None else slice(0, n_sub)
            res = score_matrix(data_dir, client_ids[rows], X[rows], tasks, probe, seed,
                               labels=labels if n_sub is None else sub_labels, progress=progress,
                               mlp_width=mlp_width if probe == REFERENCE_PROBE else None, threads=threads)
            results.setdefault(key, {})[name] = {"sum": res["sum"], "seconds": res["seconds"],
                                                 "tasks": {t: r["score"] for t, r in res["tasks"].items()}}
            print(f"{name:>28s} {key:>10s}: sum {res['sum']:.4f} ({res['seconds']:.0f} s)", file=sys.stderr,
                  flush=True)
            if out is not None:
                write_json(summarise(results, tasks, client_ids, list(candidates)), out)
    return summarise(results, tasks, client_ids, list(candidates))


def summarise(results: dict, tasks: Sequence[str], client_ids: np.ndarray, names: Sequence[str]) -> dict:
    """Per probe: Spearman with the replica per task and on sums (over the candidates both scored), the worst task,
    seconds and the time ratio to the replica on those candidates."""
    ref = results.get(REFERENCE_PROBE, {})
    agreement = {}
    for key, scored in results.items():
        if key == REFERENCE_PROBE:
            continue
        common = [n for n in names if n in scored and n in ref]
        per_task = {t: rank_agreement([ref[n]["tasks"][t] for n in common], [scored[n]["tasks"][t] for n in common])
                    for t in tasks}
        finite = [v for v in per_task.values() if np.isfinite(v)]
        ref_s = sum(ref[n]["seconds"] for n in common)
        agreement[key] = {
            "candidates": len(common), "spearman_task": per_task,
            "spearman_sum": rank_agreement([ref[n]["sum"] for n in common], [scored[n]["sum"] for n in common]),
            "worst_task": min(finite) if finite else float("nan"),
            "seconds": sum(scored[n]["seconds"] for n in common),
            "time_ratio": (sum(scored[n]["seconds"] for n in common) / ref_s) if ref_s else float("nan")}
    return {"candidates": [n for n in names if n in ref], "tasks": list(tasks), "n_clients": int(len(client_ids)),
            "client_ids_head": np.asarray(client_ids[:20]).tolist(), "reference": REFERENCE_PROBE,
            "agreement": agreement, "results": results}


def format_table(summary: dict) -> str:
    """The agreement table (Markdown): one row per probe."""
    tasks = summary["tasks"]
    head = "| probe | " + " | ".join(tasks) + " | six-task sum | worst task | time / replica |"
    lines = [head, "|" + "---|" * (len(tasks) + 4)]
    for key, a in summary["agreement"].items():
        cells = [f"{a['spearman_task'][t]:.2f}" for t in tasks]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {a['spearman_sum']:.2f} | {a['worst_task']:.2f} | "
                     f"{a['time_ratio']:.3f} |")
    ref = summary["results"].get(REFERENCE_PROBE, {})
    lines.append("")
    lines.append(f"Spearman with the replica over {len(ref)} candidates at {summary['n_clients']} clients. "
                 + noise_line(summary["n_clients"]))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m validate.agreement", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--data-dir", required=True, type=Path, help="data directory, split, with target lists")
    p.add_argument("--embeddings-dir", nargs="*", type=Path, default=[],
                   help="block folders, each a candidate alone (named by the folder)")
    p.add_argument("--ensembles", nargs="*", default=[], metavar="A+B@DIMS",
                   help="packed ensembles of those blocks as candidates, e.g. stats+tfidf_svd@32")
    p.add_argument("--specs", nargs="*", type=Path, default=[],
                   help="ensemble spec files (validate.search's output) as candidates, assembled as pack does")
    p.add_argument("--reference-blocks", action="store_true", help="add the random and label-leak blocks")
    p.add_argument("--leak-sigmas", nargs="+", type=float, default=list(LEAK_SIGMAS), metavar="SIGMA",
                   help="noise scales of the label-leak reference blocks (one block each)")
    p.add_argument("--fold", choices=("all", "report"), default="all",
                   help="sample the clients from all relevant clients, or from the report fold of --seed (the "
                        "clients validate.search --seed never scores: the replica figures then confirm a search)")
    p.add_argument("--probes", nargs="+", default=list(FAST_PROBES), choices=list(FAST_PROBES),
                   help="fast probes to compare with the replica")
    p.add_argument("--subsample", type=int, default=None,
                   help="also the replica on only the first N of the sampled clients (probe 'mlp@N')")
    p.add_argument("--clients", type=int, default=None, help="score a seeded sample of this many relevant clients")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), metavar="TASK",
                   help=f"tasks to score, among {', '.join(TASKS)}")
    p.add_argument("--seed", type=int, default=0,
                   help="client sample and order, probe seeds, ensemble PCA, reference blocks")
    p.add_argument("--mlp-width", nargs=2, type=int, metavar=("THIN", "WIDE"), default=None,
                   help="hidden sizes of the reference MLP; anything but 2048 4096 is NOT the replica (tests)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (see validate.probe --threads)")
    p.add_argument("--out", required=True, type=Path,
                   help="JSON with every figure (rewritten after each score; reused by a rerun)")
    add_no_progress(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    blocks = load_blocks(args.embeddings_dir) if args.embeddings_dir else []
    names = [p.name for p in args.embeddings_dir]
    if args.fold == "report":
        ids = report_sample(args.data_dir, args.clients, args.seed)
    else:
        ids = client_order(args.data_dir)
        ids = ids[np.random.default_rng(args.seed).permutation(len(ids))[:args.clients or len(ids)]]
    try:
        candidates = candidate_matrices(blocks, names, args.ensembles, ids, args.seed, args.specs)
        if args.reference_blocks:  # last: the real candidates first, in case a long run is cut short
            candidates |= {b.meta["name"]: b.align(ids)[0]
                           for b in reference_blocks(args.data_dir, args.seed, args.leak_sigmas)}
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"validate.agreement: error: {exc}")
    if len(candidates) < 3:
        raise SystemExit("validate.agreement: error: need at least 3 candidates to compare rankings "
                         "(add blocks, --ensembles or --reference-blocks)")
    summary = compare(args.data_dir, candidates, ids, args.probes, args.tasks, args.seed, args.subsample,
                      not args.no_progress, tuple(args.mlp_width) if args.mlp_width else None, args.threads,
                      args.out)
    ref = summary["results"][REFERENCE_PROBE]
    print(f"{'candidate':>28s} " + " ".join(f"{k:>10s}" for k in summary["results"]))
    for n in summary["candidates"]:
        print(f"{n:>28s} " + " ".join(f"{summary['results'][k].get(n, {}).get('sum', float('nan')):10.4f}"
                                     for k in summary["results"]))
    print(format_table(summary))
    print(f"replica seconds: {sum(r['seconds'] for r in ref.values()):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
