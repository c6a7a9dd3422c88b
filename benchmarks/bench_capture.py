"""How much of the knowable a one-command submission captures: the headroom table per task.

A script, not a test (the replica is slow on CPU). On a synthetic world the one-command run has already packed
(``python -m submit.pack --data-dir W --out O --seed S``), it scores on the same report-fold clients:

- ``stats``: the run's count-statistics block alone (the baseline);
- ``<block>``: every other block the run built, alone;
- ``default``: the submission the run shipped (``O/local``, the input-period twin of ``O/final``);
- ``oracle``: the world's true latents (:mod:`validate.oracle`), and ``stats+oracle``,
- ``knowable``: the knowable oracle (the same latents censored at the input period's end, the target windows'
  columns averaged over futures drawn from the generator's laws; ``--knowable`` of :mod:`validate.oracle`), and
  ``stats+knowable``: the ceiling of what could be known when the embeddings are made,

- with ``--extra DIR ...``: ``<name>`` (the folder's name), ``stats+<name>`` and ``default+<name>`` for each block
  folder given (a block or a submission the run did not build, alone, beside the baseline and beside the shipped
  submission),

each in ``--orders`` row orders, the same for every candidate (order 0: the relevant-clients file's, which the
toolkit's blocks and submissions keep; order k > 0: a seeded permutation of it; the organisers' network trains
unshuffled, so row order alone moves a score), and prints per task the mean score of each candidate and the share
of the stats -> stats + oracle gap the shipped submission closes (``closed = (default - stats) / (stats+oracle -
stats)``; a gap no larger than the order range of stats or stats + oracle is flagged)::

    python benchmarks/bench_capture.py --data-dir W --run O --seed S [--clients 5000] [--orders 2] --out c.json
    python benchmarks/bench_capture.py --data-dir W --run O --seed S --only stats default --out c.json
    python benchmarks/bench_capture.py --data-dir W --run O --seed S --only blocks --probe mlp16 --out c.json
    python benchmarks/bench_capture.py --data-dir W --run O --seed S --extra E/content --only stats+content \
        default+content --orders 1 --out c.json

Clients: ``--clients`` of the report fold of ``--seed`` (:func:`validate.search.split_folds`, the half a run with
that ``--seed`` neither searched nor decided on; :func:`bench_headroom.report_sample`). ``--out`` keeps every
figure (one entry per candidate, probe and order) and is completed by later runs with the same world, clients and
seed, so a long measurement can run one candidate per command. The table reads ``--probe``'s entries; the replica
(``mlp``) is the organisers' model, anything else is labelled a proxy.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_headroom import build_blocks, report_sample  # noqa: E402
from competition.cli import HelpFormatter, add_no_progress, peak_rss_mb  # noqa: E402
from competition.io import write_json  # noqa: E402
from competition.schema import TASKS  # noqa: E402
from validate.cli import PROBE_CHOICES, resolve_probe  # noqa: E402

ESSENTIAL = ("stats", "default", "oracle", "stats+oracle")
DEFAULT_SUBMISSION = "local"


def run_blocks(run: Path) -> dict[str, Path]:
    """The blocks a one-command run built (``O/run/blocks/<name>``), by name, stats first."""
    root = run / "run" / "blocks"
    found = {p.name: p for p in sorted(root.iterdir()) if (p / "embeddings.npy").is_file()} if root.is_dir() else {}
    if "stats" not in found:
        raise SystemExit(f"{root}: no stats block (is {run} the --out folder of a finished one-command run?)")
    return {"stats": found.pop("stats"), **found}


def knowable_block(world: Path, seed: int, progress: bool) -> Path:
    """The world's knowable oracle (:func:`validate.oracle.oracle_block` with ``knowable``: nothing after the input
    period's end), built once into ``<world>.blocks/knowable_<seed>``."""
    from embedders.base import write_block
    from validate.oracle import oracle_block
    out = world.parent / f"{world.name}.blocks" / f"knowable_{seed}"
    if not (out / "embeddings.npy").is_file():
        write_block(oracle_block(world, progress=progress, seed=seed, knowable=True), out)
    return out


