"""Every rule of docs/challenge.md section 6, each with its own message.

A submission folder holds ``client_ids.npy`` (1-D int64, a permutation of ``input/relevant_clients.npy``) and
``embeddings.npy`` (2-D float16, one row per client id, 1 to 2048 columns, no NaN or Inf).

``python -m submit.check --data-dir D --embeddings-dir E`` (the organisers' validator's flags) prints every failing
rule and exits 1, or prints a one-line summary and exits 0.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from competition.cli import HelpFormatter
from competition.load import DataError, read_relevant_clients
from competition.schema import (CLIENT_IDS_DTYPE, CLIENT_IDS_FILE, EMBEDDING_DTYPE, EMBEDDINGS_FILE,
                                MAX_EMBEDDING_COLUMNS)

#: Rows checked for NaN/Inf at a time (bounds memory on 1M x 2048 matrices read memory-mapped).
FINITE_CHUNK_ROWS = 65_536
#: Example ids shown per kind of id problem.
N_EXAMPLES = 5


class SubmissionError(ValueError):
    """A submission breaks one or more rules; ``failures`` lists them."""

    def __init__(self, failures: list["Failure"], where: str = "submission"):
        self.failures = failures
        super().__init__(f"{where} is invalid:\n" + "\n".join(f"  - {f}" for f in failures))


@dataclass(frozen=True)
class Failure:
    """One broken rule: a short rule name and what is wrong."""

    rule: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"


def _examples(ids: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:N_EXAMPLES])
    return f" (e.g. {shown}{', ...' if len(ids) > N_EXAMPLES else ''})" if len(ids) else ""


def check_client_ids(client_ids: np.ndarray, relevant: np.ndarray) -> list[Failure]:
    """Rules on ``client_ids``: int64, 1-D, a permutation of ``relevant`` (missing, extra, duplicate counts)."""
    out: list[Failure] = []
    if client_ids.dtype != np.dtype(CLIENT_IDS_DTYPE):
        out.append(Failure("client_ids dtype", f"{CLIENT_IDS_FILE} must be {CLIENT_IDS_DTYPE}, got {client_ids.dtype}"))
    if client_ids.ndim != 1:
        out.append(Failure("client_ids shape", f"{CLIENT_IDS_FILE} must be 1-D, got shape {client_ids.shape}"))
    if not np.issubdtype(client_ids.dtype, np.integer):
        out.append(Failure("client_ids set", f"cannot compare {client_ids.dtype} ids with the relevant clients"))
        return out
    ids = client_ids.reshape(-1).astype(np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    dup = uniq[counts > 1]
    missing = np.setdiff1d(relevant, uniq, assume_unique=True)
    extra = np.setdiff1d(uniq, relevant, assume_unique=True)
    if len(missing) or len(extra) or len(dup):
        parts = []
        if len(missing):
            parts.append(f"{len(missing):,} relevant client(s) missing{_examples(missing)}")
        if len(extra):
            parts.append(f"{len(extra):,} extra id(s) not in relevant_clients{_examples(extra)}")
        if len(dup):
            parts.append(f"{int((counts[counts > 1] - 1).sum()):,} duplicate row(s) of {len(dup):,} id(s)"
                         f"{_examples(dup)}")
        out.append(Failure("client_ids set", f"{CLIENT_IDS_FILE} must be a permutation of the {len(relevant):,} "
                                             f"relevant clients: " + "; ".join(parts)))
    return out


def _non_finite_count(embeddings: np.ndarray) -> int:
    if embeddings.ndim == 0:
        return int(not np.isfinite(embeddings))
    flat = embeddings.reshape(len(embeddings), -1) if embeddings.ndim > 1 else embeddings
    return int(sum(int((~np.isfinite(flat[i:i + FINITE_CHUNK_ROWS])).sum())
                   for i in range(0, len(flat), FINITE_CHUNK_ROWS)))


def check_embeddings(embeddings: np.ndarray) -> list[Failure]:
    """Rules on ``embeddings`` alone: float16, 2-D, 1 to 2048 columns, no NaN or Inf."""
    out: list[Failure] = []
    if embeddings.dtype != np.dtype(EMBEDDING_DTYPE):
        out.append(Failure("embeddings dtype", f"{EMBEDDINGS_FILE} must be {EMBEDDING_DTYPE}, got {embeddings.dtype}"))
    if embeddings.ndim != 2:
        out.append(Failure("embeddings shape", f"{EMBEDDINGS_FILE} must be 2-D (clients x columns), got shape "
                                               f"{embeddings.shape}"))
    else:
        n_cols = embeddings.shape[1]
        if not 1 <= n_cols <= MAX_EMBEDDING_COLUMNS:
            out.append(Failure("embeddings columns", f"{EMBEDDINGS_FILE} must have 1 to {MAX_EMBEDDING_COLUMNS} "
                                                     f"columns, got {n_cols}"))
    if np.issubdtype(embeddings.dtype, np.number):
        bad = _non_finite_count(embeddings)
        if bad:
            out.append(Failure("embeddings finite", f"{EMBEDDINGS_FILE} holds {bad:,} NaN or Inf value(s)"))
    else:
        out.append(Failure("embeddings finite", f"{EMBEDDINGS_FILE} is not numeric ({embeddings.dtype})"))
    return out


def check_arrays(client_ids: np.ndarray, embeddings: np.ndarray, relevant: np.ndarray) -> list[Failure]:
    """All rules of section 6 on in-memory (or memory-mapped) arrays; an empty list means valid."""
    client_ids, embeddings = np.asarray(client_ids), np.asarray(embeddings)  # views, no copy of a memmap
    relevant = np.unique(np.asarray(relevant, dtype=np.int64))
    out = check_client_ids(client_ids, relevant) + check_embeddings(embeddings)
    n_ids = client_ids.shape[0] if client_ids.ndim >= 1 else 1
    n_rows = embeddings.shape[0] if embeddings.ndim >= 1 else 1
    if n_ids != n_rows:
        out.append(Failure("row count", f"{EMBEDDINGS_FILE} has {n_rows:,} row(s) but {CLIENT_IDS_FILE} has "
                                        f"{n_ids:,} id(s); they must be equal"))
    return out


def _load(path: Path, out: list[Failure]) -> np.ndarray | None:
    if not path.is_file():
        out.append(Failure("file present", f"{path}: missing"))
        return None
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # truncated file, pickled objects, not .npy
        out.append(Failure("file readable", f"{path}: cannot be read as a .npy array ({exc})"))
        return None


def check_submission(data_dir: str | Path, embeddings_dir: str | Path,
                     relevant: np.ndarray | None = None) -> list[Failure]:
    """All rules on the folder ``embeddings_dir`` against ``data_dir``'s relevant clients; [] means valid.

    ``relevant`` (int64 ids) may be given instead of reading ``data_dir/input/relevant_clients.npy``.
    Raises :class:`competition.load.DataError` when the relevant clients themselves cannot be read.
    """
    embeddings_dir = Path(embeddings_dir)
    if relevant is None:
        relevant = read_relevant_clients(data_dir)
    out: list[Failure] = []
    ids = _load(embeddings_dir / CLIENT_IDS_FILE, out)
    emb = _load(embeddings_dir / EMBEDDINGS_FILE, out)
    if ids is not None and emb is not None:
        return out + check_arrays(ids, emb, relevant)
    if ids is not None:
        out += check_client_ids(np.asarray(ids), np.unique(relevant))
    if emb is not None:
        out += check_embeddings(emb)
    return out


def assert_valid(data_dir: str | Path, embeddings_dir: str | Path, relevant: np.ndarray | None = None) -> None:
    """Raise :class:`SubmissionError` listing every failing rule, else return None."""
    failures = check_submission(data_dir, embeddings_dir, relevant)
    if failures:
        raise SubmissionError(failures, str(embeddings_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m submit.check", formatter_class=HelpFormatter,
        description="Check a submission folder against every rule of docs/challenge.md section 6 (same flags as the "
                    "organisers' validator). Exit code 0 when valid, 1 with every failing rule listed.")
    parser.add_argument("--data-dir", required=True, type=Path,
                        help="data directory in the organisers' layout (reads input/relevant_clients.npy)")
    parser.add_argument("--embeddings-dir", required=True, type=Path,
                        help=f"folder holding {EMBEDDINGS_FILE} and {CLIENT_IDS_FILE}")
    parser.add_argument("--seed", type=int, default=0, help="unused (the check is deterministic)")
    args = parser.parse_args(argv)
    try:
        failures = check_submission(args.data_dir, args.embeddings_dir)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if failures:
        print(f"{args.embeddings_dir}: INVALID, {len(failures)} rule(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    emb = np.load(args.embeddings_dir / EMBEDDINGS_FILE, mmap_mode="r")
    print(f"{args.embeddings_dir}: valid ({emb.shape[0]:,} clients x {emb.shape[1]} columns, {emb.dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
