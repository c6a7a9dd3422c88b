"""The embedder contract and block I/O.

An embedder is configured in ``__init__`` (including ``dim`` and ``seed``), learns from the event table in
``fit(events)`` and returns a :class:`Block` from ``transform(events, client_ids)``. It never looks at targets.

A block on disk is a folder ``EMB_DIR/<block-name>/`` holding ``embeddings.npy`` (float16 or float32, shape
``(n, dim)``), ``client_ids.npy`` (int64, shape ``(n,)``) and ``meta.json``: the same layout as a submission, so any
block can be scored alone. Folders are written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from competition.events import index_of
from competition.io import atomic_dir, json_default, npy_bytes
from competition.schema import BLOCK_META_FILE, CLIENT_IDS_FILE, EMBEDDINGS_FILE


class BlockError(ValueError):
    """A block folder is missing, malformed or inconsistent."""


class NotFittedError(ValueError, AttributeError):
    """An embedder asked to transform before it was fitted."""


@runtime_checkable
class EventSource(Protocol):
    """What an embedder reads of the event table: :class:`competition.events.EventTable` (docs/design.md) is the
    one implementation; a test may pass anything with these members.

    Clients (one row each, ids ascending): ``client_ids`` int64 ``(n_clients,)``, ``offsets`` int64
    ``(n_clients + 1,)`` (events of row ``i`` are ``offsets[i]:offsets[i+1]``, in time order), ``lengths``.
    Per event ``(n_events,)``: ``timestamp`` int64 s, ``event_type`` uint8 (schema.EVENT_CODE), ``sku`` /
    ``category`` / ``url`` int64, ``price`` int16, ``query`` int32 (-1 = missing); ``query_codes`` uint8
    ``(n_queries, 16)``. Time frame: ``start_time`` (first event), ``cut_time`` (end of the period), both s.
    Provenance: ``fingerprint`` (content key), ``data_dir`` (None for a table opened without it), ``layout``.
    ``products``: product_properties as a polars frame.
    """

    client_ids: np.ndarray
    offsets: np.ndarray
    timestamp: np.ndarray
    event_type: np.ndarray
    sku: np.ndarray
    category: np.ndarray
    price: np.ndarray
    url: np.ndarray
    query: np.ndarray
    query_codes: np.ndarray
    start_time: int
    cut_time: int
    fingerprint: str
    data_dir: Path | None
    layout: str

    @property
    def n_clients(self) -> int: ...

    @property
    def n_events(self) -> int: ...

    @property
    def lengths(self) -> np.ndarray: ...

    @property
    def products(self) -> Any: ...

    def rows_of(self, client_ids: np.ndarray) -> np.ndarray:
        """Row of each client (int64, -1 for clients without events)."""

    def last_events(self, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the last ``n`` events of each row, and their counts."""

    def before(self, t: int) -> "EventSource":
        """The table as it stood at time ``t`` (events before ``t``, ``cut_time = t``)."""


@dataclass
class Block:
    """Fixed-width vectors for a set of clients.

    client_ids: int64 ``(n,)``, unique. vectors: float32 ``(n, dim)``, finite. meta: JSON-serialisable facts
    (embedder name, params, seed, input fingerprint, seconds, peak memory).
    """

    client_ids: np.ndarray
    vectors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.client_ids = np.asarray(self.client_ids, dtype=np.int64)
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.client_ids.ndim != 1:
            raise BlockError(f"client_ids must be 1-D, got shape {self.client_ids.shape}")
        if self.vectors.ndim != 2 or self.vectors.shape[0] != self.client_ids.shape[0]:
            raise BlockError(
                f"vectors must be 2-D with one row per client: got {self.vectors.shape} for {self.client_ids.shape[0]} clients")
        if not np.isfinite(self.vectors).all():
            raise BlockError(f"block {self.meta.get('name', '?')!r} has NaN or Inf values")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def covers(self, client_ids: np.ndarray) -> int:
        """How many of ``client_ids`` have a row in this block (the others would be filled)."""
        return int(np.isin(np.asarray(client_ids, dtype=np.int64), self.client_ids).sum())

    def align(self, client_ids: np.ndarray, fill: str | float = "mean") -> tuple[np.ndarray, np.ndarray]:
        """Rows for ``client_ids`` in that order, float32 ``(len(client_ids), dim)``, and a bool mask of covered rows.

        Clients the block does not hold get ``fill``: "mean" (column means of the block) or a constant.
        """
        client_ids = np.asarray(client_ids, dtype=np.int64)
        idx = index_of(self.client_ids, client_ids)
        covered = idx >= 0
        out = np.empty((len(client_ids), self.dim), dtype=np.float32)
        if covered.any():
            out[covered] = self.vectors[idx[covered]]
        if (~covered).any():
            value = self.vectors.mean(axis=0) if (isinstance(fill, str) and fill == "mean" and len(self.vectors)) \
                else np.float32(0.0 if isinstance(fill, str) else fill)
            out[~covered] = value
        return out, covered


