"""How learnable a (synthetic) world is: label rates, activity statistics and a LightGBM ceiling per task.

``python -m competition.synth_report --data-dir D [--seed S] [--out report.json]`` prints and (optionally) writes:

- the event mix and events-per-client quantiles of the raw files (all clients and relevant clients);
- the realism statistics (:func:`realism_statistics`: repeat visits and buys, buys after a cart, cart fates,
  session shape, popularity slope) over the whole log and its last 9 days, beside the Taobao UserBehavior figures;
  ``--realism`` prints only these, for any data dir (a user's own log too);
- label rates per task (competition.targets.task_dataset): positive rate in the train and validation windows
  (churn-type tasks), or the share of clients with any positive and the mean positive rate per target
  (propensity tasks);
- AUROC of a LightGBM per task with three feature sets:
  ``rf``: recency/frequency counts from input/ (events per kind, days since the last event / last buy / first
  event, distinct active days) plus, for a propensity target, the client's input events touching it (its
  category / sku / price bucket; for a new sku, its category);
  ``latent``: the true client latents from truth/ (traits only, not the realised death day) plus, per target, the
  client's taste for its category at the window time and its distance from the client's price level;
  ``latent+rf``: both.
  Protocol (as the official one): features from the input period, fit on train-window labels, AUROC on
  validation-window labels **of the same clients**. Propensity tasks: macro AUROC over the ``--targets`` (20)
  most popular target entries, skipping entries with fewer than 5 positives in either window (counted).

Needs a world written by :mod:`competition.synth` (truth/); without truth/ only ``rf`` is reported.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from competition.cli import HelpFormatter, add_no_progress
from competition.io import atomic_path
from competition.load import read_products, read_relevant_clients, scan_table
from competition.schema import (ADD_TO_CART, CATEGORY, CLIENT_ID, EVENT_TYPES, PAGE_VISIT, PRICE, PRODUCT_BUY,
                                PROPENSITY_CATEGORY, PROPENSITY_NEW_SKU, PROPENSITY_PRICE, PROPENSITY_SKU,
                                REMOVE_FROM_CART, SKU, SKU_EVENTS, TASKS, TIMESTAMP, URL, DataPaths)

FEATURE_SETS = ("rf", "latent", "latent+rf")
LATENT_SCALARS = ("session_rate", "session_len", "join_day", "hazard", "buyer", "buy_interval", "buy_shape",
                  "items_per_buy", "cart_mult", "search_mult", "price_level", "price_tol")
MIN_POSITIVES = 5
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# Statistics of the raw files
# ---------------------------------------------------------------------------------------------------------------
def event_statistics(data_dir: str | Path, relevant: np.ndarray) -> dict:
    """Counts and mix per kind, events-per-client quantiles (all clients with events, relevant clients)."""
    per_kind, frames = {}, []
    for ev in EVENT_TYPES:
        lf = pl.scan_parquet(DataPaths(data_dir).table(ev)).select(pl.col(CLIENT_ID).cast(pl.Int64))
        per_kind[ev] = lf.select(pl.len()).collect().item()
        frames.append(lf.group_by(CLIENT_ID).len())
    counts = (pl.concat(frames).group_by(CLIENT_ID).agg(pl.col("len").sum()).collect(engine="streaming"))
    total = sum(per_kind.values())
    rel = counts.filter(pl.col(CLIENT_ID).is_in(np.asarray(relevant)))["len"].to_numpy()
    all_counts = counts["len"].to_numpy()

    def q(x: np.ndarray) -> dict[str, float]:
        return {f"q{int(p * 100)}": float(np.quantile(x, p)) for p in QUANTILES} | {"mean": float(x.mean())}

    return {"counts": per_kind, "total": total, "mix": {k: v / max(total, 1) for k, v in per_kind.items()},
            "clients_with_events": len(all_counts), "relevant_with_events": len(rel),
            "events_per_client": {"all": q(all_counts), "relevant": q(rel)}}


def label_statistics(data: dict) -> dict:
    out = {}
    for task, d in data.items():
        if d.y_train.ndim == 1:
            out[task] = {"clients": len(d.client_ids), "positive_rate_train": float(d.y_train.mean()),
                         "positive_rate_valid": float(d.y_valid.mean())}
        else:
            out[task] = {"clients": len(d.client_ids), "targets": int(d.y_train.shape[1]),
                         "any_positive_train": float((d.y_train.sum(1) > 0).mean()) if d.y_train.size else 0.0,
                         "any_positive_valid": float((d.y_valid.sum(1) > 0).mean()) if d.y_valid.size else 0.0,
                         "mean_rate_per_target_train": float(d.y_train.mean()) if d.y_train.size else 0.0,
                         "mean_rate_per_target_valid": float(d.y_valid.mean()) if d.y_valid.size else 0.0}
    return out


# ---------------------------------------------------------------------------------------------------------------
# Realism: the statistics to hold a world against a real log
# ---------------------------------------------------------------------------------------------------------------
#: A gap longer than this between two events of a client starts a new session (as in embedders.stats).
SESSION_GAP_SECONDS = 30 * 60
#: Realism statistics of the Taobao UserBehavior sample (814 users, 9 days), as quoted in docs/synthetic_worlds.md.
TAOBAO = {"repeat_visit_share": 0.21, "repeat_buy_share": 0.05, "buy_after_cart_share": 0.17,
          "events_per_session_p50": 3.0, "events_per_session_p90": 14.0, "session_gap_p50_seconds": 55.0}
REALISM_KEYS = ("repeat_visit_share", "repeat_buy_share", "buy_after_cart_share", "adds_per_buy",
                "cart_abandoned_share", "cart_removed_share", "events_per_session_p50", "events_per_session_p90",
                "session_gap_p50_seconds", "sessions_per_client_p50", "sessions_per_client_p90",
                "sessions_per_client_mean", "popularity_slope")


def _sample_clients(data_dir: str | Path, max_clients: int | None, seed: int) -> np.ndarray:
    relevant = read_relevant_clients(data_dir)
    if max_clients is None or len(relevant) <= max_clients:
        return relevant
    return np.sort(np.random.default_rng(seed).choice(relevant, max_clients, replace=False))


def realism_statistics(data_dir: str | Path, layout: str = "raw", max_clients: int | None = 20_000,
                       seed: int = 0, window_days: float | None = None) -> dict[str, float]:
    """Statistics of the event files of any data dir (``layout`` "raw" or "input"), over a seeded sample of at most
    ``max_clients`` relevant clients (None: all of them), over the whole log or (``window_days``) its last days
    only, to compare with a short log (the Taobao sample spans 9 days; repeats grow with the span):

    - ``repeat_visit_share``: page visits of a url the client had visited before (1 - distinct pairs / visits);
    - ``repeat_buy_share``: the same for product_buy and skus;
    - ``buy_after_cart_share``: buys preceded (at or before) by an add_to_cart of the same sku by the client;
    - ``adds_per_buy``: add_to_cart events / product_buy events;
    - ``cart_abandoned_share`` / ``cart_removed_share``: distinct (client, sku) adds never bought / removed later;
    - ``events_per_session_p50`` / ``_p90``, ``session_gap_p50_seconds`` (gaps between consecutive events of a
      session), ``sessions_per_client_p50`` / ``_p90`` / ``_mean`` (clients with events), a session ending at a gap
      over :data:`SESSION_GAP_SECONDS`;
    - ``popularity_slope``: least-squares slope of log(events) on log(rank) over the 1000 most touched skus (buy, add
      and remove events of every client, not only the sample), about -1 for a Zipf law.
    """
    sample = _sample_clients(data_dir, max_clients, seed)
    ids = pl.Series(sample).implode()

    since = None
    if window_days is not None:
        last = pl.concat([scan_table(data_dir, kind, layout).select(pl.col(TIMESTAMP).max()) for kind in EVENT_TYPES])
        since = last.select(pl.col(TIMESTAMP).max()).collect().item() - timedelta(days=window_days)

    def scan(kind: str, *cols: str, every_client: bool = False) -> pl.LazyFrame:
        frame = scan_table(data_dir, kind, layout)
        if since is not None:
            frame = frame.filter(pl.col(TIMESTAMP) > since)
        frame = frame.select(CLIENT_ID, *cols)
        return frame if every_client else frame.filter(pl.col(CLIENT_ID).is_in(ids))

    def repeat_share(kind: str, item: str) -> float:
        n, distinct = (scan(kind, item).select(pl.len(), pl.struct(CLIENT_ID, item).n_unique())
                       .collect(engine="streaming").row(0))
        return float(1.0 - distinct / n) if n else float("nan")

    buys = scan(PRODUCT_BUY, SKU, TIMESTAMP).collect(engine="streaming")
    adds = scan(ADD_TO_CART, SKU, TIMESTAMP).collect(engine="streaming")
    removes = scan(REMOVE_FROM_CART, SKU, TIMESTAMP).collect(engine="streaming")
    first_add = adds.group_by(CLIENT_ID, SKU).agg(pl.col(TIMESTAMP).min().alias("first_add"))
    after_cart = (buys.join(first_add, on=[CLIENT_ID, SKU], how="left")
                  .select((pl.col("first_add") <= pl.col(TIMESTAMP)).fill_null(False).mean()).item())

    def later(frame: pl.DataFrame) -> float:
        last = frame.group_by(CLIENT_ID, SKU).agg(pl.col(TIMESTAMP).max().alias("last"))
        hit = first_add.join(last, on=[CLIENT_ID, SKU], how="left").select(
            (pl.col("last") >= pl.col("first_add")).fill_null(False).mean()).item()
        return float(hit) if len(first_add) else float("nan")

    times = pl.concat([scan(kind, TIMESTAMP) for kind in EVENT_TYPES]).sort(CLIENT_ID, TIMESTAMP)
    gaps = (times.with_columns(gap=pl.col(TIMESTAMP).diff().dt.total_seconds().over(CLIENT_ID))
            .with_columns(new=pl.col("gap").is_null() | (pl.col("gap") > SESSION_GAP_SECONDS))
            .with_columns(session=pl.col("new").cast(pl.Int64).cum_sum()).collect(engine="streaming"))
    per_session = gaps.group_by("session").len()["len"]
    per_client = gaps.filter(pl.col("new")).group_by(CLIENT_ID).len()["len"]
    inner = gaps.filter(~pl.col("new"))["gap"]
    popularity = (pl.concat([scan(kind, SKU, every_client=True) for kind in SKU_EVENTS])
                  .group_by(SKU).len().sort("len", descending=True).head(1000).collect(engine="streaming"))
    counts = popularity["len"].to_numpy().astype(np.float64)
    slope = (float(np.polyfit(np.log(np.arange(1, len(counts) + 1)), np.log(counts), 1)[0])
             if len(counts) >= 10 else float("nan"))
    q = lambda s, p: float(s.quantile(p, interpolation="nearest")) if len(s) else float("nan")  # noqa: E731
    return {"clients": int(len(sample)), "window_days": window_days,
            "repeat_visit_share": repeat_share(PAGE_VISIT, URL),
            "repeat_buy_share": repeat_share(PRODUCT_BUY, SKU),
            "buy_after_cart_share": float(after_cart) if len(buys) else float("nan"),
            "adds_per_buy": len(adds) / len(buys) if len(buys) else float("nan"),
            "cart_abandoned_share": 1.0 - later(buys) if len(first_add) else float("nan"),
            "cart_removed_share": later(removes),
            "events_per_session_p50": q(per_session, 0.5), "events_per_session_p90": q(per_session, 0.9),
            "session_gap_p50_seconds": q(inner, 0.5),
            "sessions_per_client_p50": q(per_client, 0.5), "sessions_per_client_p90": q(per_client, 0.9),
            "sessions_per_client_mean": float(per_client.mean()) if len(per_client) else float("nan"),
            "popularity_slope": slope}


def format_realism(stats: dict[str, dict[str, float]]) -> str:
    """A side-by-side table: one column per named statistics dict (e.g. {"old": ..., "new": ..., "taobao": ...})."""
    names = list(stats)
    lines = [f"  {'statistic':<26}" + "".join(f" {n:>12}" for n in names)]
    for key in REALISM_KEYS:
        vals = [stats[n].get(key) for n in names]
        lines.append(f"  {key:<26}" + "".join(f" {v:12.3f}" if isinstance(v, float) and v == v else f" {'-':>12}"
                                                for v in vals))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------------
def _rows(client_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row of each id in client_ids (sorted lookup); ids must all be present."""
    order = np.argsort(client_ids)
    return order[np.searchsorted(client_ids[order], ids)]


