"""``python -m embedders.contrastive``: train the CoLES-style contrastive encoder and write its block (also under
torchrun)."""
from __future__ import annotations

import argparse
import sys

from embedders.cli import base_parser
from embedders.contrastive.model import ENCODERS, LOSSES
from embedders.contrastive.train import ContrastiveEmbedder
from embedders.distributed import neural_main
from embedders.next_event.cli import add_loop_flags, loop_kwargs

PROG = "python -m embedders.contrastive"
DESCRIPTION = """CoLES-style contrastive encoder. Every batch cuts each client's last 126 events into --splits random
contiguous slices (--min-len..--max-len events); an encoder (GRU or causal Transformer over per-field embeddings:
event type, category, price bucket, sku from its name codes, url, time gap) embeds them, and a contrastive loss
pulls a client's slices together and pushes other clients' apart (InfoNCE, or the CoLES margin loss). The block is
the encoder's output on the whole history. Data parallel: torchrun --nproc_per_node=K -m embedders.contrastive ..."""


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(PROG, DESCRIPTION, default_dim=128)
    p._option_string_actions["--dim"].help = "block width (the GRU's hidden size, or the Transformer's projection)"
    p.add_argument("--encoder", choices=ENCODERS, default="gru", help="sequence encoder")
    p.add_argument("--field-dim", type=int, default=64, help="per-field embedding width (the Transformer's width)")
    p.add_argument("--layers", type=int, default=1, help="GRU layers or Transformer blocks")
    p.add_argument("--heads", type=int, default=2, help="attention heads (--encoder transformer)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout in the encoder")
    p.add_argument("--loss", choices=LOSSES, default="infonce", help="contrastive loss")
    p.add_argument("--temperature", type=float, default=0.1, help="InfoNCE temperature")
    p.add_argument("--margin", type=float, default=0.5, help="margin of the CoLES loss")
    p.add_argument("--splits", type=int, default=4, help="slices per client per batch")
    p.add_argument("--min-len", type=int, default=10, help="shortest slice (events; a shorter history is taken whole)")
    p.add_argument("--max-len", type=int, default=60, help="longest slice (events)")
    add_loop_flags(p, epochs=4, batch_size=64)
    return p


def make(args: argparse.Namespace) -> ContrastiveEmbedder:
    emb = ContrastiveEmbedder(encoder=args.encoder, field_dim=args.field_dim, layers=args.layers, heads=args.heads,
                              dropout=args.dropout, loss=args.loss, temperature=args.temperature, margin=args.margin,
                              n_splits=args.splits, min_len=args.min_len, max_len=args.max_len, **loop_kwargs(args))
    emb.validate()
    return emb


def main(argv: list[str] | None = None) -> int:
    return neural_main(build_parser(), argv, make, lambda args: f"contrastive[{args.encoder}]")


if __name__ == "__main__":
    sys.exit(main())
