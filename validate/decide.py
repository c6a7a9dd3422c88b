"""Decide the shipped ensemble with the organisers' own network: a short list scored at growing client counts.

``python -m validate.decide --data-dir D --embeddings-root R --spec searched.json [--sizes 1000 2000]
[--finalists 2] [--decision-probe auto|mlp|mlp16] [--seed S] --out decided.json``

The LightGBM search (:mod:`validate.search`) is fast but cannot see what the organisers' MLP rewards (trees ignore
monotone transforms and read dense, rotated embeddings poorly: docs/probes.md). This module makes the final choice
with the organisers' network itself (``mlp``, the replica, with CUDA) or, on a CPU, the same network, initial
weights, loop and row order with bfloat16 matmuls (``mlp16``, about 2x cheaper; docs/probes.md says how close it
stays to the replica). Steps:

1. **Short list** (:func:`shortlist`): the search's best; the stats block alone; every block alone that learns from
   labels (``Embedder.supervised``) or that a fast screen (LightGBM on search-fold clients) puts level with or
   above stats; all blocks packed (PCA'd to fit 2048 columns); the 2 and 3 strongest blocks by the screen
   together. Duplicates are dropped.
2. **A ladder of sizes** (:func:`decide`): every candidate is scored on the first size's clients, the best
   ``finalists`` go on to each larger size. The clients are nested seeded samples of the **search fold** (never the
   report fold the run's table scores), in the organisers' row order (the relevant clients' order).
3. **The choice** (:func:`choose`): the best at the largest size; among the candidates within the replica's
   row-order noise of it (:func:`validate.noise.noise_threshold`), the widest. The organisers' net trains on ~1M
   clients, ~500x the steps of a 2k-client probe, and the measured trend from 2k to 5k clients favours wider
   ensembles, so within the noise the wider candidate is preferred, and the report says when that rule decided.
4. **How the ranking moves with size** (:func:`fit_curves`): per candidate scored at 2+ sizes, the saturating
   curve ``score(n) = a - b / sqrt(n)`` (least squares), extrapolated to the data's number of relevant clients,
   and where the curves of two finalists cross.

The figures are scored on search-fold clients and picked by their maximum, so the winner's is optimistic: the
run's table (report-fold clients) is the figure to quote.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from competition.cli import HelpFormatter, add_no_progress
from competition.io import write_json
from competition.load import DataError
from competition.schema import MAX_EMBEDDING_COLUMNS, TASKS
from embedders.base import Block, BlockError, read_block
from validate.cli import DECISION_PROBES, add_decision_probe, resolve_decision_probe
from validate.ensemble_ops import default_transform
from validate.noise import noise_threshold
from validate.probe import TaskLabels, client_order, score_matrix
from validate.search import BlockMatrices, dim_options, find_blocks, make_spec, split_folds
from validate.spec import EnsembleSpec

DECISION_LABELS = {"mlp": "the MLP replica (the organisers' network)",
                   "mlp16": "the organisers' network at bfloat16 matmuls (mlp16; close to, not equal to, the replica)"}
#: Ladder of decision sizes by preset (clients of the search fold): CPU minutes, or a GPU's replica at 20k+.
CPU_SIZES, GPU_SIZES = (1_000, 2_000), (10_000, 20_000, 50_000)
FINALISTS = 2
#: Clients of the search fold the LightGBM screen of single blocks scores (seconds).
SCREEN_CLIENTS = 5_000
BASELINE = "stats"
#: Exponent of the saturating curve score(n) = a - b * n**-CURVE_POWER (1/2: the error of a mean over n).
CURVE_POWER = 0.5


@dataclass
class Candidate:
    """One ensemble of the short list: ``chosen`` is ``(block name, weight, kept dims)`` as
    :meth:`validate.search.BlockMatrices.ensemble` takes it; ``why``: why it is on the list."""

    name: str
    chosen: list[tuple[str, float, int]]
    why: str
    scores: dict[int, dict[str, Any]] = field(default_factory=dict)  # size -> {"sum", "tasks", "seconds"}

    @property
    def columns(self) -> int:
        return int(sum(d for _, _, d in self.chosen))

    def key(self) -> tuple:
        return tuple(sorted((n, round(float(w), 6), int(d)) for n, w, d in self.chosen))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "why": self.why, "columns": self.columns,
                "chosen": [[n, float(w), int(d)] for n, w, d in self.chosen],
                "scores": {str(k): v for k, v in self.scores.items()}}


def is_supervised(block: Block) -> bool:
    """Whether the block's embedder learns from labels (its class's ``supervised``; False when unknown)."""
    from embedders import registry
    name = block.meta.get("embedder")
    if not name:
        return False
    try:
        return bool(getattr(registry.embedder_class(str(name)), "supervised", False))
    except registry.RegistryError:
        return False


def fit_columns(blocks: Mapping[str, Block], names: Sequence[str], limit: int = MAX_EMBEDDING_COLUMNS
                ) -> list[tuple[str, float, int]]:
    """``names`` at weight 1 and full width when they fit ``limit`` columns, else each cut by PCA to the largest of
    its :func:`~validate.search.dim_options` within an equal share of the limit."""
    widths = {n: blocks[n].dim for n in names}
    if sum(widths.values()) <= limit:
        return [(n, 1.0, w) for n, w in widths.items()]
    share = limit // len(names)
    return [(n, 1.0, max([d for d in dim_options(w) if d <= share] or [min(dim_options(w))]))
            for n, w in widths.items()]


def shortlist(blocks: Mapping[str, Block], searched: Sequence[tuple[str, float, int]] | None,
              screen: Mapping[str, float], baseline: str = BASELINE) -> list[Candidate]:
    """The candidates (module doc, step 1), duplicates dropped (the first reason kept).

    screen: a fast probe's six-task sum of each block alone (higher is better); blocks missing from it rank last.
    """
    out: list[Candidate] = []

    def add(name: str, chosen: Sequence[tuple[str, float, int]], why: str) -> None:
        cand = Candidate(name, [(n, float(w), int(d)) for n, w, d in chosen], why)
        if cand.chosen and cand.columns <= MAX_EMBEDDING_COLUMNS and all(c.key() != cand.key() for c in out):
            out.append(cand)

    if searched:
        add("searched", searched, "the LightGBM search's best")
    if baseline in blocks:
        add(baseline, [(baseline, 1.0, blocks[baseline].dim)], "the count-statistics baseline")
    base_screen = screen.get(baseline, -math.inf)
    for name, b in blocks.items():
        if name == baseline:
            continue
        if is_supervised(b):
            add(name, [(name, 1.0, b.dim)], "learns from labels")
        elif screen.get(name, -math.inf) >= base_screen:
            add(name, [(name, 1.0, b.dim)], f"level with or above {baseline} on the fast screen")
    if len(blocks) > 1:
        add("all blocks", fit_columns(blocks, list(blocks)), "every block packed")
    ranked = sorted(blocks, key=lambda n: -screen.get(n, -math.inf))
    for k in (2, 3):
        if k < len(blocks):
            top = ranked[:k]
            add(" + ".join(top), fit_columns(blocks, top), f"the {k} strongest blocks on the fast screen")
    return out


def nested_samples(fold: np.ndarray, sizes: Sequence[int], seed: int) -> dict[int, np.ndarray]:
    """Per size, a seeded sample of ``fold`` (each size's sample holds the smaller ones'), in the fold's order."""
    perm = np.random.default_rng([seed, 4099]).permutation(len(fold))
    return {int(n): fold[np.sort(perm[:min(int(n), len(fold))])] for n in sizes}


