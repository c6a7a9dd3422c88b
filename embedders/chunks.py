"""Chunked access to the event table for embedders that stream over clients: row ranges of about N events,
the events of a set of client rows as in-memory arrays (read without keeping the memory map resident), the one
sorted-id lookup (:func:`index_sorted` / :func:`index_of`, defined next to the table in :mod:`competition.events`
so that the table and the targets share it), and counts per integer value accumulated chunk by chunk."""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from competition.events import EVENT_ARRAYS, index_of, index_sorted, read_positions, read_range
from embedders.threads import free_cores

T, R = TypeVar("T"), TypeVar("R")


def map_chunks(fn: Callable[[T], R], chunks: Sequence[T], threads: int | None = None) -> Iterator[R]:
    """``fn(chunk)`` of each chunk, yielded in the chunks' order, computed by ``threads`` worker threads (None:
    one per free core, :func:`embedders.threads.free_cores`) with at most two chunks per thread in flight, so the
    memory held stays a few chunks'. For work on independent rows that leaves the GIL (numpy's sorts, gathers and
    reads of the event table; scipy's sparse builds): results, and what is made of them in order, are the same
    bytes whatever the threads."""
    chunks = list(chunks)
    workers = min(len(chunks), max(1, int(threads or free_cores())))
    if workers <= 1:
        yield from map(fn, chunks)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.submit(fn, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def row_chunks(lengths: np.ndarray, chunk_events: int) -> list[tuple[int, int]]:
    """Split consecutive rows with ``lengths`` events each into ``[start, stop)`` index ranges of about
    ``chunk_events`` events (a row larger than that gets a chunk of its own)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0:
        return []
    before = np.cumsum(lengths) - lengths
    cid = before // max(int(chunk_events), 1)
    starts = np.flatnonzero(np.r_[True, cid[1:] != cid[:-1]])
    stops = np.r_[starts[1:], len(lengths)]
    return list(zip(starts.tolist(), stops.tolist()))


@dataclass
class EventChunk:
    """Events of ``n_rows`` client rows, concatenated in table order. ``row``: int64 ``(m,)`` local row (0..n_rows-1)
    of each event, non-decreasing; the other arrays are the table's columns for those events."""

    n_rows: int
    row: np.ndarray
    timestamp: np.ndarray
    event_type: np.ndarray
    sku: np.ndarray
    category: np.ndarray
    price: np.ndarray
    url: np.ndarray
    query: np.ndarray


#: Columns of the event table an :class:`EventChunk` carries: every per-event array, in the table's order.
CHUNK_COLUMNS: tuple[str, ...] = tuple(EVENT_ARRAYS)


def empty_chunk(n_rows: int = 1) -> EventChunk:
    """An :class:`EventChunk` of ``n_rows`` rows without events (the table's dtypes)."""
    return EventChunk(n_rows, np.zeros(0, dtype=np.int64), *(np.zeros(0, dtype=EVENT_ARRAYS[c]) for c in CHUNK_COLUMNS))


def gather(events, rows: np.ndarray) -> EventChunk:
    """The events of table rows ``rows`` (sorted, unique, all >= 0) as an :class:`EventChunk`.

    The span of events from the first to the last row is read in one piece when it is at most 4x the events
    needed (always for contiguous rows), else the needed events are read through the memory map
    (:func:`competition.events.read_positions`: its pages do not stay in the resident set)."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = np.asarray(events.offsets[rows], dtype=np.int64)
    stops = np.asarray(events.offsets[rows + 1], dtype=np.int64)
    counts = stops - starts
    n = int(counts.sum())
    row = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
    if n == 0:
        return EventChunk(len(rows), row, *(np.zeros(0, dtype=getattr(events, c).dtype) for c in CHUNK_COLUMNS))
    lo, hi = int(starts[0]), int(stops[-1])
    pos = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(n, dtype=np.int64)
    if hi - lo == n:  # contiguous events
        cols = [read_range(getattr(events, c), lo, hi) for c in CHUNK_COLUMNS]
    elif hi - lo <= 4 * n:
        cols = [read_range(getattr(events, c), lo, hi)[pos - lo] for c in CHUNK_COLUMNS]
    else:
        cols = [read_positions(getattr(events, c), pos) for c in CHUNK_COLUMNS]  # not left resident
    return EventChunk(len(rows), row, *cols)


def present_rows(events, client_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(table_rows, inverse)``: sorted unique table rows of the clients that have events, and for each client the
    index into ``table_rows`` (-1 for clients without events)."""
    rows = events.rows_of(client_ids)
    table_rows, inv = np.unique(rows[rows >= 0], return_inverse=True)
    where = np.full(len(rows), -1, dtype=np.int64)
    where[rows >= 0] = inv
    return table_rows, where


#: Integer values below this are counted and looked up in a dense array indexed by value (no sort, no search).
DENSE_LIMIT = 1 << 25


class CountTable:
    """Counts per integer value (e.g. events per sku, documents per token), accumulated chunk by chunk.

    Kept as a dense int64 array indexed by value while every value is in ``[0, DENSE_LIMIT)``, else as sorted
    ``(values, counts)``. ``lookup`` is vectorised either way.
    """

    def __init__(self) -> None:
        self._dense: np.ndarray | None = np.zeros(0, dtype=np.int64)
        self._values = np.empty(0, dtype=np.int64)
        self._counts = np.empty(0, dtype=np.int64)

    def add(self, values: np.ndarray, counts: np.ndarray | None = None) -> "CountTable":
        """Count ``values`` (each once, or ``counts[i]`` times)."""
        values = np.asarray(values, dtype=np.int64)
        if len(values) == 0:
            return self
        if self._dense is not None and values.min() >= 0 and values.max() < DENSE_LIMIT:
            add = np.bincount(values, weights=counts, minlength=len(self._dense)).astype(np.int64)
            if len(add) > len(self._dense):
                add[:len(self._dense)] += self._dense
                self._dense = add
            else:
                self._dense += add
            return self
        if self._dense is not None:  # switch to the sorted form for good
            self._values, self._counts = self.values, self.counts
            self._dense = None
        if counts is None:
            v, c = np.unique(values, return_counts=True)
        else:
            v, c = values, np.asarray(counts, dtype=np.int64)
        allv, inv = np.unique(np.concatenate([self._values, v]), return_inverse=True)
        self._counts = np.bincount(inv, weights=np.concatenate([self._counts, c]), minlength=len(allv)).astype(np.int64)
        self._values = allv
        return self

    @property
    def values(self) -> np.ndarray:
        """Values seen, sorted, int64."""
        return np.flatnonzero(self._dense).astype(np.int64) if self._dense is not None else self._values

    @property
    def counts(self) -> np.ndarray:
        """Count of each of :attr:`values`, int64."""
        return self._dense[self._dense > 0] if self._dense is not None else self._counts

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Count of each value (0 for values never seen), int64."""
        values = np.asarray(values, dtype=np.int64)
        if self._dense is not None:
            ok = (values >= 0) & (values < len(self._dense))
            return np.where(ok, self._dense[np.where(ok, values, 0)], 0) if len(self._dense) else \
                np.zeros(len(values), dtype=np.int64)
        pos = index_sorted(self._values, values)
        return np.where(pos >= 0, self._counts[np.maximum(pos, 0)], 0) if len(self._values) else \
            np.zeros(len(values), dtype=np.int64)
