"""The submission matrix from an ensemble spec (:mod:`validate.spec`: format, validation, width rule), under the
challenge's limits.

The blocks are assembled by :func:`validate.ensemble_ops.assemble`, the one place shared with the search (rows
aligned to the relevant clients, a client a block does not cover getting that block's column means; transform;
optional PCA to ``dims``; weight; concatenation in spec order). Here we add what a submission needs on top: the
blocks read with clear errors, their coverage of the clients, and the float16 cast, which must neither overflow
nor flatten a block's columns (an error naming the block, never a silent inf). A block with weight 0 carries no
information and is left out (reported in ``Ensemble.dropped``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from competition.load import read_relevant_clients
from competition.schema import FLOAT16_MAX
from embedders.base import Block, BlockError, cast_notice, read_block
from validate.ensemble_ops import assemble
from validate.spec import EnsembleSpec, SpecError

#: A column whose spread is below this share of the block's widest column spread counts as numerical noise.
NOISE_RATIO = 1e-4
#: Rows checked at a time by :func:`float16_problems`.
CHUNK_ROWS = 65_536


class Float16Error(ValueError):
    """A block's values do not survive the float16 cast (overflow, or its columns collapse to constants)."""


class CoverageError(SpecError):
    """A block covers too few of the clients to be packed (the rest would be filled with its column means)."""


# ---------------------------------------------------------------------------------------------------------------
# float16
# ---------------------------------------------------------------------------------------------------------------
def float16_problems(Z: np.ndarray, name: str, chunk_rows: int = CHUNK_ROWS) -> list[str]:
    """Why float32 ``Z`` ``(n, d)`` (one block's columns) would not survive the cast to float16 ([] if it does).

    Overflow: any ``|value| > 65504`` (it would become inf). Precision lost: a column that varies in float32 but is
    constant in float16 (values below float16's resolution, ~6e-8, or a spread too small for their magnitude),
    unless its spread is mere noise (below :data:`NOISE_RATIO` of the block's widest column spread).
    Column statistics are gathered ``chunk_rows`` rows at a time, so temporaries stay small.
    """
    n, d = Z.shape
    out: list[str] = []
    if Z.size == 0:
        return out
    lo32, hi32 = np.full(d, np.inf), np.full(d, -np.inf)
    lo16, hi16 = np.full(d, np.inf), np.full(d, -np.inf)
    n_big, col_big = 0, np.zeros(d, dtype=bool)
    for i in range(0, n, chunk_rows):
        part = Z[i:i + chunk_rows]
        big = np.abs(part) > FLOAT16_MAX
        n_big += int(big.sum())
        col_big |= big.any(axis=0)
        lo32, hi32 = np.minimum(lo32, part.min(axis=0)), np.maximum(hi32, part.max(axis=0))
        with np.errstate(over="ignore"):  # overflow is reported below
            h = part.astype(np.float16)
        lo16, hi16 = np.minimum(lo16, h.min(axis=0)), np.maximum(hi16, h.max(axis=0))
    if n_big:
        out.append(f"block {name!r}: {n_big:,} value(s) overflow float16 (max |value| "
                   f"{max(float(np.abs(lo32).max()), float(np.abs(hi32).max())):.4g} > {FLOAT16_MAX:.0f}); lower its "
                   f"weight or use a 'log'/'quantile' transform")
    spread = hi32 - lo32
    # Only columns that matter: numerical noise (e.g. PCA components beyond the data's rank, ~1e-8 when the block's
    # other columns spread over ~1) is not information, whatever float16 does to it.
    real = spread >= NOISE_RATIO * spread.max()
    lost = (spread > 0) & real & (hi16 == lo16) & ~col_big
    if lost.any():
        cols = np.flatnonzero(lost)
        out.append(f"block {name!r}: {len(cols)} of {d} column(s) vary in float32 but are constant in float16 "
                   f"(e.g. column {int(cols[0])}: values {lo32[cols[0]]:.3g}..{hi32[cols[0]]:.3g}); all their "
                   f"information would be lost: raise the weight or use a transform")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Ensemble:
    """The submission: ``client_ids`` int64 ``(n,)`` and ``embeddings`` float16 ``(n, D)``, D <= 2048.

    columns: block name -> (first, last + 1) column; dropped: names of weight-0 blocks left out; coverage: block
    name -> how many of the clients it holds a row for (the others got its column means); notices: one line each
    (a block cast from float64, a block not covering every client).
    """

    client_ids: np.ndarray
    embeddings: np.ndarray
    columns: dict[str, tuple[int, int]]
    dropped: list[str] = field(default_factory=list)
    coverage: dict[str, int] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])


