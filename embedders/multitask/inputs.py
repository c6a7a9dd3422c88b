"""What the multitask network reads about a client at a given time: other blocks (stacking) or its event sequence.

**Blocks** (``input="blocks"``): the concatenation of other embedders' blocks, each built by the registry
(:mod:`embedders.registry`, so a user's own embedder works too) from the event table cut at the anchor
(:meth:`competition.events.EventTable.before`). An input is written like an ensemble-spec entry: a name
(``stats``), a name with params (``tfidf_svd@dim=32,min_df=3``; values are JSON literals, else strings) or a dict
``{"embedder": ..., "params": {...}, "refit": bool}``. Columns must mean the same at every anchor and at the
period's end, so:

- ``refit=True`` (the default for ``stats``, whose columns are named statistics relative to the table's end, and
  for ``content``, whose axes depend on product_properties only): the embedder is fitted anew on each cut table;
- ``refit=False`` (the default for the rest, whose columns are a learnt basis: SVD components, word2vec axes, a
  GRU's state): the embedder is fitted once, on the events before the earliest anchor, and that one fitted model
  embeds every cut table and the full period. Fitting it again per anchor would give each anchor its own arbitrary
  basis that the network could not carry over to the period's end.

Either way no input of an anchor ever comes from an event at or after that anchor; :func:`check_anchor` asserts it
on every block built here: the block's meta ``fit_cut_time`` / ``cut_time`` (what an embedder records of the
events it read, e.g. a user's embedder that reads precomputed files; else the cut of the table it was handed) must
not be after the anchor, or the block is refused.

**Sequence** (``input="sequence"``): the client's last 126 events as token grids of :mod:`embedders.gru_ae.tokens`
(fields ``event_type, category, price, sku, age``; ``age`` is relative to the cut, so the same client cut at two
anchors gives comparable tokens), vocabularies fitted on the earliest anchor's table.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedders.base import Block
from embedders.registry import make_embedder

#: Inputs whose columns keep their meaning when refitted on a later cut (see the module docstring): stats (named
#: statistics) and content (its axes come from product_properties alone, the same at every cut, while its
#: ``recent`` window must move with the anchor).
REFIT_BY_DEFAULT = frozenset({"stats", "content"})


class InputError(ValueError):
    """A malformed input spec, or an input block built from events after its anchor."""


@dataclass(frozen=True)
class InputSpec:
    """One input block: embedder name (or ``module:Class``), constructor params, and the refit policy."""

    embedder: str
    params: dict[str, Any] = field(default_factory=dict)
    refit: bool | None = None

    @property
    def refits(self) -> bool:
        return self.embedder in REFIT_BY_DEFAULT if self.refit is None else bool(self.refit)

    @property
    def label(self) -> str:
        args = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(self.params.items()))
        return self.embedder + (f"@{args}" if args else "")

    def to_dict(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "params": dict(self.params), "refit": self.refits}


def _literal(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_input(entry: str | dict | InputSpec) -> InputSpec:
    """An :class:`InputSpec` from ``"name"``, ``"name@k=v,k=v"`` or ``{"embedder", "params", "refit"}``."""
    if isinstance(entry, InputSpec):
        return entry
    if isinstance(entry, dict):
        unknown = set(entry) - {"embedder", "params", "refit"}
        if "embedder" not in entry or unknown:
            raise InputError(f"input {entry!r}: expected keys embedder, params, refit")
        params = dict(entry.get("params") or {})
        return InputSpec(str(entry["embedder"]), params, entry.get("refit"))
    if not isinstance(entry, str) or not entry.strip():
        raise InputError(f"input {entry!r}: expected 'name' or 'name@key=value,...'")
    name, _, args = entry.strip().partition("@")
    params: dict[str, Any] = {}
    refit = None
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InputError(f"input {entry!r}: {item!r} is not key=value")
        if key == "refit":
            refit = bool(_literal(value))
        else:
            params[key] = _literal(value)
    return InputSpec(name, params, refit)


def check_anchor(block: Block, anchor: int, where: str = "input block") -> None:
    """Refuse a block fitted on or embedding events at or after ``anchor`` (its meta's ``fit_cut_time`` and
    ``cut_time``, s; both are recorded by :class:`BlockInputs`)."""
    for key in ("fit_cut_time", "cut_time"):
        if key not in block.meta:
            raise InputError(f"{where} {block.meta.get('name', '?')!r}: meta has no {key!r}; cannot prove it was "
                             f"built from events before the anchor {anchor}")
        if int(block.meta[key]) > int(anchor):
            raise InputError(f"{where} {block.meta.get('name', '?')!r} was built from events up to "
                             f"{block.meta[key]} ({key}), after its anchor {anchor}: that would leak the labels' "
                             f"window into the features")


def reusable_block(folder: str | Path, embedder, events, client_ids: np.ndarray) -> Block | None:
    """The block in ``folder`` when it is exactly what ``embedder`` (configured, not fitted) would make of the
    table ``events`` for ``client_ids``: the same embedder name, seed and params (runtime ones aside), fitted and
    embedded on the same events (``events_fingerprint``: a cut table's differs), for the same clients; else None.

    Why: at the period's end a refitted input (stats) is the very block the pipeline built just before the
    multitask one, and at 1M clients building it again costs about a minute per stage."""
    from embedders.base import BlockError, read_block
    from embedders.registry import name_of, params_differ
    try:
        block = read_block(folder, mmap=True)  # rows are read only if it is the block
    except (BlockError, OSError, ValueError):
        return None
    meta = block.meta
    if (meta.get("embedder") != name_of(type(embedder)) or meta.get("seed") != embedder.seed
            or params_differ(embedder, meta.get("params"))):
        return None
    vectors = same_rows(block, events, client_ids)
    return None if vectors is None else \
        Block(np.asarray(client_ids, dtype=np.int64), vectors, dict(block.meta, reused_from=str(folder)))


def same_rows(block: Block, events, client_ids: np.ndarray) -> np.ndarray | None:
    """``block``'s float32 rows for ``client_ids`` (in that order) when it embedded the very table ``events``
    (``events_fingerprint``: a cut table's differs) for exactly those clients, as its embedder wrote it (float32:
    a float16 copy is not); else None. An embedder's rows may depend on the set it embeds, so other clients do not
    count."""
    if not getattr(events, "fingerprint", "") or block.meta.get("events_fingerprint") != events.fingerprint:
        return None
    if block.vectors.dtype != np.float32:
        return None
    vectors, covered = block.align(client_ids)
    if not covered.all() or len(block.client_ids) != len(np.unique(client_ids)):
        return None
    return vectors


class BlockInputs:
    """The stacked input blocks of the ``blocks`` mode.

    ``fit(events_first)`` fits the non-refitting inputs on the earliest anchor's table; ``matrix(events_t, ids)``
    builds every input for a cut table and returns float32 ``(len(ids), width_)``. ``prebuilt``: folders of blocks
    already built (by ``submit.build``) that a refitted input may reuse when :func:`reusable_block` says it is the
    same block; ``reused_`` lists the folders used.
    """

    def __init__(self, specs: list[InputSpec], seed: int = 0, progress: bool = True,
                 work_dir: str | Path | None = None, prebuilt: list[str | Path] | None = None):
        self.specs = specs
        self.seed = seed
        self.progress = progress
        self.work_dir = work_dir
        self.prebuilt = list(prebuilt or [])
        self.reused_: list[str] = []

    def _make(self, i: int, spec: InputSpec, tag: str):
        work = None if self.work_dir is None else Path(self.work_dir) / f"input{i}_{spec.embedder}_{tag}"
        return make_embedder(spec.embedder, spec.params, self.seed, self.progress, f"multitask input {spec.label!r}",
                             work_dir=work)

    def fit(self, events_first) -> "BlockInputs":
        self.fitted_ = {}
        self.fit_cut_time_ = int(events_first.cut_time)
        for i, spec in enumerate(self.specs):
            if not spec.refits:
                self.fitted_[i] = self._make(i, spec, "first").fit(events_first)
        self.widths_: list[int] | None = None
        return self

    def blocks(self, events_t, client_ids: np.ndarray) -> list[Block]:
        """Every input block for table ``events_t`` (cut at its ``cut_time``), each checked by :func:`check_anchor`."""
        out = []
        for i, spec in enumerate(self.specs):
            block = None
            if spec.refits:
                emb, fit_cut = self._make(i, spec, "refit"), int(events_t.cut_time)
                for folder in self.prebuilt:
                    block = reusable_block(folder, emb, events_t, client_ids)
                    if block is not None:
                        self.reused_.append(str(folder))
                        break
                if block is None:
                    block = emb.fit(events_t).transform(events_t, client_ids)
            else:
                emb, fit_cut = self.fitted_[i], self.fit_cut_time_
                block = emb.transform(events_t, client_ids)
            # what the embedder itself recorded of the events it read wins over what we handed it
            block.meta.setdefault("fit_cut_time", fit_cut)
            block.meta.setdefault("cut_time", int(events_t.cut_time))
            block.meta["name"] = spec.label
            check_anchor(block, events_t.cut_time, f"multitask input {spec.label!r}")
            if not np.array_equal(block.client_ids, client_ids):
                block = Block(client_ids, block.align(client_ids)[0], block.meta)
            out.append(block)
        return out

    def matrix(self, events_t, client_ids: np.ndarray) -> np.ndarray:
        blocks = self.blocks(events_t, np.asarray(client_ids, dtype=np.int64))
        widths = [b.dim for b in blocks]
        if self.widths_ is None:
            self.widths_ = widths
        elif widths != self.widths_:
            raise InputError(f"input widths changed between cuts: {self.widths_} -> {widths}")
        return np.concatenate([b.vectors for b in blocks], axis=1).astype(np.float32)


__all__ = ["InputSpec", "InputError", "parse_input", "check_anchor", "reusable_block", "same_rows", "BlockInputs",
           "REFIT_BY_DEFAULT"]