def plan_sizes(sizes: Sequence[int], pool: int) -> list[int]:
    """The ladder's sizes capped at the ``pool`` of clients available, ascending, duplicates dropped."""
    return sorted({min(int(n), int(pool)) for n in sizes if int(n) > 0})


def choose(candidates: Sequence[Candidate], size: int, noise: float | None) -> tuple[Candidate, dict[str, Any]]:
    """The best at ``size``, or the widest candidate within ``noise`` of it (module doc, step 3). Returns (winner,
    the rule's record: "best", "margin", "noise", "wider_within_noise")."""
    scored = [c for c in candidates if size in c.scores]
    if not scored:
        raise ValueError(f"no candidate was scored at {size} clients")
    best = max(scored, key=lambda c: c.scores[size]["sum"])
    top = best.scores[size]["sum"]
    tol = 0.0 if noise is None or not np.isfinite(noise) else float(noise)
    level = [c for c in scored if c.scores[size]["sum"] >= top - tol]
    winner = max(level, key=lambda c: (c.columns, c.scores[size]["sum"]))
    others = [c.scores[size]["sum"] for c in scored if c is not winner]
    return winner, {"best": best.name, "size": int(size), "noise": noise, "within_noise": [c.name for c in level],
                    "wider_within_noise": winner is not best,
                    "margin": (winner.scores[size]["sum"] - max(others)) if others else None}


