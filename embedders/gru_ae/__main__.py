"""``python -m embedders.gru_ae``: train the GRU autoencoder and write its block (also under torchrun)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


from embedders.cli import base_parser
from embedders.gru_ae.model import PRESETS
from embedders.gru_ae.sku_table import SKU_INITS
from embedders.threads import DEFAULT_THREADS
from embedders.distributed import neural_main
from embedders.gru_ae.train import TRAIN_ON, GruAE

PROG = "python -m embedders.gru_ae"
DESCRIPTION = """GRU sequence autoencoder. Each client's last 126 events (start/end wrapped) become token
sequences, one token per field; an encoder GRU reads them, a decoder GRU started from its state reconstructs them
(teacher forcing, one cross-entropy per field), and the encoder's top-layer final state is the client's vector.
Presets: day_event (day + event type, 64-d each concatenated, 2x128, dropout 0.5), all (event type, category,
price, sku, url; 512-d summed; 3x512, dropout 0.1), week_all (all + week). Checkpoints go to --work-dir; the best
epoch by held-out reconstruction loss is kept. Data parallel: torchrun --nproc_per_node=K -m embedders.gru_ae ..."""


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(PROG, DESCRIPTION, default_dim=None)
    p._option_string_actions["--dim"].help = "block width = GRU hidden size (default: the preset's hidden size)"
    p.add_argument("--variant", choices=sorted(PRESETS), default="week_all", help="preset: token fields and GRU shape")
    p.add_argument("--epochs", type=int, default=5, help="training epochs (the best one by held-out loss is kept)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when present (one GPU per rank under torchrun), else CPU")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="checkpoints (last.pt, best.pt) and per-rank weight hashes (default: <out>.work)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <work-dir>/last.pt (same flags and input required); gives the same result as "
                        "an uninterrupted run")
    p.add_argument("--query", action="store_true",
                   help="add the search query field: its 16 codes embedded (one table per position) and summed, "
                        "and reconstructed")
    p.add_argument("--sku-init", choices=SKU_INITS, default="content",
                   help="sku table: content = name-code vector + trainable delta bounded by --delta-max (seen skus "
                        "only; new skus keep their content vector); id = the reference's top --vocab-cap ids + "
                        "'other'; content-frozen = no delta; content-finetune = unbounded delta")
    p.add_argument("--delta-max", type=float, default=0.5,
                   help="largest L2 norm of a sku's delta (content vectors have norm 1); clipped after every step")
    p.add_argument("--vocab-cap", type=int, default=5000,
                   help="most frequent urls kept; the rest share the 'other' token")
    p.add_argument("--sku-cap", type=int, default=None,
                   help="most frequent skus kept with --sku-init id (default: --vocab-cap); the rest are 'other'")
    p.add_argument("--field-dim", type=int, default=None, help="embedding width per field (default: the preset's)")
    p.add_argument("--layers", type=int, default=None, help="GRU layers (default: the preset's)")
    p.add_argument("--dropout", type=float, default=None, help="dropout between GRU layers (default: the preset's)")
    p.add_argument("--batch-size", type=int, default=256, help="clients per batch (per rank under torchrun)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--holdout", type=float, default=0.05,
                   help="fraction of training clients held out to pick the best epoch (0: keep the best training "
                        "loss)")
    p.add_argument("--train-on", choices=TRAIN_ON, default="relevant",
                   help="train on the relevant clients with events, or on every client of the event table")
    p.add_argument("--full-softmax-max", type=int, default=100_000,
                   help="catalogue size above which the sku head uses a sampled softmax (in-batch skus + "
                        "--sku-negatives uniform negatives) instead of a softmax over every sku")
    p.add_argument("--sku-negatives", type=int, default=4096, help="uniform negative skus per batch (sampled softmax)")
    p.add_argument("--max-batches", type=int, default=None,
                   help="stop each epoch after this many batches (benchmarks and smoke runs)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help="CPU threads per process (0: torch's default, cores / K under torchrun). The GRUs run one "
                        "small matmul per time step, where extra threads mostly wait on each other: on the 2-core "
                        "reference machine 1 thread trained day_event 8x faster than 2 (docs/gru_ae.md). Scale out "
                        "with torchrun processes instead")
    p.add_argument("--infer-batch", type=int, default=1024, help="clients per batch when embedding")
    return p


def make(args: argparse.Namespace) -> GruAE:
    return GruAE(variant=args.variant, dim=args.dim, seed=args.seed, epochs=args.epochs, field_dim=args.field_dim,
                 layers=args.layers, dropout=args.dropout, query=args.query, sku_init=args.sku_init,
                 delta_max=args.delta_max, vocab_cap=args.vocab_cap, sku_cap=args.sku_cap,
                 batch_size=args.batch_size, lr=args.lr,
                 holdout=args.holdout, full_softmax_max=args.full_softmax_max, sku_negatives=args.sku_negatives,
                 train_on=args.train_on, device=args.device,
                 work_dir=args.work_dir or Path(f"{args.out}.work"), resume=args.resume,
                 progress=not args.no_progress, max_batches=args.max_batches, infer_batch=args.infer_batch,
                 threads=args.threads)  # the embedder applies it (embedders.threads), as under submit.pack


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return neural_main(parser, argv, make, lambda args: f"gru_ae[{args.variant}]")


if __name__ == "__main__":
    sys.exit(main())
