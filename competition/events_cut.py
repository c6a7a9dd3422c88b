"""The input-period event table cut from the raw one, instead of built again from ``input/``.

The split writes ``input/<kind>.parquet`` as the raw files' rows with a timestamp before ``train_target_start``, in
their order and with their columns (:mod:`competition.split`). The raw table holds those events in the same order
(ties in time are broken by type, item and then the row in the file, and filtering keeps the rows' relative order),
so the input table is the raw table's events before that instant, with the search queries renumbered in table
order. A one-command run that will also build the final submission builds the raw table first and cuts the input
table from it: chunks of the raw arrays read with :func:`competition.events.read_range` (not left resident) and
appended to the new files, instead of parsing, partitioning and sorting the input files again (at 1M clients
1.5-1.6x faster than that build, with 8x less peak RSS; docs/scale.md).

The cut is taken only when it is certainly the same table: a fresh raw table exists for the current raw files, the
split's ``train_target_start`` is a whole second (the tables store seconds), and every kind's rows in ``input/``
agree with the raw table's events of that kind before the instant, in number and in the sum of their client ids
(one read of the client_id columns: a split that came from other raw files, or an input file changed since, does
not agree). Otherwise :meth:`competition.events.EventTable.build` builds from ``input/`` as before. The result is the same arrays, byte
for byte, as a build from ``input/`` (tested), under the input layout's own cache key; its manifest says
``cut_from`` (the raw table's fingerprint).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from competition.events import (_MANIFEST, BUILD_VERSION, EVENT_ARRAYS, EventTable, _check_space, _cut_time,
                                fingerprint, read_range)
from competition.load import DataError, read_products, unknown_skus_by_kind
from competition.schema import CLIENT_ID, EVENT_CODE, EVENT_TYPES, QUERY, TIMESTAMP, DataPaths
from competition.split import read_split_times


def input_cut_time(data_dir: Path) -> int | None:
    """``train_target_start`` in epoch seconds, None when it is not a whole second or there is no split."""
    try:
        t = read_split_times(data_dir).train_target_start
    except (OSError, ValueError, KeyError):
        return None
    micros = int(pl.Series([t]).cast(pl.Datetime("us")).dt.epoch("us").item())
    return micros // 1_000_000 if micros % 1_000_000 == 0 else None


class NpyWriter:
    """A ``.npy`` file of known shape written by appending rows (the header :func:`numpy.save` would write)."""

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]):
        self.file = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.file, header)
        self.dtype = np.dtype(dtype)

    def append(self, values: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())

    def close(self) -> None:
        self.file.close()


def kept_counts(raw: EventTable, t: int, chunk_events: int) -> tuple[np.ndarray, dict[int, tuple[int, int]], int]:
    """Of the events before ``t`` of the raw table: how many per client row (int64 ``(n_clients,)``); per event
    code, how many and the sum of their client ids (what :func:`cut_source` compares with ``input/``); and how
    many are searches. One chunked pass over the timestamps, types and queries."""
    offsets, ids, n_clients = np.asarray(raw.offsets), np.asarray(raw.client_ids), raw.n_clients
    n_events = int(offsets[-1])
    per_client = np.zeros(n_clients, dtype=np.int64)
    per_code = {code: [0, 0] for code in EVENT_CODE.values()}
    n_queries = 0
    for lo in range(0, n_events, chunk_events):
        hi = min(lo + chunk_events, n_events)
        # the client rows this chunk touches, and how many of its events each holds (no per-event search)
        r0 = int(np.searchsorted(offsets, lo, side="right")) - 1
        r1 = int(np.searchsorted(offsets, hi - 1, side="right"))
        bounds = np.clip(offsets[r0:r1 + 1], lo, hi) - lo
        keep = read_range(raw.timestamp, lo, hi) < t
        per_client[r0:r1] += np.add.reduceat(keep.astype(np.int64), bounds[:-1])  # every row has >= 1 event here
        cid = np.repeat(ids[r0:r1], np.diff(bounds))[keep]
        codes = read_range(raw.event_type, lo, hi)[keep]
        for code, acc in per_code.items():
            mask = codes == code
            acc[0] += int(mask.sum())
            acc[1] += int(cid[mask].sum())
        n_queries += int((read_range(raw.query, lo, hi)[keep] >= 0).sum())
    return per_client, {c: (n, s) for c, (n, s) in per_code.items()}, n_queries


def input_fingerprints(data_dir: Path) -> dict[str, tuple[int, int]] | None:
    """Per kind, the rows of ``input/<kind>.parquet`` and the sum of their client ids (None when a file cannot
    be read: the build then says what is wrong with it)."""
    paths = DataPaths(data_dir)
    try:
        return {ev: tuple(int(v or 0) for v in pl.scan_parquet(paths.table(ev, "input"))
                          .select(pl.len(), pl.col(CLIENT_ID).cast(pl.Int64).sum()).collect(engine="streaming").row(0))
                for ev in EVENT_TYPES}
    except (OSError, pl.exceptions.PolarsError):
        return None


def cut_source(data_dir: Path, chunk_events: int = 20_000_000):
    """``(raw table, t, kept per client, n_queries)``: the fresh raw table to cut the input table from and what
    :func:`cut_into` needs, or None when the cut would not certainly equal a build from ``input/`` (module doc)."""
    cache = DataPaths(data_dir).cache / f"events_raw_{fingerprint(data_dir, 'raw')}"
    t = input_cut_time(data_dir)
    if t is None or not (cache / _MANIFEST).is_file():
        return None
    try:
        raw = EventTable.open(cache, data_dir=data_dir)  # checks every array against its manifest
    except DataError:
        return None
    if t > raw.cut_time:
        return None
    files = input_fingerprints(data_dir)
    if files is None:
        return None
    per_client, per_code, n_queries = kept_counts(raw, t, chunk_events)
    if any(per_code[EVENT_CODE[ev]] != got for ev, got in files.items()):
        return None
    return raw, t, per_client, n_queries


def cut_into(out: Path, source, data_dir: Path, fp: str, progress: bool, chunk_events: int = 20_000_000) -> None:
    """Write the input table into folder ``out`` from :func:`cut_source`'s ``source``: the same files as
    :func:`competition.events._build_into` on ``input/`` (the manifest adds ``cut_from``), appended chunk by chunk
    (memory: a chunk's columns)."""
    t0 = time.perf_counter()
    log = (lambda m: print(f"events: {m}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    raw, t, per_client, n_queries = source
    has = per_client > 0
    n_events = int(per_client.sum())
    clients = np.asarray(raw.client_ids)[has]
    log(f"{n_events:,} events of {len(clients):,} clients cut from the raw table {raw.fingerprint} before {t}")
    unknown = unknown_skus_by_kind(data_dir, "input", read_products(data_dir))
    _check_space(out, n_events, n_queries, len(clients), "input", fp)
    writers = {name: NpyWriter(out / f"{name}.npy", dt, (n_events,)) for name, dt in EVENT_ARRAYS.items()}
    codes_out = NpyWriter(out / "query_codes.npy", np.uint8, (n_queries, *raw.query_codes.shape[1:]))
    pos = q_pos = 0
    start_time = None
    try:
        for lo in range(0, raw.n_events, chunk_events):
            hi = min(lo + chunk_events, raw.n_events)
            ts = read_range(raw.timestamp, lo, hi)
            idx = np.flatnonzero(ts < t)
            if not len(idx):
                continue
            for name, writer in writers.items():
                if name != QUERY:
                    writer.append((ts if name == TIMESTAMP else read_range(getattr(raw, name), lo, hi))[idx])
            q = read_range(raw.query, lo, hi)[idx]
            is_q = q >= 0
            n_q = int(is_q.sum())
            new = np.full(len(idx), -1, dtype=np.int32)
            new[is_q] = np.arange(q_pos, q_pos + n_q, dtype=np.int32)  # numbered in table order, as a build does
            writers[QUERY].append(new)
            if n_q:  # the kept searches' rows are ascending (a build numbers them in table order): one span read
                rows = q[is_q]
                codes_out.append(read_range(raw.query_codes, int(rows[0]), int(rows[-1]) + 1)[rows - rows[0]])
            first = int(ts[idx].min())
            start_time = first if start_time is None else min(start_time, first)
            pos += len(idx)
            q_pos += n_q
    finally:
        for writer in (*writers.values(), codes_out):
            writer.close()
    assert pos == n_events and q_pos == n_queries, (pos, n_events, q_pos, n_queries)
    np.save(out / "client_ids.npy", clients)
    np.save(out / "offsets.npy", np.concatenate([[0], np.cumsum(per_client[has])]).astype(np.int64))
    manifest = {"fingerprint": fp, "layout": "input", "data_dir": str(data_dir), "n_events": n_events,
                "n_clients": int(len(clients)), "n_queries": n_queries,
                "unknown_sku_events": int(sum(unknown.values())), "unknown_sku_by_kind": unknown, "after_end": None,
                "start_time": int(start_time or 0), "cut_time": int(_cut_time(data_dir, "input", None)),
                "build_seconds": round(time.perf_counter() - t0, 2), "build_version": BUILD_VERSION,
                "cut_from": raw.fingerprint}
    (out / _MANIFEST).write_text(json.dumps(manifest, indent=2))
    log(f"cut in {manifest['build_seconds']}s")
