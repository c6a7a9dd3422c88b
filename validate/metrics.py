"""The organisers' metrics (docs/challenge.md section 5), vectorised with numpy.

Conventions: ``logits`` are raw model outputs, float ``(n,)`` or ``(n, k)``; labels ``y`` are 0/1 of the same
shape. The organisers feed logits to torchmetrics, which turns a validation batch into probabilities with a float32
sigmoid unless every value of that batch already lies in [0, 1]; :func:`to_probabilities` reproduces this, so
that ties created by float32 saturation are the same as theirs.

- AUROC: the average-rank (Mann-Whitney) AUROC, equal to the trapezoidal ROC area with tied scores grouped, as
  torchmetrics and scikit-learn compute it. An output without positives, or without negatives, scores 0 (torchmetrics
  returns a zero TPR / FPR curve there); the multilabel figure is the plain mean over outputs ("macro").
- diversity: sigmoid, each row normalised to sum 1, entropy in bits (``-sum p log2(p + 1e-9)``), divided by
  ``log2(k)``, mean over rows.
- novelty: popularity divided by the sum of the ``min(10, k)`` largest popularities; per row the top-``min(10, k)``
  sigmoid values ``v`` and their popularity; ``(1 - mean over rows of sum(v * pop)) ** 100``.
- task score: AUROC for churn-type tasks; ``0.8 AUROC + 0.1 diversity + 0.1 novelty`` for propensity tasks.
"""
from __future__ import annotations

import numpy as np

from competition.schema import CHURN_TASKS, PROPENSITY_TASKS

#: Validation batch size of the organisers' pipeline: torchmetrics decides per batch whether to apply a sigmoid.
ORGANISER_BATCH = 128
NOVELTY_TOP_K = 10
NOVELTY_POWER = 100
#: Weights of (AUROC, diversity, novelty) in a propensity task's score.
PROPENSITY_WEIGHTS = (0.8, 0.1, 0.1)
_EPS = 1e-9  # the organisers' 10e-10


def sigmoid(x: np.ndarray) -> np.ndarray:
    """float32 logistic function ``1 / (1 + exp(-x))``, the formula torch uses (same saturation to 0 and 1)."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):  # exp(-x) = inf for x < -88 gives exactly 0, as torch does
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(-x))).astype(np.float32, copy=False)


def to_probabilities(scores: np.ndarray, batch_size: int = ORGANISER_BATCH) -> np.ndarray:
    """Scores as torchmetrics sees them: per block of ``batch_size`` rows, float32 sigmoid unless all in [0, 1].

    scores: ``(n,)`` or ``(n, k)`` logits. Returns float32 of the same shape.
    """
    s = np.asarray(scores, dtype=np.float32)
    if s.shape[0] == 0:
        return s.copy()
    n = s.shape[0]
    n_batches = -(-n // batch_size)
    rows = s.reshape(n, -1)
    batch_of_row = np.arange(n) // batch_size
    outside = ((rows < 0) | (rows > 1)).any(axis=1)
    needs = np.zeros(n_batches, dtype=bool)
    np.logical_or.at(needs, batch_of_row[outside], True)
    out = np.where(needs[batch_of_row][:, None], sigmoid(rows), rows)
    return out.reshape(s.shape)


def auroc(y: np.ndarray, scores: np.ndarray) -> float:
    """Binary AUROC (average rank for ties); 0.0 when ``y`` has no positives or no negatives.

    y: ``(n,)`` 0/1; scores: ``(n,)`` any monotone score (probabilities or logits).
    """
    return float(auroc_per_output(np.asarray(y).reshape(-1, 1), np.asarray(scores).reshape(-1, 1))[0])


def auroc_per_output(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each column, float64 ``(k,)``; 0.0 for a column without positives or without negatives.

    y: ``(n, k)`` 0/1; scores: ``(n, k)``. Sorts each column once (O(n log n)) and locates the positives' scores
    among the negatives with binary search, counting a tie as one half.
    """
    y = np.asarray(y)
    scores = np.asarray(scores)
    if y.shape != scores.shape or y.ndim != 2:
        raise ValueError(f"labels {y.shape} and scores {scores.shape} must be the same 2-D shape")
    pos_mask = np.ascontiguousarray((y > 0).T)
    s_t = np.ascontiguousarray(scores.T)
    out = np.zeros(y.shape[1], dtype=np.float64)
    n_pos = pos_mask.sum(axis=1)
    n_neg = y.shape[0] - n_pos
    for j in np.flatnonzero((n_pos > 0) & (n_neg > 0)):
        neg_sorted = np.sort(s_t[j][~pos_mask[j]])
        pos_scores = s_t[j][pos_mask[j]]
        below = np.searchsorted(neg_sorted, pos_scores, side="left")
        not_above = np.searchsorted(neg_sorted, pos_scores, side="right")
        out[j] = (below.sum() + 0.5 * (not_above - below).sum()) / (float(n_pos[j]) * float(n_neg[j]))
    return out


