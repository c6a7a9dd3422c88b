"""A fixed fuzz list of malformed parquet and npy inputs, run through load, split, pack and probe.

Every case must end in exit code 2 (or one DataError, for the library's load functions) with one line naming the
file, never a traceback, and never exit 0 or leave an earlier output changed. So must a folder another process
holds (a running pack's run folder, a data folder being split) and a disk that fills while a block or a submission
is written (then no temporary is left, and the next run resumes). Awkward but valid inputs (``TOLERATED``: relevant
clients without events, skus missing from product_properties, events after the last purchase) are packed with
one notice line each, never a raw Python warning, and a stateless plugin embedder is packed like ours.
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


# ---------------------------------------------------------------------------------------------------------------
# Issue 28: a busy folder and a full disk end in one line and exit 2 too; awkward but valid inputs are packed with
# one notice line each (never a raw Python warning), and a stateless plugin is packed like any embedder.
# ---------------------------------------------------------------------------------------------------------------
def _run_dir_held(root: Path) -> tuple[Path, list[str]]:
    return root / "out" / "run", ["submit.pack", "--data-dir", str(root / "world"), "--out", str(root / "out"),
                                  "--quick", "--no-progress"]


def _data_dir_held(root: Path) -> tuple[Path, list[str]]:
    return root / "world", ["competition.split", "--data-dir", str(root / "world"), "--no-progress"]


#: Folders held by another live process: name -> (case root -> (held folder, command argv)).
BUSY = {"run_folder_of_a_running_pack": _run_dir_held, "data_folder_being_split": _data_dir_held}


@pytest.mark.parametrize("busy", sorted(BUSY))
def test_busy_folder_is_one_line(case, busy, capsys):
    from tests.competition.test_lock import hold

    folder, argv = BUSY[busy](case)
    main = {"submit.pack": pack_mod.main, "competition.split": split_mod.main}[argv[0]]
    before = _snapshot(case / "world" / "input", case / "world" / "target", case / "submission")
    proc = hold(folder)
    try:
        line = _one_error_line(capsys, main(argv[1:]), str(folder), f"pid {proc.pid}", "--wait")
        assert "in use by another run" in line
    finally:
        proc.kill()
        proc.wait()
    assert _snapshot(case / "world" / "input", case / "world" / "target", case / "submission") == before


def _full_disk_on(marker: str, monkeypatch) -> None:
    """np.save fails as on a full disk (numpy's short write) for temporaries whose path holds ``marker``."""
    real = np.save

    def save(file, arr, *a, **k):
        if marker in str(file):
            Path(file).write_bytes(b"\x93NUMPY partial")
            raise OSError(f"{np.asarray(arr).nbytes} requested and 14 written")
        return real(file, arr, *a, **k)
    monkeypatch.setattr(np, "save", save)


#: Where the disk fills: name -> (marker of the temporary, what the error names).
DISK_FULL = {"while_writing_a_block": (".stats.tmp-", "blocks/stats"),
             "while_writing_the_submission": (".embeddings.tmp-", "submission/embeddings.npy")}


@pytest.mark.parametrize("where", sorted(DISK_FULL))
def test_full_disk_is_one_line_and_the_next_run_resumes(case, where, capsys, monkeypatch):
    marker, named = DISK_FULL[where]
    before = _snapshot(case / "submission", case / "blocks")
    _full_disk_on(marker, monkeypatch)
    argv = ["--data-dir", str(case / "world"), "--spec", str(case / "build.json"), "--out", str(case / "submission"),
            "--rebuild", "--no-progress"]
    line = _one_error_line(capsys, pack_mod.main(argv), named, "no space left on device", "it needs", "bytes")
    after = _snapshot(case / "submission", case / "blocks")
    assert not [p for p in after if Path(p).name.startswith(".")]  # no temporary left
    assert {p: b for p, b in after.items() if "submission" in p} == {p: b for p, b in before.items()
                                                                     if "submission" in p}  # the old one intact
    if "block" in where:
        assert after == before
    monkeypatch.undo()
    assert pack_mod.main(argv) == 0, line
    from submit.check import check_submission
    assert check_submission(case / "world", case / "submission") == []


def _append(path: Path, rows: dict) -> None:
    frame = pl.read_parquet(path)
    pl.concat([frame, pl.DataFrame(rows, schema=frame.schema)]).write_parquet(path)


def _no_event_clients(world: Path) -> None:
    path = DataPaths(world).relevant_clients
    np.save(path, np.r_[np.load(path), [900, 901]])


def _unknown_skus(world: Path) -> None:
    from competition.schema import PRODUCT_BUY
    _append(DataPaths(world).table(PRODUCT_BUY), {CLIENT_ID: [104, 104], TIMESTAMP: ["2022-07-05 00:00:00"] * 2,
                                                  SKU: [999, 998]})


def _events_after_end(world: Path) -> None:
    _append(DataPaths(world).table(PAGE_VISIT), {CLIENT_ID: [101] * 100, TIMESTAMP: ["2100-01-01 00:00:00"] * 100,
                                                 "url": [77] * 100})


#: Valid but awkward inputs: name -> (change to the raw world, pack --final?, words of its one notice line).
TOLERATED = {
    "relevant_clients_without_events": (_no_event_clients, False, ["2 of 7 relevant clients have no event",
                                                                   "per block: stats one shared row"]),
    "skus_missing_from_product_properties": (_unknown_skus, False, [
        "2 event(s) in the input period (before 2022-07-24 00:00:00) have a sku", "(product_buy 2)", "stats: counted"]),
    "events_after_the_last_purchase": (_events_after_end, True, ["100 event(s) after the last purchase",
                                                                 "page_visit 100", "2100-01-01 00:00:00",
                                                                 "100 of them more than a day later",
                                                                 "left out of the final blocks (dropped"]),
}


@pytest.mark.parametrize("name", sorted(TOLERATED))
def test_tolerated_input_is_one_notice_line(case, name, capsys):
    import warnings

    change, final, words = TOLERATED[name]
    change(case / "world")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the toolkit's own lines, never a raw Python warning
        split_mod.split(case / "world", progress=False)
        assert pack_mod.main(["--data-dir", str(case / "world"), "--spec", str(case / "build.json"), "--out",
                              str(case / "submission"), "--no-progress"] + (["--final"] if final else [])) == 0
    out = capsys.readouterr()
    notices = [m for m in out.out.splitlines() if m.startswith("notice: ") and words[0] in m]
    assert len(notices) == 1 and all(w in notices[0] for w in words), out.out
    assert "Traceback" not in out.err and "Warning" not in out.err
    assert notices[0] in json.loads((case / "submission" / "pack.json").read_text())["notices"]


def test_stateless_plugin_is_packed_final(case, capsys):
    spec = {"version": 1, "blocks": [{"name": "hash", "path": "blocks/hash", "transform": "none", "weight": 1.0,
                                      "dims": None, "embedder": "tests.embedders.test_contract:IdHash",
                                      "params": {}}]}
    (case / "hash.json").write_text(json.dumps(spec))
    assert pack_mod.main(["--data-dir", str(case / "world"), "--spec", str(case / "hash.json"), "--out",
                          str(case / "submission"), "--final", "--no-progress"]) == 0
    assert "NotFittedError" not in capsys.readouterr().err
