"""``python -m embedders.gru_ae``: train the GRU autoencoder and write its block (also under torchrun)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


from embedders.cli import add_params, base_parser, from_args, param_help
from embedders.gru_ae.model import PRESETS
from embedders.gru_ae.sku_table import SKU_INITS
from embedders.distributed import DEVICES, neural_main
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
    p._option_string_actions["--dim"].help = param_help(GruAE)["dim"]
    return add_params(p, GruAE, choices={"variant": sorted(PRESETS), "sku_init": SKU_INITS, "train_on": TRAIN_ON,
                                         "device": DEVICES})


def make(args: argparse.Namespace) -> GruAE:
    """The embedder of the flags; checkpoints in ``--work-dir``, by default ``<out>.work``. It applies its own
    ``threads`` (embedders.threads), as under submit.pack."""
    return from_args(GruAE, args, work_dir=args.work_dir or Path(f"{args.out}.work"))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return neural_main(parser, argv, make, lambda args: f"gru_ae[{args.variant}]")


if __name__ == "__main__":
    sys.exit(main())
