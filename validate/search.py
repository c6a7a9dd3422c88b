"""Search the ensemble automatically: an Optuna study over which blocks to use, their weights and dimensions.

``python -m validate.search --data-dir D --embeddings-root R --trials N [--timeout S]
[--probe auto|mlp|narrow|linear|lgbm] [--repeats K] [--max-clients N] [--confirm-clients N] [--seed S] [--resume]
--out spec.json``

- R holds block folders, one per subfolder (``embeddings.npy`` + ``client_ids.npy`` + ``meta.json``).
- Per block a trial picks: use it or not; a weight in [0.25, 4] (log scale) on its normalised rows (with the MLP
  probe only: LightGBM's trees ignore a column's scale, so there weights stay 1); its kept dimensions (PCA) among
  16, 32, 64, 128, 256 and its full width (sizes at or above the width collapse to "full").
  Transforms follow :func:`validate.ensemble_ops.default_transform` ("quantile" for stats blocks, "l2" otherwise).
  A trial whose total exceeds ``schema.MAX_EMBEDDING_COLUMNS`` (or that uses no block) is pruned unscored.
- The relevant clients are split by seed into two disjoint halves: the objective is the mean task score on the
  "search" half; the best ensemble is then scored once on the "report" half, and that is the figure reported, so
  the search cannot flatter it.
- The probe (``--probe``, :mod:`validate.cli`): ``auto`` is the replica with CUDA, else the fast probe that ranks
  most like the replica (docs/probes.md); ``--repeats K`` averages each trial over K row orders of the search fold.
- ``--confirm-clients N``: the best ensemble is then scored by the replica itself on N report-fold clients beside
  every block alone (or the stats block), the check that the probe's choice holds by the organisers' measure.
  Oracle blocks (built from a synthetic world's truth) are refused.
- The study lives in ``<out dir>/search.db`` (SQLite, study name :data:`STUDY_NAME`); ``--resume`` loads it and adds
  trials. Writes the spec JSON that ``submit.pack`` consumes (:mod:`validate.spec`; each block's entry records
  the embedder and params of its meta.json, so pack can rebuild it) and, beside it, ``search_history.png`` and ``search_importance.png``.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna

from competition.cli import HelpFormatter, add_no_progress
from competition.load import DataError
from competition.progress import is_terminal
from competition.schema import EMBEDDINGS_FILE, MAX_EMBEDDING_COLUMNS, TASKS
from embedders.base import Block, BlockError, read_block
from validate.cli import SCALE_SENSITIVE, add_probe, resolve_probe
from validate.ensemble_ops import apply_transform, default_transform, fit_pca, scale_block
from validate.noise import noise_line
from validate.probe import TaskLabels, client_order, score_matrix
from validate.spec import BlockSpec, EnsembleSpec

STUDY_NAME = "validate_search"
DB_FILE = "search.db"
DIM_CHOICES = (16, 32, 64, 128, 256)
WEIGHT_RANGE = (0.25, 4.0)
#: Block matrices kept in memory between trials (bytes).
CACHE_BYTES = 4 * 2**30


def find_blocks(root: str | Path) -> list[Path]:
    """Subfolders of ``root`` holding a block (an ``embeddings.npy``), sorted by name. Hidden entries (a name
    starting with '.', such as the ``.<name>.tmp-*`` / ``.<name>.old-*`` temporaries a killed write leaves) are
    never blocks."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: embeddings root is not a folder")
    found = sorted(p for p in root.iterdir()
                   if not p.name.startswith(".") and p.is_dir() and (p / EMBEDDINGS_FILE).is_file())
    if not found:
        raise FileNotFoundError(f"{root}: no block folders (subfolders with {EMBEDDINGS_FILE})")
    return found


def dim_options(width: int) -> list[int]:
    """Kept-dimension choices for a block of ``width`` columns: the sizes below it, then ``width`` itself."""
    return [d for d in DIM_CHOICES if d < width] + [width]