def coverage_line(name: str, covered: int, n: int, what: str = "clients") -> str:
    """``block NAME covers C of N clients (P%)``, the one wording of a block's coverage."""
    return f"block {name} covers {covered:,} of {n:,} {what} ({100.0 * covered / max(n, 1):.1f}%)"


def build_ensemble(spec: EnsembleSpec | Mapping | str | Path, client_ids: np.ndarray | None = None,
                   data_dir: str | Path | None = None, blocks: Mapping[str, Block] | None = None,
                   seed: int = 0, min_coverage: float = 0.0) -> Ensemble:
    """Assemble ``spec`` for ``client_ids`` (default: ``data_dir``'s relevant clients, in file order).

    blocks: blocks already in memory, by name (others are read from their folders). min_coverage: the least share
    (0..1) of ``client_ids`` each active block must hold a row for (the others get its column means). Raises
    :class:`SpecError` for a bad spec (unknown block, over 2048 columns, a block with duplicate client ids, ...),
    :class:`CoverageError` for a block below ``min_coverage`` and :class:`Float16Error` naming every block whose
    values do not fit float16.
    """
    spec = EnsembleSpec.of(spec)
    if client_ids is None:
        if data_dir is None:
            raise ValueError("give client_ids or data_dir")
        client_ids = read_relevant_clients(data_dir)
    client_ids = np.asarray(client_ids, dtype=np.int64)
    blocks = dict(blocks or {})
    columns = spec.check_blocks({k: v.dim for k, v in blocks.items()})
    active = spec.active
    for b in active:
        if b.name not in blocks:
            try:
                blocks[b.name] = read_block(b.path)
            except BlockError as exc:
                raise SpecError(f"{spec.source}: block {b.name!r}: {exc}") from exc
    notices = [n for n in (cast_notice(blocks[b.name]) for b in active) if n]
    coverage = {b.name: blocks[b.name].covers(client_ids) for b in active}
    low = {k: v for k, v in coverage.items() if v < min_coverage * len(client_ids)}
    if low:
        raise CoverageError(f"{spec.source}: " + "; ".join(coverage_line(k, v, len(client_ids)) for k, v in low.items())
                            + f", below the {100 * min_coverage:g}% asked for (rebuild it for these clients, or "
                              f"lower --min-coverage to fill the rest with its column means)")
    notices += [f"notice: {coverage_line(k, v, len(client_ids))}; the other {len(client_ids) - v:,} get its column "
                f"means" for k, v in coverage.items() if v < len(client_ids)]
    X = assemble({b.name: blocks[b.name] for b in active}, spec, client_ids, seed=seed)
    problems = [p for b in active for p in float16_problems(X[:, slice(*columns[b.name])], b.name)]
    if problems:
        raise Float16Error(f"{spec.source}: the ensemble does not fit float16: " + "; ".join(problems))
    return Ensemble(client_ids, X.astype(np.float16), columns, [b.name for b in spec.blocks if b.weight == 0],
                    coverage, notices)


__all__ = ["Float16Error", "CoverageError", "coverage_line", "Ensemble", "build_ensemble", "float16_problems"]
