"""A fast LightGBM probe: a proxy of the MLP replica for quick iteration, not the organisers' number.

One binary LightGBM model per output, trained on train-window labels of a fit fold of the rows with early stopping
on a held-out fold (also train-window labels), then scored like the organisers score: on validation-window labels
of all rows. Propensity tasks use only their ``top_k`` (20) most popular targets, so their AUROC / diversity /
novelty are over those outputs only: a proxy, labelled ``"proxy": true`` in the figures. Outputs with too few
fit-fold positives share one pooled model instead (see :class:`LGBMProbe`).
The binned feature matrix is built once per task and reused for every output (only the labels change).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np

from competition.schema import CHURN_TASKS
from validate.cpu import free_cores
from validate.metrics import task_score


#: Bound on the proxy's logits (float32 sigmoid(-80) ~ 1.8e-35, a normal number; it underflows to 0 near -88.7).
LOGIT_LIMIT = 80.0


@dataclass
class LGBMProbe:
    """LightGBM per output. Rows are clients; ``seed`` decides the held-out fold and LightGBM's sampling.

    top_k: outputs kept for propensity tasks (most popular first). holdout: share of rows for early stopping.
    pooled_min_positives: a propensity output with fewer positives than this in the fit fold gets no model of its
    own but the logits of one pooled model of "bought any of the task's rare targets", plus the output's log base
    rate. A model per rare output learns next to nothing. On the 20k world, 9 blocks x 3 probe seeds, Spearman with
    the replica's ranking: propensity_sku 0.44 without pooling, 0.81 with it (category and price unchanged);
    propensity_new_sku -0.33 without, and with it -0.07 / 0.57 / no block told apart: the train window has almost
    no buyers of new skus, so the new-sku proxy stays unreliable either way. 0 turns pooling off.
    The remaining fields are LightGBM parameters, tuned for speed (a few seconds per task on 20k x 512).
    """

    top_k: int = 20
    holdout: float = 0.2
    seed: int = 0
    num_leaves: int = 15
    learning_rate: float = 0.15
    max_rounds: int = 100
    early_stopping: int = 10
    max_bin: int = 31
    feature_fraction: float = 0.2
    bagging_fraction: float = 0.5
    min_data_in_leaf: int = 20
    n_jobs: int = 0  # 0 = one per free core (see threads)
    pooled_min_positives: int = 20

    def threads(self) -> int:
        """``n_jobs``, or one thread per free core (:func:`validate.cpu.free_cores`): on a busy machine OpenMP
        threads busy-wait and more threads are slower (measured on 20k x 128 with other jobs running: 2 threads
        183 s, 1 thread 24 s for six tasks)."""
        return self.n_jobs or free_cores()

    def params(self) -> dict:
        return dict(objective="binary", metric="auc", num_leaves=self.num_leaves, learning_rate=self.learning_rate,
                    max_bin=self.max_bin, feature_fraction=self.feature_fraction,
                    bagging_fraction=self.bagging_fraction, bagging_freq=1, min_data_in_leaf=self.min_data_in_leaf,
                    seed=self.seed, deterministic=True, force_col_wise=True, verbose=-1,
                    num_threads=self.threads())

    def outputs(self, task: str, popularity: np.ndarray | None) -> np.ndarray | None:
        """Column indices scored for ``task`` (None = the single churn-type output)."""
        if task in CHURN_TASKS:
            return None
        return np.argsort(-np.asarray(popularity, dtype=np.float64), kind="stable")[:self.top_k]

    def score(self, task: str, X: np.ndarray, y_train: np.ndarray, y_valid: np.ndarray,
              popularity: np.ndarray | None = None) -> dict:
        """Figures of ``task``: ``{"score", "auroc", ..., "proxy", "outputs", "rounds", "seconds"}``; ``rounds`` per
        output: boosting rounds kept, 0 for a constant, -1 for the pooled model.

        X: float32 ``(n, D)``; y_train / y_valid: ``(n,)`` or ``(n, k)`` 0/1; popularity ``(k,)`` for propensity.
        """
        t0 = time.perf_counter()
        cols, logits, rounds = self.fit_predict(task, X, y_train, popularity)
        # Boosted raw scores can fall below -88, where a float32 sigmoid is 0: a row of such outputs makes the
        # diversity's row normalisation 0 / 0 and the task's score NaN (seen on a 1M-client world, new-sku). Within
        # +-LOGIT_LIMIT the sigmoid stays a positive normal float32 and every ranking of the outputs is kept.
        logits = np.clip(logits, -LOGIT_LIMIT, LOGIT_LIMIT)
        y_va = np.asarray(y_valid, dtype=np.float32).reshape(len(X), -1)
        if cols is not None:
            y_va = y_va[:, cols]
        pop = None if cols is None else np.asarray(popularity, dtype=np.float64)[cols]
        figures = task_score(task, y_va, logits, pop)
        figures.update(proxy=cols is not None, outputs=int(logits.shape[1]), rounds=rounds,
                       seconds=time.perf_counter() - t0)
        return figures

    def fit_predict(self, task: str, X: np.ndarray, y_train: np.ndarray,
                    popularity: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray, list[int]]:
        """Fit on train-window labels, predict every row: ``(cols, logits float32 (n, len(cols) or 1), rounds)``."""
        cols = self.outputs(task, popularity)
        y_tr = np.asarray(y_train, dtype=np.float32).reshape(len(X), -1)
        rng = np.random.default_rng(self.seed)
        held = np.zeros(len(X), dtype=bool)
        held[rng.permutation(len(X))[:int(round(self.holdout * len(X)))]] = True
        # the pooled label: bought any of the task's rare targets (any target at all when none is rare)
        rare = y_tr[~held].sum(axis=0) < self.pooled_min_positives
        y_any = (y_tr[:, rare] if y_tr[:, rare].any() else y_tr).max(axis=1)
        if cols is not None:
            y_tr = y_tr[:, cols]
        params = self.params()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Overriding the parameters from Reference Dataset")
            fit = lgb.Dataset(X[~held], label=y_tr[~held, 0], params=params, free_raw_data=False).construct()
            val = lgb.Dataset(X[held], label=y_tr[held, 0], reference=fit).construct()

            def fit_one(y: np.ndarray) -> tuple[np.ndarray, int]:
                """Logits of all rows from a model of ``y`` (a constant 0 when the fit fold has one class)."""
                y_fit, y_held = y[~held], y[held]
                if y_fit.min() == y_fit.max():
                    return np.zeros(len(X), dtype=np.float32), 0
                fit.set_label(y_fit)
                val.set_label(y_held)
                stop = [lgb.early_stopping(self.early_stopping, verbose=False)] if 0 < y_held.sum() < len(y_held) \
                    else []
                booster = lgb.train(params, fit, num_boost_round=self.max_rounds, valid_sets=[val] if stop else None,
                                    callbacks=stop)
                best = booster.best_iteration or booster.current_iteration()
                return booster.predict(X, raw_score=True, num_iteration=best), int(best)

            logits = np.zeros(y_tr.shape, dtype=np.float32)
            rounds = []
            positives = y_tr[~held].sum(axis=0)
            pooled = None
            for j in range(y_tr.shape[1]):
                if cols is not None and positives[j] < self.pooled_min_positives:
                    # Too rare to learn alone: rank clients by their propensity to buy any rare target, shifted
                    # by the output's smoothed base rate (so the top-k across outputs still favours common ones).
                    if pooled is None:
                        pooled = fit_one(y_any)[0]
                    prior = np.log((positives[j] + 0.5) / (y_any[~held].sum() + 1.0))
                    logits[:, j] = pooled + prior
                    rounds.append(-1)
                    continue
                logits[:, j], r = fit_one(y_tr[:, j])
                rounds.append(r)
        return cols, logits, rounds