def fit_curve(sizes: Sequence[int], sums: Sequence[float], power: float = CURVE_POWER) -> tuple[float, float]:
    """``(a, b)`` of ``score(n) = a - b * n**-power`` by least squares (exact through two points)."""
    x = np.asarray(sizes, dtype=float) ** -power
    A = np.stack([np.ones_like(x), -x], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, np.asarray(sums, dtype=float), rcond=None)
    return float(a), float(b)


def fit_curves(candidates: Sequence[Candidate], target: int, power: float = CURVE_POWER) -> dict[str, Any]:
    """Curves of the candidates scored at 2+ sizes, each extrapolated to ``target`` clients; the ranking at every
    measured size and at the target; crossings: for each pair, the size where their curves meet (None when they
    do not meet at a positive size)."""
    curves = {}
    for c in candidates:
        if len(c.scores) >= 2:
            ns = sorted(c.scores)
            a, b = fit_curve(ns, [c.scores[n]["sum"] for n in ns], power)
            curves[c.name] = {"a": a, "b": b, "sizes": ns, "at_target": a - b * target ** -power}
    if not curves:
        return {"target": int(target), "curves": {}, "ranking": {}, "stable": None, "crossings": []}
    names = list(curves)
    common = sorted(set.intersection(*(set(curves[n]["sizes"]) for n in names)))
    by = {c.name: c for c in candidates}
    ranking = {str(n): sorted(names, key=lambda k: -by[k].scores[n]["sum"]) for n in common}
    ranking["target"] = sorted(names, key=lambda k: -curves[k]["at_target"])
    crossings = []
    for i, p in enumerate(names):
        for q in names[i + 1:]:
            da, db = curves[p]["a"] - curves[q]["a"], curves[p]["b"] - curves[q]["b"]
            n_cross = (db / da) ** (1 / power) if da != 0 and db / da > 0 else None
            crossings.append({"pair": [p, q], "size": None if n_cross is None else float(n_cross),
                              "before_target": n_cross is not None and n_cross <= target})
    orders = list(ranking.values())
    return {"target": int(target), "curves": curves, "ranking": ranking, "power": power,
            "stable": all(o == orders[0] for o in orders), "crossings": crossings}


def screen_blocks(data_dir: str | Path, blocks: Mapping[str, Block], ids: np.ndarray, tasks: Sequence[str],
                  seed: int, labels: TaskLabels | None = None) -> dict[str, float]:
    """LightGBM six-task sum of each block alone (its default transform) on ``ids``: the short list's screen."""
    mats = BlockMatrices(dict(blocks), ids, seed=seed)
    labels = labels if labels is not None else TaskLabels.load(data_dir, tasks, ids)
    return {n: float(score_matrix(data_dir, ids, mats.ensemble([(n, 1.0, b.dim)]), tasks, "lgbm", seed,
                                  labels=labels, progress=False)["sum"]) for n, b in blocks.items()}