def candidates(world: Path, run: Path, progress: bool, extra: list[Path] = (), seed: int = 0
               ) -> dict[str, list[Path]]:
    """Every candidate's block folders, in table order (``extra`` blocks last, each beside stats and beside the
    shipped submission)."""
    blocks = run_blocks(run)
    submission = run / DEFAULT_SUBMISSION
    if not (submission / "embeddings.npy").is_file():
        raise SystemExit(f"{submission}: no embeddings.npy (the run's local submission)")
    _, oracle = build_blocks(world, progress)
    out = {name: [path] for name, path in blocks.items()}
    out["default"] = [submission]
    out["oracle"] = [oracle]
    out["stats+oracle"] = [blocks["stats"], oracle]
    knowable = knowable_block(world, seed, progress)
    out["knowable"] = [knowable]
    out["stats+knowable"] = [blocks["stats"], knowable]
    for folder in extra:
        if not (folder / "embeddings.npy").is_file():
            raise SystemExit(f"--extra {folder}: no embeddings.npy (a block folder, e.g. python -m embedders.<name>'s "
                             f"--out)")
        out[folder.name] = [folder]
        out[f"stats+{folder.name}"] = [blocks["stats"], folder]
        out[f"default+{folder.name}"] = [submission, folder]
    return out


def score_in_order(world: Path, dirs: list[Path], sample: np.ndarray, order: int, probe: str, seed: int,
                   progress: bool) -> dict:
    """:func:`validate.probe.score_blocks` with the rows in order ``order``, the same for every candidate so that
    their differences are not row-order noise (0: the relevant-clients file's order restricted to ``sample``, the
    order of the blocks and submissions the toolkit writes; k > 0: a permutation of it seeded by ``(seed, k)``)."""
    from validate.probe import client_order, concat_blocks, load_blocks, score_matrix
    blocks = load_blocks(dirs)
    ids = client_order(world, None, sample)
    if order:
        ids = ids[np.random.default_rng([seed, order]).permutation(len(ids))]
    out = score_matrix(world, ids, concat_blocks(blocks, ids), TASKS, probe, seed, progress=progress)
    out["order"] = order
    out["dim"] = int(sum(b.dim for b in blocks))
    return out


def key(name: str, probe: str, order: int) -> str:
    return f"{name}|{probe}|{order}"


def closed_shares(means: dict, ceiling: str) -> dict:
    """Per ``default`` / ``default+...`` candidate, the share of the stats -> ``ceiling`` gap it closes (per task
    and for the sum; None for a zero gap); {} until stats and the ceiling are scored."""
    if not all(n in means for n in ("stats", ceiling)):
        return {}
    gap = {t: means[ceiling][t] - means["stats"][t] for t in (*TASKS, "sum")}
    return {cand: {t: (means[cand][t] - means["stats"][t]) / gap[t] if abs(gap[t]) > 1e-9 else None for t in gap}
            for cand in means if cand == "default" or cand.startswith("default+")}


def table(entries: dict, names: list[str], probe: str) -> dict:
    """Mean per task and sum over the orders scored with ``probe``, the order spread of each candidate, and the
    share of the stats -> stats + oracle gap that ``default`` closes (per task and for the sum)."""
    means, spread, orders, task_range = {}, {}, {}, {}
    for name in names:
        runs = [e for k, e in entries.items() if k.startswith(f"{name}|{probe}|")]
        if not runs:
            continue
        orders[name] = len(runs)
        means[name] = {t: float(np.mean([r["tasks"][t]["score"] for r in runs])) for t in TASKS}
        means[name]["sum"] = float(np.mean([r["sum"] for r in runs]))
        spread[name] = float(np.ptp([r["sum"] for r in runs])) if len(runs) > 1 else None
        task_range[name] = {t: float(np.ptp([r["tasks"][t]["score"] for r in runs])) for t in TASKS}
        task_range[name]["sum"] = float(np.ptp([r["sum"] for r in runs]))
    closed, gap_in_noise = {}, {}
    closed_knowable = closed_shares(means, "stats+knowable")
    closed_by = closed_shares(means, "stats+oracle")
    if closed_by:
        gap = {t: means["stats+oracle"][t] - means["stats"][t] for t in (*TASKS, "sum")}
        closed = closed_by.pop("default", {})
        # a gap no larger than what row order alone moved stats or stats + oracle: its share means little
        gap_in_noise = {t: abs(gap[t]) <= max(task_range["stats"][t], task_range["stats+oracle"][t]) for t in gap}
    return {"probe": probe, "means": means, "order_range": spread, "orders": orders, "closed": closed,
            "gap_in_noise": gap_in_noise, "closed_by": closed_by, "closed_knowable": closed_knowable}


