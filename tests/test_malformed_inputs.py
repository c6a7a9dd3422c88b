"""A fixed fuzz list of malformed parquet and npy inputs, run through load, split, pack and probe.

Every case must end in exit code 2 (or one DataError, for the library's load functions) with one line naming the
file, never a traceback, and never exit 0 or leave an earlier output changed.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from competition.load import DataError, check_data_dir, read_relevant_clients
from competition.schema import (CLIENT_ID, CLIENT_IDS_FILE, EMBEDDINGS_FILE, PAGE_VISIT, PRICE, PRODUCT_PROPERTIES,
                                QUERY, SEARCH_QUERY, SKU, TIMESTAMP, DataPaths)
from competition import split as split_mod
from submit import pack as pack_mod
from validate import probe as probe_mod
from tests.worlds import tiny_world


def _frame_fault(table: str, change):
    """A fault that rewrites ``table`` as parquet after ``change(frame)``."""
    def apply(path: Path) -> None:
        change(pl.read_parquet(path)).write_parquet(path)
    return table, apply


def _bytes_fault(table: str, change):
    def apply(path: Path) -> None:
        path.write_bytes(change(path.read_bytes()))
    return table, apply


def _zero_middle(b: bytes) -> bytes:
    return b[:4] + bytes(len(b) - 8) + b[-4:]  # 'PAR1' at both ends, nothing readable between


#: Malformed parquet files: (name, (table, fault)).
PARQUET_FAULTS = {
    "truncated": _bytes_fault(PAGE_VISIT, lambda b: b[: len(b) // 2]),
    "empty_file": _bytes_fault(PAGE_VISIT, lambda b: b""),
    "csv_not_parquet": _bytes_fault(PAGE_VISIT, lambda b: b"client_id,timestamp,url\n1,2022-07-01 00:00:00,3\n"),
    "garbage_between_magics": _bytes_fault(PAGE_VISIT, _zero_middle),
    "missing_column": _frame_fault(PAGE_VISIT, lambda f: f.drop("url")),
    "string_client_ids": _frame_fault(PAGE_VISIT, lambda f: f.with_columns(pl.col(CLIENT_ID).cast(pl.String))),
    "null_client_id": _frame_fault(PAGE_VISIT, lambda f: f.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col(CLIENT_ID)).alias(CLIENT_ID))),
    "bad_timestamp": _frame_fault(PAGE_VISIT, lambda f: f.with_columns(pl.lit("2022-13-45 99:00:00").alias(TIMESTAMP))),
    "short_query_codes": _frame_fault(SEARCH_QUERY, lambda f: f.with_columns(pl.lit("[1 2 3]").alias(QUERY))),
    "price_out_of_range": _frame_fault(PRODUCT_PROPERTIES, lambda f: f.with_columns(pl.lit(100).alias(PRICE))),
    "duplicate_sku": _frame_fault(PRODUCT_PROPERTIES, lambda f: pl.concat([f, f.head(1)])),
}


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


#: Malformed .npy files: name -> new bytes from the old ones.
NPY_FAULTS = {
    "truncated": lambda b: b[: len(b) - 9],
    "empty_file": lambda b: b"",
    "text": lambda b: b"1 2 3\n",
    "header_only": lambda b: b[:128],
    "float_dtype": lambda b: _npy(np.load(io.BytesIO(b)).astype(np.float64)),
    "two_dimensional": lambda b: _npy(np.load(io.BytesIO(b)).reshape(1, -1)),
    "pickled_objects": lambda b: _npy(np.array([1, "a", None], dtype=object)),
    "duplicates": lambda b: _npy(np.r_[np.load(io.BytesIO(b)), np.load(io.BytesIO(b))[:1]]),
}

#: Malformed block files (for pack and probe): name -> (file, new bytes from the old ones).
BLOCK_FAULTS = {
    "embeddings_truncated": (EMBEDDINGS_FILE, NPY_FAULTS["truncated"]),
    "embeddings_empty": (EMBEDDINGS_FILE, NPY_FAULTS["empty_file"]),
    "embeddings_text": (EMBEDDINGS_FILE, NPY_FAULTS["text"]),
    "embeddings_nan": (EMBEDDINGS_FILE, lambda b: _npy(np.full_like(np.load(io.BytesIO(b)), np.nan))),
    "embeddings_inf": (EMBEDDINGS_FILE, lambda b: _npy(np.full_like(np.load(io.BytesIO(b)), np.inf))),
    "embeddings_1d": (EMBEDDINGS_FILE, lambda b: _npy(np.load(io.BytesIO(b))[:, 0])),
    "embeddings_strings": (EMBEDDINGS_FILE, lambda b: _npy(np.load(io.BytesIO(b)).astype(str))),
    "embeddings_objects": (EMBEDDINGS_FILE, NPY_FAULTS["pickled_objects"]),
    "embeddings_row_missing": (EMBEDDINGS_FILE, lambda b: _npy(np.load(io.BytesIO(b))[:-1])),
    "ids_float": (CLIENT_IDS_FILE, NPY_FAULTS["float_dtype"]),
    "ids_2d": (CLIENT_IDS_FILE, NPY_FAULTS["two_dimensional"]),
    "ids_truncated": (CLIENT_IDS_FILE, NPY_FAULTS["truncated"]),
    "ids_duplicate": (CLIENT_IDS_FILE, lambda b: _npy(np.r_[np.load(io.BytesIO(b))[:-1], np.load(io.BytesIO(b))[:1]])),
    "meta_not_json": ("meta.json", lambda b: b"{not json"),
    "meta_a_list": ("meta.json", lambda b: b"[1, 2]"),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A split tiny world with target lists, a stats block packed into a submission, and two specs: one that can
    rebuild the block ("build.json") and one that can only read it ("read.json")."""
    from competition.targets import write_target_lists

    root = tmp_path_factory.mktemp("fuzz")
    world = tiny_world(root / "world")
    split_mod.split(world, progress=False)
    write_target_lists(world)
    entry = {"name": "stats", "path": "blocks/stats", "transform": "none", "weight": 1.0, "dims": None}
    (root / "build.json").write_text(json.dumps({"version": 1, "blocks": [{**entry, "embedder": "stats",
                                                                           "params": {}}]}))
    (root / "read.json").write_text(json.dumps({"version": 1, "blocks": [entry]}))
    pack_mod.pack(world, root / "build.json", root / "submission", progress=False, log=lambda m: None)
    return root