def write_block(block: Block, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Write ``block`` to ``out_dir`` atomically (temporary folder, then rename). Returns ``out_dir``. A full disk
    removes the temporary and raises :class:`competition.io.DiskFullError` (the folder, the bytes it needs)."""
    out_dir = Path(out_dir)

    def write(tmp: Path) -> None:
        np.save(tmp / EMBEDDINGS_FILE, block.vectors.astype(dtype))
        np.save(tmp / CLIENT_IDS_FILE, block.client_ids.astype(np.int64))
        meta = dict(block.meta)
        meta.setdefault("dim", block.dim)
        meta.setdefault("n_clients", int(len(block.client_ids)))
        meta.setdefault("written_at", time.strftime("%Y-%m-%dT%H:%M:%S"))
        (tmp / BLOCK_META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=json_default))

    need = npy_bytes(block.client_ids) + int(block.vectors.size) * np.dtype(dtype).itemsize + 128 \
        + len(json.dumps(block.meta, default=json_default)) + 256
    atomic_dir(out_dir, write, need=need)
    return out_dir


def read_block(block_dir: str | Path, mmap: bool = False) -> Block:
    """Read a block (or a submission folder: meta.json is optional). Raises :class:`BlockError` with the path."""
    block_dir = Path(block_dir)
    emb_path, ids_path = block_dir / EMBEDDINGS_FILE, block_dir / CLIENT_IDS_FILE
    for p in (emb_path, ids_path):
        if not p.is_file():
            raise BlockError(f"{p}: missing (a block folder holds {EMBEDDINGS_FILE} and {CLIENT_IDS_FILE})")
    try:
        vectors = np.load(emb_path, mmap_mode="r" if mmap else None)
        client_ids = np.load(ids_path)
    except Exception as exc:  # a truncated or foreign file
        raise BlockError(f"{block_dir}: cannot read as .npy: {exc}") from exc
    if client_ids.ndim != 1 or not np.issubdtype(client_ids.dtype, np.integer):
        raise BlockError(f"{ids_path}: must be a 1-D integer array, got {client_ids.dtype} {client_ids.shape}")
    if vectors.ndim != 2 or vectors.shape[0] != client_ids.shape[0]:
        raise BlockError(f"{emb_path}: shape {vectors.shape} does not match {client_ids.shape[0]} client ids")
    if not (np.issubdtype(vectors.dtype, np.floating) or np.issubdtype(vectors.dtype, np.integer)):
        raise BlockError(f"{emb_path}: dtype {vectors.dtype} is not numeric")
    n_unique = len(np.unique(client_ids))
    if n_unique != len(client_ids):
        raise BlockError(f"{ids_path}: {len(client_ids) - n_unique} duplicate client id(s); a block holds one row "
                         f"per client")
    meta_path = block_dir / BLOCK_META_FILE
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise BlockError(f"{meta_path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise BlockError(f"{meta_path}: must hold a JSON object, got {type(meta).__name__}")
    meta.setdefault("name", block_dir.name)
    meta["path"] = str(block_dir)
    meta["source_dtype"] = str(vectors.dtype)
    try:
        return Block(client_ids, np.asarray(vectors, dtype=np.float32), meta)
    except BlockError as exc:
        raise BlockError(f"{block_dir}: {exc}") from exc


#: dtypes a block file holds without a notice (the vectors are float32 in memory, float16 in a submission).
QUIET_DTYPES = ("float32", "float16")


def cast_notice(block: Block) -> str | None:
    """One line when the block was read from another dtype than float32/float16 (e.g. float64) and cast, else
    None. Said by every command that packs or probes a block."""
    src = block.meta.get("source_dtype")
    if src is None or src in QUIET_DTYPES:
        return None
    return (f"notice: block {block.meta.get('name')!r} ({block.meta.get('path')}) is stored as {src}; cast to float32 "
            f"here and to float16 in a submission")


class Embedder:
    """Base class, scikit-learn style: ``__init__`` stores its parameters as given and raises nothing;
    ``validate()`` raises ValueError naming a bad parameter (``fit`` calls it first; the CLIs and pack call it
    before any work); ``fit(events) -> self`` learns the fitted attributes, whose names end in ``_``;
    ``transform(events, client_ids) -> Block`` runs :meth:`check_fitted` first (a clear
    :class:`NotFittedError` before ``fit``; added to every subclass's ``transform`` by ``__init_subclass__``).
    Fitted means that ``fit`` returned (``__init_subclass__`` marks it; ``__sklearn_is_fitted__`` says it), or that
    a fitted attribute is set: an embedder whose ``fit`` learns nothing (hashing, rules) is fitted once ``fit`` ran.

    Subclasses set ``name`` and implement ``fit`` and ``transform``. ``events`` is an :class:`EventSource` (the
    :class:`competition.events.EventTable`). ``get_params`` returns the constructor arguments for meta.json.
    """

    name: str = "embedder"
    #: The transform an ensemble gives this embedder's blocks by default
    #: (:func:`validate.ensemble_ops.default_transform`): "l2" rows for learned vectors.
    ensemble_transform: str = "l2"
    #: Whether the embedder learns from labels (shifted-window targets): such blocks are always on the short list
    #: the decision probe scores (:mod:`validate.decide`), whatever a fast probe says of them.
    supervised: bool = False
    #: Constructor parameters left out of a spec's rebuild ``params`` and of the staleness check: ``seed`` (compared
    #: on its own) and those that do not change the block's values.
    runtime_params: frozenset[str] = frozenset({"seed", "progress", "work_dir", "device", "resume", "infer_batch"})
    #: What the embedder does with events whose sku is absent from product_properties (the event table gives them
    #: category and price -1): said per block by ``submit.pack``'s notice. Ours say it precisely; a user's may.
    unknown_sku_note: str = "reads them with category and price -1 (the event table's missing value)"

    def __init__(self, dim: int = 64, seed: int = 0):
        self.dim = dim
        self.seed = seed

    @classmethod
    def transform_for(cls, params: dict[str, Any] | None) -> str:
        """The ensemble transform of a block this class made with ``params`` (its meta.json ``params``):
        :attr:`ensemble_transform`, unless a subclass whose params change what its columns are says otherwise."""
        return cls.ensemble_transform

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and not k.endswith("_")}

    def __init_subclass__(cls, **kwargs):
        """Every subclass's ``transform`` runs :meth:`check_fitted` first, so no embedder (ours or a user's)
        transforms with half-set attributes before ``fit``; every subclass's ``fit`` marks the embedder fitted when
        it returns (one that learns nothing is fitted too)."""
        super().__init_subclass__(**kwargs)
        fit = cls.__dict__.get("fit")
        if fit is not None and not getattr(fit, "_marks_fitted", False):
            @functools.wraps(fit)
            def fitted(self, *args, **kw):
                out = fit(self, *args, **kw)
                self._fit_ran = True
                return out

            fitted._marks_fitted = True
            cls.fit = fitted
        inner = cls.__dict__.get("transform")
        if inner is not None and not getattr(inner, "_checks_fitted", False):
            @functools.wraps(inner)
            def transform(self, *args, **kw):
                self.check_fitted()
                return inner(self, *args, **kw)

            transform._checks_fitted = True
            cls.transform = transform

    def validate(self) -> None:
        """Raise ValueError naming the first bad parameter (here: none). Called by ``fit`` before any work."""

    def __sklearn_is_fitted__(self) -> bool:
        """Whether ``fit`` ran to its end, or a fitted attribute (a public name ending in ``_``) is set."""
        attrs = vars(self)
        return bool(attrs.get("_fit_ran")) or any(k.endswith("_") and not k.startswith("_") for k in attrs)

    def check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless fitted (:meth:`__sklearn_is_fitted__`): ``fit`` ran, or set a
        fitted attribute."""
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(events) before transform")

    def fit(self, events: EventSource) -> "Embedder":  # pragma: no cover - interface
        raise NotImplementedError

    def transform(self, events: EventSource, client_ids: np.ndarray) -> Block:  # pragma: no cover - interface
        raise NotImplementedError

    def fit_transform(self, events: EventSource, client_ids: np.ndarray) -> Block:
        """``fit(events)`` then ``transform(events, client_ids)`` (an embedder may do both in one pass)."""
        return self.fit(events).transform(events, client_ids)
