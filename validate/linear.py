"""A linear probe: multi-output ridge regression on standardised features, a fast proxy of the MLP replica.

Per task: the columns of ``X`` are standardised (constant columns dropped), the train-window labels of all rows are
regressed on them in closed form, and the fitted values are scored on the validation-window labels of the same rows,
like the organisers score their net. The ridge penalty is chosen per task among :data:`PENALTIES` (times the number
of rows) by the squared error on a seeded held-out fifth of the rows, then the model is refitted on every row.

A linear probability model predicts probabilities, while the metrics (docs/challenge.md section 5) read logits: the
prediction ``p`` of an output with base rate ``b`` becomes ``logit(b) + (p - b) / (b (1 - b))``, the first-order
expansion of ``logit(p)`` around ``b``. It keeps every client's order (no clipping ties) and gives outputs the
spread of real logits, so diversity and novelty stay meaningful. No randomness except the held-out fold, no row-order
effect: the same matrix gives the same figures in any order. Not the organisers' number: figures carry
``"proxy": true``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from validate.metrics import task_score

#: Candidate ridge penalties, as multiples of the number of fitted rows.
PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
_EPS = 1e-6


def standardise(X: np.ndarray) -> np.ndarray:
    """float64 ``(n, d')``: columns of ``X`` centred and scaled to unit variance; constant columns dropped."""
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(axis=0)
    keep = sd > 1e-9
    return (X[:, keep] - X[:, keep].mean(axis=0)) / sd[keep]


def ridge_fit(X: np.ndarray, Y: np.ndarray, penalties: np.ndarray) -> list[np.ndarray]:
    """Weights ``(d + 1, k)`` (the last row: intercept) of ridge regressions of ``Y`` ``(n, k)`` on ``X``
    ``(n, d)``, one per penalty (absolute values), from one eigendecomposition of the centred Gram matrix."""
    x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - x_mean, Y - y_mean
    s, V = np.linalg.eigh(Xc.T @ Xc)
    s = np.maximum(s, 0.0)
    proj = V.T @ (Xc.T @ Yc)  # (d, k)
    out = []
    for lam in penalties:
        W = V @ (proj / (s + lam)[:, None])
        out.append(np.vstack([W, (y_mean - x_mean @ W)[None, :]]))
    return out


def to_logits(p: np.ndarray, base_rate: np.ndarray) -> np.ndarray:
    """Linear-probability predictions ``(n, k)`` -> logits: ``logit(b) + (p - b) / (b (1 - b))`` per output."""
    b = np.clip(base_rate, _EPS, 1 - _EPS)
    return (np.log(b / (1 - b)) + (p - b) / (b * (1 - b))).astype(np.float32)


@dataclass
class LinearProbe:
    """Ridge regression per task on standardised features (see the module doc).

    holdout: share of rows that chooses the penalty; seed: which rows. Scale-invariant: a block's weight in an
    ensemble does not change its figures (columns are standardised).
    """

    holdout: float = 0.2
    seed: int = 0

    def score(self, task: str, X: np.ndarray, y_train: np.ndarray, y_valid: np.ndarray,
              popularity: np.ndarray | None = None) -> dict:
        """Figures of ``task``: :func:`~validate.metrics.task_score`'s plus ``"penalty"`` (relative to the rows),
        ``"proxy"`` and ``"seconds"``. X: float ``(n, D)``; y_train / y_valid: ``(n,)`` or ``(n, k)`` 0/1."""
        t0 = time.perf_counter()
        Z = standardise(X)
        Y = np.asarray(y_train, dtype=np.float64).reshape(len(Z), -1)
        n = len(Z)
        held = np.zeros(n, dtype=bool)
        held[np.random.default_rng(self.seed).permutation(n)[:int(round(self.holdout * n))]] = True
        rel = np.asarray(PENALTIES)
        if 0 < held.sum() < n - 1:
            fits = ridge_fit(Z[~held], Y[~held], rel * (~held).sum())
            Zh = np.hstack([Z[held], np.ones((held.sum(), 1))])
            errors = [float(((Zh @ W - Y[held]) ** 2).mean()) for W in fits]
            chosen = float(rel[int(np.argmin(errors))])
        else:
            chosen = 1.0
        W = ridge_fit(Z, Y, np.array([chosen * n]))[0]
        p = np.hstack([Z, np.ones((n, 1))]) @ W
        logits = to_logits(p, Y.mean(axis=0))
        figures = task_score(task, np.asarray(y_valid).reshape(n, -1), logits, popularity)
        figures.update(penalty=chosen, proxy=True, seconds=time.perf_counter() - t0)
        return figures
