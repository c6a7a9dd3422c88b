"""The submission matrix from an ensemble spec, under the challenge's limits.

A spec (JSON, written by ``validate.search``)::

    {"version": 1,
     "blocks": [{"name": "stats", "path": "blocks/stats", "transform": "quantile", "weight": 1.0, "dims": null,
                 "embedder": "stats", "params": {...}},            # embedder / params: optional, for submit.pack
                ...],
     "search": {...}}

Per block (the transforms themselves live in :mod:`validate.ensemble_ops`, the one place shared with the search):
align rows to the relevant clients (a client the block does not cover gets that block's column means), transform
("l2" rows for learned blocks, "quantile" to uniform or "log" for count statistics, or "none"), optional PCA to
``dims`` fitted on the relevant clients, multiply by ``weight``; then concatenate in spec order. Here we add what a
submission needs on top: spec validation with clear errors, the 2048-column limit, and the float16 cast, which must
neither overflow nor flatten a block's columns (an error naming the block, never a silent inf).

Relative block paths are read relative to the spec file's folder, never the working folder. A path naming one of
the toolkit's own temporaries (``.<name>.tmp-*`` / ``.<name>.old-*``, left by a killed write) is an error.
A block with weight 0 carries no information and is left out (reported in ``Ensemble.dropped``).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from competition.io import dir_leftover_pattern
from competition.load import read_relevant_clients
from competition.schema import BLOCK_META_FILE, CLIENT_IDS_FILE, EMBEDDINGS_FILE, MAX_EMBEDDING_COLUMNS
from embedders.base import Block, BlockError, cast_notice, read_block
from validate.ensemble_ops import SPEC_VERSION, TRANSFORMS, assemble

FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
#: A column whose spread is below this share of the block's widest column spread counts as numerical noise.
NOISE_RATIO = 1e-4
#: Rows checked at a time by :func:`float16_problems`.
CHUNK_ROWS = 65_536
REQUIRED_KEYS = ("name", "path", "transform", "weight", "dims")


class SpecError(ValueError):
    """An ensemble spec is malformed or cannot be assembled; the message names the spec and the block."""


class Float16Error(ValueError):
    """A block's values do not survive the float16 cast (overflow, or its columns collapse to constants)."""


class CoverageError(SpecError):
    """A block covers too few of the clients to be packed (the rest would be filled with its column means)."""


@dataclass
class BlockSpec:
    """One spec entry. ``dims`` None = the block's full width. ``embedder``/``params``: how pack (re)builds it."""

    name: str
    path: Path
    transform: str = "l2"
    weight: float = 1.0
    dims: int | None = None
    embedder: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "path": str(self.path), "transform": self.transform, "weight": self.weight,
             "dims": self.dims}
        if self.embedder is not None:
            d["embedder"] = self.embedder
            d["params"] = dict(self.params)
        return d


@dataclass
class EnsembleSpec:
    """A parsed, validated spec (see the module docstring). ``source``: the file it came from, for messages."""

    blocks: list[BlockSpec]
    search: dict[str, Any] = field(default_factory=dict)
    version: int = SPEC_VERSION
    source: str = "ensemble spec"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base_dir: str | Path | None = None,
                  source: str = "ensemble spec") -> "EnsembleSpec":
        """Parse and validate the structure (not the block folders: see :meth:`check_blocks`)."""
        if not isinstance(d, Mapping):
            raise SpecError(f"{source}: must be a JSON object, got {type(d).__name__}")
        if d.get("version") != SPEC_VERSION:
            raise SpecError(f"{source}: 'version' must be {SPEC_VERSION}, got {d.get('version')!r}")
        entries = d.get("blocks")
        if not isinstance(entries, Sequence) or isinstance(entries, str) or not entries:
            raise SpecError(f"{source}: needs a non-empty 'blocks' list")
        blocks, seen = [], set()
        for i, e in enumerate(entries):
            blocks.append(_parse_entry(e, i, base_dir, source))
            if blocks[-1].name in seen:
                raise SpecError(f"{source}: block name {blocks[-1].name!r} appears twice")
            seen.add(blocks[-1].name)
        search = d.get("search", {})
        return cls(blocks, dict(search) if isinstance(search, Mapping) else {}, SPEC_VERSION, source)

    @classmethod
    def load(cls, path: str | Path) -> "EnsembleSpec":
        """Read a spec file; relative block paths are resolved against its folder."""
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"{path}: spec file not found")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(d, base_dir=path.parent, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "blocks": [b.to_dict() for b in self.blocks], "search": self.search}

    @property
    def active(self) -> list[BlockSpec]:
        """Entries with a positive weight (weight 0 = left out)."""
        return [b for b in self.blocks if b.weight > 0]

    def check_blocks(self, widths: Mapping[str, int] | None = None) -> dict[str, int]:
        """Check every active block exists (an unknown block is an error naming it) and the total width.

        widths: block name -> full width, when already known (e.g. blocks in memory). Returns name -> columns
        the block contributes.
        """
        widths = dict(widths or {})
        cols = {}
        for b in self.active:
            if b.name not in widths:
                widths[b.name] = block_width(b, self.source)
            w = widths[b.name]
            cols[b.name] = min(b.dims, w) if b.dims is not None else w
        total = sum(cols.values())
        if total > MAX_EMBEDDING_COLUMNS:
            detail = ", ".join(f"{k} {v}" for k, v in cols.items())
            raise SpecError(f"{self.source}: the blocks add up to {total} columns ({detail}); the limit is "
                            f"{MAX_EMBEDDING_COLUMNS}: lower 'dims' or drop a block")
        if total == 0:
            raise SpecError(f"{self.source}: no block has a positive weight")
        return cols