@pytest.fixture
def case(pristine, tmp_path):
    root = tmp_path / "case"
    shutil.copytree(pristine, root)
    return root


def _snapshot(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()
            and ".cache" not in p.parts}


def _one_error_line(capsys, rc: int, *must: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in must:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def _pack(root: Path, spec: str) -> int:
    return pack_mod.main(["--data-dir", str(root / "world"), "--spec", str(root / spec), "--out",
                          str(root / "submission"), "--no-progress"])


def _probe(root: Path, block: Path) -> int:
    return probe_mod.main(["--data-dir", str(root / "world"), "--embeddings-dir", str(block), "--tasks", "churn",
                           "--probe", "lgbm", "--no-progress"])


@pytest.mark.parametrize("fault", sorted(PARQUET_FAULTS))
def test_malformed_parquet(case, fault, capsys):
    table, apply = PARQUET_FAULTS[fault]
    world, paths = case / "world", DataPaths(case / "world")
    # raw layout: load and split
    apply(paths.table(table, "raw"))
    with pytest.raises(DataError) as err:
        check_data_dir(world, "raw")
    assert "\n" not in str(err.value) and str(paths.table(table, "raw")) in str(err.value)
    before = _snapshot(world / "input", world / "target")
    _one_error_line(capsys, split_mod.main(["--data-dir", str(world)]), str(paths.table(table, "raw")))
    assert _snapshot(world / "input", world / "target") == before
    # input layout (product_properties is shared): pack must rebuild the block and cannot
    if table != PRODUCT_PROPERTIES:
        apply(paths.table(table, "input"))
    before = _snapshot(case / "submission", case / "blocks")
    _one_error_line(capsys, _pack(case, "build.json"), str(paths.table(table, "input")))
    assert _snapshot(case / "submission", case / "blocks") == before


@pytest.mark.parametrize("fault", sorted(NPY_FAULTS))
def test_malformed_relevant_clients(case, fault, capsys):
    world = case / "world"
    path = DataPaths(world).relevant_clients
    path.write_bytes(NPY_FAULTS[fault](path.read_bytes()))
    with pytest.raises(DataError) as err:
        read_relevant_clients(world)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    before = _snapshot(world / "input", world / "target", case / "submission", case / "blocks")
    _one_error_line(capsys, split_mod.main(["--data-dir", str(world)]), str(path))
    _one_error_line(capsys, _pack(case, "build.json"), str(path))
    _one_error_line(capsys, _probe(case, case / "blocks" / "stats"), str(path))
    assert _snapshot(world / "input", world / "target", case / "submission", case / "blocks") == before


@pytest.mark.parametrize("fault", sorted(BLOCK_FAULTS))
def test_malformed_block(case, fault, capsys):
    file, change = BLOCK_FAULTS[fault]
    block = case / "blocks" / "stats"
    (block / file).write_bytes(change((block / file).read_bytes()))
    before = _snapshot(case / "submission", case / "blocks")
    _one_error_line(capsys, _pack(case, "read.json"), "stats")
    assert _snapshot(case / "submission", case / "blocks") == before
    _one_error_line(capsys, _probe(case, block), str(block))


def test_values_beyond_float16_are_one_line(case, capsys):
    spec = json.loads((case / "read.json").read_text())
    spec["blocks"][0]["weight"] = 1e6
    (case / "heavy.json").write_text(json.dumps(spec))
    before = _snapshot(case / "submission", case / "blocks")
    _one_error_line(capsys, _pack(case, "heavy.json"), "does not fit float16", "block 'stats'", "overflow")
    assert _snapshot(case / "submission", case / "blocks") == before


@pytest.mark.parametrize("fault", ["truncated", "missing_column", "string_sku"])
def test_malformed_target_window_through_probe(case, fault, capsys):
    path = DataPaths(case / "world").train_target
    if fault == "truncated":
        path.write_bytes(path.read_bytes()[:50])
    elif fault == "missing_column":
        pl.read_parquet(path).drop(SKU).write_parquet(path)
    else:
        pl.read_parquet(path).with_columns(pl.lit("x").alias(SKU)).write_parquet(path)
    _one_error_line(capsys, _probe(case, case / "blocks" / "stats"), str(path))
