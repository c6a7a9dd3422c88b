"""Exclusive locks on folders, so that two runs never write one run folder, or split one data folder, at once.

A lock is the file ``FOLDER/.lock``, held under ``fcntl.flock`` (the kernel drops it when its process ends, however
it ends) and holding who has it: pid, host, start time and command (JSON). A second run asking for a held lock
refuses at once with :class:`LockedError` (one line naming that process), or, with ``wait``, polls until it is
free, saying so in one line. The file is removed on release (and at a normal exit); one left by a killed process
is taken over with a one-line notice. Within one process a lock is re-entrant (a pipeline that holds its run
folder may split, build and pack inside it).

Users: ``submit.pack``'s pipeline runs (the run folder and the output folder, ``--wait``), the split (the data
folder, ``competition.split --wait``) and the event table's build (its cache folder; always waits, then reuses what
the other process built).
"""
from __future__ import annotations

import atexit
import fcntl
import json
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".lock"
#: Seconds between two tries of a waiting run.
POLL_S = 0.5
#: Characters of the command line recorded in the lock.
COMMAND_CHARS = 300

_held: dict[str, list] = {}  # resolved folder -> [pid, fd, count]: this process's locks (re-entrancy)
_guard = threading.Lock()


class LockedError(RuntimeError):
    """A folder's lock is held by another live process (the message names it)."""

    def __init__(self, folder: Path, what: str, holder: dict | None, hint: str):
        self.folder, self.holder = Path(folder), holder or {}
        super().__init__(f"{folder} ({what}) is in use by another run: {describe(holder)}; {hint}")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def describe(holder: dict | None) -> str:
    """``pid 123 on host, started 2025-05-01 10:00:00 (python -m submit.pack ...)``, from a lock's content."""
    if not holder:
        return "a process that is just starting (its lock file is still empty)"
    cmd = holder.get("command")
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
            + (f" ({cmd})" if cmd else ""))


def read_holder(folder: str | Path) -> dict | None:
    """Who holds (or last held) ``folder``'s lock, as recorded in its file; None when absent, empty or unreadable."""
    path = Path(folder) / LOCK_FILE
    for attempt in range(3):  # a holder writes its record right after taking the lock
        try:
            text = path.read_text()
            if text.strip():
                data = json.loads(text)
                return data if isinstance(data, dict) else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        time.sleep(0.05 * (attempt + 1))
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class FolderLock:
    """A held lock; :meth:`release` (or leaving :func:`folder_lock`) gives it back."""

    def __init__(self, folder: Path, key: str):
        self.folder, self._key, self._released = folder, key, False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        with _guard:
            entry = _held.get(self._key)
            if entry is None or entry[0] != os.getpid():
                return
            entry[2] -= 1
            if entry[2] > 0:
                return
            del _held[self._key]
            fd = entry[1]
        try:
            os.unlink(Path(self.folder) / LOCK_FILE)  # while still holding it: a waiter re-checks the inode
        except OSError:
            pass
        os.close(fd)


def acquire(folder: str | Path, what: str = "folder", wait: bool = False, log=None, poll: float = POLL_S,
            hint: str = "wait for it to end, or pass --wait to start when it does") -> FolderLock:
    """Take ``folder``'s lock (creating the folder). Held by another live process: :class:`LockedError` (``hint``
    ends its message), or with ``wait`` one line on ``log`` (default stderr) and a poll every ``poll`` seconds."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    say = log or _say
    with _guard:
        entry = _held.get(key)
        if entry is not None and entry[0] == os.getpid():
            entry[2] += 1
            return FolderLock(folder, key)
    path = folder / LOCK_FILE
    t0, waited = time.monotonic(), None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(folder)
            if not wait:
                raise LockedError(folder, what, holder, hint) from None
            if waited is None or (holder or {}).get("pid") != (waited or {}).get("pid"):
                say(f"waiting for {describe(holder)} to release {folder} ({what}) ...")
                waited = holder or {}
            time.sleep(poll)
            continue
        try:  # the file may have been released and removed (or replaced) between open and flock
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        break
    previous = read_holder(folder)
    if previous and previous.get("pid") != os.getpid():
        pid = previous.get("pid")
        gone = "no longer running" if isinstance(pid, int) and not _alive(pid) else "no longer holding it"
        say(f"notice: taking over the lock of {folder} ({what}) left by {describe(previous)}: {gone}")
    if waited is not None:
        say(f"{folder} ({what}) released after {time.monotonic() - t0:.0f}s; continuing")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(sys.argv)[:COMMAND_CHARS], "what": what}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    with _guard:
        _held[key] = [os.getpid(), fd, 1]
    return FolderLock(folder, key)


@atexit.register
def _release_all() -> None:
    """At a normal exit, remove the lock files this process still holds (a killed one leaves them: taken over)."""
    for key, entry in list(_held.items()):
        if entry[0] == os.getpid():
            entry[2] = 1
            FolderLock(Path(key), key).release()


@contextmanager
def folder_lock(folder: str | Path, what: str = "folder", wait: bool = False, log=None, **kw):
    """:func:`acquire` ... release, as a context manager."""
    lock = acquire(folder, what, wait, log, **kw)
    try:
        yield lock
    finally:
        lock.release()


class FolderLocks:
    """Several locks taken one after the other and released together (the pipeline's run and output folders)."""

    def __init__(self, wait: bool = False, log=None):
        self.wait, self.log, self.held = wait, log, []

    def take(self, folder: str | Path, what: str) -> "FolderLocks":
        self.held.append(acquire(folder, what, self.wait, self.log))
        return self

    def release(self) -> None:
        while self.held:
            self.held.pop().release()


__all__ = ["LOCK_FILE", "LockedError", "FolderLock", "FolderLocks", "acquire", "folder_lock", "read_holder",
           "describe"]
