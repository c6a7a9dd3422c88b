"""competition.events_cut: the input table cut from a fresh raw one is the table a build from input/ makes."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from competition.events import EventTable
from competition.events_cut import cut_source, input_cut_time
from competition.schema import CLIENT_ID, PAGE_VISIT, DataPaths
from competition.synth import generate_world

FILES = ("client_ids", "offsets", "timestamp", "event_type", "sku", "category", "price", "url", "query",
         "query_codes")


def table_files(table: EventTable) -> dict[str, bytes]:
    folder = DataPaths(table.data_dir).cache / f"events_input_{table.fingerprint}"
    return {name: (folder / f"{name}.npy").read_bytes() for name in FILES}


@pytest.fixture
def world(tmp_path):
    # several chunks (chunk_events below) and every kind, searches included; 2 of 3 clients are not relevant
    return generate_world(tmp_path / "w", 150, seed=4_401, chunk_clients=150, other_clients=300, progress=False)


@pytest.mark.parametrize("chunk_events", [20_000_000, 997])
def test_the_cut_writes_the_same_files_as_a_build(world, chunk_events):
    raw = EventTable.build(world, "raw", progress=False, chunk_events=chunk_events)
    cut = EventTable.build(world, "input", progress=False, chunk_events=chunk_events)
    assert cut.meta["cut_from"] == raw.fingerprint  # it was cut, not built
    assert cut.n_events < raw.n_events and (np.asarray(cut.query) >= 0).any()
    cut_files, cut_meta = table_files(cut), dict(cut.meta)
    built = EventTable.build(world, "input", progress=False, rebuild=True, chunk_events=chunk_events)
    assert "cut_from" not in built.meta
    for name, data in table_files(built).items():
        assert cut_files[name] == data, name
    skip = {"build_seconds", "cut_from"}
    assert {k: v for k, v in cut_meta.items() if k not in skip} == \
        {k: v for k, v in built.meta.items() if k not in skip}


def test_no_cut_without_a_fresh_raw_table(world):
    assert cut_source(world) is None
    table = EventTable.build(world, "input", progress=False)
    assert "cut_from" not in table.meta


def test_no_cut_when_input_disagrees_with_the_raw_files(world):
    EventTable.build(world, "raw", progress=False)
    assert cut_source(world) is not None
    path = DataPaths(world).table(PAGE_VISIT, "input")
    frame = pl.read_parquet(path)
    # the same number of rows, one client id moved: the row counts agree, the client-id sums do not
    ids = frame[CLIENT_ID].to_numpy().copy()
    ids[0] = ids[0] + 1
    frame.with_columns(pl.Series(CLIENT_ID, ids, dtype=frame.schema[CLIENT_ID])).write_parquet(path)
    assert cut_source(world) is None
    table = EventTable.build(world, "input", progress=False)
    assert "cut_from" not in table.meta
    assert int(table.client_ids.searchsorted(ids[0])) < table.n_clients


def test_a_split_instant_inside_a_second_is_not_cut(world):
    assert input_cut_time(world) is not None
    path = DataPaths(world).split_times
    times = json.loads(path.read_text())
    key = next(k for k in times if k.startswith("train_target"))
    times[key] = times[key].replace(" 00:00:00", " 00:00:00.5") if " " in times[key] else times[key] + ".5"
    path.write_text(json.dumps(times))
    assert input_cut_time(world) is None
