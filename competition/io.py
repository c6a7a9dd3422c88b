"""Atomic writes: outputs appear under their final name only once complete, so a crash never leaves a
half-written file or folder that looks valid. The one place for this logic; every writer imports it.

Temporaries are hidden and named after their target and the writing process: ``.<name>.tmp-<pid>-<hex>`` (a
folder being written), ``.<name>.old-<pid>-<hex>`` (the folder it replaces, until removed) and
``.<stem>.tmp-<pid>-<hex><suffix>`` (a file). A killed run leaves them behind; the next write of the same target
removes those of processes no longer running (and the older ``-<hex>`` names without a pid), saying so in one line
on stderr (:func:`remove_leftovers`). Nothing else is ever removed.

A full disk (ENOSPC, or a quota: EDQUOT) while writing raises :class:`DiskFullError` once the temporary is removed:
one line naming the output, the bytes it needs (when the writer says: ``need``; else at least what was written
before the disk filled) and the bytes free there. Nothing of the failed write remains, so a rerun resumes.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import threading
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


#: The random tail of a temporary's name, after an optional ``<pid>-`` (older names have no pid).
_TAIL = r"(?:(?P<pid>\d+)-)?[0-9a-f]{8}"


class DiskFullError(OSError):
    """No space left (or a quota reached) while writing ``path``; the temporary was removed. ``needed``: bytes the
    write needs (None: unknown), ``written``: bytes written before the failure, ``free``: bytes free there."""

    def __init__(self, path: str | Path, needed: int | None = None, written: int | None = None,
                 free: int | None = None):
        self.path, self.needed, self.written, self.free = Path(path), needed, written, free
        if needed is not None:
            need = f"it needs {_size(needed)}"
        elif written:
            need = f"it needs more than the {_size(written)} written before the disk filled"
        else:
            need = "it needs more space than is left"
        there = f", {_size(free)} free there" if free is not None else ""
        self.message = (f"{path}: no space left on device ({need}{there}); the partial output was removed: free "
                        f"some space and run again (finished outputs are reused)")
        super().__init__(errno.ENOSPC, self.message, str(path))

    def __str__(self) -> str:
        return self.message


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB ({n:,} bytes)" if n >= 2**20 else f"{n:,} bytes"


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or a quota) is full: an OSError with ENOSPC / EDQUOT, numpy's short write, or
    a library's error quoting one (polars wraps the OS error in its ComputeError)."""
    if isinstance(exc, DiskFullError):
        return False  # already converted (by an inner writer): keep its message
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno is None and re.fullmatch(r"\d+ requested and \d+ written", text):
        return True  # numpy's tofile (np.save of a large array) on a full disk: a short write, no errno
    return isinstance(exc, Exception) and ("No space left on device" in text or "os error 28" in text
                                           or "Disk quota exceeded" in text)