def rf_features(data_dir: str | Path, client_ids: np.ndarray, cut: datetime) -> tuple[np.ndarray, list[str]]:
    """Recency/frequency counts from input/ for client_ids: float32 (n, f) (NaN = never), feature names."""
    ids = np.asarray(client_ids)
    n = len(client_ids)
    cols, names = [], []
    first = np.full(n, np.nan)
    last_any = np.full(n, np.nan)
    days: list[pl.DataFrame] = []
    for ev in EVENT_TYPES:
        agg = (scan_table(data_dir, ev, "input").select(CLIENT_ID, TIMESTAMP).filter(pl.col(CLIENT_ID).is_in(ids))
               .group_by(CLIENT_ID).agg(pl.len().alias("n"), pl.col(TIMESTAMP).min().alias("first"),
                                        pl.col(TIMESTAMP).max().alias("last"),
                                        pl.col(TIMESTAMP).dt.date().unique().alias("days"))
               .collect(engine="streaming"))
        rows = _rows(client_ids, agg[CLIENT_ID].to_numpy())
        count = np.zeros(n)
        count[rows] = agg["n"].to_numpy()
        since_last = np.full(n, np.nan)
        since_last[rows] = (cut - agg["last"]).dt.total_seconds().to_numpy() / 86_400
        since_first = np.full(n, np.nan)
        since_first[rows] = (cut - agg["first"]).dt.total_seconds().to_numpy() / 86_400
        first = np.fmax(first, since_first)
        last_any = np.fmin(last_any, since_last)
        cols += [count, since_last]
        names += [f"n_{ev}", f"days_since_last_{ev}"]
        days.append(agg.select(CLIENT_ID, "days"))
    active_days = (pl.concat(days).explode("days").unique().group_by(CLIENT_ID).len())
    n_days = np.zeros(n)
    n_days[_rows(client_ids, active_days[CLIENT_ID].to_numpy())] = active_days["len"].to_numpy()
    cols += [last_any, first, n_days]
    names += ["days_since_last_event", "days_since_first_event", "active_days"]
    return np.stack(cols, axis=1).astype(np.float32), names


