"""submit.pack: atomic writing, block (re)building by fingerprint, --final reads events after the split's cut."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import polars as pl
import pytest

from competition.schema import CLIENT_IDS_FILE, EMBEDDINGS_FILE, DataPaths
from competition.split import split
from embedders.base import read_block
from submit import pack as pack_mod
from submit.build import make_embedder
from submit.check import SubmissionError, check_submission
from submit.pack import main, pack, write_submission
from tests.worlds import EVENTS, PRODUCTS, RELEVANT, write_world
from validate.spec import SpecError

LATE, NONE = 106, 107  # 106: events only after the cut; 107: no events at all


@pytest.fixture
def late_world(tmp_path):
    """The standard tiny world plus client 106 (only a visit and a buy after the cut) and 107 (no events)."""
    from competition.split import split
    from competition.targets import write_target_lists
    events = {k: list(v) for k, v in EVENTS.items()}
    events["page_visit"].append((LATE, "2022-07-30 10:00:00", 77))
    events["product_buy"].append((LATE, "2022-07-30 10:05:00", 2))
    root = write_world(tmp_path / "late", events, PRODUCTS, RELEVANT + [LATE, NONE])
    split(root, progress=False)
    write_target_lists(root)
    return root


def _spec(tmp_path, blocks_dir, **entry):
    spec = {"version": 1, "blocks": [{"name": "stats", "path": str(blocks_dir / "stats"), "transform": "none",
                                      "weight": 1.0, "dims": None, "embedder": "stats", "params": {}, **entry}]}
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(spec))
    return p


def _row(out, client):
    ids = np.load(out / CLIENT_IDS_FILE)
    return np.load(out / EMBEDDINGS_FILE)[np.flatnonzero(ids == client)[0]]


def test_final_uses_events_after_the_cut(late_world, tmp_path):
    blocks = tmp_path / "blocks"
    spec = _spec(tmp_path, blocks)
    logs = []
    pack(late_world, spec, tmp_path / "local", progress=False, log=logs.append)
    pack(late_world, spec, tmp_path / "final", final=True, progress=False, log=logs.append)
    for out in ("local", "final"):
        assert check_submission(late_world, tmp_path / out) == []
    # local validation: 106's events are all after the cut, so it looks exactly like 107 (no events)
    assert np.array_equal(_row(tmp_path / "local", LATE), _row(tmp_path / "local", NONE))
    # final: every raw event counts, so 106 has a history of its own
    assert not np.array_equal(_row(tmp_path / "final", LATE), _row(tmp_path / "final", NONE))
    # the final block lives apart from the local one, built from the raw layout
    assert read_block(blocks / "stats").meta["layout"] == "input"
    assert read_block(tmp_path / "blocks-final" / "stats").meta["layout"] == "raw"
    report = json.loads((tmp_path / "final" / "pack.json").read_text())
    assert report["layout"] == "raw" and report["columns"] == {"stats": [0, 83]}


def test_blocks_are_rebuilt_only_when_stale(split_world, tmp_path):
    blocks = tmp_path / "blocks"
    spec = _spec(tmp_path, blocks)
    logs = []
    pack(split_world, spec, tmp_path / "out", progress=False, log=logs.append)
    assert any("stats: missing; building" in m for m in logs)
    logs.clear()
    pack(split_world, spec, tmp_path / "out", progress=False, log=logs.append)
    assert any("stats: fresh" in m for m in logs) and not any("building" in m for m in logs)
    # the split re-run (every file rewritten, same content) and a touched file: still fresh
    split(split_world, progress=False)
    page = split_world / "input" / "page_visit.parquet"
    os.utime(page, ns=(page.stat().st_atime_ns, page.stat().st_mtime_ns + 10**9))
    logs.clear()
    pack(split_world, spec, tmp_path / "out", progress=False, log=logs.append)
    assert any("stats: fresh" in m for m in logs) and not any("building" in m for m in logs)
    # a changed input file changes the fingerprint: the block is rebuilt
    pl.read_parquet(page).head(2).write_parquet(page)
    logs.clear()
    pack(split_world, spec, tmp_path / "out", progress=False, log=logs.append)
    assert any("stats: stale (input fingerprint" in m for m in logs)
    # other params than the block's: rebuilt
    spec = _spec(tmp_path, blocks, params={"transform": "log"})
    logs.clear()
    pack(split_world, spec, tmp_path / "out", progress=False, log=logs.append)
    assert any("stale (params ['transform']" in m for m in logs), logs


def test_unknown_embedder_and_params(split_world, tmp_path):
    with pytest.raises(SpecError, match="unknown embedder 'bert'"):
        pack(split_world, _spec(tmp_path, tmp_path / "b", embedder="bert"), tmp_path / "out", progress=False)
    with pytest.raises(SpecError, match=r"has no parameter\(s\) \['layers'\]"):
        make_embedder("stats", {"layers": 3}, seed=0)
    # no block folder and nothing to build it with
    spec = json.loads(_spec(tmp_path, tmp_path / "b").read_text())
    del spec["blocks"][0]["embedder"]
    with pytest.raises(SpecError, match="block 'stats' is missing at .* gives no 'embedder'"):
        pack(split_world, spec_from(spec, tmp_path), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / EMBEDDINGS_FILE).exists()


def spec_from(d, tmp_path):
    p = tmp_path / "edited.json"
    p.write_text(json.dumps(d))
    return p


RELEVANT_IDS = np.array([5, 6, 7], dtype=np.int64)


def _leftovers(out):
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


def test_write_submission_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "sub"
    ids, emb = RELEVANT_IDS, np.ones((3, 4), np.float16)
    write_submission(ids, emb, out, RELEVANT_IDS)
    assert np.array_equal(np.load(out / CLIENT_IDS_FILE), ids) and _leftovers(out) == []

    # a crash between writing and renaming: no embeddings.npy (the old one is gone too), no temp files
    real_replace = os.replace

    def crash(src, dst):
        if str(dst).endswith(EMBEDDINGS_FILE):
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_submission(ids, emb * 2, out, RELEVANT_IDS)
    assert not (out / EMBEDDINGS_FILE).exists() and _leftovers(out) == []
    monkeypatch.setattr(os, "replace", real_replace)

    # a crash in the check (after both temp files are written): nothing renamed
    out2 = tmp_path / "sub2"

    def boom(*a, **k):
        raise RuntimeError("check crashed")

    monkeypatch.setattr(pack_mod, "check_arrays", boom)
    with pytest.raises(RuntimeError):
        write_submission(ids, emb, out2, RELEVANT_IDS)
    assert list(out2.iterdir()) == []


def test_invalid_submission_is_not_written(tmp_path):
    out = tmp_path / "sub"
    with pytest.raises(SubmissionError) as exc:
        write_submission(np.array([5, 6, 6], np.int64), np.ones((3, 2), np.float32), out, RELEVANT_IDS)
    assert "embeddings dtype" in str(exc.value) and "client_ids set" in str(exc.value)
    assert list(out.iterdir()) == []


def test_cli_errors(split_world, tmp_path, capsys):
    spec = _spec(tmp_path, tmp_path / "b", weight=-1.0)
    rc = main(["--data-dir", str(split_world), "--spec", str(spec), "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "negative weight" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data-dir", str(split_world)])
    with pytest.raises(SystemExit):
        main(["--final", "--work-dir", str(tmp_path / "w")])
    assert "need --data-dir" in capsys.readouterr().err


def test_block_without_embedder_is_rebuilt_from_its_meta(split_world, tmp_path):
    blocks = tmp_path / "blocks"
    pack(split_world, _spec(tmp_path, blocks), tmp_path / "local", progress=False, log=lambda m: None)
    d = json.loads(_spec(tmp_path, blocks).read_text())
    del d["blocks"][0]["embedder"], d["blocks"][0]["params"]  # as validate.search writes it
    logs = []
    pack(split_world, spec_from(d, tmp_path), tmp_path / "local", progress=False, log=logs.append)
    assert any("stats: fresh" in m for m in logs)
    with warnings.catch_warnings():  # meta.json's params are constructor arguments: nothing is lost, no warning
        warnings.simplefilter("error", UserWarning)
        pack(split_world, spec_from(d, tmp_path), tmp_path / "final", final=True, progress=False, log=logs.append)
    assert read_block(tmp_path / "blocks-final" / "stats").meta["layout"] == "raw"


def test_changed_relevant_clients_make_blocks_stale(split_world, tmp_path):
    """Clients removed and one added: the block no longer fits them, so it is rebuilt (never mean-filled)."""
    spec = _spec(tmp_path, tmp_path / "blocks")
    pack(split_world, spec, tmp_path / "out", progress=False, log=lambda m: None)
    rel = DataPaths(split_world).relevant_clients
    np.save(rel, np.r_[np.load(rel)[2:], 105])
    logs = []
    pack(split_world, spec, tmp_path / "out", progress=False, log=logs.append)
    assert any("stats: stale (input fingerprint" in m for m in logs), logs
    assert sorted(read_block(tmp_path / "blocks" / "stats").client_ids) == [102, 103, 104, 105]
    assert check_submission(split_world, tmp_path / "out") == []


def _packed_stats(split_world, tmp_path):
    """A stats block built (and thus fresh) through pack, and its spec."""
    spec = _spec(tmp_path, tmp_path / "blocks")
    pack(split_world, spec, tmp_path / "out", progress=False, log=lambda m: None)
    return spec, tmp_path / "blocks" / "stats"


def _cli(split_world, spec, out, *extra):
    return main(["--data-dir", str(split_world), "--spec", str(spec), "--out", str(out), "--no-progress", *extra])


def test_coverage_is_reported_and_a_poorly_covering_block_refused(split_world, tmp_path, capsys):
    spec, block = _packed_stats(split_world, tmp_path)
    logs = []
    pack(split_world, spec, tmp_path / "out", progress=False, log=logs.append)
    assert "block stats covers 5 of 5 relevant clients (100.0%)" in logs
    # the block loses a relevant client (its meta, so its freshness, unchanged)
    ids, emb = np.load(block / CLIENT_IDS_FILE), np.load(block / EMBEDDINGS_FILE)
    keep = ids != 103
    np.save(block / CLIENT_IDS_FILE, ids[keep])
    np.save(block / EMBEDDINGS_FILE, emb[keep])
    before = (tmp_path / "out" / EMBEDDINGS_FILE).read_bytes()
    capsys.readouterr()
    assert _cli(split_world, spec, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "block stats covers 4 of 5 clients (80.0%), below the 99% asked for" in err
    assert (tmp_path / "out" / EMBEDDINGS_FILE).read_bytes() == before  # nothing written
    # allowed explicitly: packed, and said
    assert _cli(split_world, spec, tmp_path / "out", "--min-coverage", "50") == 0
    out = capsys.readouterr().out
    assert "block stats covers 4 of 5 relevant clients (80.0%)" in out
    assert "notice: block stats covers 4 of 5 clients (80.0%); the other 1 get its column means" in out
    assert json.loads((tmp_path / "out" / "pack.json").read_text())["coverage"] == {"stats": 4}


def test_duplicate_ids_refused_and_float64_cast_with_a_notice(split_world, tmp_path, capsys):
    spec, block = _packed_stats(split_world, tmp_path)
    emb = np.load(block / EMBEDDINGS_FILE)
    np.save(block / EMBEDDINGS_FILE, emb.astype(np.float64))
    capsys.readouterr()
    assert _cli(split_world, spec, tmp_path / "out64") == 0
    out = capsys.readouterr().out
    assert "notice: block 'stats'" in out and "is stored as float64; cast to float32" in out
    assert np.array_equal(np.load(tmp_path / "out64" / EMBEDDINGS_FILE), np.load(tmp_path / "out" / EMBEDDINGS_FILE))
    ids = np.load(block / CLIENT_IDS_FILE)
    ids[1] = ids[0]
    np.save(block / CLIENT_IDS_FILE, ids)
    assert _cli(split_world, spec, tmp_path / "dup") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{block / CLIENT_IDS_FILE}: 1 duplicate client id(s)" in err
    assert not (tmp_path / "dup" / EMBEDDINGS_FILE).exists()


def test_a_relative_spec_path_never_falls_back_to_the_working_folder(split_world, tmp_path, monkeypatch):
    """Issue 16 item 1 through pack: another world's blocks/stats in the working folder is left untouched."""
    other = tmp_path / "other"
    (other / "blocks" / "stats").mkdir(parents=True)
    (other / "blocks" / "stats" / "keep.txt").write_text("another world's block")
    (other / "blocks" / "stats" / EMBEDDINGS_FILE).write_bytes(b"not ours")
    (other / "blocks" / "stats" / CLIENT_IDS_FILE).write_bytes(b"not ours")
    world_dir = tmp_path / "spec_home"
    world_dir.mkdir()
    spec = {"version": 1, "blocks": [{"name": "stats", "path": "blocks/stats", "transform": "none", "weight": 1.0,
                                      "dims": None, "embedder": "stats", "params": {}}]}
    (world_dir / "spec.json").write_text(json.dumps(spec))
    monkeypatch.chdir(other)
    logs = []
    pack(split_world, world_dir / "spec.json", tmp_path / "out", progress=False, log=logs.append)
    assert any(f"stats: missing; building" in m for m in logs)
    assert read_block(world_dir / "blocks" / "stats").meta["embedder"] == "stats"
    assert sorted(p.name for p in (other / "blocks" / "stats").iterdir()) == [CLIENT_IDS_FILE, EMBEDDINGS_FILE,
                                                                              "keep.txt"]
    assert (other / "blocks" / "stats" / EMBEDDINGS_FILE).read_bytes() == b"not ours"


def test_a_killed_packs_temporary_submission_is_removed(split_world, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    stray = out / ".embeddings.tmp-1a2b3c4d.npy"  # a killed write of embeddings.npy (at 1M x 2048: ~4 GB)
    stray.write_bytes(b"\x93NUMPY half")
    (out / ".notes").write_text("the user's")
    pack(split_world, _spec(tmp_path, tmp_path / "blocks"), out, progress=False, log=lambda m: None)
    err = capsys.readouterr().err
    assert f"removed 1 leftover temporary of an interrupted run in {out}: {stray.name}" in err
    assert sorted(p.name for p in out.iterdir()) == [".notes", CLIENT_IDS_FILE, EMBEDDINGS_FILE, "pack.json"]
