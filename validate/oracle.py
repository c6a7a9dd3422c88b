"""The oracle block of a synthetic world: what a perfect embedder could know, built from the world's true latents.

``python -m validate.oracle --data-dir W --out E [--seed S]`` writes a block (``embeddings.npy``,
``client_ids.npy``, ``meta.json``, the layout of every block, see :mod:`embedders.base`) for the relevant clients of
a world written by :mod:`competition.synth`, from ``W/truth/`` (docs/design.md, "competition"): it is a ceiling for
reports ("what share of the gap between stats alone and the oracle does a block close"), for synthetic worlds only,
and never a search input: its meta carries ``"oracle": true`` and ``"embedder": "oracle"``, and
:func:`is_oracle` tells a search to refuse it.

Columns (float32, each standardised to mean 0 / sd 1 over the relevant clients; constant columns are 0):

- every scalar latent of ``truth/clients.parquet`` (activity, session length, join and death day, churn hazard,
  purchase habits, cart / search multipliers, price level and tolerance, style strength, buy-now share,
  replenishment, novelty, and any latent a later world adds), positive heavy-tailed ones as logs; every other
  fixed-size list latent (the client's style vector) one column per entry;
- per target window (train, validation): the alive share of the window, the share inside the purchasing phase and
  the expected number of purchase sessions in it;
- per target entry of each propensity task (``target/*.npy``): the log of the expected purchases of that entry in
  the validation window under the world's choice model (:func:`competition.synth.choice_cost`): the client's
  category taste at that time (mixed with the exploration share), within the category the product's popularity
  x ``exp(-cost)`` over products released by then, plus the share of recent releases the client adopts; in a
  world with new arrivals (``synth.WorldSpec.new_arrivals``) a share ``arrival_share`` of it goes to the recent
  releases of every category weighted by ``synth.arrival_weight``; price buckets sum their products.

The window and target lists come from the split (``target/``); without ``truth/`` or the target lists the command
stops with one line saying so.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from competition import synth
from competition.cli import HelpFormatter, add_no_progress
from competition.load import DataError, read_relevant_clients
from competition.schema import (BLOCK_META_FILE, CLIENT_ID, PROPENSITY_CATEGORY, PROPENSITY_NEW_SKU, PROPENSITY_PRICE,
                                PROPENSITY_SKU, SKU, DataPaths)
from competition.split import read_split_times
from competition.targets import read_target_lists
from embedders.base import Block, write_block

NAME = "oracle"
#: The knowable oracle's block name (:func:`oracle_block` with ``knowable``), its futures per client and the clients
#: drawn at a time (20,000 x 256 x 3 float64: 123 MB).
KNOWABLE, FUTURES, FUTURE_CHUNK = "knowable_oracle", 256, 20_000
#: The days a knowable oracle censors at the cut: what has happened by then is known, the rest is drawn.
FUTURE_DAYS = ("death_day", "buy_start_day", "buy_stop_day")
WINDOW_DAYS = 14.0
#: Client-chunk budget: clients x products entries per dense matrix.
CHUNK_ENTRIES = 20_000_000
#: Columns of truth/clients.parquet that are not latents.
NOT_LATENT = (CLIENT_ID, "relevant")
TASTE_PREFIX = "taste_"


class OracleError(ValueError):
    """The data dir is not a split synthetic world (no truth/, no target lists)."""


def is_oracle(block_or_meta: Block | dict | str | Path) -> bool:
    """True when a block (a :class:`~embedders.base.Block`, its meta dict, or a block folder) is an oracle block:
    meta ``"oracle": true`` or ``"embedder": "oracle"``. A search must refuse such a block."""
    if isinstance(block_or_meta, Block):
        meta = block_or_meta.meta
    elif isinstance(block_or_meta, dict):
        meta = block_or_meta
    else:
        path = Path(block_or_meta)
        path = path / BLOCK_META_FILE if path.is_dir() else path
        try:
            meta = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            meta = {}
    return isinstance(meta, dict) and (meta.get("oracle") is True or meta.get("embedder") == NAME)


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------
def _truth(data_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    truth = DataPaths(data_dir).truth
    files = [truth / "clients.parquet", truth / "products.parquet", truth / "world.json"]
    missing = [p for p in files if not p.is_file()]
    if missing:
        raise OracleError(f"{missing[0]}: missing; the oracle needs a synthetic world's truth/ (written by "
                          f"python -m competition.synth), it cannot be built for a real data dir")
    return pl.read_parquet(files[0]), pl.read_parquet(files[1]), json.loads(files[2].read_text())["spec"]


def _aligned(truth: pl.DataFrame, client_ids: np.ndarray, path: Path) -> pl.DataFrame:
    """truth rows in the order of client_ids; every client must be present."""
    order = pl.DataFrame({CLIENT_ID: client_ids}).with_row_index("_row")
    joined = order.join(truth, on=CLIENT_ID, how="left").sort("_row")
    absent = joined.filter(pl.col(NOT_LATENT[1]).is_null()).height if NOT_LATENT[1] in truth.columns else 0
    if absent:
        raise OracleError(f"{path}: {absent} relevant client(s) have no latents")
    return joined.drop("_row")


# ---------------------------------------------------------------------------------------------------------------
# Columns
# ---------------------------------------------------------------------------------------------------------------
def _scalar_columns(clients: pl.DataFrame) -> tuple[list[np.ndarray], list[str]]:
    """Every scalar latent (log when positive and heavy-tailed) and every non-taste fixed-size list latent."""
    cols, names = [], []
    for name, dtype in clients.schema.items():
        if name in NOT_LATENT or name.startswith(TASTE_PREFIX):
            continue
        if isinstance(dtype, (pl.Array, pl.List)):
            values = np.stack(clients[name].to_list()).astype(np.float64)
            for j in range(values.shape[1]):
                cols.append(values[:, j])
                names.append(f"{name}_{j}")
            continue
        x = clients[name].cast(pl.Float64).to_numpy()
        lo, hi = np.quantile(x, [0.01, 0.99]) if len(x) else (0.0, 0.0)
        if len(x) and x.min() > 0 and hi > 20 * lo:
            x, name = np.log(x), f"log_{name}"
        cols.append(x)
        names.append(name)
    return cols, names


def _window_columns(clients: pl.DataFrame, windows: dict[str, float], futures: int = 0, cut: float = 0.0,
                    horizon: float = np.inf, seed: int = 0, chunk: int | None = None
                    ) -> tuple[list[np.ndarray], list[str]]:
    """Alive share, purchasing-phase share and expected purchase sessions per target window (start days).

    futures = 0: from the realised alive interval and purchasing phase. futures = K > 0 (the knowable oracle): the
    mean over K futures drawn from the generator's laws given the state at ``cut`` (:func:`_future_draws`)."""
    if futures and chunk is None and clients.height > FUTURE_CHUNK:  # the draws are clients x futures x 3 float64
        parts = [_window_columns(clients.slice(lo, FUTURE_CHUNK), windows, futures, cut, horizon, seed, i)
                 for i, lo in enumerate(range(0, clients.height, FUTURE_CHUNK))]
        return [np.concatenate(c) for c in zip(*(p[0] for p in parts))], parts[0][1]
    join = clients["join_day"].to_numpy()
    interval = clients["buy_interval"].to_numpy()
    if futures:
        death, b0, stop = _future_draws(clients, cut, horizon, futures, seed, chunk)
    else:
        death, b0, stop = (clients[c].to_numpy()[:, None] for c in FUTURE_DAYS)
    b1 = np.minimum(death, stop)
    cols, names = [], []
    for w, a in windows.items():
        b = a + WINDOW_DAYS

        def overlap(lo, hi):
            return np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None).mean(axis=1)

        cols += [overlap(join[:, None], death) / WINDOW_DAYS, overlap(b0, b1) / WINDOW_DAYS,
                 np.log(overlap(b0, b1) / interval + 1e-3)]
        names += [f"{w}_alive_share", f"{w}_buying_share", f"{w}_log_purchase_sessions"]
    return cols, names