def interaction_counts(data_dir: str | Path, client_ids: np.ndarray, key: str, entries: np.ndarray,
                       products: pl.DataFrame) -> np.ndarray:
    """Input sku events (buy/add/remove) of each client whose ``key`` (sku, category or price) equals each entry:
    float32 (n, len(entries))."""
    ids = np.asarray(client_ids)
    props = products.select(SKU, CATEGORY, PRICE).lazy()
    ev = pl.concat([scan_table(data_dir, e, "input").select(CLIENT_ID, SKU) for e in SKU_EVENTS])
    counts = (ev.filter(pl.col(CLIENT_ID).is_in(ids)).join(props, on=SKU, how="left")
              .filter(pl.col(key).is_in(np.asarray(entries))).group_by(CLIENT_ID, key).len()
              .collect(engine="streaming"))
    out = np.zeros((len(client_ids), len(entries)), dtype=np.float32)
    if len(counts):
        out[_rows(client_ids, counts[CLIENT_ID].to_numpy()),
            _rows(np.asarray(entries), counts[key].to_numpy())] = counts["len"].to_numpy()
    return out


class Latents:
    """Client latents of truth/clients.parquet for a set of clients."""

    def __init__(self, data_dir: str | Path, client_ids: np.ndarray, end_share: float):
        truth = pl.read_parquet(DataPaths(data_dir).truth / "clients.parquet")
        truth = truth.filter(pl.col(CLIENT_ID).is_in(np.asarray(client_ids)))
        rows = _rows(client_ids, truth[CLIENT_ID].to_numpy())
        n = len(client_ids)
        self.scalars = np.full((n, len(LATENT_SCALARS)), np.nan, dtype=np.float32)
        self.scalars[rows] = truth.select(pl.col(c).cast(pl.Float64) for c in LATENT_SCALARS).to_numpy()
        k = len(truth["taste_start_category"][0]) if len(truth) else 1
        self.cat = np.full((n, 2, k), -1, dtype=np.int64)
        self.w = np.zeros((n, 2, k), dtype=np.float32)
        for j, when in enumerate(("start", "end")):
            self.cat[rows, j] = np.stack(truth[f"taste_{when}_category"].to_list())
            self.w[rows, j] = np.stack(truth[f"taste_{when}_weight"].to_list())
        self.end_share = end_share

    def subset(self, rows: np.ndarray) -> "Latents":
        """The latents of some rows (a shallow copy)."""
        sub = object.__new__(Latents)
        sub.scalars, sub.cat, sub.w, sub.end_share = self.scalars[rows], self.cat[rows], self.w[rows], self.end_share
        return sub

    def taste(self, categories: np.ndarray) -> np.ndarray:
        """Taste weight of each client for each category at the window time: float32 (n, len(categories))."""
        mix = np.array([1 - self.end_share, self.end_share], dtype=np.float32)[None, :, None]
        out = np.zeros((len(self.cat), len(categories)), dtype=np.float32)
        for j, c in enumerate(categories):   # a loop over <= 20 targets, vectorised over clients
            out[:, j] = ((self.cat == c) * self.w * mix).sum(axis=(1, 2))
        return out

    def price_gap(self, buckets: np.ndarray) -> np.ndarray:
        """|price_level - bucket| / price_tol per client and bucket: float32 (n, len(buckets))."""
        level = self.scalars[:, [LATENT_SCALARS.index("price_level")]]
        tol = self.scalars[:, [LATENT_SCALARS.index("price_tol")]]
        return (np.abs(level - np.asarray(buckets, dtype=np.float32)[None, :]) / tol).astype(np.float32)


