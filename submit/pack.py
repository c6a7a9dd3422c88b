"""The one-stop command: blocks -> ensemble -> checked submission files.

``python -m submit.pack --data-dir D --spec spec.json --out OUT [--final] [--seed S]``
    builds every block the spec names that is missing or stale (:mod:`submit.build`), assembles the ensemble
    (:mod:`submit.ensemble`), checks it against every rule of docs/challenge.md section 6 (:mod:`submit.check`) and
    writes ``OUT/embeddings.npy`` and ``OUT/client_ids.npy``. Default: blocks from the split's input period (local
    validation); ``--final``: from every event of the raw files, as the real submission requires (those blocks go
    to ``<blocks folder>-final/<name>``, apart from the local ones).

``python -m submit.pack --data-dir D --out O`` (no ``--spec``)
    the whole pipeline on your data in one command (:mod:`submit.pipeline`): the split when D has none, the
    default blocks, a search, the local submission in ``O/local``, the final one (every event) in ``O/final`` and
    the run report in ``O/run/report.md`` (the run folder, ``--work-dir``); ``--budget MINUTES`` fits the sizes.

``python -m submit.pack`` (no ``--data-dir``)
    the embedded default (:mod:`submit.default`): the same pipeline on a small synthetic world, every block, a
    short search, the packed submission, a table of scores and the report, in ``--work-dir`` (default
    ``./runs/default``).

Writing is atomic: both files are written under temporary names in OUT, read back and checked, then renamed,
``client_ids.npy`` first and ``embeddings.npy`` last (any older ``embeddings.npy`` is removed before), so an
interrupted run never leaves a pair that looks valid. ``OUT/pack.json`` records what was packed.

Nothing is filled silently: pack says, per block, how many relevant clients it covers, and refuses a block that
covers fewer than ``--min-coverage`` percent of them (default 99; the rest would get the block's column means) or
holds a client id twice; a block stored in another dtype than float32/float16 (float64) is cast with a notice.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from competition.cli import HelpFormatter, add_no_progress, peak_rss_mb
from competition.io import DiskFullError, atomic_path, save_array, write_json
from competition.load import DataError, read_relevant_clients
from competition.lock import FolderLocks, LockedError
from competition.schema import CLIENT_IDS_FILE, EMBEDDINGS_FILE, TASKS
from embedders.base import BlockError
from submit.build import ensure_blocks
from submit.check import SubmissionError, check_arrays
from submit.default import run_default
from submit.pipeline import (DEFAULT_BLOCKS, FINAL_DIR, KNOWN_BLOCKS, LOCAL_DIR, RUN_DIR, SEARCH_CLIENTS_FLOOR,
                             run_own_data)
from submit.ensemble import Ensemble, Float16Error, build_ensemble, coverage_line
from submit.notices import pack_notices
from validate.cli import add_decision_probe, add_probe
from validate.spec import EnsembleSpec, SpecError

PACK_REPORT = "pack.json"
#: Default least share of the relevant clients every packed block must cover.
MIN_COVERAGE = 0.99


@dataclass
class PackResult:
    out: Path
    ensemble: Ensemble
    spec: EnsembleSpec
    layout: str
    seconds: float


def write_submission(client_ids: np.ndarray, embeddings: np.ndarray, out: str | Path,
                     relevant: np.ndarray) -> Path:
    """Write ``out/client_ids.npy`` (int64 ``(n,)``) and ``out/embeddings.npy`` (float16 ``(n, D)``) atomically.

    Both are written under temporary names, read back and checked against every rule (``relevant``: the relevant
    client ids); only then is any old ``embeddings.npy`` removed and the files renamed, ``embeddings.npy`` last.
    Raises :class:`submit.check.SubmissionError` (nothing written) when a rule fails.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Exits in reverse order: client_ids.npy is renamed first, embeddings.npy last.
    with atomic_path(out / EMBEDDINGS_FILE) as tmp_emb, atomic_path(out / CLIENT_IDS_FILE) as tmp_ids:
        save_array(tmp_ids, np.asarray(client_ids), out / CLIENT_IDS_FILE)
        save_array(tmp_emb, np.asarray(embeddings), out / EMBEDDINGS_FILE)
        failures = check_arrays(np.load(tmp_ids, mmap_mode="r"), np.load(tmp_emb, mmap_mode="r"), relevant)
        if failures:
            raise SubmissionError(failures, f"{out} (not written)")
        (out / EMBEDDINGS_FILE).unlink(missing_ok=True)
    return out


