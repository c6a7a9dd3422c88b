"""Target lists and label matrices for the six tasks (docs/challenge.md section 4), vectorised.

Labels for a window (a frame of product_buy rows with client_id, sku, category, price):
- churn / conversion: ``(n,)`` uint8, 1 = the client bought nothing in the window;
- propensity tasks: ``(n, k)`` uint8 multi-hot over the task's ordered target entries.

Target lists (ours, for worlds we generate or split): propensity_category / propensity_sku = the 100 categories /
skus most purchased in the train-target window; propensity_new_sku = the 100 most purchased among skus with no
event of any kind in the input period; propensity_price = every price bucket bought in that window (ascending).
Popularity = purchase count in the train-target window. Ties are broken by the smaller id, so lists are
deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from competition.events import index_of
from competition.io import save_npy
from competition.load import DataError, read_active_clients, read_relevant_clients, scan_table
from competition.schema import (ACTIVE_ONLY_TASKS, CATEGORY, CHURN_TASKS, CLIENT_ID, N_TARGETS, PRICE,
                                PROPENSITY_CATEGORY, PROPENSITY_NEW_SKU, PROPENSITY_PRICE, PROPENSITY_SKU,
                                PROPENSITY_TASKS, SKU, SKU_EVENTS, TASKS, DataPaths)

WINDOWS = ("train", "validation")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def read_window(data_dir: str | Path, which: str) -> pl.DataFrame:
    """The train or validation target window: client_id, sku, category, price (Int64; unknown skus -> null)."""
    if which not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, got {which!r}")
    paths = DataPaths(data_dir)
    path = paths.train_target if which == "train" else paths.validation_target
    if not path.is_file():
        raise DataError(path, "file is missing; run `python -m competition.split --data-dir DATA_DIR` first")
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # not parquet, truncated...
        raise DataError(path, f"cannot be read as parquet ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in (CLIENT_ID, SKU, CATEGORY, PRICE) if c not in frame.columns]
    if missing:
        raise DataError(path, f"column(s) missing; found {frame.columns}", missing[0])
    wrong = [c for c in (CLIENT_ID, SKU, CATEGORY, PRICE)
             if not (frame[c].dtype.is_integer() or frame[c].dtype == pl.Null)]
    if wrong:
        raise DataError(path, f"expected an integer dtype, found {frame[wrong[0]].dtype}", wrong[0])
    return frame.select(pl.col(c).cast(pl.Int64) for c in (CLIENT_ID, SKU, CATEGORY, PRICE))


def compute_target_lists(train_window: pl.DataFrame, input_skus: np.ndarray | None = None
                         ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Entries (int64) and popularity (float64) per propensity task from the train-target window.

    input_skus: skus with any event in the input period (needed for propensity_new_sku; omitted -> no list).
    """
    def top(column: str, frame: pl.DataFrame, k: int | None) -> tuple[np.ndarray, np.ndarray]:
        counts = (frame.filter(pl.col(column).is_not_null()).group_by(column).len()
                  .sort(["len", column], descending=[True, False]))
        counts = counts.head(k) if k else counts.sort(column)
        return counts[column].to_numpy().astype(np.int64), counts["len"].to_numpy().astype(np.float64)

    lists = {PROPENSITY_CATEGORY: top(CATEGORY, train_window, N_TARGETS),
             PROPENSITY_SKU: top(SKU, train_window, N_TARGETS),
             PROPENSITY_PRICE: top(PRICE, train_window, None)}
    if input_skus is not None:
        fresh = train_window.filter(
            ~pl.col(SKU).is_in(pl.Series(np.asarray(input_skus, dtype=np.int64)).implode()))
        lists[PROPENSITY_NEW_SKU] = top(SKU, fresh, N_TARGETS)
    return lists


def input_skus(data_dir: str | Path) -> np.ndarray:
    """Distinct skus with an event of any kind in the split's input period."""
    frames = [scan_table(data_dir, ev, "input").select(SKU) for ev in SKU_EVENTS]
    return pl.concat(frames).unique().collect(engine="streaming")[SKU].to_numpy()