def target_features(task: str, entries: np.ndarray, data_dir: str | Path, client_ids: np.ndarray,
                    products: pl.DataFrame, latents: Latents | None) -> dict[str, list[np.ndarray]]:
    """Per-target feature columns: {"rf": [(n, k) ...], "latent": [(n, k) ...]}."""
    lookup = products.filter(pl.col(SKU).is_in(np.asarray(entries)))
    if task in (PROPENSITY_SKU, PROPENSITY_NEW_SKU):
        rows = _rows(lookup[SKU].to_numpy(), entries)
        cats, prices = lookup[CATEGORY].to_numpy()[rows], lookup[PRICE].to_numpy()[rows]
    rf: list[np.ndarray] = []
    lat: list[np.ndarray] = []
    if task == PROPENSITY_CATEGORY:
        rf.append(interaction_counts(data_dir, client_ids, CATEGORY, entries, products))
        if latents:
            lat.append(latents.taste(entries))
    elif task == PROPENSITY_PRICE:
        rf.append(interaction_counts(data_dir, client_ids, PRICE, entries, products))
        if latents:
            lat.append(latents.price_gap(entries))
    else:
        if task == PROPENSITY_SKU:
            rf.append(interaction_counts(data_dir, client_ids, SKU, entries, products))
        uniq, inv = np.unique(cats, return_inverse=True)
        rf.append(interaction_counts(data_dir, client_ids, CATEGORY, uniq, products)[:, inv])
        if latents:
            lat += [latents.taste(uniq)[:, inv], latents.price_gap(prices)]
    return {"rf": rf, "latent": lat}


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------
def fit_auroc(x: np.ndarray, y_train: np.ndarray, y_valid: np.ndarray, seed: int, threads: int) -> float:
    """AUROC on validation labels of a LightGBM fitted on train labels of the same rows."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score
    model = lgb.LGBMClassifier(n_estimators=100, learning_rate=0.06, num_leaves=15, min_child_samples=40,
                               max_bin=63, reg_lambda=1.0, random_state=seed,
                               n_jobs=threads, deterministic=True, force_row_wise=True, verbose=-1)
    model.fit(x, y_train)
    return float(roc_auc_score(y_valid, model.predict_proba(x)[:, 1]))


def _usable(y_train: np.ndarray, y_valid: np.ndarray) -> bool:
    return (MIN_POSITIVES <= y_train.sum() <= len(y_train) - MIN_POSITIVES
            and 0 < y_valid.sum() < len(y_valid))


def task_aurocs(task: str, d, data_dir: str | Path, base: dict[str, np.ndarray], products: pl.DataFrame,
                latents: Latents | None, n_targets: int, seed: int, threads: int) -> dict:
    """AUROC per feature set for one task (propensity: macro over the most popular usable targets)."""
    sets = [s for s in FEATURE_SETS if latents is not None or s == "rf"]
    if d.y_train.ndim == 1:
        if not _usable(d.y_train, d.y_valid):
            return {"skipped": "one class only"}
        return {s: fit_auroc(base[s], d.y_train, d.y_valid, seed, threads) for s in sets}
    order = np.argsort(-d.popularity, kind="stable")
    chosen = [j for j in order if _usable(d.y_train[:, j], d.y_valid[:, j])][:n_targets]
    if not chosen:
        return {"skipped": "no target with enough positives", "targets_evaluated": 0}
    entries = d.entries[chosen]
    extra = target_features(task, entries, data_dir, d.client_ids, products, latents)
    scores: dict[str, list[float]] = {s: [] for s in sets}
    for i, j in enumerate(chosen):
        per = {"rf": [f[:, [i]] for f in extra["rf"]], "latent": [f[:, [i]] for f in extra["latent"]]}
        for s in sets:
            parts = [base[s]] + sum((per[p] for p in s.split("+")), [])
            scores[s].append(fit_auroc(np.hstack(parts), d.y_train[:, j], d.y_valid[:, j], seed, threads))
    return {**{s: float(np.mean(v)) for s, v in scores.items()}, "targets_evaluated": len(chosen),
            "targets_available": int(d.y_train.shape[1])}


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------
def build_report(data_dir: str | Path, seed: int = 0, n_targets: int = 20, max_clients: int = 50_000,
                 threads: int = 1, progress: bool = True) -> dict:
    """Everything the CLI prints, as a JSON-ready dict."""
    from competition.split import read_split_times
    from competition.targets import WINDOWS, TaskData, read_window, task_dataset
    from competition.progress import progress as progress_of

    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    paths = DataPaths(data_dir)
    relevant = read_relevant_clients(data_dir)
    times = read_split_times(data_dir)
    windows = {w: read_window(data_dir, w) for w in WINDOWS}
    rng = np.random.default_rng(seed)
    sample = relevant if len(relevant) <= max_clients else np.sort(rng.choice(relevant, max_clients, replace=False))
    data = {task: task_dataset(data_dir, task, windows=windows) for task in TASKS}
    report: dict = {"data_dir": str(data_dir), "seed": seed, "split": times.to_json(),
                    "events": event_statistics(data_dir, relevant), "labels": label_statistics(data),
                    "realism": {"all": realism_statistics(data_dir, max_clients=max_clients, seed=seed),
                                "last_9_days": realism_statistics(data_dir, max_clients=max_clients, seed=seed,
                                                                  window_days=9)}}
    has_truth = (paths.truth / "clients.parquet").is_file()
    products = read_products(data_dir, check=False)
    end_share = 1.0
    if has_truth:
        spec = json.loads((paths.truth / "world.json").read_text())["spec"]
        start, days = datetime.fromisoformat(spec["start"]), spec["days"]
        window_mid = times.validation_target_start
        end_share = min(max((window_mid - start).total_seconds() / 86_400 / days, 0.0), 1.0)
    # Client features once for the sample; each task takes its rows (churn: the active ones).
    rf, _ = rf_features(data_dir, sample, times.train_target_start)
    latents = Latents(data_dir, sample, end_share) if has_truth else None
    aurocs = {}
    for task in progress_of(TASKS, desc="report: tasks", enabled=progress):
        d = data[task]
        keep = np.isin(d.client_ids, sample)
        d = TaskData(task, d.client_ids[keep], d.y_train[keep], d.y_valid[keep], d.entries, d.popularity)
        rows = _rows(sample, d.client_ids)
        base = {"rf": rf[rows]}
        task_latents = None
        if latents is not None:
            task_latents = latents.subset(rows)
            base["latent"] = task_latents.scalars
            base["latent+rf"] = np.hstack([task_latents.scalars, rf[rows]])
        aurocs[task] = task_aurocs(task, d, data_dir, base, products, task_latents, n_targets, seed, threads)
    report["auroc"] = aurocs
    report["protocol"] = ("features from the input period; LightGBM fitted on train-window labels and scored "
                          "(AUROC) on validation-window labels of the same clients; propensity tasks: macro "
                          f"AUROC over the {n_targets} most popular targets with >= {MIN_POSITIVES} positives "
                          f"in the train window and >= 1 in the validation window; clients: "
                          f"{len(sample):,} relevant (churn: the active ones among them)")
    report["seconds"] = time.perf_counter() - t0
    return report


def format_report(report: dict) -> str:
    ev = report["events"]
    lines = [f"world {report['data_dir']}: {ev['total']:,} events, {ev['clients_with_events']:,} clients with "
             f"events ({ev['relevant_with_events']:,} relevant)", "event mix:"]
    lines += [f"  {k:<17} {ev['counts'][k]:>13,}  {ev['mix'][k]:6.2%}" for k in EVENT_TYPES]
    for who, q in ev["events_per_client"].items():
        lines.append(f"events per client ({who}): " + "  ".join(f"{k}={v:,.0f}" for k, v in q.items()))
    if "realism" in report:
        lines.append("realism (relevant clients; Taobao UserBehavior sample: 9 days):")
        lines.append(format_realism({**report["realism"], "taobao": TAOBAO}))
    lines.append("labels (train window / validation window):")
    for task, s in report["labels"].items():
        if "positive_rate_train" in s:
            lines.append(f"  {task:<20} {s['clients']:>9,} clients  positive (no purchase) "
                         f"{s['positive_rate_train']:.3f} / {s['positive_rate_valid']:.3f}")
        else:
            lines.append(f"  {task:<20} {s['clients']:>9,} clients  {s['targets']:>3} targets  any positive "
                         f"{s['any_positive_train']:.4f} / {s['any_positive_valid']:.4f}  mean per target "
                         f"{s['mean_rate_per_target_train']:.5f} / {s['mean_rate_per_target_valid']:.5f}")
    lines.append("AUROC on validation-window labels (LightGBM fitted on train-window labels, same clients):")
    lines.append(f"  {'task':<20} {'rf':>7} {'latent':>7} {'lat+rf':>7}  note")
    for task, a in report["auroc"].items():
        if "skipped" in a:
            lines.append(f"  {task:<20} skipped: {a['skipped']}")
            continue
        vals = "".join(f" {a[s]:7.4f}" if s in a else f" {'-':>7}" for s in FEATURE_SETS)
        note = (f"macro over {a['targets_evaluated']} most popular targets (of {a['targets_available']})"
                if "targets_evaluated" in a else "binary")
        lines.append(f"  {task:<20}{vals}  {note}")
    lines.append(f"protocol: {report['protocol']}")
    lines.append(f"report took {report['seconds']:.1f}s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m competition.synth_report", formatter_class=HelpFormatter,
        description="Label rates, event statistics and LightGBM AUROC (true latents vs recency/frequency counts) "
                    "per task for a split world, to show the tasks are learnable and where the ceiling is.")
    parser.add_argument("--data-dir", required=True, type=Path, help="a world written by competition.synth (or "
                        "any split data directory; without truth/ only the rf features are scored)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the client sample and LightGBM (default 0)")
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    parser.add_argument("--targets", type=int, default=20, help="propensity targets scored per task (default 20)")
    parser.add_argument("--max-clients", type=int, default=50_000, help="relevant clients sampled for the models "
                        "and the realism statistics (default 50000)")
    parser.add_argument("--threads", type=int, default=1, help="LightGBM threads (default 1: many small fits; "
                        "more threads only pay on an idle machine)")
    parser.add_argument("--realism", action="store_true", help="print only the realism statistics (any data dir "
                        "with input/relevant_clients.npy: repeat visits and buys, carts, sessions, popularity "
                        "slope), beside the Taobao figures; no models")
    parser.add_argument("--layout", choices=("raw", "input"), default="raw", help="event files of --realism: the "
                        "released ones (raw) or the split's input period")
    parser.add_argument("--window-days", type=float, default=9.0, help="--realism also over the last this many "
                        "days (the Taobao sample spans 9; repeats grow with the span)")
    add_no_progress(parser, deprecated=("--quiet",))
    args = parser.parse_args(argv)
    from competition.load import DataError
    if args.realism:
        try:
            stats = {"all": realism_statistics(args.data_dir, args.layout, args.max_clients, args.seed),
                     f"last {args.window_days:g}d": realism_statistics(args.data_dir, args.layout, args.max_clients,
                                                                      args.seed, window_days=args.window_days)}
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"realism of {args.data_dir} ({stats['all']['clients']:,} relevant clients, {args.layout} events):")
        print(format_realism({**stats, "taobao": TAOBAO}))
        if args.out:
            with atomic_path(args.out) as tmp:
                tmp.write_text(json.dumps(stats, indent=2))
        return 0
    try:
        report = build_report(args.data_dir, args.seed, args.targets, args.max_clients, args.threads,
                              progress=not args.no_progress)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
