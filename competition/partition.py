"""The event table build's pass 2: each kind's parsed events split by client-id range into raw binary column
files, then read back one range at a time (:mod:`competition.events`).

A range's events of one kind are three files under ``FOLDER/<range>/``: ``<kind>.client`` and
``<kind>.timestamp`` (int64, client id and seconds since the epoch) and ``<kind>.item`` (int64 sku or url; for
searches uint8 ``(n, 16)`` query codes), appended batch after batch in file order. Plain binary rather than Arrow
files: writing and reading them back is a copy, where a partitioned Arrow sink cost as much as parsing the inputs
(docs/scale.md). A range's files are removed once read.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from competition.io import remove_tree_soon
from competition.schema import CODE_LEN, EVENT_CODE, EVENT_TYPES, SEARCH_QUERY

#: The per-event columns of a kind's files (the item of a search is its 16 query codes).
PART_COLUMNS = ("client", "timestamp", "item")
#: The widest client-id span whose range is looked up in a table (2 bytes per id: 256 MiB at most).
DENSE_SPAN = 1 << 27


@dataclass
class RangeEvents:
    """The events of one client-id range: every kind stacked in :data:`EVENT_TYPES` order, each kind's events in
    the order of its input file (the last tie-breaker of the table's sort).

    client, timestamp: int64 ``(n,)``; event_type: uint8 ``(n,)`` (:data:`EVENT_CODE`); item: int64 ``(n,)``, the
    sku or url (-1 for searches); codes: uint8 ``(n_searches, 16)``, the searches' query codes, which are rows
    ``search_start : search_start + n_searches`` of the stacked arrays."""

    client: np.ndarray
    timestamp: np.ndarray
    event_type: np.ndarray
    item: np.ndarray
    codes: np.ndarray
    search_start: int

    def __len__(self) -> int:
        return len(self.client)


class RangePartition:
    """Events split into client-id ranges on disk. ``bounds``: the first client id of each range after the first,
    ascending (range ``b`` holds the clients with ``bounds[b-1] <= client_id < bounds[b]``); ``span``: the
    smallest and largest client id there is. Within a span of up to :data:`DENSE_SPAN` ids, a client's range is
    read from a table indexed by its id (one gather, 3x faster than a binary search over the bounds)."""

    def __init__(self, folder: Path, bounds: np.ndarray, span: tuple[int, int]):
        self.folder = Path(folder)
        self.bounds = np.asarray(bounds, dtype=np.int64)
        self.n_ranges = len(self.bounds) + 1
        self.span = (int(span[0]), int(span[1]))
        self.dense = None
        if self.n_ranges > 1 and 0 <= self.span[1] - self.span[0] < DENSE_SPAN:
            edges = np.concatenate([[self.span[0]], self.bounds, [self.span[1] + 1]])
            self.dense = np.repeat(np.arange(self.n_ranges, dtype=np.uint16), np.diff(edges))
        self.folder.mkdir(parents=True, exist_ok=True)
        self._removals: list = []  # threads removing the ranges already read

    def ranges_of(self, client: np.ndarray) -> np.ndarray:
        """The range of each of ``client`` (ids within ``span``): uint16 ``(n,)``."""
        if self.dense is None:
            return np.searchsorted(self.bounds, client, side="right").astype(np.uint16)
        return self.dense[client - self.span[0]]

    def _file(self, b: int, kind: str, column: str) -> Path:
        return self.folder / str(b) / f"{kind}.{column}"

    def add(self, kind: str, client: np.ndarray, timestamp: np.ndarray, item: np.ndarray) -> None:
        """Append one batch of ``kind`` (its events in file order): client, timestamp int64 ``(n,)``; item int64
        ``(n,)``, or uint8 ``(n, 16)`` for searches."""
        if len(client) == 0:
            return
        columns = dict(zip(PART_COLUMNS, (client, timestamp, item)))
        if self.n_ranges == 1:
            pieces = [(0, None)]
        else:
            bucket = self.ranges_of(client)
            order = np.argsort(bucket, kind="stable")  # a radix sort for 16-bit keys: file order kept per range
            ends = np.cumsum(np.bincount(bucket, minlength=self.n_ranges))
            pieces = [(b, order[ends[b] - n:ends[b]])
                      for b, n in enumerate(np.diff(ends, prepend=0)) if n]
        for b, rows in pieces:
            (self.folder / str(b)).mkdir(exist_ok=True)
            for column, values in columns.items():
                with open(self._file(b, kind, column), "ab") as f:
                    (values if rows is None else values[rows]).tofile(f)

    def read(self, b: int) -> RangeEvents | None:
        """Range ``b``'s events (None when it has none); its files are removed."""
        client, timestamp, event_type, item = [], [], [], []
        codes, search_start, n = np.zeros((0, CODE_LEN), dtype=np.uint8), 0, 0
        for kind in EVENT_TYPES:
            if not self._file(b, kind, "client").is_file():
                continue
            c = np.fromfile(self._file(b, kind, "client"), dtype=np.int64)
            client.append(c)
            timestamp.append(np.fromfile(self._file(b, kind, "timestamp"), dtype=np.int64))
            event_type.append(np.full(len(c), EVENT_CODE[kind], dtype=np.uint8))
            if kind == SEARCH_QUERY:
                codes = np.fromfile(self._file(b, kind, "item"), dtype=np.uint8).reshape(len(c), CODE_LEN)
                search_start = n
                item.append(np.full(len(c), -1, dtype=np.int64))
            else:
                item.append(np.fromfile(self._file(b, kind, "item"), dtype=np.int64))
            n += len(c)
        # read whole: its files go in a background thread, off the build's path (remove() waits for them)
        self._removals.append(remove_tree_soon(self.folder / str(b)))
        if not n:
            return None
        return RangeEvents(np.concatenate(client), np.concatenate(timestamp), np.concatenate(event_type),
                           np.concatenate(item), codes, search_start)

    def remove(self) -> None:
        for worker in self._removals:
            worker.join()
        shutil.rmtree(self.folder, ignore_errors=True)