def _future_draws(clients: pl.DataFrame, cut: float, horizon: float, k: int, seed: int, chunk: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``k`` futures per client (float64 ``(n, k)`` each: death, purchasing start, purchasing stop days) drawn from
    the generator's laws (:func:`competition.synth` clients: death = join + Exp(hazard) capped at the world's end,
    start = join or join + Exp(mean 80 days), stop = start + Exp(mean 250 days)) given what has happened by ``cut``:
    a day at or before the cut is kept, a later one is redrawn after the cut (every law is exponential, so its
    remainder past the cut is the same law again)."""
    rng = np.random.default_rng([seed, 2718] + ([] if chunk is None else [chunk]))  # chunk: the clients' slice
    n = clients.height
    death, start, stop = (clients[c].to_numpy()[:, None] for c in FUTURE_DAYS)
    hazard = clients["hazard"].to_numpy()[:, None]
    d = np.where(death <= cut, death, np.minimum(cut + rng.exponential(1.0, (n, k)) / hazard, horizon))
    s = np.where(start <= cut, start, cut + rng.exponential(synth.START_DELAY_DAYS, (n, k)))
    e = np.where(stop <= cut, stop, np.maximum(s, cut) + rng.exponential(synth.PHASE_DAYS, (n, k)))
    return d, np.broadcast_to(s, (n, k)), e


def _censored(clients: pl.DataFrame, cut: float) -> pl.DataFrame:
    """``clients`` with each :data:`FUTURE_DAYS` latent cut at ``cut`` (``min(day, cut)``) beside a flag column
    ``<day>_passed`` (1: it happened by the cut): what an observer at the cut could know of it."""
    return clients.with_columns(*(pl.min_horizontal(pl.col(c), pl.lit(cut)).alias(c) for c in FUTURE_DAYS),
                                *((pl.col(c) <= cut).cast(pl.Float64).alias(f"{c}_passed") for c in FUTURE_DAYS))


class ChoiceModel:
    """P(a purchase of the client goes to each product) at one time, from the latents (see the module doc)."""

    def __init__(self, products: pl.DataFrame, spec: dict, day: float):
        self.n_cat = int(products["category_index"].max()) + 1
        self.cat = products["category_index"].to_numpy().astype(np.int64)
        released = ~(products["release_day"].fill_nan(None).fill_null(-np.inf).to_numpy() > day)
        rank = products["rank"].to_numpy().astype(np.float64)
        self.log_pop = np.where(released, -synth.PRODUCT_ZIPF * np.log(rank + 1.0), -np.inf)
        release = products["release_day"].fill_nan(None).fill_null(-np.inf).to_numpy()
        self.recent = released & (day - release < synth.FRESH_DAYS)
        self.price = products["price"].to_numpy().astype(np.float32)
        self.style = np.stack(products["style"].to_list()).astype(np.float32)
        cat_rank = np.arange(self.n_cat, dtype=np.float64)
        explore = (cat_rank + 1.0) ** -0.9
        self.explore = (explore / explore.sum()).astype(np.float32)
        self.share = min(max(day / spec["days"], 0.0), 1.0)
        self.new_arrivals = float(spec.get("new_arrivals", 0.0))
        self.rank = rank
        ids, first = np.unique(products["category"].to_numpy(), return_index=True)
        self.cat_ids, self.cat_index = ids, self.cat[first]     # category id -> index, sorted by id

    def taste(self, clients: pl.DataFrame) -> np.ndarray:
        """Category taste at the model's time, float32 (n, n_categories); rows sum to 1."""
        n = clients.height
        out = np.zeros((n, self.n_cat), dtype=np.float32)
        for when, weight in (("start", 1.0 - self.share), ("end", self.share)):
            ids = np.stack(clients[f"taste_{when}_category"].to_list())
            w = np.stack(clients[f"taste_{when}_weight"].to_list()).astype(np.float32) * weight
            pos = np.minimum(np.searchsorted(self.cat_ids, ids), len(self.cat_ids) - 1)
            ok = (ids >= 0) & (self.cat_ids[pos] == ids)
            rows = np.broadcast_to(np.arange(n)[:, None], ids.shape)
            np.add.at(out, (rows[ok], self.cat_index[pos[ok]]), w[ok])
        return out

    def product_probability(self, clients: pl.DataFrame) -> np.ndarray:
        """float32 (n, n_products): the share of the client's purchases that go to each product."""
        level = clients["price_level"].to_numpy().astype(np.float32)[:, None]
        tol = clients["price_tol"].to_numpy().astype(np.float32)[:, None]
        strength = clients["style_strength"].to_numpy().astype(np.float32)[:, None]
        style = np.stack(clients["style"].to_list()).astype(np.float32)
        match = style @ self.style.T
        logit = self.log_pop[None, :] - synth.choice_cost(level, tol, strength, match, self.price[None, :])
        # softmax within each category (products sorted by category: contiguous runs)
        order = np.argsort(self.cat, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(self.cat[order]) != 0])
        lg = logit[:, order]
        mx = np.maximum.reduceat(np.where(np.isfinite(lg), lg, -1e30), starts, axis=1)
        run = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(order)]))
        e = np.exp(lg - mx[:, run])
        within = e / np.add.reduceat(e, starts, axis=1)[:, run]
        within_all = np.empty_like(within)
        within_all[:, order] = within
        fresh = synth.FRESH_BUY_SHARE * clients["novelty"].to_numpy()[:, None] * synth.adoption_probability(
            strength, match) * self.recent[None, :]
        p_cat = (1 - synth.EXPLORE_PURCHASE) * self.taste(clients) + synth.EXPLORE_PURCHASE * self.explore[None, :]
        p = p_cat[:, self.cat] * (within_all + fresh)
        if self.new_arrivals > 0 and self.recent.any():
            # New-arrivals sessions: the recent releases of every category, weighted by synth.arrival_weight.
            a = synth.arrival_share(self.new_arrivals, clients["novelty"].to_numpy())[:, None]
            recent = np.flatnonzero(self.recent)
            cost = synth.choice_cost(level, tol, strength, match[:, recent], self.price[None, recent])
            w = synth.arrival_weight(self.rank[None, recent], cost.astype(np.float64))
            p *= 1.0 - a
            p[:, recent] += a * w / w.sum(axis=1, keepdims=True)
        return p.astype(np.float32)