def format_capture(tab: dict) -> str:
    names = list(tab["means"])
    rows = [f"{'task':<20}" + "".join(f"{n[:13]:>14}" for n in names) + ("  closed" if tab["closed"] else "")]
    for t in (*TASKS, "sum"):
        line = f"{t:<20}" + "".join(f"{tab['means'][n][t]:>14.4f}" for n in names)
        if tab["closed"]:
            c = tab["closed"][t]
            line += f"  {c:>6.0%}" if c is not None else "       -"
            line += " (gap within row-order noise)" if tab["gap_in_noise"].get(t) else ""
        rows.append(line)
    for cand, shares in tab.get("closed_by", {}).items():
        rows.append(f"{cand} closes: " + ", ".join(
            f"{t} {c:.0%}" if c is not None else f"{t} -" for t, c in shares.items()))
    for cand, shares in tab.get("closed_knowable", {}).items():
        rows.append(f"{cand} closes of the stats -> stats+knowable gap: " + ", ".join(
            f"{t} {c:.0%}" if c is not None else f"{t} -" for t, c in shares.items()))
    rows.append(f"{'orders':<20}" + "".join(f"{tab['orders'][n]:>14}" for n in names))
    rows.append(f"{'order range (sum)':<20}" + "".join(
        f"{tab['order_range'][n]:>14.4f}" if tab["order_range"][n] is not None else f"{'-':>14}" for n in names))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_capture.py", formatter_class=HelpFormatter,
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="a split synthetic world (with truth/)")
    p.add_argument("--run", type=Path, required=True, help="the --out folder of `python -m submit.pack --data-dir "
                   "W --out O --seed S` on that world (its blocks and its local submission)")
    p.add_argument("--seed", type=int, required=True, help="the run's --seed: its report fold is scored")
    p.add_argument("--clients", type=int, default=5_000, help="report-fold clients scored")
    p.add_argument("--orders", type=int, default=2, help="row orders per candidate (order 0: the organisers')")
    p.add_argument("--probe", choices=PROBE_CHOICES, default="mlp", help="probe (default mlp: the organisers' "
                   "replica; any other is a proxy)")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="candidates to score now (names, 'blocks' for every block but stats, 'essential' for "
                        f"{', '.join(ESSENTIAL)}); default: all; entries already in --out are kept")
    p.add_argument("--extra", nargs="+", type=Path, default=[], metavar="DIR",
                   help="block or submission folders the run did not build: each is scored alone, beside stats and "
                        "beside the shipped submission (candidates <folder name>, stats+<folder name>, "
                        "default+<folder name>)")
    p.add_argument("--out", type=Path, required=True, help="JSON of every figure (completed after each score)")
    add_no_progress(p)
    args = p.parse_args(argv)
    progress = not args.no_progress
    t0 = time.perf_counter()
    world, probe = args.data_dir, resolve_probe(args.probe)
    cands = candidates(world, args.run, progress, args.extra, args.seed)
    names = list(cands)
    todo = names
    if args.only:
        todo = []
        for n in args.only:
            todo += ([c for c in names if c not in ESSENTIAL and c != "stats" and "+" not in c] if n == "blocks" else
                     list(ESSENTIAL) if n == "essential" else [n])
        bad = [n for n in todo if n not in cands]
        if bad:
            raise SystemExit(f"--only: unknown candidate(s) {bad}; this run has {names}")
    sample = report_sample(world, args.clients, args.seed)
    head = {"world": str(world), "run": str(args.run), "seed": args.seed, "n_clients": int(len(sample))}
    state = json.loads(args.out.read_text()) if args.out.is_file() else {}
    entries = state.get("entries", {}) if all(state.get(k) == v for k, v in head.items()) else {}
    for order in range(args.orders):
        for name in todo:
            if key(name, probe, order) in entries:
                continue
            r = score_in_order(world, cands[name], sample, order, probe, args.seed, progress)
            entries[key(name, probe, order)] = r
            print(f"{name} ({probe}, order {order}): {r['sum']:.4f} in {r['seconds']:.0f}s", flush=True)
            write_json({**head, "entries": entries}, args.out)
    tab = table(entries, names, probe)
    write_json({**head, "entries": entries, "table": {probe: tab}}, args.out)
    label = "the replica (the organisers' model)" if probe == "mlp" else f"{probe}, a proxy"
    print(f"capture on {world}, {len(sample):,} report-fold clients of seed {args.seed}, {label}:")
    print(format_capture(tab))
    print(f"took {time.perf_counter() - t0:.0f}s, peak RSS {peak_rss_mb():,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
