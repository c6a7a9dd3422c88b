"""The whole pipeline in one call, shared by the embedded default run (a synthetic world, :mod:`submit.default`) and
the one-command run on the user's own data (``python -m submit.pack --data-dir D --out O``, :func:`run_own_data`).

Stages (each reuses what is already there and fresh; all outputs in the run folder WORK):

1. prepare: the default run generates its synthetic world (``world``); on the user's data, ``split`` cuts the
   input period and the two target windows into D (as ``python -m competition.split`` does) when they are missing
   or older than the raw files (raw fingerprint recorded in ``WORK/split.json``), and writes the target lists
   that are missing (docs/challenge.md section 3);
2. blocks: stats, tfidf_svd, item2vec, gru_ae and multitask (``--blocks`` also takes ``mt_heads``, the multitask
   network's heads; :func:`block_recipes`; CPU-sized, GPU presets when CUDA is present) from the input period, in
   ``WORK/blocks/<name>/`` (:func:`submit.build.ensure_blocks`); with a final stage to come, the raw event table
   is built first and the input one cut from it (:mod:`competition.events_cut`);
3. search: ``validate.search`` (LightGBM probe) over those blocks on one half of a sample of the clients, writing
   ``WORK/search_spec.json``; reused when ``WORK/search.json`` records the same blocks and settings;
4. decide: the shipped ensemble chosen by the organisers' network (``validate.decide``: the replica with CUDA,
   its bfloat16 twin ``mlp16`` on a CPU) among a short list (the search's best, strong and supervised blocks
   alone, all blocks, the strongest together) scored at growing numbers of search-fold clients, written to
   ``WORK/spec.json``; reused when ``WORK/decide.json`` records the same search and settings; with ``--heads``,
   multitask's heads are added beside a shipped multitask (:func:`ship_heads_beside`, built in ``WORK/beside/``);
5. pack: the local submission (blocks of the input period; for local scoring);
6. final (own data only): the real submission, the same spec packed from every raw event (blocks in
   ``WORK/blocks-final/``);
7. table: every block alone (stats alone = the count-statistics baseline) and the packed local submission scored
   on the other half of the sample (clients the search never saw), then ``WORK/report.json`` and the run report
   ``WORK/report.md`` with its PNGs (:mod:`submit.report`).

Sizes: :data:`SIZES` presets ("quick" for tests, "cpu", "gpu"); :func:`fit_budget` scales trials, neural epochs and
search clients to a time budget from the data's size and per-event costs measured on a 2-core CPU.
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from competition.cli import peak_rss_mb
from competition.heap import release_freed
from competition.load import read_relevant_clients
from competition.schema import (BLOCK_META_FILE, CONVERSION, EVENT_TYPES, MAX_EMBEDDING_COLUMNS, PRODUCT_PROPERTIES,
                                PROPENSITY_CATEGORY, TASKS, DataPaths)
from embedders import registry
from submit.build import ensure_blocks
from validate.cli import resolve_probe
from validate.spec import BlockSpec, EnsembleSpec

#: Size presets. clients: relevant clients of the default run's synthetic world; search_clients: the sample of
#: relevant clients the search uses (half of them score its trials); epochs: gru_ae epochs (multitask: 2 * epochs +
#: 1); train_clients: the neural blocks' (gru_ae, multitask) seeded training sample of relevant clients (None: all;
#: a --budget or --train-clients lowers it; every client is still embedded); table_clients: the
#: report-fold clients of the score table with a slow probe (the MLP ones; LightGBM and linear: half the search
#: sample); noise_samples: disjoint client samples of the table's size on which a fast probe rescores stats and the
#: packed submission, the search sample's noise (validate.noise.sample_spread; 0: not measured).
SIZES: dict[str, dict[str, Any]] = {
    "cpu": {"clients": 10_000, "trials": 10, "epochs": 2, "search_timeout": 180.0, "search_clients": 20_000,
            "train_clients": None, "table_clients": 2_000, "confirm_clients": 0, "noise_samples": 3, "tasks": TASKS,
            "decide_clients": (1_000, 2_000), "finalists": 2, "decide_width": None},
    "gpu": {"clients": 20_000, "trials": 20, "epochs": 3, "search_timeout": 600.0, "search_clients": 50_000,
            "train_clients": None, "table_clients": 20_000, "confirm_clients": 10_000, "noise_samples": 3,
            "tasks": TASKS, "decide_clients": (10_000, 20_000, 50_000), "finalists": 3, "decide_width": None},
    "quick": {"clients": 400, "trials": 1, "epochs": 1, "search_timeout": 30.0, "search_clients": 20_000,
              "train_clients": None, "table_clients": 2_000, "confirm_clients": 0, "noise_samples": 2,
              "tasks": (CONVERSION, PROPENSITY_CATEGORY), "decide_clients": (60, 120), "finalists": 1,
              "decide_width": (16, 32)},
}
#: decide_clients: the decision's ladder of search-fold client counts (:mod:`validate.decide`; () skips the
#: decision and ships the search's choice); finalists: candidates kept at each larger size; decide_width: hidden
#: sizes of the decision net (None: the organisers' 2048 / 4096; the quick preset's small net is NOT theirs).
#: Probes fast enough to score the table on half the search sample.
FAST_PROBES = ("lgbm", "linear")
BASELINE = "stats"
#: The default blocks, in :data:`embedders.registry.BUILTIN` order.
DEFAULT_BLOCKS: tuple[str, ...] = tuple(n for n in registry.BUILTIN
                                        if n in ("stats", "tfidf_svd", "item2vec", "gru_ae", "multitask"))
#: Blocks that are another export of a block's embedder: name -> (that block, params added). ``mt_heads``: the
#: multitask network's heads (logits and query vectors); built after ``multitask``, it reads that block's weights and
#: bottleneck instead of training again (``MultiTaskEmbedder._trained_twin``). Built only when ``--blocks`` names
#: it: on two worlds it helped on one and not the other (docs/capture.md).
EXPORT_BLOCKS: dict[str, tuple[str, dict[str, Any]]] = {"mt_heads": ("multitask", {"export": "heads"})}
#: Every block name ``--blocks`` takes: the defaults, then the opt-in ones.
KNOWN_BLOCKS: tuple[str, ...] = DEFAULT_BLOCKS + tuple(EXPORT_BLOCKS)
#: Layout of the user's output folder O: the local-validation submission and the real (final) one.
LOCAL_DIR, FINAL_DIR, RUN_DIR = "local", "final", "run"
SEARCH_KEY, DECIDE_KEY = "search.json", "decide.json"
SEARCH_SPEC, SPEC = "search_spec.json", "spec.json"
DECISION_PNG = "decision_curves.png"
SPLIT_RECORD = "split.json"


def cuda_present() -> bool:
    import torch
    return bool(torch.cuda.is_available())


def preset_name(quick: bool) -> str:
    """"quick", else "gpu" when CUDA is present, else "cpu"."""
    return "quick" if quick else ("gpu" if cuda_present() else "cpu")


def block_recipes(epochs: int, preset: str = "cpu", names: Sequence[str] | None = None,
                  train_clients: int | None = None) -> list[dict[str, Any]]:
    """Default blocks: name, embedder, params (constructor kwargs) and the ensemble transform (the embedder's
    ``ensemble_transform``, :func:`embedders.registry.default_transform`), in :data:`embedders.registry.BUILTIN`
    order; ``names``: a subset of :data:`KNOWN_BLOCKS` (default :data:`DEFAULT_BLOCKS`; stats is always kept: it is
    the baseline).

    preset: "quick" (tiny, tests), "cpu" (gru_ae ``day_event`` 64-d: minutes at 20k clients on 2 cores) or "gpu"
    (gru_ae ``week_all`` 128-d, wider blocks). ``multitask`` (supervised, stacking over stats + tfidf_svd built at
    each of its windows' anchors) runs ``2 * epochs + 1`` epochs (its best by held-out loss is kept). Given
    ``train_clients``, gru_ae and multitask train on a seeded sample of that many relevant clients (and still embed
    every client). ``mt_heads`` (opt-in, :data:`EXPORT_BLOCKS`) is multitask's params with ``export="heads"``,
    transform "quantile": the same training, so after multitask it costs only the heads of its bottleneck."""
    if preset == "quick":
        params = {"stats": {}, "tfidf_svd": {"dim": 16, "n_iter": 2},
                  "item2vec": {"dim": 16, "vector_size": 16, "epochs": 1, "min_count": 1},
                  "gru_ae": {"variant": "day_event", "dim": 16, "field_dim": 8, "epochs": epochs, "batch_size": 64},
                  "multitask": {"dim": 16, "thin": 32, "wide": 32, "residual_blocks": 1, "item_dim": 8,
                                "epochs": epochs, "windows": 2, "inputs": ["stats", "tfidf_svd@dim=8"]}}
    elif preset == "gpu":
        params = {"stats": {}, "tfidf_svd": {"dim": 128}, "item2vec": {"dim": 128, "epochs": 3},
                  "gru_ae": {"variant": "week_all", "dim": 128, "epochs": epochs},
                  "multitask": {"dim": 256, "epochs": 2 * epochs + 1}}
    elif preset == "cpu":
        params = {"stats": {}, "tfidf_svd": {"dim": 64}, "item2vec": {"dim": 64, "epochs": 3},
                  "gru_ae": {"variant": "day_event", "dim": 64, "field_dim": 32, "layers": 1, "epochs": epochs},
                  "multitask": {"dim": 128, "epochs": 2 * epochs + 1}}
    else:
        raise ValueError(f"preset must be one of {sorted(SIZES)}, got {preset!r}")
    if train_clients is not None:
        for name in ("gru_ae", "multitask"):
            params[name] = {**params[name], "max_train_clients": int(train_clients)}
    wanted = set(DEFAULT_BLOCKS if names is None else names) | {BASELINE}
    unknown = sorted(wanted - set(KNOWN_BLOCKS))
    if unknown:
        raise ValueError(f"unknown default block(s) {unknown}; choose among {list(KNOWN_BLOCKS)}")
    embedder = {name: EXPORT_BLOCKS.get(name, (name, {}))[0] for name in KNOWN_BLOCKS}
    for name, (source, extra) in EXPORT_BLOCKS.items():
        params[name] = {**params[source], **extra}
    return [{"name": name, "embedder": embedder[name], "params": params[name],
             "transform": registry.default_transform(embedder[name], params[name])}
            for name in KNOWN_BLOCKS if name in wanted]


# ---------------------------------------------------------------------------------------------------------------
# Time budget
# ---------------------------------------------------------------------------------------------------------------
#: Costs on this project's 2-core CPU, ``(seconds, seconds per million raw events)`` per stage. The per-event slopes
#: are the 1M-client run of docs/scale.md (284M events, idle machine); the intercepts were re-fitted on 2026-12-02 to
#: the one-command runs on two 10,000-client worlds (2.1M events, seeds 7331 and 8447: 80 s and 83 s, where the
#: old intercepts, calibrated on a 3,000-client run that shared the machine, estimated 9.5 min). split;
#: fixed_blocks = stats + tfidf_svd + item2vec (the event table included; its slope re-measured on 2026-12-03 with
#: item2vec's 4M-token corpus cap: 130 s instead of 586 s at 1M); one gru_ae / multitask epoch over every
#: relevant client (a training sample costs its share of the per-event part); the ``*_infer`` ones, embedding
#: every client after training on a sample (multitask: with its inputs for them); pack. Then seconds per thousand
#: search-fold clients and trial (six tasks), and per thousand table clients and candidate by probe; per thousand
#: decision clients and candidate by decision probe (benchmarks/bench_decision_probe.py, one thread: mlp16 30 s, the
#: replica 81 s). On a GPU the neural ones and the MLP probes are divided by GPU_SPEEDUP.
COST = {"startup": 5.0, "split": (1.5, 0.30), "fixed_blocks": (0.0, 2.29), "gru_ae_epoch": (1.0, 2.9),
        "multitask_epoch": (1.0, 2.6), "gru_ae_infer": (0.0, 0.73), "multitask_infer": (0.0, 1.0),
        "pack": (1.1, 0.059), "trial_per_kclient": 0.2,
        "table_per_kclient": {"lgbm": 0.4, "linear": 0.3, "narrow": 20.0, "mlp": 300.0},
        "decide_per_kclient": {"mlp16": 30.0, "mlp": 81.0}}
GPU_SPEEDUP = 10.0
TRIALS_RANGE, SEARCH_CLIENTS_MIN = (1, 100), 2_000
#: The decision's ladders (search-fold clients) that --budget may pick, from the largest to the smallest.
DECIDE_LADDERS = {"cpu": ((2_000, 4_000), (1_000, 2_000), (500, 1_000)),
                  "gpu": ((20_000, 50_000, 100_000), (10_000, 20_000, 50_000), (5_000, 10_000, 20_000))}
#: The smallest --search-clients accepted: two folds of 100 clients (scores below that are mostly noise).
SEARCH_CLIENTS_FLOOR = 200
#: (neural epochs, gru_ae and multitask training clients) from the largest to the smallest: what --budget may pick.
BUDGET_LADDER = ((4, None), (3, None), (2, None), (1, None), (1, 200_000), (1, 100_000), (1, 50_000), (1, 20_000),
                 (1, 10_000), (1, 5_000), (1, 2_000))


def count_events(data_dir: str | Path) -> int:
    """Rows of the five raw event files (parquet metadata only)."""
    import pyarrow.parquet as pq

    from competition.load import scan_table
    paths = DataPaths(data_dir)
    for kind in EVENT_TYPES:
        scan_table(data_dir, kind)  # present, parquet, the columns of the contract (DataError otherwise)
    return int(sum(pq.ParquetFile(paths.table(k)).metadata.num_rows for k in EVENT_TYPES))


def table_clients(size: dict[str, Any], n_clients: int, probe: str) -> int:
    """Report-fold clients of the score table: half the search sample, at most ``table_clients`` with a slow
    probe."""
    n = min(n_clients, int(size["search_clients"])) // 2
    return n if probe in FAST_PROBES else min(n, int(size["table_clients"]))


def estimate_seconds(size: dict[str, Any], n_events: int, n_clients: int, blocks: Sequence[str], final: bool,
                     probe: str = "narrow", gpu: bool = False) -> dict[str, float]:
    """Estimated seconds per stage (:data:`COST`) for ``size`` (a :data:`SIZES` entry) on ``n_events`` raw events
    and ``n_clients`` relevant clients, building ``blocks``, the table scored by ``probe``. The final stage is
    taken as half the blocks stage (it rebuilds only the blocks the search kept)."""
    m, speed = n_events / 1e6, (GPU_SPEEDUP if gpu else 1.0)

    def line(name: str, share: float = 1.0) -> float:  # COST's (seconds, per million events) at m events
        fixed_s, per_m = COST[name]
        return fixed_s + per_m * m * share

    fixed = line("fixed_blocks") * sum(b in ("stats", "tfidf_svd", "item2vec") for b in blocks) / 3
    neural = 0.0
    # trained on a sample: epochs cost its share of the events, and embedding everyone is priced apart (at share 1
    # the measured epoch costs include it)
    share = 1.0 if size.get("train_clients") is None else min(1.0, size["train_clients"] / max(n_clients, 1))
    trained = {"gru_ae": "gru_ae" in blocks,  # mt_heads trains multitask's network when multitask is not built
               "multitask": "multitask" in blocks or "mt_heads" in blocks}  # (beside it, it reads it: seconds)
    for name, epochs in (("gru_ae", size["epochs"]), ("multitask", 2 * size["epochs"] + 1)):
        if trained[name]:
            neural += line(f"{name}_epoch", share) * epochs + (line(f"{name}_infer") if share < 1 else 0.0)
    blocks_s = fixed + neural / speed
    task_share = len(size["tasks"]) / 6
    k_fold = min(size["search_clients"], n_clients) / 2e3
    search = min(size["trials"] * COST["trial_per_kclient"] * k_fold * task_share, size["search_timeout"])
    per_k = COST["table_per_kclient"].get(probe, COST["table_per_kclient"]["narrow"])
    if gpu and probe in ("mlp", "narrow"):
        per_k /= GPU_SPEEDUP * 10
    table = (len(blocks) + 1) * per_k * table_clients(size, n_clients, probe) / 1e3 * task_share
    if size.get("decide_clients"):  # the decision probe's verdict on the report fold: stats and the shipped one
        table += 2 * decision_cost_per_kclient(size, gpu) * min(max(size["decide_clients"]), n_clients // 2) / 1e3 \
            * task_share
    return {"startup": COST["startup"], "split": line("split"), "blocks": blocks_s, "search": search,
            "decide": decide_seconds(size, n_clients, len(blocks), gpu), "pack": line("pack"),
            "final": blocks_s / 2 if final else 0.0, "table": table}


def decide_seconds(size: dict[str, Any], n_clients: int, n_blocks: int, gpu: bool = False) -> float:
    """Estimated seconds of the decision (:mod:`validate.decide`): its short list (about ``n_blocks + 2``
    candidates, at most 7) at the first size of ``size["decide_clients"]``, ``size["finalists"]`` at each larger
    one, each candidate costing :data:`COST`'s ``decide_per_kclient`` per thousand clients and six tasks."""
    from validate.decide import plan_sizes

    sizes = plan_sizes(size.get("decide_clients") or (), n_clients // 2)
    if not sizes:
        return 0.0
    first = min(n_blocks + 2, 7) if n_blocks > 1 else 1
    clients = sizes[0] * first + sum(sizes[1:]) * int(size.get("finalists") or 1)
    return decision_cost_per_kclient(size, gpu) * clients / 1e3 * len(size["tasks"]) / 6


def decision_cost_per_kclient(size: dict[str, Any], gpu: bool = False) -> float:
    """Seconds of one candidate per thousand clients, six tasks, by the decision probe (:data:`COST`)."""
    per_k = COST["decide_per_kclient"]["mlp" if gpu else "mlp16"] / (GPU_SPEEDUP * 10 if gpu else 1.0)
    return per_k / 100.0 if size.get("decide_width") else per_k  # decide_width: a small test net


def fit_budget(size: dict[str, Any], budget_s: float, n_events: int, n_clients: int, blocks: Sequence[str],
               final: bool, probe: str = "narrow", gpu: bool = False) -> tuple[dict[str, Any], float]:
    """Sizes scaled to fit ``budget_s`` seconds (:func:`estimate_seconds`): the first step of
    :data:`BUDGET_LADDER` (gru_ae epochs 4..1, then multitask on fewer training clients) that keeps the run within
    75% of the budget with the smallest search and decision, then the largest decision ladder of
    :data:`DECIDE_LADDERS` within 85% (when the preset decides at all), then the most search clients (2,000..all)
    that fit with 10 trials, then as many trials (1..100) as the rest of the budget holds; the search's timeout is that rest (at least
    30 s). Returns (sizes, estimated seconds); the estimate exceeds the budget when even the smallest sizes do."""
    def total(s: dict[str, Any]) -> float:
        return sum(estimate_seconds(s, n_events, n_clients, blocks, final, probe, gpu).values())

    smallest = min(n_clients, SEARCH_CLIENTS_MIN)
    out = dict(size, search_timeout=math.inf)
    ladders = DECIDE_LADDERS["gpu" if gpu else "cpu"] if size.get("decide_clients") else ((),)
    out["decide_clients"] = ladders[-1]
    for epochs, train in BUDGET_LADDER:
        out.update(epochs=epochs, train_clients=train if train is None or train < n_clients else None,
                   trials=1, search_clients=smallest)
        if total(out) <= 0.75 * budget_s:
            break
    for ladder in ladders:  # the largest decision ladder that still fits
        out["decide_clients"] = ladder
        if total(out) <= 0.85 * budget_s:
            break
    for clients in sorted({min(n_clients, c) for c in (2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000)}
                          | {n_clients}, reverse=True):
        out["search_clients"] = clients
        if total(dict(out, trials=10)) <= budget_s:
            break
    else:
        out["search_clients"] = smallest
    per_trial = estimate_seconds(dict(out, trials=1), n_events, n_clients, blocks, final, probe, gpu)["search"]
    rest = max(budget_s - total(dict(out, trials=0)), 0.0)
    out["trials"] = int(np.clip(rest // max(per_trial, 1e-9), *TRIALS_RANGE))
    out["search_timeout"] = float(max(rest, 30.0))
    return out, total(out)


# ---------------------------------------------------------------------------------------------------------------
# Stages: progress headers, timings and peak memory per stage
# ---------------------------------------------------------------------------------------------------------------
class RssSampler:
    """Peak resident memory of this process between :meth:`reset` calls, in MiB, sampled from /proc/self/statm every
    ``interval`` seconds by a daemon thread (the kernel's own peak mark is left alone, so ``/usr/bin/time -v`` still
    sees the true peak); also the peak of its anonymous part (resident less file-backed and shared pages: what the
    process holds itself, as opposed to memory-mapped files the kernel can drop). Where /proc is missing,
    :func:`competition.cli.peak_rss_mb` (the peak so far) stands in and the anonymous peak is unknown (None)."""

    def __init__(self, interval: float = 0.05):
        import os
        import threading

        self.interval, self.page_mb = interval, os.sysconf("SC_PAGE_SIZE") / 2**20
        self.ok = self._sample() is not None
        self.peak, self.peak_anon = self._sample() or (0.0, 0.0)
        if self.ok:
            self._stop = threading.Event()
            threading.Thread(target=self._run, daemon=True, name="rss-sampler").start()

    def _sample(self) -> tuple[float, float] | None:
        """(resident, anonymous) MiB now."""
        try:
            with open("/proc/self/statm") as f:
                fields = f.read().split()
            return int(fields[1]) * self.page_mb, (int(fields[1]) - int(fields[2])) * self.page_mb
        except (OSError, ValueError, IndexError):
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss, anon = self._sample() or (0.0, 0.0)
            self.peak, self.peak_anon = max(self.peak, rss), max(self.peak_anon, anon)

    def reset(self) -> None:
        self.peak, self.peak_anon = self._sample() or (0.0, 0.0)

    def read(self) -> float:
        """The peak since the last reset (MiB)."""
        return max(self.peak, (self._sample() or (0.0, 0.0))[0]) if self.ok else peak_rss_mb()

    def read_anon(self) -> float | None:
        """The anonymous part's peak since the last reset (MiB); None without /proc."""
        return max(self.peak_anon, (self._sample() or (0.0, 0.0))[1]) if self.ok else None

    def stop(self) -> None:
        if self.ok:
            self._stop.set()


class Stages:
    """Prints ``[k/n] stage ...`` headers with the elapsed time (stderr, beside the progress output) and records each
    stage's wall seconds and peak RSS (MiB; per stage, sampled by :class:`RssSampler`, else the process's peak so
    far, and ``rss_scope`` says which)."""

    def __init__(self, names: tuple[str, ...]):
        self.names, self.t0, self.k = names, time.perf_counter(), 0
        self.records: list[dict[str, Any]] = []
        self._current: tuple[str, float] | None = None
        self.rss = RssSampler()
        self.rss_scope = "stage, sampled every 50 ms" if self.rss.ok else "process so far"

    def start(self, name: str, what: str) -> None:
        self.finish()
        self.k = self.names.index(name) + 1
        release_freed()  # the last stage's garbage (cycles, freed heap) is not this one's memory
        self.rss.reset()
        # what the process holds when the stage starts: a stage's peak less this is its own; the rest it inherited
        self._start_anon = (self.rss._sample() or (0.0, None))[1] if self.rss.ok else None
        self._current = (name, time.perf_counter())
        self.log(f"[{self.k}/{len(self.names)}] {name}: {what}")

    def finish(self) -> None:
        """Close the running stage's record (called by :meth:`start` and at the end)."""
        if self._current is None:
            return
        name, t = self._current
        anon = self.rss.read_anon()
        self.records.append({"stage": name, "seconds": round(time.perf_counter() - t, 2),
                             "peak_rss_mb": round(self.rss.read(), 1),
                             "peak_anon_mb": None if anon is None else round(anon, 1),
                             "start_anon_mb": None if self._start_anon is None else round(self._start_anon, 1)})
        self._current = None

    def log(self, msg: str) -> None:
        print(f"{time.perf_counter() - self.t0:7.1f}s  {msg}", file=sys.stderr, flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


# ---------------------------------------------------------------------------------------------------------------
# Stage helpers
# ---------------------------------------------------------------------------------------------------------------
def ensure_split(data_dir: Path, work: Path, progress: bool, log, wait: bool = False) -> str:
    """The split and the target lists of ``data_dir``, (re)made when missing or older than the raw files.

    Fresh = every ``input/<event>.parquet`` and ``target/split_times.json`` exist and either ``WORK/split.json``
    records the current raw fingerprint or (a split made outside this run) its end instant is the raw files'.
    Returns "reused" or "split"."""
    from competition.events import fingerprint
    from competition.io import write_json
    from competition.split import compute_split_times, read_split_times, split
    from competition.targets import write_target_lists

    paths = DataPaths(data_dir)
    record = work / SPLIT_RECORD
    raw_fp = fingerprint(data_dir, "raw")
    have = paths.split_times.is_file() and all(paths.table(k, "input").is_file() for k in EVENT_TYPES) \
        and paths.train_target.is_file() and paths.validation_target.is_file()
    fresh = False
    if have:
        if record.is_file():
            fresh = json.loads(record.read_text()).get("raw_fingerprint") == raw_fp
        else:
            fresh = read_split_times(data_dir) == compute_split_times(data_dir)
    if fresh:
        log(f"split of {data_dir} is fresh (input/ and target/ windows reused)")
        how = "reused"
    else:
        log(f"splitting {data_dir}: input/ and the target windows " + ("were missing" if not have else
                                                                        "are older than the raw files"))
        split(data_dir, progress=progress, wait=wait)  # under the data folder's lock (wait: for another split)
        how = "split"
    lists = write_target_lists(data_dir)
    write_json({"raw_fingerprint": raw_fp, "target_lists": lists}, record)
    return how


def search_key(recipes_spec: EnsembleSpec, size: dict[str, Any], tasks: Sequence[str], probe: str, seed: int,
               max_clients: int | None) -> dict[str, Any]:
    """What the search depends on: each block's meta (embedder, params, seed, input fingerprint) and the settings."""
    blocks = {}
    for b in recipes_spec.blocks:
        meta = json.loads((b.path / BLOCK_META_FILE).read_text()) if (b.path / BLOCK_META_FILE).is_file() else {}
        blocks[b.name] = {k: meta.get(k) for k in ("embedder", "params", "seed", "fingerprint", "dim")}
    return json.loads(json.dumps({"blocks": blocks, "trials": size["trials"], "timeout": size["search_timeout"],
                                  "tasks": list(tasks), "probe": probe, "seed": seed, "max_clients": max_clients,
                                  "confirm_clients": int(size.get("confirm_clients") or 0)},
                                 default=str))


def decide_stage(data_dir: Path, work: Path, st: Stages, blocks_dir: Path, searched: dict[str, Any],
                 searched_key: dict[str, Any], size: dict[str, Any], tasks: Sequence[str], seed: int,
                 decision_probe: str, progress: bool) -> dict[str, Any]:
    """Stage 4 (module doc): the spec to ship, ``WORK/spec.json``, decided by :func:`validate.decide.decide` among
    the search's choice (``searched``, a spec dict) and the short list; the search's own choice when
    ``size["decide_clients"]`` is empty. Reused when ``WORK/decide.json`` records the same search and settings."""
    from competition.io import write_json
    from embedders.base import read_block
    from validate.cli import resolve_decision_probe
    from validate.decide import decide, decided_spec, plan_sizes, plot_curves
    from validate.search import find_blocks

    spec_path, key_path = work / SPEC, work / DECIDE_KEY
    ladder = tuple(int(n) for n in size.get("decide_clients") or ())
    if not ladder:
        st.start("decide", "skipped (no decision sizes): the search's choice is shipped")
        key_path.unlink(missing_ok=True)
        EnsembleSpec.from_dict(searched).save(spec_path)
        return searched
    probe, width = resolve_decision_probe(decision_probe), size.get("decide_width")
    key = json.loads(json.dumps({"search": searched_key, "searched": searched["blocks"], "sizes": list(ladder),
                                 "finalists": size.get("finalists"), "probe": probe,
                                 "width": list(width) if width else None, "tasks": list(tasks), "seed": seed},
                                default=str))
    fresh = spec_path.is_file() and key_path.is_file() and json.loads(key_path.read_text()) == key
    net = "the organisers' network" + (" at bfloat16 matmuls" if probe == "mlp16" else "")
    if width:
        net = f"a {width[0]}/{width[1]} test net (NOT the organisers' network)"
    n_relevant = len(np.load(DataPaths(data_dir).relevant_clients))
    st.start("decide", f"{net} ({probe}) on {', '.join(f'{n:,}' for n in plan_sizes(ladder, n_relevant // 2))} "
                       "search-fold clients" + (" (reused)" if fresh else ""))
    if fresh:
        st.log(f"  the decision is fresh ({key_path} matches the search and settings): {spec_path} reused")
        return EnsembleSpec.load(spec_path).to_dict()
    key_path.unlink(missing_ok=True)
    blocks = {p.name: read_block(p) for p in find_blocks(blocks_dir)}
    chosen = [(b["name"], float(b["weight"]), int(b["dims"] or blocks[b["name"]].dim))
              for b in searched["blocks"] if b["weight"] > 0]
    decision = decide(data_dir, blocks, chosen, ladder, int(size.get("finalists") or 1), probe, tasks, seed,
                      tuple(width) if width else None, progress, log=lambda m: st.log("  " + m))
    png = plot_curves(decision, work / DECISION_PNG)
    decision["curves_png"] = png.name if png else None
    spec = decided_spec(decision, blocks, searched.get("search"))
    spec.save(spec_path)
    write_json(key, key_path)
    for b in spec.active:
        st.log(f"  shipping {b.name}: {b.transform}, weight {b.weight:.3f}, dims {b.dims or 'full'}")
    return spec.to_dict()


#: ``submit.pack --heads`` (docs/capture.md): when the decision ships multitask's bottleneck, its heads ship beside
#: it.
HEADS_BLOCK, HEADS_SOURCE = "mt_heads", "multitask"
#: Where the pipeline builds that block (``WORK/<this>/mt_heads``; the final stage's in ``WORK/<this>-final/``):
#: outside ``WORK/blocks``, so that the search and the decision never see it as a candidate of their own.
HEADS_DIR = "beside"


def ship_heads_beside(spec: dict[str, Any], work: Path, data_dir: Path, seed: int, enabled: bool, progress: bool,
                      log) -> dict[str, Any]:
    """The decided spec (a dict) with ``mt_heads`` added beside a shipped multitask bottleneck block (the same
    training's heads, transform quantile; built now from that block's checkpoint and bottleneck, seconds), saved
    as ``WORK/spec.json``; unchanged when no multitask ships, when it would pass the column limit, or when it is
    there already. ``enabled`` (``submit.pack --heads``; off by default) False ships the decision's choice as it is
    (and takes out heads an earlier run added). Why a rule beside the decision rather than a candidate of it: the
    decision's small CPU samples cut the three-block candidate; why opt-in: the heads' gain beside the shipped
    submission, +0.018 on three worlds at 5,000 clients, was +0.009 and +0.016 at 10,000 on two, within the
    row-order spread (docs/capture.md)."""
    from submit.build import recipe
    from validate.spec import block_meta, block_width

    parsed = EnsembleSpec.from_dict(spec, source=str(work / SPEC))
    added = parsed.search.get("heads_beside")
    if not enabled:
        if added:
            parsed = replace(parsed, blocks=[b for b in parsed.blocks if b.name != added["block"]],
                             search={k: v for k, v in parsed.search.items() if k != "heads_beside"})
            parsed.save(work / SPEC)
            log(f"{added['block']} taken out of the shipped spec (no --heads this time)")
        return parsed.to_dict()
    names = {b.name for b in parsed.blocks}
    source = next((b for b in parsed.active if block_meta(b).get("embedder") == HEADS_SOURCE
                   and (block_meta(b).get("params") or {}).get("export", "bottleneck") == "bottleneck"), None)
    if source is None or HEADS_BLOCK in names:
        return spec
    _, params = recipe(source, block_meta(source), str(work / SPEC))
    params = {**params, **EXPORT_BLOCKS[HEADS_BLOCK][1]}
    heads = BlockSpec(HEADS_BLOCK, work / HEADS_DIR / HEADS_BLOCK, registry.default_transform(HEADS_SOURCE, params),
                      1.0, None, HEADS_SOURCE, params)
    # built after the bottleneck block it reads (ensure_blocks hands it the blocks before it as prebuilt twins)
    ensure_blocks(EnsembleSpec([replace(source, weight=1.0), heads], source="heads beside multitask"), data_dir,
                  "input", seed=seed, progress=progress, log=log)
    width = block_width(heads)
    used = sum(b.columns(block_width(b)) for b in parsed.active)
    if used + width > MAX_EMBEDDING_COLUMNS:
        log(f"{HEADS_BLOCK} not shipped beside {source.name}: {used} + {width} columns would pass the limit of "
            f"{MAX_EMBEDDING_COLUMNS}")
        return spec
    out = replace(parsed, blocks=[*parsed.blocks, heads],
                  search={**parsed.search, "heads_beside": {"block": HEADS_BLOCK, "beside": source.name,
                                                            "columns": width, "rule": "docs/capture.md"}})
    out.save(work / SPEC)
    log(f"shipping {HEADS_BLOCK} beside {source.name} ({width} columns, quantile; --heads: docs/capture.md)")
    return out.to_dict()


def search_history(study_db: Path) -> list[dict[str, Any]]:
    """Every trial of the stored study: number, state, objective (None when pruned), columns."""
    import optuna

    from validate.search import STUDY_NAME

    if not study_db.is_file():
        return []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{study_db}")
    return [{"number": t.number, "state": t.state.name, "value": t.value,
             "columns": t.user_attrs.get("columns")} for t in study.trials]


def score_table(data_dir: Path, named_dirs: dict[str, Path], clients: np.ndarray, tasks: tuple[str, ...],
                probe: str, seed: int, progress: bool, log, mlp_width: Sequence[int] | None = None
                ) -> dict[str, dict]:
    """``validate.probe.score_blocks`` of each folder alone on ``clients``, by name (mlp_width: a test net); the
    labels are loaded once for all of them."""
    from validate.probe import TaskLabels, score_blocks

    labels = TaskLabels.load(data_dir, tasks, np.asarray(clients, dtype=np.int64))
    results = {}
    for name, path in named_dirs.items():
        res = score_blocks(data_dir, [path], tasks, probe=probe, seed=seed, clients=clients, progress=progress,
                           mlp_width=tuple(mlp_width) if mlp_width else None, labels=labels)
        log(f"  {name}: sum {res['sum']:.4f} over {len(tasks)} task(s) ({res['seconds']:.1f}s)")
        results[name] = res
    return results


def probe_words(probe: str) -> str:
    """The probe named for the score table's header."""
    from submit.report import probe_label
    return ("MLP replica (the organisers' downstream net)" if probe == "mlp"
            else f"{probe_label(probe)}: a fast stand-in, not the organisers' MLP")


# ---------------------------------------------------------------------------------------------------------------
# The shared pipeline
# ---------------------------------------------------------------------------------------------------------------
def run_pipeline(data_dir: Path, work: Path, st: Stages, recipes: list[dict[str, Any]], size: dict[str, Any],
                 seed: int, probe: str, progress: bool, pack: Callable, out_local: Path,
                 out_final: Path | None = None, title: str = "pipeline run", extra: dict | None = None,
                 oracle: bool = False, decision_probe: str = "auto", heads: bool = False) -> dict:
    """Stages 2-6 (module docstring) on a prepared (split) ``data_dir``; the caller ran stage 1 on ``st``.

    pack: :func:`submit.pack.pack` (given by its caller, so that this module does not import the command that runs
    it). out_final: where the final submission goes (None: no final stage). decision_probe: the decide stage's
    probe (auto: the replica with CUDA, else mlp16; :func:`validate.cli.resolve_decision_probe`). heads: ship
    ``mt_heads`` beside a shipped multitask (:func:`ship_heads_beside`; opt-in). oracle: add the oracle row
    (synthetic worlds with ``truth/``, when :mod:`validate.oracle` is available). Returns the report dict (also
    written to ``WORK/report.json``; ``WORK/report.md`` and its PNGs beside it)."""
    from competition.io import write_json
    from submit.notices import run_notices
    from submit.report import Row, probe_label, rows_from_results, write_run_report
    from validate.report import format_table
    from validate.search import DB_FILE, find_blocks, format_confirm, report_sample, run_search

    tasks = tuple(size["tasks"])
    table_probe = resolve_probe(probe)
    blocks_dir = work / "blocks"
    blog = lambda m: st.log("  " + m)  # noqa: E731
    st.start("blocks", ", ".join(r["name"] for r in recipes))
    entries = [BlockSpec(r["name"], blocks_dir / r["name"], r["transform"], 1.0, None, r["embedder"], r["params"])
               for r in recipes]
    # Blocks an earlier run (or the user) left in WORK/blocks are searched too (validate.search scans the folder):
    # kept fresh from their meta.json's recipe, so that the search never chooses with stale vectors.
    known = {r["name"] for r in recipes}
    try:
        extra_blocks = [p for p in find_blocks(blocks_dir) if p.name not in known]
    except FileNotFoundError:  # no run yet (or only an interrupted build's work folders)
        extra_blocks = []
    entries += [BlockSpec(p.name, p) for p in extra_blocks if (p / BLOCK_META_FILE).is_file()]  # rebuilt from meta
    if extra_blocks:
        blog(f"also kept fresh and searched: {', '.join(p.name for p in extra_blocks)} (already in {blocks_dir})")
    all_spec = EnsembleSpec(entries, source="default blocks")
    if out_final is not None:
        # the final stage reads the raw table: built first, the input table is cut from it in one pass instead of
        # being built from input/ as well (competition.events_cut: the same files; minutes saved at 1M clients)
        from competition.events import EventTable
        t0 = time.perf_counter()
        raw = EventTable.build(data_dir, "raw", progress=progress)
        blog(f"raw event table ({raw.n_events:,} events; the input table is cut from it): "
             f"{time.perf_counter() - t0:.1f}s")
    # Torch threads: the embedders' own policy (embedders.threads), the same as their CLIs and submit.pack use.
    ensure_blocks(all_spec, data_dir, "input", seed=seed, progress=progress, log=blog)

    probe_search = table_probe  # one probe for the search and the table (validate.cli: auto = lgbm on a CPU)
    confirm = int(size.get("confirm_clients") or 0)
    n_relevant = len(np.load(DataPaths(data_dir).relevant_clients))
    max_clients = None if size["search_clients"] >= n_relevant else int(size["search_clients"])
    search_path, spec_path = work / SEARCH_SPEC, work / SPEC
    key = search_key(all_spec, size, tasks, probe_search, seed, max_clients)
    key_path = work / SEARCH_KEY
    fresh = (search_path.is_file() and key_path.is_file() and json.loads(key_path.read_text()) == key)
    st.start("search", f"{size['trials']} trial(s), {probe_search} probe, at most {size['search_timeout']:.0f}s, "
                       f"{min(n_relevant, size['search_clients']):,} clients" + (" (reused)" if fresh else ""))
    if fresh:
        searched = EnsembleSpec.load(search_path).to_dict()
        blog(f"the search is fresh ({key_path} matches the blocks and settings): {search_path} reused")
    else:
        key_path.unlink(missing_ok=True)
        searched = run_search(data_dir, blocks_dir, search_path, size["trials"], timeout=size["search_timeout"],
                              probe=probe_search, seed=seed, overwrite=True, tasks=tasks, max_clients=max_clients,
                              progress=progress, confirm_clients=confirm, confirm_against="stats")
        write_json(key, key_path)
    for b in searched["blocks"]:
        blog(f"search chose {b['name']}: {b['transform']}, weight {b['weight']:.3f}, dims {b['dims'] or 'full'}")
    spec = decide_stage(data_dir, work, st, blocks_dir, searched, key, size, tasks, seed, decision_probe,
                        progress)
    spec = ship_heads_beside(spec, work, data_dir, seed, heads, progress, blog)
    decision = spec.get("search", {}).get("decision")

    st.start("pack", f"local submission (input-period blocks): {spec_path} -> {out_local}")
    packed = pack(data_dir, spec_path, out_local, seed=seed, progress=progress, log=blog)
    packed_final = None
    if out_final is not None:
        st.start("final", f"final submission (blocks from every event, in {work / 'blocks-final'}) -> {out_final}")
        packed_final = pack(data_dir, spec_path, out_final, final=True, seed=seed, progress=progress, log=blog)

    # clients of the full split's report fold (never scored by the search, at any --max-clients), at most half
    # the search sample, so the table costs about what one search fold does
    report_ids = report_sample(data_dir, table_clients(size, n_relevant, table_probe), seed)
    st.start("table", f"{len(recipes)} blocks alone and the packed submission, {table_probe} probe, "
                      f"{len(report_ids):,} report-fold clients")
    dirs = {f"{r['name']} (baseline)" if r["name"] == BASELINE else r["name"]: blocks_dir / r["name"]
            for r in recipes}
    dirs["packed"] = out_local
    results = score_table(data_dir, dirs, report_ids, tasks, table_probe, seed, progress, st.log)
    rows = rows_from_results(results, baseline=f"{BASELINE} (baseline)", packed="packed")
    if oracle:
        rows += oracle_rows(data_dir, report_ids, tasks, table_probe, seed, st.log)
    verdict = decision_verdict(data_dir, decision, dirs[f"{BASELINE} (baseline)"], out_local, tasks, seed,
                               progress, st.log) if decision else None
    if verdict:
        rows += verdict["rows"]
    confirmed = spec.get("search", {}).get("confirm")
    if confirmed:  # the replica's own verdict on the search's choice (validate.search.confirm_with_replica)
        rows += [Row(f"{'packed' if n == 'searched' else n} (replica)", v["tasks"], probe_label("mlp"),
                     "replica", confirmed["n_clients"], note="replica confirmation")
                 for n, v in confirmed["candidates"].items()]

    base = results[f"{BASELINE} (baseline)"]["sum"]
    lines = [f"Scores on the report fold ({len(report_ids):,} clients the search never saw); probe: "
             f"{probe_words(table_probe)}",
             format_table(results, list(tasks)),
             f"packed ({packed.ensemble.dim} columns: "
             + ", ".join(f"{k} {b - a}" for k, (a, b) in packed.ensemble.columns.items())
             + f") vs the count-statistics baseline: {results['packed']['sum'] - base:+.4f} (sum of {len(tasks)} "
               f"task(s))"]
    if confirmed:
        lines.append(format_confirm(confirmed))
    if verdict:
        lines.append(verdict["line"])
    noise = search_noise(data_dir, blocks_dir / BASELINE, out_local, len(report_ids), size, tasks, table_probe,
                         seed, progress)
    lines += noise["lines"]
    print("\n" + "\n".join(lines), flush=True)
    st.finish()
    st.rss.stop()
    columns = {"local": {k: b - a for k, (a, b) in packed.ensemble.columns.items()}}
    if packed_final is not None:
        columns["final"] = {k: b - a for k, (a, b) in packed_final.ensemble.columns.items()}
    report = {"title": title, "data_dir": str(data_dir), "work_dir": str(work), "sizes": size, "seed": seed,
              "probe": table_probe, "search_probe": probe_search, "tasks": list(tasks),
              "report_clients": int(len(report_ids)), "spec": str(spec_path), "submission": str(out_local),
              "final_submission": str(out_final) if out_final is not None else None,
              "results": results, "rows": [r.to_dict() for r in rows], "baseline": f"{BASELINE} (baseline)",
              "search": {k: spec.get("search", {}).get(k) for k in ("trials", "trials_total", "pruned",
                                                                     "best_trial", "search_fold", "report_fold",
                                                                     "confirm")},
              "search_noise": noise, "chosen": spec["blocks"], "searched": searched["blocks"],
              "decision": decision, "decision_verdict": {k: v for k, v in (verdict or {}).items() if k != "rows"}
              or None, "search_history": search_history(work / DB_FILE),
              "columns": columns, "notices": run_notices(pack=packed, final=packed_final),
              "stages": st.records, "rss_scope": st.rss_scope, "seconds": round(st.elapsed, 1),
              "peak_rss_mb": round(max([peak_rss_mb()] + [r["peak_rss_mb"] for r in st.records]), 1),
              **(extra or {})}
    write_json(report, work / "report.json")
    md = write_run_report(report, rows, work)
    report["report_md"] = str(md)
    write_json(report, work / "report.json")
    where = f"local submission in {out_local}" + (f", final submission in {out_final}" if out_final else "")
    print(f"\ntotal wall time {st.elapsed:.1f}s ({st.elapsed / 60:.1f} min); {where}; report in {md}", flush=True)
    return report


def decision_verdict(data_dir: Path, decision: dict[str, Any], baseline_dir: Path, packed_dir: Path,
                     tasks: Sequence[str], seed: int, progress: bool, log) -> dict[str, Any]:
    """The decision probe's own figures on the report fold (clients neither the search nor the decision saw): the
    shipped local submission and stats alone, on as many report-fold clients as the decision's largest size.
    Returns ``{"probe", "n_clients", "packed", "stats", "difference", "noise", "line", "rows"}`` (rows: for the
    score table)."""
    from submit.report import Row, probe_label
    from validate.noise import noise_threshold
    from validate.search import report_sample

    probe, width = decision["probe"], decision.get("mlp_width")
    ids = report_sample(data_dir, max(decision["sizes"]), seed)
    res = score_table(data_dir, {"stats": baseline_dir, "packed": packed_dir}, ids, tuple(tasks), probe, seed,
                      progress, log, mlp_width=width)
    label = probe_label(probe) if not width else "MLP, other widths (proxy)"
    rows = [Row(f"{n} ({probe})", {t: float(f["score"]) for t, f in r["tasks"].items()}, label,
                "baseline" if n == "stats" else "packed", r["n_clients"], r["dim"], note="decision probe, report fold")
            for n, r in res.items()]
    diff = res["packed"]["sum"] - res["stats"]["sum"]
    got = noise_threshold(len(ids)) if not width else None
    line = (f"Decision probe {probe} ({label}) on {len(ids):,} report-fold clients: "
            f"packed {res['packed']['sum']:.4f}, stats alone {res['stats']['sum']:.4f}, difference {diff:+.4f}"
            + (f" (row-order noise below {got[0]:.3f} at this size)" if got else "") + ".")
    return {"probe": probe, "n_clients": int(len(ids)), "packed": res["packed"]["sum"], "stats": res["stats"]["sum"],
            "difference": diff, "noise": got[0] if got else None, "line": line, "rows": rows}


def search_noise(data_dir: Path, baseline_dir: Path, packed_dir: Path, n_clients: int, size: dict[str, Any],
                 tasks: Sequence[str], probe: str, seed: int, progress: bool) -> dict[str, Any]:
    """The search sample's noise: stats and the packed submission rescored by a fast ``probe`` on
    ``size["noise_samples"]`` disjoint samples of ``n_clients`` (the table's size;
    :func:`validate.noise.sample_spread`), with its lines for the table. Not measured (said so) with a slow probe
    or fewer than 2 samples."""
    from submit.report import probe_label
    from validate.noise import sample_noise_lines, sample_spread

    k = int(size.get("noise_samples") or 0)
    if k < 2 or probe not in FAST_PROBES:
        why = "noise_samples < 2" if k < 2 else f"the {probe} probe is too slow to rescore on further samples"
        return {"measured": False, "lines": [f"Sample noise of the search: not measured ({why})."]}
    t0 = time.perf_counter()
    baseline = f"{BASELINE} (baseline)"
    res = sample_spread(data_dir, {baseline: baseline_dir, "packed": packed_dir}, baseline, n_clients, k, tasks,
                        probe, seed, progress)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return {"measured": True, **res, "lines": sample_noise_lines(res, probe_label(probe))}


#: The oracle's expected purchases cost clients x products (~0.2 us per entry on this CPU): its row is scored on a
#: seeded part of the table's clients that keeps within this many entries (about a minute), and not at all when
#: that part would be under ORACLE_MIN_CLIENTS (a 1.26M-product catalogue).
ORACLE_MAX_ENTRIES, ORACLE_MIN_CLIENTS = 300_000_000, 500


def oracle_rows(data_dir: Path, clients: np.ndarray, tasks: Sequence[str], probe: str, seed: int, log) -> list:
    """The oracle's row (the world's true latents, :mod:`validate.oracle`) when that module and ``truth/`` exist;
    else none. On fewer clients than the table's when the catalogue is large (:data:`ORACLE_MAX_ENTRIES`; the row
    says how many)."""
    if not DataPaths(data_dir).truth.is_dir():
        return []
    try:
        from validate import oracle  # noqa: F401  (built by another task; used only once it has landed)
    except ImportError:
        return []
    import pyarrow.parquet as pq

    from submit.report import oracle_row
    n_products = pq.ParquetFile(DataPaths(data_dir).table(PRODUCT_PROPERTIES)).metadata.num_rows
    k = min(len(clients), ORACLE_MAX_ENTRIES // max(n_products, 1))
    if k < ORACLE_MIN_CLIENTS:
        log(f"  oracle: not scored (its expected purchases would cost {len(clients):,} clients x {n_products:,} "
            f"products; at most {ORACLE_MAX_ENTRIES:,} entries)")
        return []
    if k < len(clients):
        log(f"  oracle: scored on {k:,} of the {len(clients):,} table clients ({n_products:,} products)")
        clients = np.sort(np.random.default_rng([seed, 31]).choice(clients, k, replace=False))
    try:
        row = oracle_row(data_dir, clients, tasks, probe, seed)
    except Exception as exc:  # the oracle is a bonus row: never lose the run's report over it
        log(f"  oracle: not scored ({type(exc).__name__}: {exc})")
        return []
    if row is not None:
        log(f"  {row.name}: sum {row.sum:.4f}")
    return [row] if row is not None else []


# ---------------------------------------------------------------------------------------------------------------
# The user's own data
# ---------------------------------------------------------------------------------------------------------------
OWN_STAGES = ("split", "blocks", "search", "decide", "pack", "final", "table")


def run_own_data(data_dir: str | Path, out: str | Path, work_dir: str | Path | None = None,
                 trials: int | None = None, epochs: int | None = None, seed: int = 0, quick: bool = False,
                 probe: str = "auto", progress: bool = True, tasks: Sequence[str] | None = None,
                 budget_minutes: float | None = None, blocks: Sequence[str] | None = None,
                 confirm_clients: int | None = None, search_clients: int | None = None,
                 train_clients: int | None = None, decide_clients: Sequence[int] | None = None,
                 decision_probe: str = "auto", heads: bool = False, *, pack: Callable, wait: bool = False) -> dict:
    """The whole pipeline on the user's data (module docstring): ``out/local`` (local-validation submission),
    ``out/final`` (the real submission, from every event) and the run folder ``work_dir`` (default ``out/run``:
    blocks, study, report.md). Explicit trials/epochs/tasks/search_clients/train_clients win over the preset and the
    budget."""
    from validate.decide import plan_sizes

    data_dir, out = Path(data_dir), Path(out)
    work = Path(work_dir) if work_dir is not None else out / RUN_DIR
    work.mkdir(parents=True, exist_ok=True)
    preset = preset_name(quick)
    size = {k: v for k, v in SIZES[preset].items() if k != "clients"}  # clients: the default run's world
    recipes_names = list(blocks) if blocks else None
    st = Stages(OWN_STAGES)
    relevant = len(read_relevant_clients(data_dir))  # one clear error when absent or malformed
    n_events = count_events(data_dir)
    names = [r["name"] for r in block_recipes(1, preset, recipes_names)]
    table_probe = resolve_probe(probe)
    if tasks:
        size["tasks"] = tuple(tasks)
    estimate = None
    if budget_minutes is not None:
        size, estimate = fit_budget(size, 60.0 * budget_minutes, n_events, relevant, names, True, table_probe,
                                    preset == "gpu")
    explicit = {"trials": trials, "epochs": epochs, "search_clients": search_clients, "train_clients": train_clients,
                "decide_clients": decide_ladder(decide_clients)}
    size.update({k: v for k, v in {**explicit, "confirm_clients": confirm_clients}.items() if v is not None})
    if estimate is None or any(v is not None for v in explicit.values()):
        estimate = sum(estimate_seconds(size, n_events, relevant, names, True, table_probe, preset == "gpu").values())
    recipes = block_recipes(size["epochs"], preset, recipes_names, size.get("train_clients"))
    local, final = out / LOCAL_DIR, out / FINAL_DIR
    st.log(f"submit.pack on {data_dir} ({relevant:,} relevant clients, {n_events:,} events; preset {preset}"
           + (f", budget {budget_minutes:g} min" if budget_minutes is not None else "")
           + f"): {size['trials']} search trial(s) on {min(relevant, size['search_clients']):,} clients, "
             f"neural epochs {size['epochs']}"
           + (f", gru_ae and multitask trained on {size['train_clients']:,} clients" if size.get("train_clients")
              else "")
           + (f", the decision on {'/'.join(f'{n:,}' for n in plan_sizes(size['decide_clients'], relevant // 2))} "
              "search-fold clients"
              if size.get("decide_clients") else ", no decision (the search's choice is shipped)")
           + f", seed {seed}; estimated {estimate / 60:.1f} min")
    st.log(f"outputs: local submission {local}, final submission {final}, run folder {work}")

    st.start("split", f"input period and target windows of {data_dir}")
    split_how = ensure_split(data_dir, work, progress, st.log, wait)
    extra = {"kind": "own data", "preset": preset, "budget_minutes": budget_minutes, "n_events": n_events,
             "n_relevant": relevant, "estimated_seconds": round(estimate, 1), "split": split_how, "out": str(out)}
    return run_pipeline(data_dir, work, st, recipes, size, seed, probe, progress, pack, local, final,
                        title=f"submit.pack on {data_dir.name}", extra=extra, oracle=True,
                        decision_probe=decision_probe, heads=heads)


def decide_ladder(clients: Sequence[int] | None) -> tuple[int, ...] | None:
    """A ``--decide-clients`` value as the decision's ladder: None (the preset's), () for 0 (no decision), else
    the positive sizes ascending."""
    if clients is None:
        return None
    if any(int(n) < 0 for n in clients):
        raise ValueError(f"--decide-clients takes client counts >= 0, got {list(clients)}")
    return tuple(sorted({int(n) for n in clients if int(n) > 0}))


__all__ = ["SIZES", "DEFAULT_BLOCKS", "EXPORT_BLOCKS", "KNOWN_BLOCKS", "SEARCH_CLIENTS_FLOOR",
           "block_recipes", "fit_budget", "estimate_seconds", "Stages", "ensure_split",
           "run_pipeline", "run_own_data", "decide_stage", "decide_ladder", "ship_heads_beside", "LOCAL_DIR",
           "FINAL_DIR", "RUN_DIR"]