def split_folds(client_ids: np.ndarray, seed: int, search_share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (search, report) folds of ``client_ids``, each in the input order; decided by ``seed`` alone
    (the ids are ranked by a seeded permutation of their sorted values, so the input order does not matter)."""
    client_ids = np.asarray(client_ids, dtype=np.int64)
    sorted_ids = np.sort(client_ids)
    n_search = int(round(search_share * len(sorted_ids)))
    search_set = sorted_ids[np.random.default_rng(seed).permutation(len(sorted_ids))[:n_search]]
    in_search = np.isin(client_ids, search_set)
    return client_ids[in_search], client_ids[~in_search]


def sample_fold(fold: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded sample of ``size`` ids of ``fold``, in the fold's order (all of it when smaller)."""
    if size >= len(fold):
        return fold
    return fold[np.sort(np.random.default_rng(seed).choice(len(fold), size=size, replace=False))]


def report_sample(data_dir: str | Path, size: int | None, seed: int) -> np.ndarray:
    """``size`` clients of the report fold of seed ``seed`` (the clients a search with that seed never scores, at
    any ``--max-clients``), in a seeded order; the whole fold when ``size`` is None."""
    report = split_folds(client_order(data_dir), seed)[1]
    return report[np.random.default_rng(seed + 1).permutation(len(report))[:size or len(report)]]


class BlockMatrices:
    """Block matrices for one set of clients, as :func:`validate.ensemble_ops.block_matrix` makes them, cached.

    Per block the transform and one PCA (to the largest kept size below the width) are fitted once; a smaller size
    takes the leading components (equal to a fit at that size, see :func:`~validate.ensemble_ops.fit_pca`).
    """

    def __init__(self, blocks: dict[str, Block], client_ids: np.ndarray, seed: int = 0,
                 cache_bytes: int = CACHE_BYTES):
        self.blocks = dict(blocks)
        self.client_ids = np.asarray(client_ids, dtype=np.int64)
        self.seed = seed
        self.kinds = {name: default_transform(b.meta) for name, b in self.blocks.items()}
        self._transformed: dict[str, np.ndarray] = {}
        self._pca: dict = {}
        self._cache: OrderedDict = OrderedDict()
        self._cache_bytes = cache_bytes

    def _base(self, name: str) -> np.ndarray:
        if name not in self._transformed:
            X, _ = self.blocks[name].align(self.client_ids)
            self._transformed[name] = apply_transform(X, self.kinds[name], seed=self.seed)
        return self._transformed[name]

    def matrix(self, name: str, dims: int) -> np.ndarray:
        """float32 ``(n, dims)`` (before the weight)."""
        key = (name, dims)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        Z = self._base(name)
        if dims < Z.shape[1]:
            if name not in self._pca or self._pca[name].dims < dims:  # any size below the width, not only options
                top = max([d for d in dim_options(Z.shape[1]) if d < Z.shape[1]] + [dims])
                self._pca[name] = fit_pca(Z, top, seed=self.seed)
            Z = self._pca[name].transform(Z, dims)
        M = scale_block(Z, self.kinds[name])
        self._cache[key] = M
        while sum(v.nbytes for v in self._cache.values()) > self._cache_bytes and len(self._cache) > 1:
            self._cache.popitem(last=False)
        return M

    def ensemble(self, chosen: Sequence[tuple[str, float, int]], rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Weighted concatenation of ``(name, weight, dims)`` for ``rows``: float32 ``(n_rows, sum dims)``."""
        return np.concatenate([self.matrix(n, d)[rows] * np.float32(w) for n, w, d in chosen], axis=1)


def make_spec(chosen: Sequence[tuple[str, float, int]], blocks: dict[str, Block], kinds: dict[str, str],
              search: dict | None = None) -> EnsembleSpec:
    """The ensemble spec of ``(name, weight, dims)`` choices; each entry records its block's embedder and params
    (:meth:`validate.spec.BlockSpec.from_block`)."""
    return EnsembleSpec([BlockSpec.from_block(n, blocks[n], kinds[n], w, None if d >= blocks[n].dim else int(d))
                         for n, w, d in chosen], dict(search or {}))


def trial_choice(trial, blocks: dict[str, Block], tune_weights: bool = True) -> list[tuple[str, float, int]]:
    """Suggest every block's parameters (all of them in every trial, for TPE and importances); return the used ones.

    tune_weights: False for a scale-invariant probe (LightGBM trees ignore a block's weight): weights stay 1."""
    chosen = []
    for name, b in blocks.items():
        use = trial.suggest_categorical(f"use_{name}", [True, False])
        weight = trial.suggest_float(f"weight_{name}", *WEIGHT_RANGE, log=True) if tune_weights else 1.0
        dims = trial.suggest_categorical(f"dims_{name}", dim_options(b.dim))
        if use:
            chosen.append((name, weight, int(dims)))
    return chosen


def enqueue_baselines(study, blocks: dict[str, Block], tune_weights: bool, limit: int) -> None:
    """Queue the obvious candidates as the first trials (at most ``limit``, so none is left waiting): every block
    at full width and weight 1, then each block alone. With enough trials the search never ends below the best
    single block on the search fold, and TPE starts from them."""
    def params(used: set[str]) -> dict:
        out = {}
        for name, b in blocks.items():
            out[f"use_{name}"] = name in used
            if tune_weights:
                out[f"weight_{name}"] = 1.0
            out[f"dims_{name}"] = b.dim
        return out

    candidates = [set(blocks)] if sum(b.dim for b in blocks.values()) <= MAX_EMBEDDING_COLUMNS else []
    if len(blocks) > 1:
        candidates += [{name} for name in blocks]
    for used in candidates[:limit]:
        study.enqueue_trial(params(used))


def choice_of(params: dict, blocks: dict[str, Block]) -> list[tuple[str, float, int]]:
    """The ``(name, weight, dims)`` choices of a finished trial's params."""
    return [(n, float(params.get(f"weight_{n}", 1.0)), int(params[f"dims_{n}"])) for n in blocks if params[f"use_{n}"]]


class SearchObjective:
    """The trial objective: the probe's mean task score of the suggested ensemble on the search fold, averaged over
    ``repeats`` row orders of it (the first: the fold's own order; the others seeded permutations). The MLP probes
    train unshuffled, so their score moves with row order; averaging orders is how the search sees past that noise.

    Trials with no block or more than ``schema.MAX_EMBEDDING_COLUMNS`` columns are pruned before any scoring
    (user attribute "pruned_because"); scored trials record "columns", per-task "tasks" (mean over orders),
    "order_sums" (six-task sum per order) and "seconds".
    """

    def __init__(self, data_dir, blocks: dict[str, Block], mats: BlockMatrices, search_ids: np.ndarray,
                 search_rows: np.ndarray, labels: TaskLabels, tasks: Sequence[str], probe: str, seed: int,
                 mlp_width: tuple[int, int] | None = None, repeats: int = 1):
        self.data_dir, self.blocks, self.mats = data_dir, blocks, mats
        self.tasks, self.probe, self.seed, self.mlp_width = list(tasks), probe, seed, mlp_width
        rng = np.random.default_rng(seed + 7919)
        perms = [np.arange(len(search_ids))] + [rng.permutation(len(search_ids)) for _ in range(repeats - 1)]
        # per order: (client ids, rows into the block matrices, labels in that order)
        self.orders = [(search_ids[p], search_rows[p], labels if i == 0 else labels.restrict(search_ids[p]))
                       for i, p in enumerate(perms)]

    def __call__(self, trial) -> float:
        chosen = trial_choice(trial, self.blocks, tune_weights=self.probe in SCALE_SENSITIVE)
        total = sum(d for _, _, d in chosen)
        trial.set_user_attr("columns", total)
        if not chosen or total > MAX_EMBEDDING_COLUMNS:
            trial.set_user_attr("pruned_because", "no block" if not chosen else
                                f"{total} columns > {MAX_EMBEDDING_COLUMNS}")
            raise optuna.TrialPruned()
        runs = [score_matrix(self.data_dir, ids, self.mats.ensemble(chosen, rows), self.tasks, self.probe, self.seed,
                             labels=labels, progress=False, mlp_width=self.mlp_width)
                for ids, rows, labels in self.orders]
        trial.set_user_attr("tasks", {t: float(np.mean([r["tasks"][t]["score"] for r in runs]))
                                      for t in runs[0]["tasks"]})
        trial.set_user_attr("order_sums", [r["sum"] for r in runs])
        trial.set_user_attr("seconds", sum(r["seconds"] for r in runs))
        value = float(np.mean([r["mean"] for r in runs]))
        if not np.isfinite(value):  # e.g. a diversity of rows whose sigmoids all underflow: say so, go on
            bad = sorted({t for r in runs for t, f in r["tasks"].items() if not np.isfinite(f["score"])})
            trial.set_user_attr("pruned_because", f"non-finite score on {', '.join(bad) or 'the mean'}")
            raise optuna.TrialPruned()
        return value


def confirm_with_replica(data_dir: str | Path, blocks: dict[str, Block], chosen: Sequence[tuple[str, float, int]],
                         n_clients: int, seed: int, against: str = "all", tasks: Sequence[str] = TASKS,
                         progress: bool = True, mlp_width: tuple[int, int] | None = None) -> dict:
    """The chosen ensemble scored by the replica on ``n_clients`` report-fold clients (:func:`report_sample`),
    beside the stats block alone (``against="stats"``) or every block alone (``"all"``), on the same rows.

    Blocks alone are scored as ``validate.probe`` scores their folder (raw columns). Returns ``{"probe": "mlp",
    "n_clients", "candidates": {name: {"sum", "tasks"}}, "noise", "margin"}``; margin: the ensemble's sum minus the
    best other candidate's."""
    ids = report_sample(data_dir, n_clients, seed)
    labels = TaskLabels.load(data_dir, tasks, ids)
    mats = BlockMatrices(blocks, ids, seed=seed)
    others = [n for n, b in blocks.items() if against == "all" or b.meta.get("embedder") == "stats"]
    matrices = {"searched": mats.ensemble(chosen)} | {n: blocks[n].align(ids)[0] for n in others}
    out = {}
    for name, X in matrices.items():
        res = score_matrix(data_dir, ids, X, tasks, "mlp", seed, labels=labels, progress=progress,
                           mlp_width=mlp_width)
        out[name] = {"sum": res["sum"], "seconds": res["seconds"],
                     "tasks": {t: r["score"] for t, r in res["tasks"].items()}}
        if progress:
            print(f"confirm {name}: replica sum {res['sum']:.4f} ({res['seconds']:.0f} s)", file=sys.stderr)
    best_other = max((v["sum"] for k, v in out.items() if k != "searched"), default=float("nan"))
    return {"probe": "mlp", "replica": mlp_width is None, "n_clients": int(len(ids)), "against": against,
            "candidates": out, "margin": out["searched"]["sum"] - best_other, "noise": noise_line(len(ids))}


def open_study(storage_path: Path, seed: int, resume: bool, overwrite: bool, config: dict):
    """Create (or with ``resume`` load) the study in SQLite; the sampler is seeded by ``seed`` plus the number of
    trials already stored, so a resumed study does not replay the same random start-up trials."""
    storage = f"sqlite:///{storage_path}"
    existing = [s.study_name for s in optuna.get_all_study_summaries(storage)] if storage_path.exists() else []
    if STUDY_NAME in existing and not resume:
        if not overwrite:
            raise FileExistsError(f"{storage_path}: a study is already stored; pass --resume to continue it or "
                                  f"--overwrite to start again")
        optuna.delete_study(study_name=STUDY_NAME, storage=storage)
    if resume and STUDY_NAME in existing:
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
        stored = study.user_attrs.get("config", {})
        diff = sorted(k for k in config if stored.get(k) != config[k])
        if diff:
            raise ValueError(f"{storage_path}: the stored study was run with other settings ({', '.join(diff)}); "
                             f"stored {({k: stored.get(k) for k in diff})}, now {({k: config[k] for k in diff})}")
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
        return study
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.set_user_attr("config", config)
    return study


def save_plots(study, out_dir: Path) -> dict[str, str]:
    """Optimisation history and parameter importances (optuna.visualization.matplotlib) as PNGs in ``out_dir``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    from competition.io import atomic_path

    written = {}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    plots = {"history": (ovm.plot_optimization_history, 1), "importance": (ovm.plot_param_importances, 2)}
    for name, (plot, need) in plots.items():
        if len(complete) < need:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as exc:  # e.g. importances of parameters that never varied
                print(f"search: no {name} plot ({exc})", file=sys.stderr)
                continue
        fig = ax.figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        path = out_dir / f"search_{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
        written[name] = str(path)
    return written


def run_search(data_dir: str | Path, embeddings_root: str | Path, out: str | Path, trials: int,
               timeout: float | None = None, probe: str = "lgbm", seed: int = 0, resume: bool = False,
               overwrite: bool = False, tasks: Sequence[str] = TASKS, max_clients: int | None = None,
               progress: bool = True, mlp_width: tuple[int, int] | None = None, repeats: int = 1,
               confirm_clients: int = 0, confirm_against: str = "all") -> dict:
    """Run (or continue) the study and write the best spec to ``out``. Returns the spec as written (a dict).

    max_clients: use a seeded sample of this many relevant clients (half from each fold of the full split) to bound
    time and memory. repeats: row orders of the search fold each trial is averaged over (see
    :class:`SearchObjective`). confirm_clients: when > 0, the best ensemble is scored by the replica on that many
    report-fold clients beside the stats block or every block alone (:func:`confirm_with_replica`), stored under
    ``search["confirm"]``. Oracle blocks (:func:`validate.oracle.is_oracle`) are refused: they read the world's truth.
    """
    from validate.oracle import is_oracle

    t0 = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    blocks = {p.name: read_block(p) for p in find_blocks(embeddings_root)}
    oracles = sorted(n for n, b in blocks.items() if is_oracle(b.meta))
    if oracles:
        raise ValueError(f"{embeddings_root}: {', '.join(oracles)} is an oracle block (built from the world's true "
                         "latents, truth/): it may calibrate a report, never enter a search; move it elsewhere")
    tasks = list(tasks)
    ids = client_order(data_dir)
    search_ids, report_ids = split_folds(ids, seed)
    if max_clients is not None and max_clients < len(ids):
        # each fold sampled from the full split, so the report fold is the same clients at any size
        search_ids, report_ids = (sample_fold(f, n, seed) for f, n in
                                  ((search_ids, max_clients - max_clients // 2), (report_ids, max_clients // 2)))
        ids = ids[np.isin(ids, np.concatenate([search_ids, report_ids]))]
    search_rows, report_rows = np.flatnonzero(np.isin(ids, search_ids)), np.flatnonzero(np.isin(ids, report_ids))
    labels = TaskLabels.load(data_dir, tasks, ids)
    search_labels, report_labels = labels.restrict(search_ids), labels.restrict(report_ids)
    mats = BlockMatrices(blocks, ids, seed=seed)

    config = {"data_dir": str(Path(data_dir).resolve()), "blocks": sorted(blocks), "tasks": tasks, "probe": probe,
              "seed": seed, "max_clients": max_clients, "mlp_width": list(mlp_width) if mlp_width else None,
              "repeats": repeats}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(out.parent / DB_FILE, seed, resume, overwrite, config)
    if not study.trials:
        enqueue_baselines(study, blocks, tune_weights=probe in SCALE_SENSITIVE, limit=trials)
    objective = SearchObjective(data_dir, blocks, mats, search_ids, search_rows, search_labels, tasks, probe, seed,
                                mlp_width, repeats)

    def report(study_, trial) -> None:
        if progress and trial.value is not None:
            print(f"trial {trial.number}: mean {trial.value:.4f} ({trial.user_attrs.get('columns')} columns) "
                  f"best {study_.best_value:.4f}", file=sys.stderr)

    # optuna's bar (tqdm) on a terminal only; in a log, report() prints one line per trial
    study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[report],
                   show_progress_bar=progress and is_terminal())
    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"no trial finished ({len(study.trials)} tried, all pruned or failed); "
                           "run more trials or check the blocks' widths")
    best = study.best_trial
    chosen = choice_of(best.params, blocks)
    rep = score_matrix(data_dir, report_ids, mats.ensemble(chosen, report_rows), tasks, probe, seed,
                       labels=report_labels, progress=progress, mlp_width=mlp_width)
    search_info = {
        "probe": probe, "tasks": tasks, "seed": seed, "trials": len(complete), "trials_total": len(states),
        "pruned": sum(s == optuna.trial.TrialState.PRUNED for s in states), "best_trial": best.number,
        "columns": sum(d for _, _, d in chosen),
        "search_fold": {"n_clients": int(len(search_ids)), "mean": float(best.value),
                        "tasks": best.user_attrs.get("tasks", {})},
        "report_fold": {"n_clients": int(len(report_ids)), "mean": rep["mean"], "sum": rep["sum"],
                        "tasks": {t: r["score"] for t, r in rep["tasks"].items()}, "details": rep["tasks"]},
        "study": {"storage": str((out.parent / DB_FILE).resolve()), "name": STUDY_NAME},
        "max_clients": max_clients, "repeats": repeats,
    }
    search_info["report_fold"]["noise"] = noise_line(len(report_ids)) if probe == "mlp" else None
    if confirm_clients:
        search_info["confirm"] = confirm_with_replica(data_dir, blocks, chosen, confirm_clients, seed,
                                                      confirm_against, tasks, progress, mlp_width)
    search_info["seconds"] = time.perf_counter() - t0
    search_info["plots"] = save_plots(study, out.parent)
    spec = make_spec(chosen, blocks, mats.kinds, search_info)
    spec.save(out)
    return spec.to_dict()


def format_confirm(confirm: dict) -> str:
    """The replica confirmation as a Markdown table (six-task sum and per task), best first, with the noise line."""
    cands = sorted(confirm["candidates"].items(), key=lambda kv: -kv[1]["sum"])
    tasks = list(cands[0][1]["tasks"])
    lines = [f"Replica on {confirm['n_clients']:,} report-fold clients (the search never saw them):", "",
             "| candidate | sum | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 2)]
    lines += [f"| {n} | {v['sum']:.4f} | " + " | ".join(f"{v['tasks'][t]:.4f}" for t in tasks) + " |"
              for n, v in cands]
    lines += ["", f"searched minus the best other: {confirm['margin']:+.4f}. {confirm['noise']}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m validate.search", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--data-dir", required=True, type=Path, help="data directory, split, with target lists")
    p.add_argument("--embeddings-root", required=True, type=Path, help="folder of block folders")
    p.add_argument("--trials", required=True, type=int, help="trials to run (added to a resumed study)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    add_probe(p, "each trial and of the best ensemble")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), metavar="TASK",
                   help=f"tasks in the objective, among {', '.join(TASKS)}")
    p.add_argument("--seed", type=int, default=0, help="sampler seed, client folds, probe seed")
    p.add_argument("--max-clients", type=int, default=None,
                   help="use a seeded sample of the relevant clients (half from each fold of the full split)")
    p.add_argument("--repeats", type=int, default=1,
                   help="row orders of the search fold each trial is averaged over (the MLP probes' score moves "
                        "with row order; see validate.noise)")
    p.add_argument("--confirm-clients", type=int, default=0,
                   help="after the search, score the best ensemble with the replica on this many report-fold "
                        "clients beside the blocks alone (0: skip; the replica takes ~1.5 min per candidate at "
                        "2,000 clients on a 2-core CPU)")
    p.add_argument("--confirm-against", choices=("all", "stats"), default="all",
                   help="confirmation candidates besides the ensemble: every block alone, or the stats block")
    p.add_argument("--resume", action="store_true", help="continue the study stored beside --out")
    p.add_argument("--overwrite", action="store_true", help="discard a stored study and start again")
    p.add_argument("--mlp-width", nargs=2, type=int, metavar=("THIN", "WIDE"), default=None,
                   help="hidden sizes of the MLP probe; anything but 2048 4096 is NOT the replica")
    p.add_argument("--out", required=True, type=Path, help="spec JSON to write (the study and plots go beside it)")
    add_no_progress(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.probe = resolve_probe(args.probe)
    if args.trials < 1:
        raise SystemExit("--trials must be >= 1")
    try:
        spec = run_search(args.data_dir, args.embeddings_root, args.out, args.trials, args.timeout, args.probe,
                          args.seed, args.resume, args.overwrite, args.tasks, args.max_clients, not args.no_progress,
                          tuple(args.mlp_width) if args.mlp_width else None, args.repeats,
                          args.confirm_clients, args.confirm_against)
    except (BlockError, DataError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"validate.search: error: {exc}", file=sys.stderr)
        return 2
    s = spec["search"]
    print(f"best trial {s['best_trial']} of {s['trials_total']} ({s['pruned']} pruned): "
          f"search fold mean {s['search_fold']['mean']:.4f}, report fold mean {s['report_fold']['mean']:.4f}")
    for b in spec["blocks"]:
        print(f"  {b['name']}: {b['transform']}, weight {b['weight']:.3f}, dims {b['dims'] or 'full'}")
    if "confirm" in s:
        print(format_confirm(s["confirm"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