def _bytes_in(path: Path) -> int:
    """Bytes under ``path`` (a file or a folder), 0 when absent."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _free(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _remove(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def disk_full(target: str | Path, tmp: Path | None, need: int | None = None) -> DiskFullError:
    """Remove the temporary ``tmp`` of a write of ``target`` that filled the disk; return its
    :class:`DiskFullError` (the bytes free counted once ``tmp`` is gone)."""
    target = Path(target)
    written = _bytes_in(tmp) if tmp is not None else None
    if tmp is not None:
        _remove(tmp)
    return DiskFullError(target, need, written, _free(target.parent))


def save_array(tmp: str | Path, array: np.ndarray, target: str | Path) -> None:
    """``np.save(tmp, array)`` for a temporary of ``target``: a full disk removes ``tmp`` and raises
    :class:`DiskFullError` naming ``target`` and the bytes the array needs (for writers that hold several
    temporaries at once, such as a submission's two files)."""
    try:
        np.save(tmp, array)
    except Exception as exc:
        if is_disk_full(exc):
            raise disk_full(target, Path(tmp), npy_bytes(array)) from exc
        raise


def npy_bytes(*arrays: np.ndarray) -> int:
    """Bytes ``np.save`` writes for ``arrays`` (data plus a header of at most 128 bytes each, as a bound)."""
    return int(sum(np.asarray(a).nbytes + 128 for a in arrays))


def _tmp_name(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def dir_leftover_pattern(name_regex: str) -> str:
    """Regex of the temporaries :func:`atomic_dir` makes for a folder whose name matches ``name_regex``."""
    return rf"\.{name_regex}\.(?:tmp|old)-{_TAIL}"


def file_leftover_pattern(path: Path) -> str:
    """Regex of the temporaries :func:`atomic_path` makes for ``path``."""
    return rf"\.{re.escape(path.stem)}\.tmp-{_TAIL}{re.escape(path.suffix)}"


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    return True


def remove_leftovers(folder: str | Path, pattern: str, log=None) -> list[Path]:
    """Remove the entries of ``folder`` whose whole name matches ``pattern`` (a regex with an optional named group
    ``pid``) and that no running process owns: leftovers of a killed run. Says so in one line (``log``, default
    stderr) when anything was removed. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    rx = re.compile(pattern)
    removed = []
    for p in sorted(folder.iterdir()):
        m = rx.fullmatch(p.name)
        if m is None or (m.groupdict().get("pid") and _running(int(m.group("pid")))):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    if removed:
        line = (f"removed {len(removed)} leftover temporar{'y' if len(removed) == 1 else 'ies'} of an interrupted "
                f"run in {folder}: {', '.join(p.name for p in removed)}")
        (log or (lambda m: print(m, file=sys.stderr, flush=True)))(line)
    return removed


def remove_tree_soon(path: str | Path) -> threading.Thread:
    """Remove folder ``path`` in a background thread and return at once: unlinking gigabytes of files costs seconds
    of kernel time (the 1M event table's 12 GB: ~2 s) that the caller need not wait for. The thread is not a daemon,
    so the interpreter waits for it at exit; a process killed before it ends leaves a hidden temporary that the next
    write removes (:func:`remove_leftovers`). Only for paths nothing will write to again under that name."""
    worker = threading.Thread(target=shutil.rmtree, args=(Path(path),), kwargs={"ignore_errors": True},
                              name=f"remove {Path(path).name}")
    worker.start()
    return worker


def atomic_dir(out_dir: str | Path, write: Callable[[Path], None], need: int | None = None,
               remove_old_soon: bool = False) -> Path:
    """Run ``write(tmp_dir)``, then move ``tmp_dir`` to ``out_dir`` (an existing folder is replaced only then).
    need: the bytes ``write`` writes, when known (named by a :class:`DiskFullError`). remove_old_soon: the replaced
    folder (already renamed to a hidden temporary) is removed in the background (:func:`remove_tree_soon`)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out_dir.parent, dir_leftover_pattern(re.escape(out_dir.name)))
    tmp = _tmp_name(out_dir, "tmp")
    tmp.mkdir()
    try:
        write(tmp)
        old = None
        if out_dir.exists():
            old = _tmp_name(out_dir, "old")
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        if old is not None:
            remove_tree_soon(old) if remove_old_soon else shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        if is_disk_full(exc):
            raise disk_full(out_dir, tmp, need) from exc
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


@contextmanager
def atomic_path(path: str | Path, need: int | None = None):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error removed (a full disk:
    :class:`DiskFullError`; ``need``: the bytes the write needs, when known)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent, file_leftover_pattern(path))
    # Keep the suffix so libraries that append one (np.save) write exactly where we expect.
    tmp = path.parent / f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        if is_disk_full(exc):
            raise disk_full(path, tmp, need) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    """np.save, atomically."""
    with atomic_path(path, need=npy_bytes(array)) as tmp:
        np.save(tmp, array)
    return Path(path)


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def write_json(obj: Any, path: str | Path) -> Path:
    """JSON (indented, numpy values converted), written atomically."""
    path = Path(path)
    text = json.dumps(obj, indent=2, default=json_default)
    with atomic_path(path, need=len(text.encode())) as tmp:
        tmp.write_text(text)
    return path