def write_target_lists(data_dir: str | Path, overwrite: bool = False) -> dict[str, int]:
    """Write target/<task>.npy and popularity_<task>.npy for each propensity task; returns list lengths.

    Lists the organisers shipped (present on disk) are kept unless ``overwrite``.
    """
    paths = DataPaths(data_dir)
    todo = [t for t in PROPENSITY_TASKS if overwrite or not paths.target_list(t).is_file()]
    if not todo:
        return {t: len(np.load(paths.target_list(t))) for t in PROPENSITY_TASKS}
    lists = compute_target_lists(read_window(data_dir, "train"),
                                 input_skus(data_dir) if PROPENSITY_NEW_SKU in todo else None)
    for task in todo:
        entries, popularity = lists[task]
        save_npy(paths.popularity(task), popularity)
        save_npy(paths.target_list(task), entries)
    return {t: len(np.load(paths.target_list(t))) for t in PROPENSITY_TASKS}


def read_target_lists(data_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Entries and popularity per propensity task present on disk."""
    paths = DataPaths(data_dir)
    out = {}
    for task in PROPENSITY_TASKS:
        if not paths.target_list(task).is_file():
            continue
        entries = np.load(paths.target_list(task)).astype(np.int64)
        pop_path = paths.popularity(task)
        if not pop_path.is_file():
            raise DataError(pop_path, f"file is missing (the popularity of {task}'s entries)")
        popularity = np.load(pop_path).astype(np.float64)
        if popularity.shape != entries.shape:
            raise DataError(pop_path, f"{len(popularity)} values for {len(entries)} target entries")
        out[task] = (entries, popularity)
    return out


def label_matrix(task: str, client_ids: np.ndarray, window: pl.DataFrame,
                 entries: np.ndarray | None = None) -> np.ndarray:
    """Labels of ``task`` for ``client_ids`` from a target window; uint8 ``(n,)`` or ``(n, len(entries))``."""
    _check_task(task)
    client_ids = np.asarray(client_ids, dtype=np.int64)
    buyers = window[CLIENT_ID].to_numpy()
    if task in CHURN_TASKS:
        return (~np.isin(client_ids, buyers)).astype(np.uint8)
    if entries is None:
        raise ValueError(f"{task} needs its target entries")
    entries = np.asarray(entries, dtype=np.int64)
    values = window[PROPENSITY_TASKS[task]].fill_null(-1).to_numpy()
    labels = np.zeros((len(client_ids), len(entries)), dtype=np.uint8)
    row, col = index_of(client_ids, buyers), index_of(entries, values)
    ok = (row >= 0) & (col >= 0)
    labels[row[ok], col[ok]] = 1
    return labels


def task_clients(data_dir: str | Path, task: str) -> np.ndarray:
    """Clients a task is scored on: the relevant clients (churn: only the active ones), in relevant-file order."""
    _check_task(task)
    relevant = read_relevant_clients(data_dir)
    if task in ACTIVE_ONLY_TASKS:
        return relevant[np.isin(relevant, read_active_clients(data_dir))]
    return relevant


@dataclass
class TaskData:
    """Everything a probe needs for one task: clients, labels in both windows, target entries and popularity.

    y_train / y_valid: float32 ``(n,)`` for churn-type tasks, ``(n, k)`` for propensity tasks.
    """

    task: str
    client_ids: np.ndarray
    y_train: np.ndarray
    y_valid: np.ndarray
    entries: np.ndarray | None = None
    popularity: np.ndarray | None = None


def task_dataset(data_dir: str | Path, task: str, client_ids: np.ndarray | None = None,
                 windows: dict[str, pl.DataFrame] | None = None) -> TaskData:
    """Labels of ``task`` in both windows for ``client_ids`` (default: :func:`task_clients`).

    windows: optional cache {"train": frame, "validation": frame} from :func:`read_window`.
    """
    _check_task(task)
    ids = task_clients(data_dir, task) if client_ids is None else np.asarray(client_ids, dtype=np.int64)
    windows = windows or {w: read_window(data_dir, w) for w in WINDOWS}
    entries = popularity = None
    if task in PROPENSITY_TASKS:
        lists = read_target_lists(data_dir)
        if task not in lists:
            raise DataError(DataPaths(data_dir).target_list(task),
                            "file is missing; run competition.targets.write_target_lists (or the split) first")
        entries, popularity = lists[task]
    return TaskData(task, ids,
                    label_matrix(task, ids, windows["train"], entries).astype(np.float32),
                    label_matrix(task, ids, windows["validation"], entries).astype(np.float32),
                    entries, popularity)
