"""The ensemble spec: the one model of an ensemble (parse, validate, width, to/from JSON).

``validate.search`` writes it, ``submit.pack`` (and the default run) reads it, :mod:`validate.ensemble_ops` turns
it into a matrix. The format (JSON)::

    {"version": 1,
     "blocks": [{"name": "stats", "path": "blocks/stats", "transform": "quantile", "weight": 1.0, "dims": null,
                 "embedder": "stats", "params": {...}},
                ...],
     "search": {...}}

Per block:

- ``name``: unique in the spec; ``path``: the block folder. A relative path is relative to the spec file's folder,
  never the working folder; a path naming one of the toolkit's own temporaries (``.<name>.tmp-*`` /
  ``.<name>.old-*``, left by a killed write) is an error.
- ``transform``: one of :data:`TRANSFORMS` (see :func:`validate.ensemble_ops.apply_transform`).
- ``weight``: a finite number >= 0; a block with weight 0 is left out.
- ``dims``: the kept dimensions (PCA), a positive integer up to ``schema.MAX_EMBEDDING_COLUMNS``, or null for the
  block's full width.
- ``embedder`` / ``params`` (optional): how ``submit.pack`` (re)builds the block: a name of
  :mod:`embedders.registry` (or ``module:Class``) and its constructor arguments. ``validate.search`` records them
  from each block's meta.json (runtime-only parameters left out) when the registry knows its embedder.

``search``: what the search found (free-form). The width rule (:meth:`EnsembleSpec.columns`): a block contributes
``min(dims, width)`` columns (its width when ``dims`` is null); blocks with a positive weight are concatenated in
spec order and must add up to at most ``schema.MAX_EMBEDDING_COLUMNS`` columns.
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

from competition.io import dir_leftover_pattern, write_json
from competition.schema import BLOCK_META_FILE, CLIENT_IDS_FILE, EMBEDDINGS_FILE, MAX_EMBEDDING_COLUMNS
from embedders import registry
from embedders.base import Block

SPEC_VERSION = 1
#: The block transforms a spec may name (applied by :func:`validate.ensemble_ops.apply_transform`).
TRANSFORMS = ("l2", "quantile", "log", "none")
REQUIRED_KEYS = ("name", "path", "transform", "weight", "dims")
SOURCE = "ensemble spec"


class SpecError(ValueError):
    """An ensemble spec is malformed or cannot be assembled; the message names the spec and the block."""


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

    @classmethod
    def from_dict(cls, e: Any, i: int = 0, base_dir: str | Path | None = None, source: str = SOURCE) -> "BlockSpec":
        """Parse and validate entry #``i`` of a spec (``source`` names the spec in messages)."""
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
                raise SpecError(f"{where}: dims {dims} is over the submission limit of {MAX_EMBEDDING_COLUMNS} "
                                f"columns")
        embedder, params = e.get("embedder"), e.get("params", {}) or {}
        if embedder is not None and not isinstance(embedder, str):
            raise SpecError(f"{where}: 'embedder' must be a string, got {embedder!r}")
        if not isinstance(params, Mapping):
            raise SpecError(f"{where}: 'params' must be an object, got {type(params).__name__}")
        if not isinstance(e["path"], str) or not e["path"]:
            raise SpecError(f"{where}: 'path' must be a non-empty string, got {e['path']!r}")
        path = resolve_path(e["path"], base_dir)
        if re.fullmatch(dir_leftover_pattern(r".+"), path.name):
            raise SpecError(f"{where}: path {e['path']!r} is a temporary folder left by an interrupted write, not "
                            f"a block; point 'path' at the block itself")
        return cls(name, path, e["transform"], float(w), dims, embedder, dict(params))

    @classmethod
    def from_block(cls, name: str, block: Block, transform: str, weight: float = 1.0,
                   dims: int | None = None) -> "BlockSpec":
        """The entry of a block read from disk (its ``meta["path"]``, made absolute), with the embedder and
        rebuild params its meta.json records when the registry knows that embedder (else none)."""
        meta = block.meta
        embedder, params = meta.get("embedder"), {}
        try:
            params, _ = registry.rebuild_params(embedder, meta.get("params") or {}, f"block {name!r}")
        except (registry.RegistryError, TypeError):
            embedder = None
        return cls(name, Path(meta["path"]).resolve(), transform, float(weight), dims, embedder, params)

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "path": str(self.path), "transform": self.transform, "weight": self.weight,
             "dims": self.dims}
        if self.embedder is not None:
            d["embedder"] = self.embedder
            d["params"] = dict(self.params)
        return d

    def columns(self, width: int) -> int:
        """Columns this block contributes given its full ``width``."""
        return min(self.dims, width) if self.dims is not None else width