def decide(data_dir: str | Path, blocks: Mapping[str, Block], searched: Sequence[tuple[str, float, int]] | None,
           sizes: Sequence[int] = CPU_SIZES, finalists: int = FINALISTS, probe: str = "auto",
           tasks: Sequence[str] = TASKS, seed: int = 0, mlp_width: tuple[int, int] | None = None,
           progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Steps 1-4 of the module doc. Returns ``{"probe", "replica_net", "sizes", "candidates", "choice", "rule",
    "curves", "screen", "noise", "seconds"}``; ``choice`` is the winner's :meth:`Candidate.to_dict`."""
    t0 = time.perf_counter()
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    probe = resolve_decision_probe(probe)
    if probe not in DECISION_PROBES:
        raise ValueError(f"the decision probe must be one of {DECISION_PROBES} (the organisers' network), "
                         f"got {probe!r}")
    if finalists < 1:
        raise ValueError(f"finalists must be >= 1, got {finalists}")
    blocks = dict(blocks)
    tasks = list(tasks)
    all_ids = client_order(data_dir)
    fold = split_folds(all_ids, seed)[0]  # the search fold: the run's table scores the other one
    sizes = plan_sizes(sizes, len(fold))
    if not sizes:
        raise ValueError("no decision size given")
    samples = nested_samples(fold, sizes + [min(SCREEN_CLIENTS, len(fold))], seed)
    largest = samples[max(sizes)]
    screen_ids = samples[min(SCREEN_CLIENTS, len(fold))]
    pool = np.union1d(largest, screen_ids)
    pool = all_ids[np.isin(all_ids, pool)]  # the organisers' order
    labels = TaskLabels.load(data_dir, tasks, pool)
    screen = screen_blocks(data_dir, blocks, screen_ids, tasks, seed, labels.restrict(screen_ids))
    say("decide: fast screen (LightGBM proxy, each block alone, " f"{len(screen_ids):,} search-fold clients): "
        + ", ".join(f"{n} {v:.3f}" for n, v in screen.items()))
    cands = shortlist(blocks, searched, screen)
    say(f"decide: {len(cands)} candidate(s): " + "; ".join(f"{c.name} ({c.columns} cols: {c.why})" for c in cands))
    mats = BlockMatrices(blocks, largest, seed=seed)
    alive = list(cands)
    for k, n in enumerate(sizes):
        ids = samples[n]
        rows = np.flatnonzero(np.isin(largest, ids))
        lab = labels.restrict(ids)
        for c in alive:
            res = score_matrix(data_dir, ids, mats.ensemble(c.chosen, rows), tasks, probe, seed, labels=lab,
                               progress=progress, mlp_width=mlp_width)
            c.scores[n] = {"sum": float(res["sum"]), "seconds": round(float(res["seconds"]), 1),
                           "tasks": {t: float(r["score"]) for t, r in res["tasks"].items()}}
            say(f"decide: [{n:,} clients] {c.name}: sum {res['sum']:.4f} ({res['seconds']:.0f} s)")
        if k + 1 < len(sizes):
            alive = sorted(alive, key=lambda c: -c.scores[n]["sum"])[:finalists]
    last = sizes[-1]
    got = noise_threshold(last) if mlp_width is None else None
    noise = got[0] if got else None
    winner, rule = choose(cands, last, noise)
    curves = fit_curves(cands, len(all_ids))
    say(f"decide: chose {winner.name} ({winner.columns} columns)"
        + (f": within the noise ({noise:.3f}) of {rule['best']}, and wider" if rule["wider_within_noise"] else ""))
    return {"probe": probe, "replica_net": mlp_width is None, "mlp_width": list(mlp_width) if mlp_width else None,
            "sizes": sizes, "finalists": finalists, "n_relevant": int(len(all_ids)), "fold": "search",
            "candidates": [c.to_dict() for c in cands], "choice": winner.to_dict(), "rule": rule,
            "curves": curves, "screen": screen, "noise": noise, "seconds": round(time.perf_counter() - t0, 1)}


def decided_spec(decision: Mapping[str, Any], blocks: Mapping[str, Block], search: Mapping[str, Any] | None = None
                 ) -> EnsembleSpec:
    """The ensemble spec of the decision's winner (``search``: the search record it keeps, plus the decision)."""
    chosen = [(n, float(w), int(d)) for n, w, d in decision["choice"]["chosen"]]
    kinds = {n: default_transform(b.meta) for n, b in blocks.items()}
    return make_spec(chosen, dict(blocks), kinds, dict(search or {}, decision=dict(decision)))


def summary_lines(decision: Mapping[str, Any]) -> list[str]:
    """The decision as Markdown: one table of every candidate's sums per size, the rule, the curves."""
    sizes = decision["sizes"]
    label = DECISION_LABELS[decision["probe"]] if decision.get("replica_net", True) else \
        f"an MLP of other widths {decision.get('mlp_width')} (NOT the organisers' network)"
    lines = [f"Decision by {label} on nested samples of search-fold clients (six-task sums; the winner's figure "
             "is optimistic, the report-fold table is the one to quote):", "",
             "| candidate | columns | why | " + " | ".join(f"{n:,} clients" for n in sizes) + " |",
             "|---|---|---|" + "---|" * len(sizes)]
    for c in decision["candidates"]:
        cells = [f"{c['scores'][str(n)]['sum']:.4f}" if str(n) in c["scores"] else "-" for n in sizes]
        mark = " **(chosen)**" if c["name"] == decision["choice"]["name"] else ""
        lines.append(f"| {c['name']}{mark} | {c['columns']} | {c['why']} | " + " | ".join(cells) + " |")
    rule = decision["rule"]
    noise = rule.get("noise")
    lines += ["", f"Rule: the best at {rule['size']:,} clients was {rule['best']}"
              + (f"; within the replica's row-order noise ({noise:.3f}) of it: {', '.join(rule['within_noise'])}"
                 if noise is not None else "; the noise at this size is not measured")
              + (f"; the widest of those, {decision['choice']['name']}, was chosen (the organisers' net trains on "
                 "far more clients, which favours wider inputs)" if rule["wider_within_noise"] else "")
              + "."]
    cur = decision.get("curves") or {}
    if cur.get("curves"):
        tgt = cur["target"]
        lines.append("Curves score(n) = a - b / sqrt(n) through each finalist's sizes, extrapolated to the data's "
                     f"{tgt:,} relevant clients: " + ", ".join(f"{n} {v['at_target']:.3f}"
                                                               for n, v in cur["curves"].items())
                     + f". Ranking {'the same' if cur['stable'] else 'NOT the same'} at every measured size and at "
                       "the data's size.")
        crossing = [x for x in cur["crossings"] if x["size"] is not None and x["size"] > max(sizes)]
        for x in crossing:
            lines.append(f"The curves of {x['pair'][0]} and {x['pair'][1]} cross at about {x['size']:,.0f} clients"
                         + (" (before the data's size: the extrapolated order differs from the measured one)."
                            if x["before_target"] else "."))
    return lines


def plot_curves(decision: Mapping[str, Any], path: str | Path) -> Path | None:
    """Each candidate's six-task sum against clients (log axis), its fitted curve out to the data's size; PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from validate.report import save_png

    cur = (decision.get("curves") or {}).get("curves") or {}
    if not decision.get("candidates"):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    target = int((decision.get("curves") or {}).get("target") or max(decision["sizes"]))
    for c in decision["candidates"]:
        ns = sorted(int(k) for k in c["scores"])
        line = ax.plot(ns, [c["scores"][str(n)]["sum"] for n in ns], "o-" if len(ns) > 1 else "o",
                       label=f"{c['name']} ({c['columns']})")[0]
        if c["name"] in cur:
            grid = np.geomspace(ns[0], max(target, ns[-1]), 50)
            fit = cur[c["name"]]
            ax.plot(grid, fit["a"] - fit["b"] * grid ** -decision["curves"]["power"], "--", color=line.get_color(),
                    alpha=0.6)
    ax.axvline(target, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("clients the network trains on (search fold; dotted: the data's relevant clients)")
    ax.set_ylabel("six-task sum")
    ax.set_title(f"decision probe: {decision['probe']}")
    ax.legend(fontsize=7, loc="lower right")
    return save_png(fig, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m validate.decide", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--data-dir", required=True, type=Path, help="data directory, split, with target lists")
    p.add_argument("--embeddings-root", required=True, type=Path, help="folder of block folders (the search's)")
    p.add_argument("--spec", type=Path, default=None, help="the search's spec JSON (its choice joins the list)")
    p.add_argument("--sizes", nargs="+", type=int, default=None,
                   help=f"ladder of search-fold client counts (default {' '.join(map(str, CPU_SIZES))} on a CPU, "
                        f"{' '.join(map(str, GPU_SIZES))} with CUDA)")
    p.add_argument("--finalists", type=int, default=FINALISTS, help="candidates kept for each larger size")
    add_decision_probe(p)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), metavar="TASK",
                   help=f"tasks in the decision, among {', '.join(TASKS)}")
    p.add_argument("--seed", type=int, default=0, help="folds (as validate.search --seed), samples, PCA")
    p.add_argument("--mlp-width", nargs=2, type=int, metavar=("THIN", "WIDE"), default=None,
                   help="hidden sizes; anything but 2048 4096 is NOT the organisers' network (tests)")
    p.add_argument("--out", required=True, type=Path, help="spec JSON of the winner (the decision inside; a PNG "
                                                            "of the curves beside it)")
    add_no_progress(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        blocks = {p.name: read_block(p) for p in find_blocks(args.embeddings_root)}
        searched = None
        if args.spec is not None:
            spec = EnsembleSpec.load(args.spec)
            missing = sorted(b.name for b in spec.active if b.name not in blocks)
            if missing:
                raise ValueError(f"{args.spec}: block(s) {missing} are not in {args.embeddings_root}")
            searched = [(b.name, b.weight, b.dims or blocks[b.name].dim) for b in spec.active]
        sizes = args.sizes
        if sizes is None:
            import torch
            sizes = GPU_SIZES if torch.cuda.is_available() else CPU_SIZES
        decision = decide(args.data_dir, blocks, searched, sizes, args.finalists, args.decision_probe, args.tasks,
                          args.seed, tuple(args.mlp_width) if args.mlp_width else None, not args.no_progress)
    except (BlockError, DataError, FileNotFoundError, ValueError) as exc:
        print(f"validate.decide: error: {exc}", file=sys.stderr)
        return 2
    spec = decided_spec(decision, blocks)
    spec.save(args.out)
    write_json(decision, args.out.with_name(args.out.stem + "_decision.json"))
    plot_curves(decision, args.out.with_name(args.out.stem + "_curves.png"))
    print("\n".join(summary_lines(decision)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