def _parse_entry(e: Any, i: int, base_dir: str | Path | None, source: str) -> BlockSpec:
    if not isinstance(e, Mapping):
        raise SpecError(f"{source}: block #{i} must be an object, got {type(e).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in e]
    name = e.get("name", f"#{i}")
    if missing:
        raise SpecError(f"{source}: block {name!r} lacks {missing} (each block needs {list(REQUIRED_KEYS)})")
    if not isinstance(name, str) or not name:
        raise SpecError(f"{source}: block #{i} needs a non-empty string 'name', got {name!r}")
    where = f"{source}: block {name!r}"
    if e["transform"] not in TRANSFORMS:
        raise SpecError(f"{where}: unknown transform {e['transform']!r}; expected one of {list(TRANSFORMS)}")
    w = e["weight"]
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise SpecError(f"{where}: weight must be a finite number, got {w!r}")
    if w < 0:
        raise SpecError(f"{where}: negative weight {w}; weights must be >= 0 (0 leaves the block out)")
    dims = e["dims"]
    if dims is not None:
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            raise SpecError(f"{where}: dims must be a positive integer or null, got {dims!r}")
        if dims > MAX_EMBEDDING_COLUMNS:
            raise SpecError(f"{where}: dims {dims} is over the submission limit of {MAX_EMBEDDING_COLUMNS} columns")
    embedder, params = e.get("embedder"), e.get("params", {}) or {}
    if embedder is not None and not isinstance(embedder, str):
        raise SpecError(f"{where}: 'embedder' must be a string, got {embedder!r}")
    if not isinstance(params, Mapping):
        raise SpecError(f"{where}: 'params' must be an object, got {type(params).__name__}")
    if not isinstance(e["path"], str) or not e["path"]:
        raise SpecError(f"{where}: 'path' must be a non-empty string, got {e['path']!r}")
    path = resolve_path(e["path"], base_dir)
    if re.fullmatch(dir_leftover_pattern(r".+"), path.name):
        raise SpecError(f"{where}: path {e['path']!r} is a temporary folder left by an interrupted write, not a "
                        f"block; point 'path' at the block itself")
    return BlockSpec(name, path, e["transform"], float(w), dims, embedder, dict(params))


def resolve_path(path: str | Path, base_dir: str | Path | None) -> Path:
    """``path`` as is when absolute; else relative to ``base_dir`` (the spec's folder) and nothing else, whether or
    not a block is there (a missing block is built there or is an error, never looked for elsewhere). Without a
    ``base_dir`` (a spec given as a dict, not a file) relative paths are relative to the working folder."""
    p = Path(path)
    if p.is_absolute() or base_dir is None:
        return p
    return Path(base_dir) / p


def block_width(b: BlockSpec, source: str = "ensemble spec") -> int:
    """Full width of a block on disk, from the header of its embeddings.npy (no data read)."""
    emb = b.path / EMBEDDINGS_FILE
    if not emb.is_file() or not (b.path / CLIENT_IDS_FILE).is_file():
        raise SpecError(f"{source}: unknown block {b.name!r}: no block folder at {b.path} (expected "
                        f"{EMBEDDINGS_FILE} and {CLIENT_IDS_FILE}"
                        + ("; submit.pack builds it from its 'embedder'" if b.embedder else "") + ")")
    try:
        arr = np.load(emb, mmap_mode="r")
    except Exception as exc:
        raise SpecError(f"{source}: block {b.name!r}: {emb} cannot be read ({exc})") from exc
    if arr.ndim != 2:
        raise SpecError(f"{source}: block {b.name!r}: {emb} must be 2-D, got shape {arr.shape}")
    return int(arr.shape[1])


def block_meta(b: BlockSpec) -> dict[str, Any]:
    """The block folder's meta.json ({} when absent, unreadable or not a JSON object)."""
    p = b.path / BLOCK_META_FILE
    try:
        meta = json.loads(p.read_text()) if p.is_file() else {}
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


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
    if not isinstance(spec, EnsembleSpec):
        spec = EnsembleSpec.load(spec) if isinstance(spec, (str, Path)) else EnsembleSpec.from_dict(spec)
    if client_ids is None:
        if data_dir is None:
            raise ValueError("give client_ids or data_dir")
        client_ids = read_relevant_clients(data_dir)
    client_ids = np.asarray(client_ids, dtype=np.int64)
    blocks = dict(blocks or {})
    cols = spec.check_blocks({k: v.dim for k, v in blocks.items()})
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
    ops_spec = {"version": SPEC_VERSION, "blocks": [b.to_dict() for b in active]}
    X = assemble({b.name: blocks[b.name] for b in active}, ops_spec, client_ids, seed=seed)
    columns, start = {}, 0
    for b in active:
        columns[b.name] = (start, start + cols[b.name])
        start += cols[b.name]
    if start != X.shape[1]:  # the two width rules disagree: a bug, not a user error
        raise AssertionError(f"assembled {X.shape[1]} columns, expected {start}")
    problems = [p for b in active for p in float16_problems(X[:, slice(*columns[b.name])], b.name)]
    if problems:
        raise Float16Error(f"{spec.source}: the ensemble does not fit float16: " + "; ".join(problems))
    return Ensemble(client_ids, X.astype(np.float16), columns, [b.name for b in spec.blocks if b.weight == 0],
                    coverage, notices)


__all__ = ["SpecError", "Float16Error", "CoverageError", "coverage_line", "BlockSpec", "EnsembleSpec", "Ensemble",
           "build_ensemble",
           "float16_problems", "resolve_path", "block_width", "block_meta", "FLOAT16_MAX"]
