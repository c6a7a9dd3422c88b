"""The event table every embedder reads: all events of the five kinds, sorted by (client_id, timestamp), CSR style.

Layout (numpy arrays, memory-mapped from ``DATA_DIR/.cache/events_<layout>_<fingerprint>/``):

- ``client_ids`` int64 ``(n_clients,)``: every client with at least one event, ascending;
- ``offsets`` int64 ``(n_clients + 1,)``: events of client ``i`` are rows ``offsets[i]:offsets[i+1]``;
- per event, ``(n_events,)``: ``timestamp`` int64 seconds since the epoch, ``event_type`` uint8
  (:data:`competition.schema.EVENT_CODE`), ``sku`` / ``category`` / ``url`` int64 (-1 = missing), ``price`` int16
  (-1 = missing), ``query`` int32 (-1 = missing; row of ``query_codes``);
- ``query_codes`` uint8 ``(n_queries, 16)``, in event order.

Ties in time are broken by event type, then item, then row order in the source file (searches have no sortable
item), so the order is deterministic. The build is chunked by client-id range: one pass over the client ids to
count, one that parses every file once in batches and appends each batch's events to binary column files by range
(:mod:`competition.partition`), then one range at a time: read back, sorted by one packed 64-bit key (client,
time, type; its ties by item and file row), each column gathered straight into its memory map while the next
range is read and sorted. Peak memory stays bounded by two ranges whatever the number of events. Each string is
parsed once (timestamps; query codes by :func:`competition.load.parse_code_strings`), every value is checked on
the parsed batches, and category and price come from a table indexed by sku. At 1M clients the build takes
1.2-1.3x the time of its floor (``benchmarks/event_table_floor.py``), byte for byte the same table as the builds
before it (docs/scale.md).
The raw layout's period ends within a day of the last purchase (the split's ``end``;
:data:`competition.split.AFTER_END_GRACE`): later events (a clock gone wrong, dates in 2100) are left out, so its
``cut_time`` is one second after the last event kept and recency features count from there; the manifest records
the events after the last purchase and those left out, of which kinds and their time range (``after_end``), as it
records the events whose sku is absent from product_properties (``unknown_sku_events``, ``unknown_sku_by_kind``;
kept, with category and price -1). ``submit.pack`` says both in one line each. A build takes the cache folder's lock
(:mod:`competition.lock`): a second process building the same data waits, then reuses the table. The input layout
is cut from a fresh raw table instead of built from ``input/`` when that certainly gives the same files
(:mod:`competition.events_cut`).
The cache key is a fingerprint of the input files' content (name, size and a hash of each parquet file's footer:
schema, row groups, their sizes and statistics; the split times) and of :data:`BUILD_VERSION`, never their
modification times: a changed input builds a new table, re-running the split with the same result does not. A block
records :func:`block_fingerprint` (that, plus the clients it was made for). Opening a cached table checks every
array's size against the manifest; a damaged cache is said so in one line and rebuilt.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from competition.cli import HelpFormatter, add_no_progress
from competition.io import DiskFullError, atomic_dir, dir_leftover_pattern, remove_leftovers
from competition.heap import large_blocks_in_heap
from competition.load import (DataError, check_table, codes_to_numpy, read_products, read_relevant_clients,
                              scan_table, unique_ints, unknown_skus_by_kind)
from competition.lock import folder_lock
from competition.partition import PART_COLUMNS, RangeEvents, RangePartition
from competition.progress import progress as progress_of
from competition.split import AFTER_END_GRACE, after_end_words, events_after_end, read_split_times
from competition.schema import (CATEGORY, CLIENT_ID, CODE_LEN, EVENT_CODE, EVENT_TYPES, ITEM_COLUMN, LAYOUTS,
                                PAGE_VISIT, PRICE, PRODUCT_BUY, PRODUCT_PROPERTIES, QUERY, SEARCH_QUERY, SKU,
                                SKU_EVENTS, TIMESTAMP, URL, DataPaths)

BUILD_VERSION = 2
#: The raw table's period ends within a day of the last purchase (later events left out; docstring): part of the raw
#: layout's cache key, so tables and final blocks built before that rule are rebuilt.
RAW_PERIOD = "until-a-day-after-the-last-buy"
#: Per-event arrays and their dtypes.
EVENT_ARRAYS: dict[str, np.dtype] = {
    TIMESTAMP: np.dtype(np.int64), "event_type": np.dtype(np.uint8), SKU: np.dtype(np.int64),
    CATEGORY: np.dtype(np.int64), PRICE: np.dtype(np.int16), URL: np.dtype(np.int64), QUERY: np.dtype(np.int32),
}
_MANIFEST = "manifest.json"


#: Bytes of a file hashed whole when it is not a readable parquet file (its first and last this many otherwise).
_SMALL_FILE = 1 << 20


def index_sorted(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each of ``values`` in the ascending ``keys`` (client ids, sku ids, vocabulary values), -1 where
    absent: int64 ``(len(values),)``. The one sorted-id lookup of the package (re-exported by
    :mod:`embedders.chunks`); with repeated keys the first match counts."""
    values = np.asarray(values)
    if len(keys) == 0:
        return np.full(len(values), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    return np.where(np.asarray(keys[pos]) == values, pos, -1).astype(np.int64)


def read_range(array: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Rows ``array[lo:hi]`` as an in-memory copy. A memory-mapped array is read with ``np.fromfile`` rather than
    through the mapping, so the pages do not stay in this process's resident set (peak RSS stays bounded by the
    chunk, not by the size of the table). The one such reader of the package (re-exported by
    :mod:`embedders.chunks`)."""
    if isinstance(array, np.memmap) and getattr(array, "filename", None) and array.flags.c_contiguous and hi > lo:
        row = int(np.prod(array.shape[1:], dtype=np.int64))
        return np.fromfile(array.filename, dtype=array.dtype, count=(hi - lo) * row,
                           offset=int(array.offset) + lo * row * array.itemsize).reshape((hi - lo, *array.shape[1:]))
    return np.array(array[lo:hi])


#: Positions :func:`read_positions` reads through a mapping before it drops that span's pages from the resident set.
POSITIONS_SPAN = 4_000_000


def _libc_madvise():
    import ctypes
    import ctypes.util
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or None).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


_MADVISE = _libc_madvise()
_MADV_DONTNEED, _PAGE, _FAULT_AROUND = 4, 4096, 1 << 22
#: np.memmap modes that map the file shared (MAP_SHARED): dropping their pages loses nothing.
_SHARED_MODES = frozenset({"r", "r+", "w+"})
try:
    import mmap as _mmap
    _PAGE = _mmap.PAGESIZE
except ImportError:  # pragma: no cover
    pass


def release(array: np.ndarray, lo: int = 0, hi: int | None = None) -> None:
    """Drop the pages of rows ``array[lo:hi]`` from this process's resident set, with up to 4 MiB either side (a
    fault maps its neighbours too: the kernel's fault-around, and a page-cache folio is mapped whole, up to 2 MiB
    seen), when ``array`` is a shared memory map of a file (``np.load(..., mmap_mode="r")``, or modes ``r+`` /
    ``w+`` of ``np.memmap``): the kernel keeps them in its page cache (a written page stays dirty there and is
    written back) and the next access faults them back in, so no value changes. Anything else (an in-memory array,
    a private ``c`` map, no libc) is left alone: on anonymous or private memory the same call would zero values."""
    if (_MADVISE is None or not isinstance(array, np.memmap) or getattr(array, "mode", None) not in _SHARED_MODES
            or not array.flags.c_contiguous or array.size == 0):
        return
    row = array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    slack = -(-_FAULT_AROUND // row)
    lo, hi = max(int(lo) - slack, 0), min((len(array) if hi is None else int(hi)) + slack, len(array))
    if hi <= lo:
        return
    start, stop = array.ctypes.data + lo * row, array.ctypes.data + hi * row
    start -= start % _PAGE  # the mapping starts on a page, and its last page is mapped whole
    _MADVISE(start, stop - start, _MADV_DONTNEED)


def read_positions(array: np.ndarray, pos: np.ndarray, span: int = POSITIONS_SPAN) -> np.ndarray:
    """``array[pos]`` as an in-memory copy. A memory-mapped array is read :data:`POSITIONS_SPAN` rows of the table at
    a time, in ascending position, and each span's pages are then dropped from the resident set (:func:`release`):
    a sparse gather reads only the pages it needs, and peak RSS stays bounded by a span, not by the table (at 1M
    clients a whole table's pages are ~11 GB)."""
    pos = np.asarray(pos, dtype=np.int64)
    if not isinstance(array, np.memmap) or len(pos) == 0:
        return np.asarray(array)[pos]
    if np.any(pos[1:] < pos[:-1]):
        order = np.argsort(pos, kind="stable")
        out = np.empty((len(pos), *array.shape[1:]), dtype=array.dtype)
        out[order] = read_positions(array, pos[order], span)
        return out
    out = np.empty((len(pos), *array.shape[1:]), dtype=array.dtype)
    starts = np.arange(int(pos[0]) - int(pos[0]) % span, int(pos[-1]) + span + 1, span)
    bounds = np.searchsorted(pos, starts)
    for lo, a, b in zip(starts, bounds[:-1], bounds[1:]):
        if b > a:
            out[a:b] = array[pos[a:b]]
            release(array, int(lo), int(lo) + span)
    return out


def index_of(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """:func:`index_sorted` for ``keys`` in any order: index into ``keys`` of each of ``values``, -1 where absent
    (with repeated keys the first in ``keys`` order counts). int64 ``(len(values),)``."""
    keys = np.asarray(keys)
    order = np.argsort(keys, kind="stable")
    pos = index_sorted(keys[order], values)
    return np.where(pos >= 0, order[np.maximum(pos, 0)], -1).astype(np.int64) if len(keys) else pos


def file_fingerprint(path: Path) -> str:
    """Content digest of one input file, without reading its data: its size and a sha256 of its parquet footer
    (schema, row groups with their sizes, offsets and column statistics); a file that is not parquet (the split
    times, or a broken file the builders will reject) is hashed whole, or its ends when large."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    h = hashlib.sha256(f"{size}:".encode())
    with open(path, "rb") as f:
        footer = None
        if size >= 12:
            f.seek(size - 8)
            tail = f.read(8)
            n = int.from_bytes(tail[:4], "little")
            if tail[4:] == b"PAR1" and n + 8 <= size - 4:
                f.seek(size - 8 - n)
                footer = f.read(n)
        if footer is not None:
            h.update(b"parquet:" + footer)
        elif size <= 2 * _SMALL_FILE:
            f.seek(0)
            h.update(f.read())
        else:
            f.seek(0)
            h.update(f.read(_SMALL_FILE))
            f.seek(size - _SMALL_FILE)
            h.update(f.read(_SMALL_FILE))
    return h.hexdigest()


def fingerprint(data_dir: str | Path, layout: str = "input") -> str:
    """Hex digest of the content of a layout's input files (:func:`file_fingerprint`) and the build version; the
    event table's cache key. Modification times do not count."""
    paths = DataPaths(data_dir)
    h = hashlib.sha256(f"v{BUILD_VERSION}:{layout}{':' + RAW_PERIOD if layout == 'raw' else ''}".encode())
    files = [paths.table(name, layout) for name in (*EVENT_TYPES, PRODUCT_PROPERTIES)]
    if layout == "input":
        files.append(paths.split_times)  # sets cut_time
    for p in files:
        h.update(f"{p.name}:{file_fingerprint(p)};".encode())
    return h.hexdigest()[:16]


def block_fingerprint(data_dir: str | Path, layout: str = "input", client_ids: np.ndarray | None = None,
                      events_fingerprint: str | None = None) -> str:
    """What a block depends on: the events' :func:`fingerprint` (``events_fingerprint`` when already known) and
    the set of clients it is made for (default: ``input/relevant_clients.npy``; their order does not matter)."""
    fp = events_fingerprint if events_fingerprint is not None else fingerprint(data_dir, layout)
    ids = read_relevant_clients(data_dir) if client_ids is None else np.asarray(client_ids, dtype=np.int64)
    h = hashlib.sha256(f"{fp}:clients:{len(ids)}:".encode())
    h.update(unique_ints(ids).astype("<i8").tobytes())
    return h.hexdigest()[:16]


@dataclass
class EventTable:
    """Sorted events with a per-client offset index (see module docstring for shapes and dtypes)."""

    client_ids: np.ndarray
    offsets: np.ndarray
    timestamp: np.ndarray
    event_type: np.ndarray
    sku: np.ndarray
    category: np.ndarray
    price: np.ndarray
    url: np.ndarray
    query: np.ndarray
    query_codes: np.ndarray
    start_time: int
    cut_time: int
    fingerprint: str = ""
    layout: str = "input"
    data_dir: Path | None = None
    meta: dict = field(default_factory=dict)
    _products: pl.DataFrame | None = field(default=None, repr=False)

    # -- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, data_dir: str | Path, layout: str = "input", progress: bool = True, rebuild: bool = False,
              chunk_events: int = 20_000_000) -> "EventTable":
        """The cached table for ``data_dir``/``layout``, built first if missing or stale (the input layout cut from
        a fresh raw table when :mod:`competition.events_cut` can; ``rebuild`` always builds from the files)."""
        from competition.events_cut import cut_into, cut_source
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        data_dir = Path(data_dir)
        fp = fingerprint(data_dir, layout)
        root = DataPaths(data_dir).cache
        cache = root / f"events_{layout}_{fp}"
        if not rebuild and (cache / _MANIFEST).is_file():
            problem = cache_problem(cache)
            if problem is not None:
                print(f"events: the cached table {cache} is damaged ({problem}); rebuilding it", file=sys.stderr,
                      flush=True)
                rebuild = True
        if rebuild or not (cache / _MANIFEST).is_file():
            forced = rebuild
            with folder_lock(root, "event table cache", wait=True,
                             log=lambda m: print(f"events: {m}", file=sys.stderr, flush=True)):
                # another process may have built it while this one waited for the lock
                if forced or not (cache / _MANIFEST).is_file() or cache_problem(cache) is not None:
                    for old in root.glob(f"events_{layout}_*"):
                        if old != cache and old.is_dir():
                            shutil.rmtree(old, ignore_errors=True)  # stale tables of the same layout
                    # temporaries of interrupted builds of this layout (any fingerprint); this one's go in atomic_dir
                    remove_leftovers(root, dir_leftover_pattern(rf"events_{layout}_(?!{re.escape(fp)}\.)[0-9a-f]+"))
                    # the input table cut from a fresh raw one when that is certainly the same table (events_cut)
                    source = None if forced or layout != "input" else cut_source(data_dir, chunk_events)
                    with large_blocks_in_heap():   # each range allocates and frees the same large arrays
                        if source is not None:
                            atomic_dir(cache, lambda tmp: cut_into(tmp, source, data_dir, fp, progress, chunk_events),
                                       remove_old_soon=True)
                        else:
                            atomic_dir(cache, lambda tmp: _build_into(tmp, data_dir, layout, fp, progress,
                                                                      chunk_events), remove_old_soon=True)
        return cls.open(cache, data_dir=data_dir)

    @classmethod
    def open(cls, folder: str | Path, data_dir: str | Path | None = None) -> "EventTable":
        """Memory-map a built table. Raises :class:`DataError` naming the file when the cache is damaged."""
        folder = Path(folder)
        problem = cache_problem(folder)
        if problem is not None:
            raise DataError(folder, f"damaged event table cache: {problem}; rebuild it (EventTable.build)")
        manifest = json.loads((folder / _MANIFEST).read_text())
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r")
                  for name in ("client_ids", "offsets", *EVENT_ARRAYS, "query_codes")}
        return cls(**arrays, start_time=manifest["start_time"], cut_time=manifest["cut_time"],
                   fingerprint=manifest["fingerprint"], layout=manifest["layout"],
                   data_dir=Path(data_dir) if data_dir else None, meta=manifest)

    # -- access ----------------------------------------------------------------------------------------------------
    @property
    def n_events(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_clients(self) -> int:
        return int(len(self.client_ids))

    @property
    def lengths(self) -> np.ndarray:
        """Events per client, int64 ``(n_clients,)``."""
        return np.diff(self.offsets)

    @property
    def products(self) -> pl.DataFrame:
        """product_properties with normalised dtypes (sku, category, price, name as Array(UInt8, 16))."""
        if self._products is None:
            if self.data_dir is None:
                raise ValueError("this table was opened without its data directory")
            self._products = read_products(self.data_dir, check=False)
        return self._products

    def rows_of(self, client_ids: np.ndarray) -> np.ndarray:
        """Row of each client in :attr:`client_ids` (int64, -1 for clients without events)."""
        return index_sorted(self.client_ids, np.asarray(client_ids, dtype=np.int64))

    def event_client_index(self) -> np.ndarray:
        """Row into :attr:`client_ids` of every event, int64 ``(n_events,)``."""
        return np.repeat(np.arange(self.n_clients, dtype=np.int64), self.lengths)

    def select(self, lo_time: int | None = None, hi_time: int | None = None, codes: np.ndarray | None = None,
               columns: tuple[str, ...] = tuple(EVENT_ARRAYS), chunk_events: int = 20_000_000
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The events with ``lo_time <= timestamp < hi_time`` (None: unbounded) of event-type ``codes`` (None: all),
        in table order, read chunk by chunk: ``(client rows int64 (m,), {column: (m,)})`` for ``columns`` of
        :data:`EVENT_ARRAYS`."""
        offsets = np.asarray(self.offsets)
        rows, cols = [], {c: [] for c in columns}
        n = self.n_events
        for lo in range(0, n, max(int(chunk_events), 1)):
            hi = min(lo + chunk_events, n)
            ts = np.asarray(self.timestamp[lo:hi])
            keep = np.ones(hi - lo, dtype=bool)
            if lo_time is not None:
                keep &= ts >= lo_time
            if hi_time is not None:
                keep &= ts < hi_time
            if codes is not None:
                keep &= np.isin(np.asarray(self.event_type[lo:hi]), codes)
            idx = np.flatnonzero(keep)
            # client row of each kept event: the offsets are sorted, so a search gives it without a full index
            rows.append(np.searchsorted(offsets, lo + idx, side="right") - 1)
            for c in columns:
                cols[c].append(np.asarray(getattr(self, c)[lo:hi])[idx])
            for c in {TIMESTAMP, "event_type", *columns}:  # read through the map, then out of the resident set
                release(getattr(self, c), lo, hi)
        join = (lambda p, dt: np.concatenate(p) if p else np.zeros(0, dtype=dt))  # noqa: E731
        return join(rows, np.int64), {c: join(v, EVENT_ARRAYS[c]) for c, v in cols.items()}

    def before(self, t: int, chunk_events: int = 20_000_000, client_ids: np.ndarray | None = None) -> "EventTable":
        """The table as it stood at time ``t`` (seconds): only events with timestamp < ``t``, ``cut_time = t``;
        only those of ``client_ids`` when given (a cut of a sample holds its events alone: at 1M clients a whole
        cut is ~9 GB of memory).

        In memory, built chunk by chunk with :meth:`select` (each client's events are time-sorted, so what is kept
        of a client is a prefix). Clients left without events are dropped, as a table built from those events would
        have them; ``query_codes`` is shared (query rows keep their meaning). ``t`` must not be after
        :attr:`cut_time`.
        """
        t = int(t)
        if t > self.cut_time:
            raise ValueError(f"before({t}): the table ends at {self.cut_time}; it cannot be cut later")
        fingerprint = f"{self.fingerprint}<{t}"
        if client_ids is None:
            rows, arrays = self.select(hi_time=t, chunk_events=chunk_events)
        else:
            rows, arrays = self._select_clients(np.asarray(client_ids, dtype=np.int64), t)
            fingerprint += "|" + hashlib.sha256(unique_ints(client_ids).astype(np.int64).tobytes()).hexdigest()[:16]
        kept = np.bincount(rows, minlength=self.n_clients).astype(np.int64)
        has = kept > 0
        ts = arrays[TIMESTAMP]
        meta = {**self.meta, "cut_time": t, "n_events": int(len(ts)), "n_clients": int(has.sum()),
                "cut_from": self.fingerprint}
        return EventTable(client_ids=np.asarray(self.client_ids)[has],
                          offsets=np.concatenate([[0], np.cumsum(kept[has])]).astype(np.int64), **arrays,
                          query_codes=self.query_codes,
                          start_time=int(ts.min()) if len(ts) else t, cut_time=t,
                          fingerprint=fingerprint, layout=self.layout, data_dir=self.data_dir,
                          meta=meta, _products=self._products)

    def _select_clients(self, client_ids: np.ndarray, hi_time: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """:meth:`select`'s output for the events of ``client_ids`` (unknown ones ignored) before ``hi_time``: only
        their rows' slices are read (the memory maps serve just those pages)."""
        rows = unique_ints(self.rows_of(client_ids))
        rows = rows[rows >= 0]
        offsets = np.asarray(self.offsets)
        starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
        # every event position of those rows, in table order: each row's start plus 0..length-1
        pos = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
        keep = read_positions(self.timestamp, pos) < hi_time
        pos = pos[keep]
        return (np.repeat(rows, lengths)[keep],
                {c: read_positions(getattr(self, c), pos) for c in EVENT_ARRAYS})

    def last_events(self, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Event positions of the last ``n`` events of each client row (``-1`` rows have none).

        Returns ``(positions int64 (total,), counts int64 (len(rows),))``: positions of row ``i`` are the slice
        ``counts[:i].sum()`` onwards, in time order.
        """
        rows = np.asarray(rows, dtype=np.int64)
        ok = rows >= 0
        stop = np.where(ok, self.offsets[np.maximum(rows, 0) + 1], 0)
        start = np.where(ok, np.maximum(self.offsets[np.maximum(rows, 0)], stop - n), 0)
        counts = (stop - start).astype(np.int64)
        base = np.repeat(start - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return base + np.arange(counts.sum(), dtype=np.int64), counts


def _expected_arrays(manifest: dict) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array of a table, from its manifest."""
    n, c, q = int(manifest["n_events"]), int(manifest["n_clients"]), int(manifest["n_queries"])
    out = {"client_ids": ((c,), np.dtype(np.int64)), "offsets": ((c + 1,), np.dtype(np.int64)),
           "query_codes": ((q, CODE_LEN), np.dtype(np.uint8))}
    out.update({name: ((n,), dt) for name, dt in EVENT_ARRAYS.items()})
    return out


def cache_problem(folder: str | Path) -> str | None:
    """Why the cached table in ``folder`` cannot be used (a missing, truncated or foreign array, an unreadable
    manifest), or None when every array has the shape, dtype and file size its manifest implies. Reads headers
    only."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
        expected = _expected_arrays(manifest)
        for key in ("start_time", "cut_time", "fingerprint", "layout"):
            manifest[key]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{_MANIFEST} unreadable ({type(exc).__name__}: {exc})"
    for name, (shape, dtype) in expected.items():
        path = folder / f"{name}.npy"
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                got_shape, fortran, got_dtype = read_header(f)
                offset = f.tell()
        except (OSError, ValueError) as exc:
            return f"{path.name}: cannot be read ({type(exc).__name__}: {exc})"
        if tuple(got_shape) != shape or np.dtype(got_dtype) != dtype or fortran:
            return f"{path.name}: {np.dtype(got_dtype)} {tuple(got_shape)}, the manifest implies {dtype} {shape}"
        want = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        size = path.stat().st_size
        if size != want:
            return f"{path.name}: {size:,} bytes, expected {want:,} (truncated or overwritten)"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------------------------
def _until(frame: pl.LazyFrame, until: datetime | None) -> pl.LazyFrame:
    """``frame``'s events up to ``until`` (None: all); unparsable timestamps (null) kept, for the value check."""
    if until is None:
        return frame
    return frame.filter(pl.col(TIMESTAMP).is_null() | (pl.col(TIMESTAMP) <= until))


def _raw_end(data_dir: Path) -> datetime | None:
    """The last purchase of the raw files (the end of the raw period), None without purchases."""
    return scan_table(data_dir, PRODUCT_BUY, "raw").select(pl.col(TIMESTAMP).max()).collect(engine="streaming").item()


def _kind_frame(data_dir: Path, event: str, layout: str, until: datetime | None = None) -> pl.LazyFrame:
    """Normalised events of one kind (up to ``until``), in file order: client_id, timestamp (s) and the kind's
    item column (a search's query as Array(UInt8, 16))."""
    item = ITEM_COLUMN[event]
    return _until(scan_table(data_dir, event, layout), until).select(
        pl.col(CLIENT_ID), pl.col(TIMESTAMP).dt.epoch("s").alias(TIMESTAMP), pl.col(item))


#: Rows of an input file parsed at a time by pass 2 (about 100 MB of parsed columns).
PARTITION_BATCH = 4_000_000


def _build_into(out: Path, data_dir: Path, layout: str, fp: str, progress: bool, chunk_events: int) -> None:
    """Build the table into folder ``out``: cut balanced client-id ranges (pass 1: client ids only), split every
    kind's parsed events by range into binary column files (pass 2, :mod:`competition.partition`: timestamps and
    codes parsed once, every value checked there), then sort and write one range at a time into the memory-mapped
    arrays. A missing or unparsable value stops the build with :func:`competition.load.check_table`'s message."""
    t0 = time.perf_counter()
    log = (lambda m: print(f"events: {m}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    for event in EVENT_TYPES:
        scan_table(data_dir, event, layout)  # present, parquet, the contract's columns (DataError otherwise)
    products = read_products(data_dir)
    unknown = unknown_skus_by_kind(data_dir, layout, products)
    if unknown:
        log(f"{sum(unknown.values()):,} event(s) with a sku missing from {PRODUCT_PROPERTIES} "
            f"({', '.join(f'{k} {n:,}' for k, n in unknown.items())}): kept, category and price -1")
    until, after = None, None
    if layout == "raw":
        end = _raw_end(data_dir)
        if end is not None:
            until = end + AFTER_END_GRACE
            after = events_after_end(data_dir, end)
            if after["n"]:
                log(after_end_words(after))
    clients, cum, bounds = _client_ranges(data_dir, layout, chunk_events, until)
    n_events = int(cum[-1]) if len(cum) else 0
    log(f"{n_events:,} events of {len(clients):,} clients in {len(bounds) + 1} chunk(s)")
    n_queries = (_until(scan_table(data_dir, SEARCH_QUERY, layout), until).select(pl.len())
                 .collect(engine="streaming").item())
    _check_space(out, n_events, n_queries, len(clients), layout, fp)
    span = (int(clients[0]), int(clients[-1])) if len(clients) else (0, 0)
    parts = RangePartition(out / "_parts", bounds, span)
    _partition(parts, data_dir, layout, until, progress)
    arrays = {name: np.lib.format.open_memmap(out / f"{name}.npy", mode="w+", dtype=dt, shape=(n_events,))
              for name, dt in EVENT_ARRAYS.items()}
    query_codes = np.lib.format.open_memmap(out / "query_codes.npy", mode="w+", dtype=np.uint8,
                                            shape=(n_queries, CODE_LEN))
    catalogue = _Catalogue(products)
    pos = q_pos = 0
    start_time, last_time = None, None
    # range b is written (numpy's gathers, which leave the GIL) while range b + 1 is read and sorted: two ranges
    # in memory at most; every range's rows are fixed before it is written, so the bytes do not depend on timing
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="events-write") as writer:
        writing = None
        for b in progress_of(range(parts.n_ranges), desc="events: chunks", enabled=progress, unit="chunk"):
            chunk = parts.read(b)
            if chunk is None:
                continue
            order = _range_order(chunk, span)
            if writing is not None:
                writing.result()
            writing = writer.submit(_write_range, chunk, order, arrays, query_codes, pos, q_pos, catalogue)
            lo, hi = int(chunk.timestamp.min()), int(chunk.timestamp.max())
            start_time = lo if start_time is None else min(start_time, lo)
            last_time = hi if last_time is None else max(last_time, hi)
            pos += len(chunk)
            q_pos += len(chunk.codes)
            del chunk, order
        if writing is not None:
            writing.result()
    parts.remove()
    assert pos == n_events and q_pos == n_queries, (pos, n_events, q_pos, n_queries)
    for arr in (*arrays.values(), query_codes):
        arr.flush()
    np.save(out / "client_ids.npy", clients)
    np.save(out / "offsets.npy", np.concatenate([[0], cum]).astype(np.int64))
    cut_time = _cut_time(data_dir, layout, last_time)
    manifest = {"fingerprint": fp, "layout": layout, "data_dir": str(data_dir), "n_events": n_events,
                "n_clients": int(len(clients)), "n_queries": n_queries,
                "unknown_sku_events": int(sum(unknown.values())), "unknown_sku_by_kind": unknown, "after_end": after,
                "start_time": int(start_time or 0), "cut_time": int(cut_time),
                "build_seconds": round(time.perf_counter() - t0, 2), "build_version": BUILD_VERSION}
    (out / _MANIFEST).write_text(json.dumps(manifest, indent=2))
    log(f"built in {manifest['build_seconds']}s")


def _check_space(out: Path, n_events: int, n_queries: int, n_clients: int, layout: str, fp: str) -> None:
    """Refuse a build whose arrays and pass 2's temporary files do not fit the free space
    (:class:`competition.io.DiskFullError`, naming the table and the bytes it needs): the arrays are memory maps,
    and a write into a map on a full disk is a crash (SIGBUS), not an error."""
    arrays = (n_events * sum(dt.itemsize for dt in EVENT_ARRAYS.values()) + n_queries * CODE_LEN
              + (2 * n_clients + 1) * 8 + 8 * 4096)
    parts = (n_events - n_queries) * 8 * len(PART_COLUMNS) + n_queries * (16 + CODE_LEN)
    free = shutil.disk_usage(out).free
    if free < arrays + parts:
        raise DiskFullError(out.parent / f"events_{layout}_{fp}", arrays + parts, 0, free)


def _client_ranges(data_dir: Path, layout: str, chunk_events: int, until: datetime | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pass 1 (client_id column only): ``(clients, cum, bounds)``: every client with events, ascending, int64
    ``(n_clients,)``; the cumulative event count per client ``(n_clients,)``; the first client id of each
    client-id range after the first, ranges of about ``chunk_events`` events."""
    counts = (pl.concat([_until(scan_table(data_dir, ev, layout), until).select(CLIENT_ID) for ev in EVENT_TYPES])
              .group_by(CLIENT_ID).len().sort(CLIENT_ID).collect(engine="streaming"))
    if counts[CLIENT_ID].null_count():
        for ev in EVENT_TYPES:
            check_table(data_dir, ev, layout)  # the kind with a null client_id raises, naming the file
    clients = counts[CLIENT_ID].to_numpy().astype(np.int64)
    per_client = counts["len"].to_numpy().astype(np.int64)
    del counts
    n_events = int(per_client.sum())
    cum = np.cumsum(per_client)
    n_chunks = max(1, int(np.ceil(n_events / chunk_events)))
    cut_rows = np.searchsorted(cum, np.arange(1, n_chunks) * (n_events / n_chunks))
    bounds = np.unique(clients[np.minimum(cut_rows + 1, len(clients) - 1)]) if len(clients) else np.array([])
    return clients, cum, bounds


def _partition(parts: RangePartition, data_dir: Path, layout: str, until: datetime | None, progress: bool) -> None:
    """Pass 2: each kind's normalised events, parsed once here in batches of :data:`PARTITION_BATCH` rows, checked
    and appended to ``parts`` by client-id range. A batch with a missing value (a null in the file, an
    unparsable timestamp and a malformed code string all parse to null) stops the build: :func:`check_table` then
    names the file, the column and a sample."""
    for ev in progress_of(EVENT_TYPES, desc="events: parse and partition", enabled=progress, unit="kind"):
        item = ITEM_COLUMN[ev]
        for batch in _kind_frame(data_dir, ev, layout, until).collect_batches(chunk_size=PARTITION_BATCH):
            if any(batch.null_count().row(0)):
                check_table(data_dir, ev, layout)  # raises with the details
                raise DataError(DataPaths(data_dir).table(ev, layout), "missing or unparsable values")
            # int64 columns (scan_table's Int64), a search's codes uint8 (n, 16): the partition's file formats
            values = codes_to_numpy(batch[item]) if ev == SEARCH_QUERY else batch[item].to_numpy()
            parts.add(ev, batch[CLIENT_ID].to_numpy(), batch[TIMESTAMP].to_numpy(), values)


class _Catalogue:
    """Category and price of each sku (product_properties), looked up by sku: through a dense table indexed by
    the sku when the skus are small non-negative integers (one gather), else by binary search. Row -1 (no sku, or
    one absent from the catalogue) reads category and price -1: both arrays end with that sentinel."""

    def __init__(self, products: pl.DataFrame):
        skus = products[SKU].to_numpy().astype(np.int64)
        order = np.argsort(skus, kind="stable")
        self.skus = skus[order]
        self.category = np.append(products[CATEGORY].to_numpy().astype(np.int64)[order], -1)
        self.price = np.append(products[PRICE].cast(pl.Int16).to_numpy()[order], np.int16(-1))
        self.dense = None
        if len(skus) and self.skus[0] >= 0 and self.skus[-1] < max(4 * len(skus), 1 << 22):
            # sku -> row; the last slot (-1) answers every sku past the largest, and -1 itself (as uint64)
            self.dense = np.full(int(self.skus[-1]) + 2, -1, dtype=np.int32)
            self.dense[self.skus] = np.arange(len(skus), dtype=np.int32)

    def rows(self, sku: np.ndarray) -> np.ndarray:
        """Row of each of ``sku`` (int64 ``(n,)``, -1 for none) in the sorted catalogue, -1 where absent."""
        if self.dense is None:
            return index_sorted(self.skus, sku)
        return self.dense[np.minimum(sku.view(np.uint64), np.uint64(len(self.dense) - 1))]


_TYPE_BITS = 3
#: Event codes whose item is a sku (the others: a url for page visits, none for searches).
_SKU_CODES = np.isin(np.arange(256), [EVENT_CODE[e] for e in SKU_EVENTS])


def _sort_keys(chunk: RangeEvents, span: tuple[int, int]) -> np.ndarray | None:
    """One packed uint64 key per event that sorts like ``(client_id, timestamp, event_type)``, each field offset
    to start at 0; None when the fields' ranges need more than 64 bits (then the columns are sorted as they
    are). ``span``: the smallest and largest client id of the table."""
    t0, t1 = int(chunk.timestamp.min()), int(chunk.timestamp.max())
    client_bits, time_bits = max(span[1] - span[0], 0).bit_length(), (t1 - t0).bit_length()
    if client_bits + time_bits + _TYPE_BITS > 64:
        return None
    key = (chunk.client - span[0]).view(np.uint64)  # non-negative, below 2^client_bits
    key <<= np.uint64(time_bits + _TYPE_BITS)
    part = (chunk.timestamp - t0).view(np.uint64)
    part <<= np.uint64(_TYPE_BITS)
    key |= part
    key |= chunk.event_type
    return key


def _range_order(chunk: RangeEvents, span: tuple[int, int]) -> np.ndarray:
    """The permutation that puts ``chunk`` in the table's order, int64 ``(len(chunk),)``: by client, time, event
    type, item (sku or url), then the row in the source file (its place among its kind in ``chunk``). Every event
    has a distinct such key, so the order is total.

    Where :func:`_sort_keys` fits, one sort by the packed key and a second pass over its ties only (events of one
    client in the same second and of the same type: none among the 21.9M events of a 100k-client synthetic world;
    real logs may have more). At 1M clients (223M events, 12 ranges) that took 17.2 s instead of 27.9 s for a
    sort by two keys."""
    key = _sort_keys(chunk, span)
    if key is None:
        frame = pl.DataFrame({"c": chunk.client, "t": chunk.timestamp, "e": chunk.event_type, "i": chunk.item,
                              "p": np.arange(len(chunk), dtype=np.int64)})
        return frame.select(pl.arg_sort_by(["c", "t", "e", "i", "p"])).to_series().to_numpy().astype(np.int64)
    order = pl.Series(key).arg_sort().to_numpy().astype(np.int64)
    return order_ties(order, key, chunk.item)


def order_ties(order: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``order`` (a permutation sorting ``first``) made to sort ``(first, second, position)``: the runs of equal
    ``first`` are re-sorted by ``second``, then by position in ``first``, in place; returns ``order`` (the only
    permutation sorting by that triple)."""
    if len(order) < 2:
        return order
    sorted_first = first[order]
    tie = sorted_first[1:] == sorted_first[:-1]
    if not tie.any():
        return order
    in_run = np.zeros(len(order), dtype=bool)
    in_run[1:] |= tie
    in_run[:-1] |= tie
    slots = np.flatnonzero(in_run)  # the tied events' places in the order, ascending (runs stay contiguous)
    tied = order[slots]
    order[slots] = tied[np.lexsort((tied, second[tied], first[tied]))]
    return order


def _write_range(chunk: RangeEvents, order: np.ndarray, arrays: dict[str, np.ndarray], query_codes: np.ndarray,
                 pos: int, q_pos: int, catalogue: _Catalogue) -> int:
    """Write range ``chunk`` permuted by ``order`` (:func:`_range_order`) at event row ``pos`` of ``arrays``
    (missing values -1; category and price from ``catalogue``) and its searches' codes at row ``q_pos`` of
    ``query_codes`` (``query`` holds that row), then drop those rows from the resident set. Returns the number
    of searches written."""
    n = len(chunk)
    sl = slice(pos, pos + n)
    np.take(chunk.timestamp, order, out=arrays[TIMESTAMP][sl])
    kind = chunk.event_type[order]
    arrays["event_type"][sl] = kind
    item = chunk.item[order]
    is_sku = _SKU_CODES[kind]
    sku = np.where(is_sku, item, -1)
    arrays[SKU][sl] = sku
    arrays[URL][sl] = np.where(kind == EVENT_CODE[PAGE_VISIT], item, -1)
    del item
    row = catalogue.rows(sku)
    np.take(catalogue.category, row, out=arrays[CATEGORY][sl])  # row -1: the sentinel -1
    np.take(catalogue.price, row, out=arrays[PRICE][sl])
    is_q = kind == EVENT_CODE[SEARCH_QUERY]
    n_q = int(is_q.sum())
    qidx = np.full(n, -1, dtype=np.int32)
    qidx[is_q] = np.arange(q_pos, q_pos + n_q, dtype=np.int32)
    arrays[QUERY][sl] = qidx
    if n_q:
        query_codes[q_pos:q_pos + n_q] = chunk.codes[order[is_q] - chunk.search_start]
    for arr in arrays.values():  # written: out of the resident set (the page cache writes them back)
        release(arr, pos, pos + n)
    release(query_codes, q_pos, q_pos + n_q)
    return n_q


def _cut_time(data_dir: Path, layout: str, last_time: int | None) -> int:
    """End of the period the table covers (exclusive), seconds: the split's train_target_start for the input
    layout; one second after the last event for the raw files."""
    if layout == "input":
        t = read_split_times(data_dir).train_target_start
        return int(pl.Series([t]).cast(pl.Datetime("us")).dt.epoch("s").item())
    return int(last_time or 0) + 1


def load_events(data_dir: str | Path, layout: str = "input", progress: bool = True) -> EventTable:
    """Shortcut for :meth:`EventTable.build` (returns the cached table when fresh)."""
    return EventTable.build(data_dir, layout, progress=progress)


__all__ = ["EventTable", "load_events", "fingerprint", "block_fingerprint", "file_fingerprint", "cache_problem",
           "EVENT_ARRAYS", "index_sorted", "index_of", "read_range", "read_positions", "release"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m competition.events", formatter_class=HelpFormatter,
                                     description="Build (or reuse) the cached event table of a data directory.")
    parser.add_argument("--data-dir", required=True, type=Path, help="data directory in the organisers' layout")
    parser.add_argument("--layout", choices=LAYOUTS, default="input",
                        help="'input': the split's input period; 'raw': every released event")
    parser.add_argument("--rebuild", action="store_true", help="build even if a fresh cache exists")
    parser.add_argument("--chunk-events", type=int, default=20_000_000, help="events per build chunk (memory)")
    parser.add_argument("--seed", type=int, default=0, help="unused (the build is deterministic)")
    add_no_progress(parser)
    args = parser.parse_args(argv)
    try:
        table = EventTable.build(args.data_dir, args.layout, rebuild=args.rebuild, chunk_events=args.chunk_events,
                                 progress=not args.no_progress)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(table.meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