@dataclass
class EnsembleSpec:
    """A parsed, validated spec (see the module docstring). ``source``: the file it came from, for messages."""

    blocks: list[BlockSpec]
    search: dict[str, Any] = field(default_factory=dict)
    version: int = SPEC_VERSION
    source: str = SOURCE

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base_dir: str | Path | None = None,
                  source: str = SOURCE) -> "EnsembleSpec":
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
            blocks.append(BlockSpec.from_dict(e, i, base_dir, source))
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
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SpecError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(d, base_dir=path.parent, source=str(path))

    @classmethod
    def of(cls, spec: "EnsembleSpec | Mapping | str | Path") -> "EnsembleSpec":
        """``spec`` itself, or parsed from a dict, or loaded from a file."""
        if isinstance(spec, EnsembleSpec):
            return spec
        return cls.load(spec) if isinstance(spec, (str, Path)) else cls.from_dict(spec)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "blocks": [b.to_dict() for b in self.blocks], "search": self.search}

    def save(self, path: str | Path) -> Path:
        """Write the spec as JSON, atomically."""
        return write_json(self.to_dict(), path)

    @property
    def active(self) -> list[BlockSpec]:
        """Entries with a positive weight (weight 0 = left out)."""
        return [b for b in self.blocks if b.weight > 0]

    def columns(self, widths: Mapping[str, int]) -> dict[str, tuple[int, int]]:
        """The width rule: ``(first, last + 1)`` column of each active block, given each one's full width.

        Raises :class:`SpecError` when they add up to more than ``schema.MAX_EMBEDDING_COLUMNS`` or to nothing.
        """
        out, start = {}, 0
        for b in self.active:
            n = b.columns(int(widths[b.name]))
            out[b.name] = (start, start + n)
            start += n
        if start > MAX_EMBEDDING_COLUMNS:
            detail = ", ".join(f"{k} {b - a}" for k, (a, b) in out.items())
            raise SpecError(f"{self.source}: the blocks add up to {start} columns ({detail}); the limit is "
                            f"{MAX_EMBEDDING_COLUMNS}: lower 'dims' or drop a block")
        if start == 0:
            raise SpecError(f"{self.source}: no block has a positive weight")
        return out

    def check_blocks(self, widths: Mapping[str, int] | None = None) -> dict[str, tuple[int, int]]:
        """:meth:`columns`, reading the width of every active block not in ``widths`` (name -> full width, when
        already known, e.g. blocks in memory) from its folder; an unknown block is an error naming it."""
        widths = dict(widths or {})
        for b in self.active:
            if b.name not in widths:
                widths[b.name] = block_width(b, self.source)
        return self.columns(widths)


def resolve_path(path: str | Path, base_dir: str | Path | None) -> Path:
    """``path`` as is when absolute; else relative to ``base_dir`` (the spec's folder) and nothing else, whether or
    not a block is there (a missing block is built there or is an error, never looked for elsewhere). Without a
    ``base_dir`` (a spec given as a dict, not a file) relative paths are relative to the working folder."""
    p = Path(path)
    if p.is_absolute() or base_dir is None:
        return p
    return Path(base_dir) / p


def block_width(b: BlockSpec, source: str = SOURCE) -> int:
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


__all__ = ["SPEC_VERSION", "TRANSFORMS", "SpecError", "BlockSpec", "EnsembleSpec", "resolve_path", "block_width",
           "block_meta"]
