"""Atomic writes: outputs appear under their final name only once complete, so a crash never leaves a
half-written file or folder that looks valid. The one place for this logic; every writer imports it.

Temporaries are hidden and named after their target and the writing process: ``.<name>.tmp-<pid>-<hex>`` (a
folder being written), ``.<name>.old-<pid>-<hex>`` (the folder it replaces, until removed) and
``.<stem>.tmp-<pid>-<hex><suffix>`` (a file). A killed run leaves them behind; the next write of the same target
removes those of processes no longer running (and the older ``-<hex>`` names without a pid), saying so in one line
on stderr (:func:`remove_leftovers`). Nothing else is ever removed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


#: The random tail of a temporary's name, after an optional ``<pid>-`` (older names have no pid).
_TAIL = r"(?:(?P<pid>\d+)-)?[0-9a-f]{8}"


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


def atomic_dir(out_dir: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_dir)``, then move ``tmp_dir`` to ``out_dir`` (an existing folder is replaced only then)."""
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
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent, file_leftover_pattern(path))
    # Keep the suffix so libraries that append one (np.save) write exactly where we expect.
    tmp = path.parent / f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    """np.save, atomically."""
    with atomic_path(path) as tmp:
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
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=json_default))
    return path
