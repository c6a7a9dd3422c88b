"""competition.io: outputs appear under their final name only when complete; failures leave nothing behind."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from competition.io import atomic_dir, atomic_path, save_npy, write_json


class Boom(RuntimeError):
    pass


def test_atomic_path_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        assert tmp.suffix == ".txt"
        tmp.write_text("hello")
        assert not target.exists()  # invisible until the block ends
    assert target.read_text() == "hello"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_path_replaces_existing(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise Boom()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("new, half")
            raise Boom()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_error_before_writing(tmp_path):
    with pytest.raises(Boom):
        with atomic_path(tmp_path / "x.npy"):
            raise Boom()
    assert list(tmp_path.iterdir()) == []


def test_save_npy(tmp_path):
    arr = np.arange(6, dtype=np.int64).reshape(2, 3)
    path = save_npy(tmp_path / "a" / "x.npy", arr)
    assert path == tmp_path / "a" / "x.npy"
    loaded = np.load(path)
    assert loaded.dtype == np.int64
    np.testing.assert_array_equal(loaded, arr)
    assert [p.name for p in path.parent.iterdir()] == ["x.npy"]  # np.save appended no second suffix


def test_save_npy_leaves_nothing_on_error(tmp_path, monkeypatch):
    target = tmp_path / "x.npy"
    np.save(target, np.zeros(3))

    def half_save(path, array):
        with open(path, "wb") as f:
            f.write(b"\x93NUMPY half")
        raise Boom()

    monkeypatch.setattr(np, "save", half_save)
    with pytest.raises(Boom):
        save_npy(target, np.ones(3))
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(target), np.zeros(3))  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]


def test_atomic_dir_success_and_replace(tmp_path):
    out = tmp_path / "block"

    def write(d):
        (d / "a.txt").write_text("1")
        assert not out.exists()

    assert atomic_dir(out, write) == out
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    out_stale = out / "stale.txt"
    out_stale.write_text("old")
    atomic_dir(out, lambda d: (d / "b.txt").write_text("2"))
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]  # replaced as a whole
    assert [p.name for p in tmp_path.iterdir()] == ["block"]


def test_atomic_dir_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "block"

    def write(d):
        (d / "half.txt").write_text("x")
        raise Boom()

    with pytest.raises(Boom):
        atomic_dir(out, write)
    assert list(tmp_path.iterdir()) == []
    # an existing folder survives a failed rewrite untouched
    atomic_dir(out, lambda d: (d / "good.txt").write_text("ok"))
    with pytest.raises(Boom):
        atomic_dir(out, write)
    assert [p.name for p in tmp_path.iterdir()] == ["block"]
    assert [p.name for p in out.iterdir()] == ["good.txt"]


def _dead_pid() -> int:
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_a_killed_run_are_removed_at_the_next_write(tmp_path, capsys):
    import os
    dead, alive = _dead_pid(), os.getpid()
    # what a killed atomic_dir / atomic_path of these targets leaves (old names without a pid, too)
    for name in (".stats.old-1a2b3c4d", f".stats.tmp-{dead}-0badcafe", f".stats.tmp-{alive}-12345678",
                 ".statsx.tmp-1a2b3c4d", ".other.tmp-1a2b3c4d"):
        (tmp_path / name).mkdir()
        (tmp_path / name / EMB).write_bytes(b"x")
    (tmp_path / f".embeddings.tmp-{dead}-1a2b3c4d.npy").write_bytes(b"half")
    (tmp_path / ".embeddings.tmp-1a2b3c4d.json").write_bytes(b"other suffix")
    (tmp_path / ".hidden").write_text("a user's file")
    atomic_dir(tmp_path / "stats", lambda d: (d / "a.txt").write_text("1"))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "removed 2 leftover temporaries" in err
    assert ".stats.old-1a2b3c4d" in err and f".stats.tmp-{dead}-0badcafe" in err
    save_npy(tmp_path / EMB, np.zeros(2))
    assert "removed 1 leftover temporary" in capsys.readouterr().err
    # only the toolkit's own names of the same target, and none a running process owns
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".embeddings.tmp-1a2b3c4d.json", ".hidden", ".other.tmp-1a2b3c4d", ".statsx.tmp-1a2b3c4d",
         f".stats.tmp-{alive}-12345678", EMB, "stats"])
    # nothing to clean: nothing said
    atomic_dir(tmp_path / "stats", lambda d: (d / "a.txt").write_text("2"))
    assert capsys.readouterr().err == ""


EMB = "embeddings.npy"


def test_write_json_converts_numpy_and_paths(tmp_path):
    obj = {"n": np.int64(3), "x": np.float32(0.5), "a": np.arange(2), "p": Path("blocks/a")}
    write_json(obj, tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text()) == {"n": 3, "x": 0.5, "a": [0, 1], "p": "blocks/a"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    with pytest.raises(TypeError, match="not JSON-serialisable: object"):
        write_json({"o": object()}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


# ---------------------------------------------------------------------------------------------------------------
# a full disk (issue 28, 6): the temporary removed, one error naming the output and the bytes it needs
# ---------------------------------------------------------------------------------------------------------------
def _full_disk_save(real_save=np.save):
    """An ``np.save`` that writes a few bytes, then fails as numpy does on a full disk (a short write, no errno)."""
    def save(path, array, *args, **kw):
        with open(path, "wb") as f:
            f.write(b"\x93NUMPY partial")
        raise OSError(f"{np.asarray(array).nbytes} requested and 14 written")
    return save


def test_save_npy_on_a_full_disk(tmp_path, monkeypatch):
    from competition.io import DiskFullError

    target = tmp_path / "x.npy"
    np.save(target, np.zeros(3))
    monkeypatch.setattr(np, "save", _full_disk_save())
    with pytest.raises(DiskFullError) as err:
        save_npy(target, np.ones((1000, 10)))
    monkeypatch.undo()
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{target}: no space left on device")
    assert "it needs 80,128 bytes" in msg and "free there" in msg and "run again" in msg
    assert err.value.needed == 80_128 and err.value.errno == 28 and isinstance(err.value, OSError)
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]  # the temporary removed, the old file intact
    np.testing.assert_array_equal(np.load(target), np.zeros(3))


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), OSError(122, "Disk quota exceeded"),
                                 RuntimeError("parquet: underlying IO error: No space left on device (os error 28)")])
def test_atomic_writers_turn_every_full_disk_error_into_one(tmp_path, exc):
    from competition.io import DiskFullError

    def write(d):
        (d / "half.bin").write_bytes(b"x" * 1000)
        raise exc

    atomic_dir(tmp_path / "block", lambda d: (d / "good.txt").write_text("ok"))
    with pytest.raises(DiskFullError) as err:
        atomic_dir(tmp_path / "block", write, need=5_000_000)
    assert str(tmp_path / "block") in str(err.value) and "4.8 MiB (5,000,000 bytes)" in str(err.value)
    assert err.value.__cause__ is exc
    assert [p.name for p in tmp_path.iterdir()] == ["block"] and [p.name for p in (tmp_path / "block").iterdir()] \
        == ["good.txt"]
    with pytest.raises(DiskFullError) as err:
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_bytes(b"y" * 300)
            raise exc
    assert "more than the 300 bytes written" in str(err.value)  # the writer did not say what it needs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block"]
    with pytest.raises(Boom):  # other errors pass through unchanged
        with atomic_path(tmp_path / "out.json"):
            raise Boom()


def test_a_real_full_filesystem(tmp_path):
    """On a 64 KiB tmpfs (needs root; skipped elsewhere): a block and a JSON too large for it."""
    import subprocess

    from competition.io import DiskFullError
    from embedders.base import Block, write_block

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (not root)")
    try:
        block = Block(np.arange(4000), np.ones((4000, 8)), {"name": "big"})
        with pytest.raises(DiskFullError) as err:
            write_block(block, mnt / "blocks" / "big")
        assert str(mnt / "blocks" / "big") in str(err.value) and "it needs" in str(err.value)
        assert list((mnt / "blocks").iterdir()) == []
        with pytest.raises(DiskFullError):
            write_json({"x": "y" * 200_000}, mnt / "big.json")
        assert sorted(p.name for p in mnt.iterdir()) == ["blocks"]
        write_block(Block(np.arange(4), np.ones((4, 2)), {"name": "small"}), mnt / "blocks" / "small")  # resumes
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_remove_tree_soon_and_a_replaced_folder_removed_in_the_background(tmp_path):
    import time

    from competition.io import remove_tree_soon

    doomed = tmp_path / "doomed"
    (doomed / "sub").mkdir(parents=True)
    (doomed / "sub" / "f.bin").write_bytes(b"x" * 1000)
    worker = remove_tree_soon(doomed)
    worker.join(timeout=10)
    assert not worker.is_alive() and not worker.daemon and not doomed.exists()
    out = tmp_path / "table"
    atomic_dir(out, lambda t: (t / "a.txt").write_text("first"))
    atomic_dir(out, lambda t: (t / "b.txt").write_text("second"), remove_old_soon=True)
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]  # the new folder is in place at once
    deadline = time.monotonic() + 10
    while any(p.name != "table" for p in tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table"]  # and the old one is gone soon after
