"""competition.lock: one process at a time in a folder; the other refuses in one line naming the holder, or waits;
a lock left by a killed process is taken over with a notice."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from competition.lock import LOCK_FILE, FolderLocks, LockedError, acquire, folder_lock, read_holder


def hold(folder, seconds: float = 60.0) -> subprocess.Popen:
    """A child process holding ``folder``'s lock for ``seconds`` (returns once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys, time; from competition.lock import acquire; "
                             f"acquire({str(folder)!r}, 'test holder'); print('held', flush=True); "
                             f"time.sleep({seconds})", "--marker"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_folder_is_refused_in_one_line_naming_the_holder(tmp_path):
    proc = hold(tmp_path)
    try:
        with pytest.raises(LockedError) as err:
            acquire(tmp_path, "run folder")
        msg = str(err.value)
        assert "\n" not in msg and f"pid {proc.pid}" in msg and str(tmp_path) in msg and "started" in msg
        assert "--marker" in msg and "--wait" in msg  # its command, and what to do
        assert read_holder(tmp_path)["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_wait_polls_until_the_holder_ends(tmp_path):
    proc = hold(tmp_path, seconds=1.0)
    lines = []
    t0 = time.monotonic()
    with folder_lock(tmp_path, "run folder", wait=True, log=lines.append, poll=0.1):
        assert time.monotonic() - t0 > 0.3
        assert read_holder(tmp_path)["pid"] != proc.pid
    assert proc.wait(10) == 0
    assert len(lines) == 2 and f"waiting for pid {proc.pid}" in lines[0] and "released after" in lines[1]
    assert not (tmp_path / LOCK_FILE).exists()  # removed on release


def test_a_killed_holders_lock_is_taken_over_with_a_notice(tmp_path):
    proc = hold(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / LOCK_FILE).is_file()  # left behind, but the kernel dropped the flock with the process
    lines = []
    lock = acquire(tmp_path, "run folder", log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("notice: taking over") and f"pid {proc.pid}" in lines[0]
    assert "no longer running" in lines[0]
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def test_reentrant_within_a_process_and_released_together(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    locks = FolderLocks().take(a, "out").take(b, "run")
    with folder_lock(a, "nested"):  # the same process may take it again (a pipeline splitting inside its run)
        pass
    assert (a / LOCK_FILE).is_file() and json.loads((a / LOCK_FILE).read_text())["what"] == "out"
    locks.release()
    assert not (a / LOCK_FILE).exists() and not (b / LOCK_FILE).exists()


def test_split_of_a_folder_being_split_refuses_in_one_line(split_world, capsys):
    from competition import split as split_mod

    proc = hold(split_world)
    try:
        assert split_mod.main(["--data-dir", str(split_world), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and f"pid {proc.pid}" in err[0], err
        assert "being split" in err[0]
    finally:
        proc.kill()
        proc.wait()
    assert split_mod.main(["--data-dir", str(split_world), "--no-progress", "--wait"]) == 0
