"""What ``submit.pack`` says about the data behind a submission, one line each (``notice: ...``), printed with its
other lines, written to ``pack.json`` (``notices``) and, in a pipeline run, to the run report (``report.json``
``notices``: ``[{"stage": "pack" | "final", "line": str}]``, :func:`run_notices`).

- relevant clients without a single event in the period the blocks come from: how many, and the vector each block
  gives them in the submission (zeros, one shared row, the block's column means when it has no row for them);
- events whose sku is absent from product_properties: how many, of which kinds, and what each block's embedder
  does with them (its ``unknown_sku_note``);
- (final submissions) events after the last purchase: how many, of which kinds, their dates, and that the raw
  event table keeps those within a day of it and leaves out (drops) the later ones (:mod:`competition.events`),
  so a clock gone wrong does not bend the final blocks' recency.

Every figure comes from the event table's manifest (cached; no extra pass over the events) and the packed matrix.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from competition.schema import CLIENT_IDS_FILE, PRODUCT_PROPERTIES
from competition.split import after_end_words
from validate.spec import EnsembleSpec, block_meta


def _period(table) -> str:
    if table.layout == "input":
        cut = datetime.fromtimestamp(int(table.cut_time), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        return f"in the input period (before {cut})"
    return "in the event files"


def row_words(rows: np.ndarray) -> str:
    """What ``rows`` (float ``(k, d)``, k >= 1) are: ``zeros``, ``one shared row (norm X)`` or rows that differ."""
    rows = np.asarray(rows, dtype=np.float32)
    if (rows == rows[0]).all():
        return "zeros" if not rows[0].any() else f"one shared row (norm {float(np.linalg.norm(rows[0])):.3g})"
    return f"rows that differ between them (mean norm {float(np.linalg.norm(rows, axis=1).mean()):.3g})"


def no_event_notice(table, relevant: np.ndarray, spec: EnsembleSpec, ens) -> str | None:
    """The line about relevant clients without events in ``table``, or None when every one has some."""
    relevant = np.asarray(relevant, dtype=np.int64)
    none = table.rows_of(relevant) < 0
    k = int(none.sum())
    if not k:
        return None
    ids = relevant[none]
    at = np.isin(ens.client_ids, ids)
    parts = []
    for b in spec.active:
        if b.name not in ens.columns:
            continue
        lo, hi = ens.columns[b.name]
        words = row_words(np.asarray(ens.embeddings[at, lo:hi]))
        try:
            held = int(np.isin(ids, np.load(Path(b.path) / CLIENT_IDS_FILE, mmap_mode="r")).sum())
        except (OSError, ValueError):
            held = k
        if held < k:
            words += f" (the block has no row for {k - held:,} of them: its column means)"
        parts.append(f"{b.name} {words}")
    return (f"notice: {k:,} of {len(relevant):,} relevant clients have no event {_period(table)}; in the submission "
            f"they get, per block: " + "; ".join(parts))


def _embedder_note(b) -> str:
    from embedders import registry

    name = b.embedder or block_meta(b).get("embedder")
    try:
        return registry.embedder_class(name).unknown_sku_note if isinstance(name, str) else "embedder unknown"
    except registry.RegistryError:
        return f"embedder {name!r} cannot be loaded to say"


def unknown_sku_notice(table, spec: EnsembleSpec) -> str | None:
    """The line about events whose sku is absent from product_properties, or None when there are none."""
    meta = table.meta
    n = int(meta.get("unknown_sku_events") or 0)
    if not n:
        return None
    kinds = meta.get("unknown_sku_by_kind") or {}
    which = f" ({', '.join(f'{k} {v:,}' for k, v in kinds.items())})" if kinds else ""
    per_block = "; ".join(f"{b.name}: {_embedder_note(b)}" for b in spec.active)
    return (f"notice: {n:,} event(s) {_period(table)} have a sku missing from {PRODUCT_PROPERTIES}{which}: kept as "
            f"events, their category and price unknown; per block: {per_block}")


def after_end_notice(table) -> str | None:
    """(Raw tables) the line about events after the last purchase (kept within a day of it, dropped later); None
    when there are none."""
    after = table.meta.get("after_end") if table.layout == "raw" else None
    if not after or not after.get("n"):
        return None
    return f"notice: {after_end_words(after)}; the local split has none of them in a window"


def pack_notices(data_dir: str | Path, layout: str, relevant: np.ndarray, spec: EnsembleSpec, ens) -> list[str]:
    """Every notice above for a packed ensemble ``ens`` of ``spec`` (its blocks built for ``layout``)."""
    from competition.events import EventTable
    from competition.load import DataError

    try:
        table = EventTable.build(data_dir, layout, progress=False)  # the blocks' own table: cached
    except DataError as exc:  # blocks packed as they are, beside data that cannot be read: say so, pack anyway
        return [f"notice: no notices on the data (its {layout} event table cannot be built: {exc})"]
    lines = [no_event_notice(table, relevant, spec, ens), unknown_sku_notice(table, spec), after_end_notice(table)]
    return [line for line in lines if line]


def run_notices(**packed: Any) -> list[dict[str, str]]:
    """The run report's ``notices``: every notice line of each stage's :class:`submit.pack.PackResult` (None:
    stage not run), ``[{"stage": name, "line": text}]`` in stage order."""
    return [{"stage": stage, "line": line} for stage, result in packed.items() if result is not None
            for line in result.ensemble.notices]


__all__ = ["pack_notices", "run_notices", "no_event_notice", "unknown_sku_notice", "after_end_notice", "row_words"]
