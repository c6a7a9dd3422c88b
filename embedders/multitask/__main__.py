"""``python -m embedders.multitask``: train the supervised multi-task embedder and write its block (also under
torchrun)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from competition.schema import TARGET_WINDOW_DAYS
from embedders.cli import base_parser
from embedders.distributed import DEVICES, neural_main
from embedders.multitask.model import INPUTS
from embedders.multitask.train import DEFAULT_FIELDS, DEFAULT_INPUTS, MultiTaskEmbedder

PROG = "python -m embedders.multitask"
DESCRIPTION = """Supervised multi-task embedder. Anchors are cut back from the end of the event period (every
--stride-days, the first --horizon-days before the end); for each anchor the network reads the clients as they
were before it and learns the six tasks' labels of the --horizon-days after it (churn, conversion, category / sku /
new-sku / price propensity over that window's own top lists). target/ is never read. The block is the network's
bottleneck for every relevant client, from its whole history. --input blocks stacks other embedders' blocks (each
built at every anchor); --input sequence reads the last 126 events with a GRU. Data parallel:
torchrun --nproc_per_node=K -m embedders.multitask ..."""


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(PROG, DESCRIPTION, default_dim=256)
    p._option_string_actions["--dim"].help = "block width = the bottleneck's"
    p.add_argument("--input", choices=INPUTS, default="blocks",
                   help="blocks: stack --inputs; sequence: a GRU over the event sequence")
    p.add_argument("--inputs", nargs="+", default=list(DEFAULT_INPUTS), metavar="EMBEDDER[@K=V,...]",
                   help="input blocks of --input blocks, like spec entries: a registered name or module:Class, "
                        "params after '@' (refit=true|false: fit at every anchor, or once before the first)")
    p.add_argument("--windows", type=int, default=4, help="training windows (anchors)")
    p.add_argument("--horizon-days", type=int, default=TARGET_WINDOW_DAYS, help="label window after each anchor")
    p.add_argument("--stride-days", type=int, default=TARGET_WINDOW_DAYS, help="days between anchors")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (the best by held-out loss is kept)")
    p.add_argument("--batch-size", type=int, default=256, help="clients per batch (per rank under torchrun)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--hidden", nargs=2, type=int, default=[512, 1024], metavar=("THIN", "WIDE"),
                   help="trunk widths (the organisers' MLP: 2048 4096, a GPU size)")
    p.add_argument("--residual-blocks", type=int, default=2, help="residual blocks of the trunk (organisers': 3)")
    p.add_argument("--item-dim", type=int, default=64, help="item vector width of the category / sku heads")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout in the trunk (after the stem, in each block)")
    p.add_argument("--loss-weights", default=None, metavar="TASK=W,...",
                   help="per-task loss weights (default 1 each), e.g. propensity_sku=2,churn=0.5")
    p.add_argument("--holdout", type=float, default=0.1, help="share of clients held out to pick the best epoch")
    p.add_argument("--max-train-clients", type=int, default=None,
                   help="train on a seeded sample of this many clients (default: every relevant client)")
    p.add_argument("--fields", default=",".join(DEFAULT_FIELDS), help="--input sequence: token fields")
    p.add_argument("--field-dim", type=int, default=32, help="--input sequence: embedding width per field")
    p.add_argument("--gru-hidden", type=int, default=128, help="--input sequence: GRU hidden size")
    p.add_argument("--gru-layers", type=int, default=1, help="--input sequence: GRU layers")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when present, else CPU")
    p.add_argument("--threads", type=int, default=2,
                   help="CPU threads per process (0: torch's default; cores / K under torchrun); recorded in meta, "
                        "as the same threads give the same bytes")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="checkpoints and the input embedders' files (default: <out>.work)")
    p.add_argument("--resume", action="store_true", help="continue from <work-dir>/last.pt (same flags and input)")
    return p


def make(args: argparse.Namespace) -> MultiTaskEmbedder:
    return MultiTaskEmbedder(
        dim=args.dim, seed=args.seed, input=args.input, inputs=tuple(args.inputs), windows=args.windows,
        horizon_days=args.horizon_days, stride_days=args.stride_days, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, thin=args.hidden[0],
        wide=args.hidden[1], residual_blocks=args.residual_blocks, item_dim=args.item_dim,
        dropout=args.dropout, loss_weights=args.loss_weights, holdout=args.holdout, max_train_clients=args.max_train_clients,
        fields=args.fields, field_dim=args.field_dim, gru_hidden=args.gru_hidden, gru_layers=args.gru_layers,
        device=args.device, threads=args.threads, work_dir=str(args.work_dir or Path(f"{args.out}.work")), resume=args.resume,
        progress=not args.no_progress)


def make_checked(args: argparse.Namespace) -> MultiTaskEmbedder:
    """:func:`make`, with every parameter validated (a ValueError names the bad one)."""
    embedder = make(args)
    embedder.validate()
    return embedder


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return neural_main(parser, argv, make_checked, lambda args: f"multitask[{args.input}]")


if __name__ == "__main__":
    sys.exit(main())