def pack(data_dir: str | Path, spec: str | Path | EnsembleSpec, out: str | Path, final: bool = False, seed: int = 0,
         progress: bool = True, rebuild: bool = False, log=print, min_coverage: float = MIN_COVERAGE) -> PackResult:
    """Build missing or stale blocks, assemble, check, write. See the module docstring.

    min_coverage: least share (0..1) of the relevant clients each block must cover (:class:`CoverageError`)."""
    t0 = time.perf_counter()
    data_dir, out = Path(data_dir), Path(out)
    spec = spec if isinstance(spec, EnsembleSpec) else EnsembleSpec.load(spec)
    layout = "raw" if final else "input"
    relevant = read_relevant_clients(data_dir)
    spec = ensure_blocks(spec, data_dir, layout, seed=seed, progress=progress, rebuild=rebuild, log=log)
    ens = build_ensemble(spec, client_ids=relevant, seed=seed, min_coverage=min_coverage)
    for name, covered in ens.coverage.items():
        log(coverage_line(name, covered, len(relevant), "relevant clients"))
    ens.notices += pack_notices(data_dir, layout, relevant, spec, ens)  # no-event clients, unknown skus, late events
    for line in ens.notices:
        log(line)
    write_submission(ens.client_ids, ens.embeddings, out, relevant)
    seconds = time.perf_counter() - t0
    write_json({"data_dir": str(data_dir), "layout": layout, "final": final, "seed": seed,
                "n_clients": int(len(ens.client_ids)), "dim": ens.dim, "columns": ens.columns,
                "dropped": ens.dropped, "coverage": ens.coverage, "notices": ens.notices,
                "spec": spec.to_dict(), "spec_source": spec.source,
                "seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
                "written_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, out / PACK_REPORT)
    log(f"packed {len(ens.client_ids):,} clients x {ens.dim} columns ({', '.join(f'{k} {b - a}' for k, (a, b) in ens.columns.items())}) "
        f"from {layout} events -> {out}/{{{EMBEDDINGS_FILE},{CLIENT_IDS_FILE}}} in {seconds:.1f}s")
    return PackResult(out, ens, spec, layout, seconds)


EPILOG = f"""\
three ways to run:
  python -m submit.pack --data-dir D --out O
      your data, one command: split D when it has no input/ (writes D/input, D/target, as competition.split),
      build the default blocks (CPU-sized; GPU presets when CUDA is present), search, pack. Outputs:
        O/{LOCAL_DIR}/   local-validation submission (blocks from the input period; what the scores are about)
        O/{FINAL_DIR}/   the final submission (blocks from every event): the one to upload
        O/{RUN_DIR}/     run folder (--work-dir): blocks, spec.json, the study, report.md + PNGs, report.json
      every stage reuses what is fresh: run it again after an interruption, or with more --trials.
  python -m submit.pack --data-dir D --spec spec.json --out O [--final]
      pack one ensemble spec (written by validate.search) into O.
  python -m submit.pack [--quick]
      the embedded default: the same pipeline on a synthetic world in --work-dir (default runs/default).

--budget MINUTES (one-command run): from the data's size (events, relevant clients) and per-event costs measured
on a 2-core CPU, pick the most neural epochs (1-4) that keep the run within 60% of the budget, then the most
search clients (2,000 up to all) that fit with 10 trials, then as many trials (1-100) as the rest holds; the
search also stops at its share of the budget. An estimate, printed at the start and in the report; fixed costs
(split, stats, tf-idf, item2vec) cannot shrink, so a very small budget is exceeded. Explicit --trials / --epochs
win over it."""


class _Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The shared help formatter; the epilog's layout (the three ways to run, the output folders) kept as typed."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m submit.pack", description=__doc__.split("\n\n")[0],
                                formatter_class=_Formatter, epilog=EPILOG)
    p.add_argument("--data-dir", type=Path, help="data directory in the organisers' layout (six parquet files + "
                                                  "input/relevant_clients.npy); omit for the embedded default run")
    p.add_argument("--spec", type=Path, help="ensemble spec JSON (written by validate.search): pack only that "
                                             "spec; without it, --data-dir runs the whole pipeline")
    p.add_argument("--out", type=Path, help=f"with --spec: the submission folder to write; without --spec: the "
                                            f"output folder O (O/{LOCAL_DIR}, O/{FINAL_DIR}, O/{RUN_DIR}); "
                                            "required with --data-dir; default run: WORK_DIR/submission")
    p.add_argument("--final", action="store_true", help="with --spec: build blocks from every raw event (the real "
                                                        "submission) instead of the split's input period")
    p.add_argument("--seed", type=int, default=0, help="random seed of every block, PCA and the search (default 0)")
    p.add_argument("--rebuild", action="store_true", help="with --spec: rebuild every block even when fresh")
    p.add_argument("--min-coverage", type=float, default=100 * MIN_COVERAGE, metavar="PCT",
                   help="refuse a block covering fewer than PCT percent of the relevant clients (the others would "
                        f"get its column means; default {100 * MIN_COVERAGE:g})")
    add_no_progress(p)
    d = p.add_argument_group("pipeline runs (no --spec: your data with --data-dir, else the embedded default)")
    d.add_argument("--work-dir", type=Path, default=None,
                   help=f"run folder: blocks, spec, study, report (default: O/{RUN_DIR} with --data-dir, "
                        "runs/default without)")
    d.add_argument("--budget", type=float, default=None, metavar="MINUTES",
                   help="with --data-dir: fit the sizes (trials, epochs, search clients) to about this many minutes "
                        "(see below; default: the preset's sizes)")
    d.add_argument("--trials", type=int, default=None, help="search trials (default 10 on a CPU, 20 with CUDA; "
                                                            "1 with --quick)")
    d.add_argument("--epochs", type=int, default=None, help="gru_ae training epochs, multitask 2 x EPOCHS + 1 "
                                                            "(default 2 on a CPU, 3 with CUDA; 1 with --quick)")
    d.add_argument("--search-clients", type=int, default=None, metavar="N",
                   help="with --data-dir: the seeded sample of relevant clients the search and the table use (half "
                        "each; default 20000 on a CPU, 50000 with CUDA, or what --budget picks)")
    d.add_argument("--train-clients", type=int, default=None, metavar="N",
                   help="with --data-dir: gru_ae and multitask train on a seeded sample of N relevant clients and "
                        "still embed every client (default: all, or what --budget picks; at 1M clients one epoch "
                        "over all of them takes hours on a CPU)")
    d.add_argument("--blocks", nargs="+", choices=list(KNOWN_BLOCKS), default=None, metavar="NAME",
                   help=f"blocks to build, among {', '.join(KNOWN_BLOCKS)} (default: {', '.join(DEFAULT_BLOCKS)}; "
                        "stats, the baseline, always; mt_heads: the multitask network's heads, read from the "
                        "multitask block's training when both are named)")
    add_probe(d, "the search and the score table")
    d.add_argument("--confirm-clients", type=int, default=None, metavar="N",
                   help="after the search, the replica (the organisers' network) scores the packed ensemble and "
                        "stats alone on N report-fold clients, rows '(replica)' in the table (default: 10000 with "
                        "CUDA, 0 = skip on a CPU, where it takes ~5-10 min per candidate at 2,000 clients)")
    d.add_argument("--decide-clients", type=int, nargs="+", default=None, metavar="N",
                   help="the decision's ladder: every short-listed ensemble is scored by the organisers' network "
                        "on the first N search-fold clients, the best ones on each larger N, and the winner is "
                        "shipped (default: 1000 2000 on a CPU, 10000 20000 50000 with CUDA, or what --budget "
                        "picks; 0: no decision, ship the LightGBM search's choice)")
    add_decision_probe(d)
    d.add_argument("--heads", action="store_true",
                   help="when the decision ships multitask, ship multitask's heads beside it (mt_heads: the same "
                        "training, seconds more; replica, 10,000 clients: +0.009 and +0.016 on two worlds, within "
                        "the row-order spread: docs/capture.md)")
    d.add_argument("--wait", action="store_true", help="when another run holds the run folder (or splits the data "
                                                       "folder), wait for it to end instead of refusing")
    d.add_argument("--tasks", nargs="+", choices=list(TASKS), default=None, metavar="TASK",
                   help=f"tasks of the search and the table, among {', '.join(TASKS)} (default: all six; "
                        "--quick: conversion, propensity_category)")
    d.add_argument("--quick", action="store_true", help="tiny sizes for tests (well under a minute on a tiny "
                                                        "world): 1 trial, 2 tasks, small blocks")
    d.add_argument("--clients", type=int, default=None, help="embedded default only: relevant clients of the "
                                                             "synthetic world (default 20000; 400 with --quick)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.trials is not None and args.trials < 1:
        parser.error("--trials must be >= 1")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.search_clients is not None and (args.search_clients < SEARCH_CLIENTS_FLOOR or args.data_dir is None
                                            or args.spec is not None):
        parser.error(f"--search-clients takes at least {SEARCH_CLIENTS_FLOOR} clients and goes with --data-dir "
                     "and no --spec")
    if args.train_clients is not None and (args.train_clients < SEARCH_CLIENTS_FLOOR or args.data_dir is None
                                           or args.spec is not None):
        parser.error(f"--train-clients takes at least {SEARCH_CLIENTS_FLOOR} clients and goes with --data-dir "
                     "and no --spec")
    if args.decide_clients is not None and (any(n < 0 for n in args.decide_clients) or args.spec is not None):
        parser.error("--decide-clients takes client counts >= 0 (0: no decision) and goes with no --spec")
    if args.budget is not None and (args.budget <= 0 or args.data_dir is None or args.spec is not None):
        parser.error("--budget takes a positive number of minutes and goes with --data-dir and no --spec")
    locks = FolderLocks(wait=args.wait)  # pipeline runs: their run (and output) folders, one run at a time
    try:
        if args.data_dir is None:
            if args.spec is not None or args.final or args.rebuild:
                parser.error("--spec, --final and --rebuild need --data-dir (without it, the embedded default runs)")
            locks.take(args.work_dir or Path("runs/default"), "run folder")
            run_default(args.work_dir or Path("runs/default"), clients=args.clients, trials=args.trials,
                        epochs=args.epochs, seed=args.seed, quick=args.quick, probe=args.probe, out=args.out,
                        progress=not args.no_progress, tasks=args.tasks, blocks=args.blocks,
                        confirm_clients=args.confirm_clients, decide_clients=args.decide_clients,
                        decision_probe=args.decision_probe, heads=args.heads, pack=pack)
            return 0
        if args.out is None:
            parser.error("--data-dir needs --out")
        if args.spec is None:
            if args.final or args.rebuild or args.clients is not None:
                parser.error("--final, --rebuild and --clients go with --spec or the embedded default; the "
                             f"one-command run writes both submissions (O/{LOCAL_DIR}, O/{FINAL_DIR})")
            try:
                locks.take(args.out, "output folder").take(args.work_dir or args.out / RUN_DIR, "run folder")
                run_own_data(args.data_dir, args.out, args.work_dir, trials=args.trials, epochs=args.epochs,
                             seed=args.seed, quick=args.quick, probe=args.probe, progress=not args.no_progress,
                             tasks=args.tasks, budget_minutes=args.budget, blocks=args.blocks,
                             confirm_clients=args.confirm_clients, search_clients=args.search_clients,
                             train_clients=args.train_clients, decide_clients=args.decide_clients,
                             decision_probe=args.decision_probe, heads=args.heads, pack=pack,
                             wait=args.wait)
            except PermissionError as exc:  # e.g. a read-only data folder: the split writes input/ and target/
                print(f"error: {exc} (the one-command run writes the split and the event cache into --data-dir; "
                      "copy the data to a writable folder)", file=sys.stderr)
                return 2
            return 0
        if not 0 <= args.min_coverage <= 100:
            parser.error(f"--min-coverage must be a percentage in 0..100, got {args.min_coverage:g}")
        pack(args.data_dir, args.spec, args.out, final=args.final, seed=args.seed,
             progress=not args.no_progress, rebuild=args.rebuild, min_coverage=args.min_coverage / 100)
    except (SpecError, Float16Error, SubmissionError, DataError, BlockError, LockedError, DiskFullError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        locks.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
