"""Score embedding blocks on the six tasks, as the organisers would (MLP replica) or fast (narrow MLP, linear and
LightGBM proxies; how well each ranks like the replica: docs/probes.md).

``python -m validate.probe --data-dir D --embeddings-dir E1 [E2 ...] [--tasks ...] [--probe auto|mlp|mlp16|narrow|linear|lgbm]
[--seed S] [--out report.json]``

Several ``--embeddings-dir`` are concatenated column-wise (rows aligned by client id; a client missing from a block
gets that block's column means) for a quick ensemble check; ``--each`` also scores every block alone. A block folder
is a submission folder: ``embeddings.npy`` + ``client_ids.npy`` (+ ``meta.json``). Nothing is filled or cast
silently: the table states each block's coverage of the scored clients, a block stored as float64 is cast with a
notice, and a matrix wider than the submission limit (2048 columns) is scored but marked as a probe of an over-wide
block, not of a possible submission.

What the organisers do, and so do we: rows are the submission's clients in the order of its ``client_ids.npy``
(here: the first block's order, relevant clients only; relevant clients it lacks follow in relevant-file order);
churn keeps only active clients, in that same order; the embedding matrix goes through float16 (the submission
dtype) and is read as float32; the net trains on train-window labels and is scored on validation-window labels of
the same clients.

Python API: :func:`score_blocks` (folders or :class:`embedders.base.Block` objects) and :func:`score_matrix`
(an in-memory matrix), both returning a dict with every figure.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from competition.cli import HelpFormatter, add_no_progress
from competition.events import index_of
from competition.heap import large_blocks_in_heap
from competition.load import DataError, read_relevant_clients
from competition.schema import ACTIVE_ONLY_TASKS, FLOAT16_MAX, MAX_EMBEDDING_COLUMNS, TASKS, DataPaths
from competition.targets import WINDOWS, TaskData, read_window, task_clients, task_dataset
from embedders.base import Block, BlockError, cast_notice, read_block
from validate.cli import PROBES, add_probe, resolve_probe
from validate.lgbm import LGBMProbe
from validate.linear import LinearProbe
from validate.mlp import HIDDEN_THIN, HIDDEN_WIDE, MLPProbe

#: Hidden sizes of the ``narrow`` probe: the organisers' loop and net shape, 1/4 of the width (~16x fewer FLOPs).
NARROW_WIDTH = (512, 1024)
AS_SUBMITTED_ROWS = 65_536


# ---------------------------------------------------------------------------------------------------------------
# Inputs: blocks, client order, labels
# ---------------------------------------------------------------------------------------------------------------
def load_blocks(blocks: Sequence[str | Path | Block]) -> list[Block]:
    """Blocks from folders (read with :func:`embedders.base.read_block`) or given as :class:`Block` objects."""
    if isinstance(blocks, (str, Path, Block)):
        blocks = [blocks]
    out = [b if isinstance(b, Block) else read_block(b) for b in blocks]
    if not out:
        raise ValueError("no blocks given")
    _unique_names(out)
    return out


def _unique_names(blocks: list[Block]) -> None:
    """Blocks that share a name (two folders written by the same embedder) are renamed after their folders, then
    numbered, so results keyed by name never overwrite each other."""
    names = [block_name(b, i) for i, b in enumerate(blocks)]
    shared = {n for n in names if names.count(n) > 1}
    for i, b in enumerate(blocks):
        if names[i] in shared and b.meta.get("path"):
            names[i] = Path(b.meta["path"]).name
    seen: dict[str, int] = {}
    for i, b in enumerate(blocks):
        if names.count(names[i]) > 1:
            seen[names[i]] = seen.get(names[i], 0) + 1
            b.meta["name"] = f"{names[i]}#{seen[names[i]]}"
        else:
            b.meta["name"] = names[i]


def block_name(block: Block, index: int = 0) -> str:
    return str(block.meta.get("name", f"block{index}"))


def client_order(data_dir: str | Path, first_ids: np.ndarray | None = None,
                 clients: np.ndarray | None = None) -> np.ndarray:
    """Rows in the organisers' order: ``first_ids`` (a submission's client_ids) restricted to relevant clients,
    then relevant clients it lacks (relevant-file order); restricted to ``clients`` when given. int64 ``(n,)``."""
    relevant = read_relevant_clients(data_dir)
    if first_ids is None:
        order = relevant
    else:
        first_ids = np.asarray(first_ids, dtype=np.int64)
        head = first_ids[np.isin(first_ids, relevant)]
        order = np.concatenate([head, relevant[~np.isin(relevant, head)]])
    if clients is not None:
        order = order[np.isin(order, np.asarray(clients, dtype=np.int64))]
    return order


def concat_blocks(blocks: Sequence[Block], client_ids: np.ndarray) -> np.ndarray:
    """Blocks side by side for ``client_ids``: float32 ``(n, sum of widths)``; missing rows = column means."""
    return np.concatenate([b.align(client_ids)[0] for b in blocks], axis=1)


def as_submitted(X: np.ndarray) -> np.ndarray:
    """The matrix as the organisers read a submission: cast to float16, read back as float32 ``(n, D)``.

    Values beyond the float16 range would become Inf (a rejected submission); they are clipped, with a warning.
    """
    X = np.asarray(X)
    out = np.empty(X.shape, dtype=np.float32)
    clipped = 0
    for s in range(0, len(X), AS_SUBMITTED_ROWS):  # in row chunks: no full-size float16 temporary
        chunk = X[s:s + AS_SUBMITTED_ROWS].astype(np.float32, copy=False)
        big = np.abs(chunk) > FLOAT16_MAX
        if big.any():
            clipped += int(big.sum())
            chunk = np.clip(chunk, -FLOAT16_MAX, FLOAT16_MAX)
        out[s:s + AS_SUBMITTED_ROWS] = chunk.astype(np.float16)
    if clipped:
        warnings.warn(f"{clipped} values exceed the float16 range (|x| > {FLOAT16_MAX:g}) and are clipped; "
                      "a submission needs them scaled", stacklevel=2)
    return out


@dataclass
class TaskLabels:
    """Labels of several tasks for one ordered list of clients.

    client_ids: int64 ``(n,)`` the row order. per task: ``rows[task]`` int64 positions into client_ids (churn keeps
    active clients only, in row order) and ``data[task]`` the :class:`competition.targets.TaskData` of those rows.
    """

    client_ids: np.ndarray
    rows: dict[str, np.ndarray]
    data: dict[str, TaskData]

    @classmethod
    def load(cls, data_dir: str | Path, tasks: Sequence[str], client_ids: np.ndarray,
             windows: dict[str, pl.DataFrame] | None = None) -> "TaskLabels":
        client_ids = np.asarray(client_ids, dtype=np.int64)
        windows = windows or {w: read_window(data_dir, w) for w in WINDOWS}
        rows, data, scored = {}, {}, {}
        for task in tasks:
            kind = task in ACTIVE_ONLY_TASKS  # the tasks share two client lists: each read and matched once
            if kind not in scored:
                scored[kind] = np.flatnonzero(np.isin(client_ids, task_clients(data_dir, task)))
            rows[task] = scored[kind]
            data[task] = task_dataset(data_dir, task, client_ids[rows[task]], windows=windows)
        return cls(client_ids, rows, data)

    def restrict(self, client_ids: np.ndarray) -> "TaskLabels":
        """The same labels for a subset of the clients, in the order of ``client_ids`` (unknown ids dropped)."""
        client_ids = np.asarray(client_ids, dtype=np.int64)
        client_ids = client_ids[np.isin(client_ids, self.client_ids)]
        rows, data = {}, {}
        for task, td in self.data.items():
            pos = index_of(td.client_ids, client_ids)
            hit = pos >= 0
            take = pos[hit]
            rows[task] = np.flatnonzero(hit)
            data[task] = replace(td, client_ids=td.client_ids[take], y_train=td.y_train[take],
                                 y_valid=td.y_valid[take])
        return TaskLabels(client_ids, rows, data)


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------
def make_probe(probe: str = "mlp", seed: int = 0, progress: bool = True, mlp_width: tuple[int, int] | None = None,
               device: str | None = None, threads: int | None = None):
    """The probe named ``probe`` (one of :data:`validate.cli.PROBES`, or ``auto``: see
    :func:`validate.cli.resolve_probe`):

    - ``mlp``: :class:`~validate.mlp.MLPProbe`, the replica (unless ``mlp_width`` differs);
    - ``mlp16``: the same net and loop with its matmuls under bfloat16 autocast (the decision probe on a CPU);
    - ``narrow``: the same loop with :data:`NARROW_WIDTH` hidden sizes (or ``mlp_width``);
    - ``linear``: :class:`~validate.linear.LinearProbe` (ridge on standardised columns);
    - ``lgbm``: :class:`~validate.lgbm.LGBMProbe`.

    ``seed`` affects LightGBM and the linear probe's held-out rows (the MLPs' seed is fixed at 1278).
    threads: CPU threads (default: one per free core, see :func:`validate.cpu.free_cores`)."""
    probe = resolve_probe(probe, device)
    if probe in ("mlp", "mlp16", "narrow"):
        thin, wide = mlp_width or ((HIDDEN_THIN, HIDDEN_WIDE) if probe != "narrow" else NARROW_WIDTH)
        return MLPProbe(thin=thin, wide=wide, device=device, threads=threads, progress=progress,
                        precision="bf16" if probe == "mlp16" else "fp32")
    if probe == "linear":
        return LinearProbe(seed=seed)
    if probe == "lgbm":
        return LGBMProbe(seed=seed, n_jobs=threads or 0)
    raise ValueError(f"unknown probe {probe!r}; expected one of {PROBES}")


def score_matrix(data_dir: str | Path, client_ids: np.ndarray, X: np.ndarray, tasks: Sequence[str] = TASKS,
                 probe: str = "mlp", seed: int = 0, labels: TaskLabels | None = None, progress: bool = True,
                 mlp_width: tuple[int, int] | None = None, device: str | None = None,
                 threads: int | None = None) -> dict:
    """Score an in-memory matrix: rows of ``X`` float ``(n, D)`` belong to ``client_ids`` int64 ``(n,)``, in the
    order the probe will see them.

    labels: precomputed :class:`TaskLabels` for exactly these ``client_ids`` (saves re-reading the windows).
    Returns ``{"probe", "replica", "seed", "n_clients", "dim", "over_limit", "tasks": {task: figures}, "sum",
    "mean", "seconds"}`` (over_limit: wider than a submission may be); figures hold "score", its parts,
    "n_clients", "seconds" (and per-epoch figures for the MLP).
    """
    t0 = time.perf_counter()
    tasks = list(tasks)
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ValueError(f"unknown task(s) {bad}; expected some of {TASKS}")
    client_ids = np.asarray(client_ids, dtype=np.int64)
    X = as_submitted(X)
    if X.ndim != 2 or len(X) != len(client_ids):
        raise ValueError(f"X has shape {X.shape}; expected ({len(client_ids)}, D)")
    if labels is None:
        labels = TaskLabels.load(data_dir, tasks, client_ids)
    elif not np.array_equal(labels.client_ids, client_ids):
        raise ValueError("labels were loaded for other client ids than the rows of X")
    probe = resolve_probe(probe, device)
    runner = make_probe(probe, seed, progress, mlp_width, device, threads)
    results = {}
    # the organisers' network only (competition.heap): one heap for all tasks, the next task's net reuses the last's blocks
    with large_blocks_in_heap(enabled=isinstance(runner, MLPProbe)):
        for task in tasks:
            td, rows = labels.data[task], labels.rows[task]
            if len(rows) == 0:
                raise ValueError(f"task {task}: none of the {len(client_ids)} clients is scored on it")
            if td.y_train.ndim == 2 and td.y_train.shape[1] == 0:
                raise ValueError(f"task {task}: its target list {DataPaths(data_dir).target_list(task)} is empty")
            X_task = X if len(rows) == len(X) else X[rows]  # rows are sorted positions: all rows -> no copy
            figures = runner.score(task, X_task, td.y_train, td.y_valid, td.popularity)
            figures["n_clients"] = int(len(rows))
            results[task] = figures
    total = float(sum(r["score"] for r in results.values()))
    replica = isinstance(runner, MLPProbe) and runner.is_replica
    return {"probe": probe, "replica": bool(replica), "seed": seed, "n_clients": int(len(client_ids)),
            "dim": int(X.shape[1]), "over_limit": bool(X.shape[1] > MAX_EMBEDDING_COLUMNS), "tasks": results,
            "sum": total, "mean": total / len(tasks),
            "seconds": time.perf_counter() - t0}


def score_blocks(data_dir: str | Path, block_dirs_or_blocks: Sequence[str | Path | Block], tasks: Sequence[str] = TASKS,
                 probe: str = "mlp", seed: int = 0, clients: np.ndarray | None = None, progress: bool = True,
                 mlp_width: tuple[int, int] | None = None, device: str | None = None,
                 threads: int | None = None, labels: TaskLabels | None = None) -> dict:
    """Score one block or the concatenation of several (see the module doc for row order and alignment).

    clients: optional subset of client ids to train and score on (e.g. a fold of the search).
    labels: :class:`TaskLabels` loaded once for (at least) these clients and ``tasks``, restricted here to the
    scored rows in their order: several blocks scored on the same clients read the target windows once (at 1M
    clients a load costs seconds).
    Returns :func:`score_matrix`'s dict plus ``"name"`` and ``"blocks"`` (name, path, dim, covered: how many of
    the scored clients it holds a row for; the others got its column means).
    """
    blocks = load_blocks(block_dirs_or_blocks)
    ids = client_order(data_dir, blocks[0].client_ids, clients)
    X = concat_blocks(blocks, ids)
    if labels is not None:
        missing = int((~np.isin(ids, labels.client_ids)).sum())
        if missing or set(tasks) - set(labels.data):
            raise ValueError(f"the labels given lack {missing:,} of the {len(ids):,} scored clients or the tasks "
                             f"{sorted(set(tasks) - set(labels.data))}")
        labels = labels.restrict(ids)
    out = score_matrix(data_dir, ids, X, tasks, probe, seed, labels=labels, progress=progress, mlp_width=mlp_width,
                       device=device, threads=threads)
    out["name"] = "+".join(block_name(b, i) for i, b in enumerate(blocks))
    out["blocks"] = [{"name": block_name(b, i), "path": b.meta.get("path"), "dim": b.dim,
                      "covered": b.covers(ids)} for i, b in enumerate(blocks)]
    return out


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m validate.probe", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--data-dir", required=True, type=Path, help="data directory, split, with target lists")
    p.add_argument("--embeddings-dir", required=True, nargs="+", type=Path,
                   help="block folder(s) (embeddings.npy + client_ids.npy); several are concatenated")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), metavar="TASK",
                   help=f"tasks to score, among {', '.join(TASKS)}")
    add_probe(p, "every block (auto resolves by --device when given)")
    p.add_argument("--seed", type=int, default=0, help="LightGBM seed and fold (the replica's seed is fixed)")
    p.add_argument("--each", action="store_true", help="also score every block alone")
    p.add_argument("--out", type=Path, default=None, help="report JSON (a PNG bar chart is written beside it)")
    p.add_argument("--mlp-width", nargs=2, type=int, metavar=("THIN", "WIDE"), default=None,
                   help="hidden sizes of the MLP; anything but 2048 4096 is NOT the replica (for tests)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: one per free core: cores minus the load average)")
    add_no_progress(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.probe = resolve_probe(args.probe, args.device)
    try:
        return _run(args)
    except (BlockError, DataError, FileNotFoundError, ValueError) as exc:  # bad input: one clear line
        print(f"validate.probe: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from validate.report import format_table, write_report

    blocks = load_blocks(args.embeddings_dir)
    for line in filter(None, map(cast_notice, blocks)):
        print(line, file=sys.stderr)
    runs = [[b] for b in blocks] if args.each and len(blocks) > 1 else []
    runs.append(blocks)
    results = {}
    for run in runs:
        res = score_blocks(args.data_dir, run, args.tasks, args.probe, args.seed, progress=not args.no_progress,
                           mlp_width=tuple(args.mlp_width) if args.mlp_width else None, device=args.device,
                           threads=args.threads)
        results[res["name"]] = res
        print(f"{res['name']}: sum {res['sum']:.4f} over {len(args.tasks)} task(s) in {res['seconds']:.1f} s",
              file=sys.stderr)
    print(format_table(results, args.tasks))
    if args.out:
        report = {"data_dir": str(args.data_dir), "probe": args.probe, "seed": args.seed, "tasks": args.tasks,
                  "results": results}
        json_path, png_path = write_report(report, args.out)
        print(f"wrote {json_path} and {png_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