def oracle_block(data_dir: str | Path, progress: bool = True, seed: int = 0,
                 client_ids: np.ndarray | None = None, knowable: bool = False) -> Block:
    """The oracle block for the relevant clients of a split synthetic world (see the module doc).

    knowable: what could be known at the input period's end (``train_target_start``) and no later: the
    alive-interval and purchasing-phase days after it are censored (:func:`_censored`) and the window columns are
    means over :data:`FUTURES` futures drawn from the generator's laws given the state at the cut
    (:func:`_future_draws`); everything else (rates, tastes, the taste drift, the choice model) is the same.

    client_ids: only these relevant clients (sorted on output; standardised over them). The expected purchases
    cost clients x products, so a report row scores its sample this way: on all 1M relevant clients of a
    1.26M-product world that product would not fit in any time budget."""
    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    clients_all, products, spec = _truth(data_dir)
    relevant = read_relevant_clients(data_dir)
    if client_ids is not None:
        wanted = np.unique(np.asarray(client_ids, dtype=np.int64))
        outside = np.setdiff1d(wanted, relevant)
        if len(outside):
            raise OracleError(f"{DataPaths(data_dir).relevant_clients}: {len(outside)} of the requested client(s) "
                              f"are not relevant clients (first {int(outside[0])})")
        relevant = wanted
    clients = _aligned(clients_all, relevant, DataPaths(data_dir).truth / "clients.parquet")
    lists = read_target_lists(data_dir)
    missing = [t for t in (PROPENSITY_CATEGORY, PROPENSITY_SKU, PROPENSITY_NEW_SKU, PROPENSITY_PRICE)
               if t not in lists]
    if missing:
        raise OracleError(f"{DataPaths(data_dir).target_list(missing[0])}: missing; the oracle needs the split's "
                          f"target lists (python -m competition.synth without --no-split)")
    times = read_split_times(data_dir)
    start = datetime.fromisoformat(spec["start"])
    days = {w: (t - start).total_seconds() / 86_400 for w, t in
            (("train", times.train_target_start), ("validation", times.validation_target_start))}
    cut = (times.train_target_start - start).total_seconds() / 86_400
    cols, names = _scalar_columns(_censored(clients, cut) if knowable else clients)
    c, n = _window_columns(clients, days, FUTURES if knowable else 0, cut, float(spec["days"]), seed)
    cols, names = cols + c, names + n
    model = ChoiceModel(products, spec, days["validation"] + WINDOW_DAYS / 2)
    sku_row = {int(s): i for i, s in enumerate(products[SKU].to_numpy())}
    rate = np.exp(cols[names.index("validation_log_purchase_sessions")])[:, None] * \
        clients["items_per_buy"].to_numpy()[:, None]
    targets = {}
    for task in (PROPENSITY_CATEGORY, PROPENSITY_SKU, PROPENSITY_NEW_SKU, PROPENSITY_PRICE):
        entries = lists[task][0]
        targets[task] = np.zeros((len(relevant), len(entries)), dtype=np.float32)
    cat_entries = lists[PROPENSITY_CATEGORY][0]
    cat_of_id = {int(c): int(i) for c, i in zip(products["category"].to_numpy(), model.cat)}
    cat_cols = np.array([cat_of_id.get(int(c), -1) for c in cat_entries])
    sku_cols = {t: np.array([sku_row.get(int(s), -1) for s in lists[t][0]]) for t in (PROPENSITY_SKU,
                                                                                   PROPENSITY_NEW_SKU)}
    buckets = lists[PROPENSITY_PRICE][0]
    price_onehot = (products["price"].to_numpy()[:, None] == buckets[None, :]).astype(np.float32)
    step = max(1, CHUNK_ENTRIES // max(products.height, 1))
    from competition.progress import progress as progress_of
    chunks = progress_of(range(0, len(relevant), step), desc="oracle: clients", unit="chunk", enabled=progress)
    for lo in chunks:
        part = clients.slice(lo, step)
        p = model.product_probability(part)
        p_cat = np.zeros((part.height, model.n_cat), dtype=np.float32)
        np.add.at(p_cat.T, model.cat, p.T)
        sl = slice(lo, lo + part.height)
        targets[PROPENSITY_CATEGORY][sl] = np.where(cat_cols >= 0, p_cat[:, np.maximum(cat_cols, 0)], 0.0)
        for t, idx in sku_cols.items():
            targets[t][sl] = np.where(idx >= 0, p[:, np.maximum(idx, 0)], 0.0)
        targets[PROPENSITY_PRICE][sl] = p @ price_onehot
    for task, value in targets.items():
        entries = lists[task][0]
        expected = np.log(rate * value + 1e-6)
        cols += list(expected.T)
        names += [f"{task}_{int(e)}" for e in entries]
    X = np.stack(cols, axis=1)
    mean, sd = X.mean(axis=0), X.std(axis=0)
    X = np.where(sd > 0, (X - mean) / np.where(sd > 0, sd, 1.0), 0.0).astype(np.float32)
    meta: dict[str, Any] = {"name": KNOWABLE if knowable else NAME, "embedder": NAME, "oracle": True,
                            "knowable": knowable, "data_dir": str(data_dir),
                            "seed": seed, "columns": names, "seconds": time.perf_counter() - t0,
                            "note": "true latents of a synthetic world (truth/): a ceiling for reports, never a "
                                    "search input"}
    return Block(relevant, X, meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m validate.oracle", formatter_class=HelpFormatter,
        description="Write the oracle block of a split synthetic world (its true latents from truth/, "
                    "standardised, float32) for the relevant clients: a ceiling for reports, never a search input.")
    parser.add_argument("--data-dir", required=True, type=Path, help="a split world written by competition.synth")
    parser.add_argument("--out", required=True, type=Path, help="block folder to write (replaced atomically)")
    parser.add_argument("--seed", type=int, default=0, help="the knowable oracle's future draws (the oracle itself is "
                                                                "deterministic; recorded in meta.json)")
    parser.add_argument("--knowable", action="store_true",
                        help="the knowable oracle: what could be known at the input period's end (alive interval and "
                             "purchasing phase censored there, the target windows' columns averaged over futures "
                             "drawn from the generator's laws)")
    add_no_progress(parser)
    args = parser.parse_args(argv)
    try:
        block = oracle_block(args.data_dir, progress=not args.no_progress, seed=args.seed, knowable=args.knowable)
    except (OracleError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_block(block, args.out)
    print(f"{block.meta['name']}: wrote {args.out} ({len(block.client_ids):,} clients x {block.dim} columns, "
          f"{block.meta['seconds']:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
