"""The embedded default run (``python -m submit.pack`` with no ``--data-dir``): the whole pipeline on a small
synthetic world, with a progress display and a table of scores at the end.

Stages, all inside ``WORK_DIR`` (default ``./runs/default``; each stage reuses what is already there and fresh):

1. world: ``competition.synth.generate_world`` (``--clients`` relevant clients, split, target lists) in ``world/``;
2. blocks: stats, tfidf_svd, item2vec, gru_ae (a small fast preset) and multitask (supervised on windows shifted
   back inside the input period) in ``blocks/<name>/``, local-validation layout (the split's input period);
3. search: ``validate.search`` (LightGBM probe, ``--trials`` trials) over the blocks on one half of the clients,
   writing ``spec.json`` (each entry also records the embedder and params that rebuild it);
4. pack: ``submit.pack`` of that spec into ``submission/`` (checked, atomic);
5. table: every block alone (stats alone = the plain count-statistics baseline) and the packed submission, scored
   on the *other* half of the clients (never seen by the search) with the MLP replica when a GPU is present,
   else the LightGBM probe; the header says which. Written to ``report.json`` too.

The total wall time is printed at the end.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from competition.cli import peak_rss_mb
from competition.schema import CONVERSION, PROPENSITY_CATEGORY, TASKS, DataPaths
from embedders import registry
from submit.build import ensure_blocks
from validate.spec import BlockSpec, EnsembleSpec

#: Sizes of the full default run and of ``--quick`` (tests).
SIZES = {"full": {"clients": 20_000, "trials": 10, "epochs": 2, "search_timeout": 180.0, "tasks": TASKS},
         "quick": {"clients": 400, "trials": 1, "epochs": 1, "search_timeout": 30.0,
                   "tasks": (CONVERSION, PROPENSITY_CATEGORY)}}
STAGES = ("world", "blocks", "search", "pack", "table")
BASELINE = "stats"


def block_recipes(epochs: int, quick: bool) -> list[dict[str, Any]]:
    """Default blocks: name, embedder, params (constructor kwargs) and the ensemble transform (the embedder's
    ``ensemble_transform``, :func:`embedders.registry.default_transform`), in :data:`embedders.registry.BUILTIN`
    order. ``multitask`` (supervised, stacking over stats + tfidf_svd built at each of its windows' anchors) runs
    ``2 * epochs + 1`` epochs (its best by held-out loss is kept)."""
    if quick:
        params = {"stats": {}, "tfidf_svd": {"dim": 16, "n_iter": 2},
                  "item2vec": {"dim": 16, "vector_size": 16, "epochs": 1, "min_count": 1},
                  "gru_ae": {"variant": "day_event", "dim": 16, "field_dim": 8, "epochs": epochs, "batch_size": 64},
                  "multitask": {"dim": 16, "thin": 32, "wide": 32, "residual_blocks": 1, "item_dim": 8,
                                "epochs": epochs, "windows": 2, "inputs": ["stats", "tfidf_svd@dim=8"]}}
    else:
        params = {"stats": {}, "tfidf_svd": {"dim": 64}, "item2vec": {"dim": 64, "epochs": 3},
                  "gru_ae": {"variant": "day_event", "dim": 64, "field_dim": 32, "layers": 1, "epochs": epochs},
                  "multitask": {"dim": 128, "epochs": 2 * epochs + 1}}
    return [{"name": name, "embedder": name, "params": params[name], "transform": registry.default_transform(name)}
            for name in registry.BUILTIN if name in params]


class Stages:
    """Prints ``[k/n] stage ...`` headers with the elapsed time (stderr, beside the tqdm bars)."""

    def __init__(self, names: tuple[str, ...]):
        self.names, self.t0, self.k = names, time.perf_counter(), 0

    def start(self, name: str, what: str) -> None:
        self.k = self.names.index(name) + 1
        self.log(f"[{self.k}/{len(self.names)}] {name}: {what}")

    def log(self, msg: str) -> None:
        print(f"{time.perf_counter() - self.t0:7.1f}s  {msg}", file=sys.stderr, flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def ensure_world(world: Path, clients: int, seed: int, progress: bool, log) -> Path:
    """A split synthetic world of ``clients`` relevant clients at ``world``: reused when its truth/world.json
    matches, else (re)generated (a different synthetic world there is removed first)."""
    from competition.synth import generate_world

    paths = DataPaths(world)
    info = paths.truth / "world.json"
    if info.is_file():
        spec = json.loads(info.read_text()).get("spec", {})
        done = paths.split_times.is_file() and paths.target_list("propensity_sku").is_file()
        if spec.get("n_relevant") == clients and spec.get("seed") == seed and done:
            log(f"reusing {world} ({clients:,} clients, seed {seed})")
            return world
        log(f"{world} holds another world ({spec.get('n_relevant')} clients, seed {spec.get('seed')}): replacing it")
        shutil.rmtree(world)
    elif world.exists() and any(world.iterdir()):
        raise FileExistsError(f"{world}: exists and is not a synthetic world; choose another --work-dir")
    generate_world(world, clients, seed, progress=progress)
    return world


def score_table(world: Path, named_dirs: dict[str, Path], clients: np.ndarray, tasks: tuple[str, ...], probe: str,
                seed: int, progress: bool, log) -> dict[str, dict]:
    """``validate.probe.score_blocks`` of each folder alone on ``clients``, by name."""
    from validate.probe import score_blocks

    results = {}
    for name, path in named_dirs.items():
        res = score_blocks(world, [path], tasks, probe=probe, seed=seed, clients=clients, progress=progress)
        log(f"  {name}: sum {res['sum']:.4f} over {len(tasks)} task(s) ({res['seconds']:.1f}s)")
        results[name] = res
    return results


def _resolve_probe(probe: str) -> str:
    if probe != "auto":
        return probe
    import torch
    return "mlp" if torch.cuda.is_available() else "lgbm"


def run_default(work_dir: str | Path = "runs/default", clients: int | None = None, trials: int | None = None,
                epochs: int | None = None, seed: int = 0, quick: bool = False, probe: str = "auto",
                out: str | Path | None = None, progress: bool = True, tasks: tuple[str, ...] | None = None, *,
                pack: Callable) -> dict:
    """Run the five stages (module docstring); returns the report dict (also written to WORK_DIR/report.json).

    quick: tiny sizes (:data:`SIZES`) and two tasks, for tests; explicit arguments win. pack: the packing step,
    :func:`submit.pack.pack` (given by its caller, so that this module does not import the command that runs it).
    """
    from competition.io import write_json
    from validate.report import format_table
    from validate.search import run_search, split_folds

    size = dict(SIZES["quick" if quick else "full"])
    size.update({k: v for k, v in {"clients": clients, "trials": trials, "epochs": epochs,
                                   "tasks": tuple(tasks) if tasks else None}.items() if v is not None})
    tasks = tuple(size["tasks"])
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    world, blocks_dir = work / "world", work / "blocks"
    out = Path(out) if out is not None else work / "submission"
    st = Stages(STAGES)
    st.log(f"submit.pack default run in {work} ({size['clients']:,} clients, {size['trials']} search trials, "
           f"gru_ae {size['epochs']} epoch(s), seed {seed})")

    st.start("world", f"synthetic world of {size['clients']:,} relevant clients")
    ensure_world(world, size["clients"], seed, progress, st.log)

    recipes = block_recipes(size["epochs"], quick)
    st.start("blocks", ", ".join(r["name"] for r in recipes))
    all_spec = EnsembleSpec([BlockSpec(r["name"], blocks_dir / r["name"], r["transform"], 1.0, None, r["embedder"],
                                       r["params"]) for r in recipes], source="default blocks")
    # Torch threads: the embedders' own policy (embedders.threads), the same as their CLIs and submit.pack use.
    ensure_blocks(all_spec, world, "input", seed=seed, progress=progress, log=lambda m: st.log("  " + m))

    probe_search = "lgbm"
    st.start("search", f"{size['trials']} trial(s), {probe_search} probe, at most {size['search_timeout']:.0f}s")
    spec_path = work / "spec.json"
    spec = run_search(world, blocks_dir, spec_path, size["trials"], timeout=size["search_timeout"],
                      probe=probe_search, seed=seed, overwrite=True, tasks=tasks, progress=progress)
    for b in spec["blocks"]:
        st.log(f"  chose {b['name']}: {b['transform']}, weight {b['weight']:.3f}, dims {b['dims'] or 'full'}")

    st.start("pack", f"{spec_path} -> {out}")
    packed = pack(world, spec_path, out, seed=seed, progress=progress, log=lambda m: st.log("  " + m))

    table_probe = _resolve_probe(probe)
    _, report_ids = split_folds(np.load(DataPaths(world).relevant_clients), seed)
    st.start("table", f"{len(recipes)} blocks alone and the packed submission, {table_probe} probe, "
                      f"{len(report_ids):,} report-fold clients")
    dirs = {f"{r['name']} (baseline)" if r["name"] == BASELINE else r["name"]: blocks_dir / r["name"]
            for r in recipes}
    dirs["packed"] = out
    results = score_table(world, dirs, report_ids, tasks, table_probe, seed, progress, st.log)

    probe_words = ("MLP replica (the organisers' downstream net)" if table_probe == "mlp"
                   else "LightGBM probe (a fast proxy, not the organisers' MLP)")
    base = results[f"{BASELINE} (baseline)"]["sum"]
    lines = [f"Scores on the report fold ({len(report_ids):,} clients the search never saw); probe: {probe_words}",
             format_table(results, list(tasks)),
             f"packed ({packed.ensemble.dim} columns: "
             + ", ".join(f"{k} {b - a}" for k, (a, b) in packed.ensemble.columns.items())
             + f") vs the count-statistics baseline: {results['packed']['sum'] - base:+.4f} (sum of {len(tasks)} task(s))"]
    table = "\n".join(lines)
    print("\n" + table, flush=True)
    report = {"work_dir": str(work), "sizes": size, "seed": seed, "probe": table_probe, "tasks": list(tasks),
              "report_clients": int(len(report_ids)), "spec": str(spec_path), "submission": str(out),
              "results": results, "seconds": round(st.elapsed, 1), "peak_rss_mb": round(peak_rss_mb(), 1)}
    write_json(report, work / "report.json")
    print(f"\ntotal wall time {st.elapsed:.1f}s ({st.elapsed / 60:.1f} min); submission in {out}; "
          f"report in {work / 'report.json'}", flush=True)
    return report


__all__ = ["run_default", "block_recipes", "ensure_world", "SIZES"]
