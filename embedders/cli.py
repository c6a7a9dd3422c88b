"""What every embedder CLI shares: the flags (--data-dir, --out, --dim, --seed, --layout), running fit/transform on
the event table for the relevant clients, and writing the block with its meta (params, seed, input fingerprint,
seconds, peak memory). Each embedder module only adds its own flags and builds its estimator."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from competition.cli import HelpFormatter, add_no_progress, peak_rss_mb
from competition.events import EventTable, block_fingerprint
from competition.load import DataError, read_relevant_clients
from competition.schema import LAYOUTS
from embedders import registry
from embedders.base import Block, BlockError, Embedder, write_block


def base_parser(prog: str, description: str, default_dim: int) -> argparse.ArgumentParser:
    """An ArgumentParser with the common embedder flags."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path,
                        help="data directory in the organisers' layout (split already run for --layout input)")
    parser.add_argument("--out", required=True, type=Path,
                        help="block folder to write (embeddings.npy, client_ids.npy, meta.json); replaced atomically")
    parser.add_argument("--dim", type=int, default=default_dim, help="width of the block")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same block on CPU")
    parser.add_argument("--layout", choices=LAYOUTS, default="input",
                        help="'input': the split's input period (local validation); 'raw': every released event "
                             "(final submission)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="dtype of embeddings.npy")
    add_no_progress(parser)
    return parser


def embed(embedder: Embedder, data_dir: Path, layout: str = "input", progress: bool = True,
          client_ids: np.ndarray | None = None) -> Block:
    """Fit ``embedder`` on the event table and embed ``client_ids`` (default: the relevant clients).

    The block's meta records the embedder (:func:`embedders.registry.name_of`: a name that rebuilds it), its
    params, seed, layout, input fingerprint (:func:`competition.events.block_fingerprint`: the events and the
    clients embedded), seconds, events/s and peak RSS.
    """
    t0 = time.perf_counter()
    events = EventTable.build(data_dir, layout, progress=progress)
    t_events = time.perf_counter() - t0
    clients = read_relevant_clients(data_dir) if client_ids is None else np.asarray(client_ids, dtype=np.int64)
    t1 = time.perf_counter()
    block = embedder.fit_transform(events, clients)
    seconds = time.perf_counter() - t1
    block.meta.update({
        "embedder": registry.name_of(type(embedder)), "params": embedder.get_params(), "seed": embedder.seed, "layout": layout,
        "data_dir": str(data_dir), "events_fingerprint": events.fingerprint, "n_events": events.n_events,
        "fingerprint": block_fingerprint(data_dir, layout, clients, events.fingerprint),
        "event_table_seconds": round(t_events, 2), "seconds": round(seconds, 2),
        "events_per_second": round(events.n_events / max(seconds, 1e-9), 1), "peak_rss_mb": round(peak_rss_mb(), 1),
    })
    block.meta.setdefault("name", embedder.name)
    return block


def run(parser: argparse.ArgumentParser, make: Callable[[argparse.Namespace], Embedder],
        argv: list[str] | None = None) -> int:
    """Parse flags, build the embedder with ``make(args)``, embed, write the block. Exit code 2 on bad input."""
    args = parser.parse_args(argv)
    try:
        if args.dim < 1:
            parser.error(f"--dim must be >= 1, got {args.dim}")
        embedder = make(args)
        try:
            embedder.validate()
        except ValueError as exc:
            parser.error(str(exc))
        block = embed(embedder, args.data_dir, args.layout, progress=not args.no_progress)
        write_block(block, args.out, dtype=args.dtype)
    except (DataError, BlockError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = block.meta
    print(f"{embedder.name}: {block.vectors.shape[0]:,} clients x {block.dim} -> {args.out}  "
          f"({m['seconds']}s, {m['events_per_second']:,.0f} events/s, peak RSS {m['peak_rss_mb']:,.0f} MiB)")
    return 0
