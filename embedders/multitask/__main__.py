"""``python -m embedders.multitask``: train the supervised multi-task embedder and write its block (also under
torchrun)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embedders.cli import add_params, base_parser, from_args, param_help
from embedders.distributed import DEVICES, neural_main
from embedders.multitask.model import EXPORTS, INPUTS
from embedders.multitask.train import DEFAULT_INPUTS, MultiTaskEmbedder

PROG = "python -m embedders.multitask"
DESCRIPTION = """Supervised multi-task embedder. Anchors are cut back from the end of the event period (every
--stride-days, the first --horizon-days before the end); for each anchor the network reads the clients as they
were before it and learns the six tasks' labels of the --horizon-days after it (churn, conversion, category / sku /
new-sku / price propensity over that window's own top lists). target/ is never read. The block is the network's
bottleneck for every relevant client, from its whole history (with --export heads: what its heads read: churn,
conversion and price logits, category / sku / new-sku query vectors). --input blocks stacks other embedders'
blocks (each built at every anchor); --input sequence reads the last 126 events with a GRU. Data parallel:
torchrun --nproc_per_node=K -m embedders.multitask ..."""


def build_parser() -> argparse.ArgumentParser:
    p = base_parser(PROG, DESCRIPTION, default_dim=256)
    p._option_string_actions["--dim"].help = param_help(MultiTaskEmbedder)["dim"]
    p.add_argument("--hidden", nargs=2, type=int, default=[512, 1024], metavar=("THIN", "WIDE"),
                   help=param_help(MultiTaskEmbedder)["thin"])
    return add_params(p, MultiTaskEmbedder, choices={"input": INPUTS, "device": DEVICES, "export": EXPORTS},
                      skip=("thin", "wide"),
                      flags={"inputs": {"nargs": "+", "default": list(DEFAULT_INPUTS), "metavar": "EMBEDDER[@K=V,...]"},
                             "loss_weights": {"metavar": "TASK=W,..."}})


def make(args: argparse.Namespace) -> MultiTaskEmbedder:
    """The embedder of the flags (``--hidden THIN WIDE``; checkpoints in ``--work-dir``, by default
    ``<out>.work``)."""
    return from_args(MultiTaskEmbedder, args, thin=args.hidden[0], wide=args.hidden[1], inputs=tuple(args.inputs),
                     work_dir=str(args.work_dir or Path(f"{args.out}.work")))


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
