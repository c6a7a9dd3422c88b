"""The embedded default run (``python -m submit.pack`` with no ``--data-dir``): the whole pipeline
(:mod:`submit.pipeline`, the same stages as the one-command run on your own data) on a small synthetic world, with
a progress display, a table of scores and the run report at the end.

Stages, all inside ``WORK_DIR`` (default ``./runs/default``; each stage reuses what is already there and fresh):

1. world: ``competition.synth.generate_world`` (``--clients`` relevant clients, split, target lists) in ``world/``;
2. blocks: stats, tfidf_svd, item2vec, gru_ae (a small fast preset; GPU presets when CUDA is present) and
   multitask (supervised on windows shifted back inside the input period) in ``blocks/<name>/``, local-validation
   layout (the split's input period);
3. search: ``validate.search`` (LightGBM probe, ``--trials`` trials) over the blocks on one half of the clients,
   writing ``search_spec.json`` (each entry also records the embedder and params that rebuild it);
4. decide: the organisers' network (bfloat16 matmuls on a CPU) picks the shipped ensemble among a short list at
   growing numbers of search-fold clients (``validate.decide``), writing ``spec.json``;
5. pack: ``submit.pack`` of that spec into ``submission/`` (checked, atomic);
6. table: every block alone (stats alone = the plain count-statistics baseline) and the packed submission, scored
   on the *other* half of the clients (never seen by the search) with the MLP replica when a GPU is present,
   else the LightGBM probe; the header says which. Written to ``report.json``, and ``report.md`` with its PNGs
   (:mod:`submit.report`; with the oracle's row when :mod:`validate.oracle` is available).

The total wall time is printed at the end.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from competition.schema import DataPaths
from submit.pipeline import SIZES, Stages, block_recipes, decide_ladder, preset_name, run_pipeline

STAGES = ("world", "blocks", "search", "decide", "pack", "table")


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


def run_default(work_dir: str | Path = "runs/default", clients: int | None = None, trials: int | None = None,
                epochs: int | None = None, seed: int = 0, quick: bool = False, probe: str = "auto",
                out: str | Path | None = None, progress: bool = True, tasks: tuple[str, ...] | None = None,
                blocks: tuple[str, ...] | None = None, confirm_clients: int | None = None,
                decide_clients: tuple[int, ...] | None = None, decision_probe: str = "auto", heads: bool = False,
                *, pack: Callable) -> dict:
    """Run the six stages (module docstring); returns the report dict (also written to WORK_DIR/report.json).

    quick: tiny sizes (:data:`submit.pipeline.SIZES`) and two tasks, for tests; explicit arguments win. blocks: a
    subset of the default blocks (stats always). confirm_clients: report-fold clients on which the replica scores
    the packed ensemble beside stats (0: skip; default: the preset's). decide_clients / decision_probe: the
    decision's ladder of search-fold clients ((0,): none) and probe (:func:`submit.pipeline.decide_stage`). heads:
    ship ``mt_heads`` beside a shipped multitask (:func:`submit.pipeline.ship_heads_beside`). pack: the packing step,
    :func:`submit.pack.pack` (given by its caller, so that this module does not import the command that runs it).
    """
    preset = preset_name(quick)
    size = dict(SIZES[preset])
    size.update({k: v for k, v in {"clients": clients, "trials": trials, "epochs": epochs,
                                   "tasks": tuple(tasks) if tasks else None,
                                   "confirm_clients": confirm_clients,
                                   "decide_clients": decide_ladder(decide_clients)}.items() if v is not None})
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    world = work / "world"
    out = Path(out) if out is not None else work / "submission"
    st = Stages(STAGES)
    st.log(f"submit.pack default run in {work} ({size['clients']:,} clients, {size['trials']} search trials, "
           f"gru_ae {size['epochs']} epoch(s), preset {preset}, seed {seed})")

    st.start("world", f"synthetic world of {size['clients']:,} relevant clients")
    ensure_world(world, size["clients"], seed, progress, st.log)
    recipes = block_recipes(size["epochs"], preset, blocks)
    return run_pipeline(world, work, st, recipes, size, seed, probe, progress, pack, out,
                        title="the embedded default run (synthetic world)",
                        extra={"kind": "synthetic world", "preset": preset}, oracle=True,
                        decision_probe=decision_probe, heads=heads)


__all__ = ["run_default", "ensure_world", "STAGES"]
