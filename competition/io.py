"""Atomic writes: outputs appear under their final name only once complete, so a crash never leaves a
half-written file or folder that looks valid. The one place for this logic; every writer imports it."""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def _tmp_name(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}"


def atomic_dir(out_dir: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_dir)``, then move ``tmp_dir`` to ``out_dir`` (an existing folder is replaced only then)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
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
    # Keep the suffix so libraries that append one (np.save) write exactly where we expect.
    tmp = path.parent / f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}"
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
