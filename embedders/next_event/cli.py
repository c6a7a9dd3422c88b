"""The flags of the shared sequence-embedder loop (:class:`embedders.next_event.train.SequenceEmbedder`), used by
the next_event and contrastive CLIs."""
from __future__ import annotations

import argparse
from pathlib import Path

from embedders.distributed import DEVICES
from embedders.next_event.inputs import DEFAULT_FIELDS, SEQUENCE_FIELDS


def add_loop_flags(p: argparse.ArgumentParser, epochs: int = 4, batch_size: int = 128) -> None:
    p.add_argument("--fields", default=DEFAULT_FIELDS, help=f"event fields read, of {', '.join(SEQUENCE_FIELDS)}")
    p.add_argument("--epochs", type=int, default=epochs, help="training epochs (the best by held-out loss is kept)")
    p.add_argument("--batch-size", type=int, default=batch_size, help="clients per batch (per rank under torchrun)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--holdout", type=float, default=0.05, help="share of clients held out to pick the best epoch")
    p.add_argument("--max-train-clients", type=int, default=None,
                   help="train on a seeded sample of this many clients (default: every relevant client)")
    p.add_argument("--max-batches", type=int, default=None, help="at most this many batches per epoch")
    p.add_argument("--vocab-cap", type=int, default=5000, help="urls kept (the most frequent; the rest is 'other')")
    p.add_argument("--delta-max", type=float, default=0.5, help="bound of the sku rows' trainable delta")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when present, else CPU")
    p.add_argument("--threads", type=int, default=2,
                   help="CPU threads per process (0: torch's default; cores / K under torchrun); recorded in meta, "
                        "as the same threads give the same bytes")
    p.add_argument("--work-dir", type=Path, default=None, help="checkpoints (default: <out>.work)")
    p.add_argument("--resume", action="store_true", help="continue from <work-dir>/last.pt (same flags and input)")
    p.add_argument("--infer-batch", type=int, default=512, help="clients per batch when embedding")


def loop_kwargs(args: argparse.Namespace) -> dict:
    """Constructor arguments of the loop from parsed flags (plus dim, seed, progress)."""
    return dict(dim=args.dim, seed=args.seed, fields=args.fields, epochs=args.epochs, batch_size=args.batch_size,
                lr=args.lr, weight_decay=args.weight_decay, holdout=args.holdout,
                max_train_clients=args.max_train_clients, max_batches=args.max_batches, vocab_cap=args.vocab_cap,
                delta_max=args.delta_max, device=args.device, threads=args.threads,
                work_dir=str(args.work_dir or Path(f"{args.out}.work")), resume=args.resume,
                progress=not args.no_progress, infer_batch=args.infer_batch)
