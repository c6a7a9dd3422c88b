"""``python -m embedders.next_event``: train the next-event Transformer and write its block (also under torchrun)."""
from __future__ import annotations

import argparse
import sys

from embedders.cli import base_parser
from embedders.distributed import neural_main
from embedders.next_event.cli import add_loop_flags, loop_kwargs
from embedders.next_event.model import PRESETS
from embedders.next_event.train import NextEventEmbedder

PROG = "python -m embedders.next_event"
DESCRIPTION = """Next-event causal Transformer (nanoGPT-shaped). Each client's last 126 events become per-field
tokens (event type, category, price bucket, sku from its name codes, url, time gap) summed with a position
embedding; causal self-attention blocks read them and every position predicts the next event's type, category,
price bucket and sku (sampled softmax). The block is the hidden state at the client's last event. Presets: small
(CPU: 2 layers, 2 heads, 128-d), base (GPU: 4 layers, 4 heads, 256-d). Data parallel:
torchrun --nproc_per_node=K -m embedders.next_event ..."""


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(PROG, DESCRIPTION, default_dim=None)
    p._option_string_actions["--dim"].help = "block width = the model width (default: the preset's)"
    p.add_argument("--preset", choices=sorted(PRESETS), default="small", help="model size")
    p.add_argument("--layers", type=int, default=None, help="Transformer blocks (default: the preset's)")
    p.add_argument("--heads", type=int, default=None, help="attention heads (default: the preset's)")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout (embeddings, attention, MLP)")
    p.add_argument("--sku-negatives", type=int, default=2048, help="uniform negative skus per batch (sampled softmax)")
    add_loop_flags(p)
    return p


def make(args: argparse.Namespace) -> NextEventEmbedder:
    emb = NextEventEmbedder(preset=args.preset, n_layer=args.layers, n_head=args.heads, dropout=args.dropout,
                            sku_negatives=args.sku_negatives, **loop_kwargs(args))
    emb.validate()
    return emb


def main(argv: list[str] | None = None) -> int:
    return neural_main(build_parser(), argv, make, lambda args: f"next_event[{args.preset}]")


if __name__ == "__main__":
    sys.exit(main())