def macro_auroc(y: np.ndarray, scores: np.ndarray) -> float:
    """Mean AUROC over the columns of ``(n, k)`` labels and scores (torchmetrics multilabel, average="macro")."""
    return float(auroc_per_output(y, scores).mean())


def diversity(logits: np.ndarray) -> float:
    """Mean normalised entropy (bits / log2(k)) of the row-normalised sigmoid of ``(n, k)`` logits; 0.0 if n = 0."""
    p = sigmoid(np.asarray(logits, dtype=np.float32))
    n, k = p.shape
    if n == 0 or k < 2:
        return 0.0
    p /= p.sum(axis=1, keepdims=True)  # float32, as the organisers compute it
    entropy = -np.einsum("ij,ij->", p, np.log2(p + np.float32(_EPS)), dtype=np.float64)
    return float(entropy / ((n + _EPS) * np.log2(k)))


def novelty(logits: np.ndarray, popularity: np.ndarray, top_k: int = NOVELTY_TOP_K) -> float:
    """``(1 - mean_row sum(top-k sigmoid * normalised popularity)) ** 100`` for ``(n, k)`` logits.

    popularity: ``(k,)`` one score per output, normalised here by the sum of its ``min(top_k, k)`` largest values.
    """
    logits = np.asarray(logits, dtype=np.float32)
    popularity = np.asarray(popularity, dtype=np.float64)
    n, k = logits.shape
    if popularity.shape != (k,):
        raise ValueError(f"popularity has shape {popularity.shape}, expected ({k},) for {k} outputs")
    kk = min(top_k, k)
    pop = popularity / np.sort(popularity)[-kk:].sum()
    p = sigmoid(logits)
    top = np.argpartition(-p, kk - 1, axis=1)[:, :kk] if kk < k else np.broadcast_to(np.arange(k), (n, k))
    values = np.take_along_axis(p, top, axis=1).astype(np.float64)
    mean_pop = (values * pop[top]).sum() / (n + _EPS)
    return float((1.0 - mean_pop) ** NOVELTY_POWER)


def task_score(task: str, y: np.ndarray, logits: np.ndarray, popularity: np.ndarray | None = None) -> dict:
    """The score of one task from validation labels and model logits, with its parts.

    Churn-type tasks (schema.CHURN_TASKS): y and logits ``(n,)`` or ``(n, 1)``; returns ``{"score", "auroc"}``.
    Propensity tasks: y and logits ``(n, k)``, popularity ``(k,)``; returns ``{"score", "auroc", "diversity",
    "novelty"}`` with score = 0.8 auroc + 0.1 diversity + 0.1 novelty.
    """
    logits = np.asarray(logits, dtype=np.float32)
    if task in CHURN_TASKS:
        a = auroc(np.asarray(y).reshape(-1), to_probabilities(logits.reshape(-1)))
        return {"score": a, "auroc": a}
    if task not in PROPENSITY_TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {CHURN_TASKS + tuple(PROPENSITY_TASKS)}")
    if popularity is None:
        raise ValueError(f"task {task!r} needs the popularity of its targets")
    a = macro_auroc(y, to_probabilities(logits))
    d = diversity(logits)
    nov = novelty(logits, popularity)
    w_a, w_d, w_n = PROPENSITY_WEIGHTS
    return {"score": w_a * a + w_d * d + w_n * nov, "auroc": a, "diversity": d, "novelty": nov}
