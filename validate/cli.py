"""The probe flag, the same in ``validate.probe``, ``validate.search`` and ``submit.pack``: same choices, same
default, same help.

The default is ``auto``, CPU-sized: the fast LightGBM proxy (``lgbm``) on a machine without CUDA, the organisers'
network (``mlp``, the replica) when CUDA is present. The replica takes minutes per block on a CPU even at a few
thousand clients, the proxy seconds.
"""
from __future__ import annotations

import argparse

#: What ``--probe`` accepts; ``auto`` is resolved by :func:`resolve_probe`.
PROBE_CHOICES = ("auto", "lgbm", "mlp")
DEFAULT_PROBE = "auto"
PROBE_HELP = ("lgbm: fast LightGBM proxy (seconds per block on a CPU; not the organisers' number); mlp: the "
              "organisers' network (the replica; minutes per block on a CPU, for a GPU); auto: mlp when CUDA is "
              "present, else lgbm (CPU-sized)")


def add_probe(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    """``--probe {auto,lgbm,mlp}`` (default auto); ``what``: what the probe scores here, e.g. "each trial"."""
    parser.add_argument("--probe", choices=PROBE_CHOICES, default=DEFAULT_PROBE, help=f"probe of {what}. {PROBE_HELP}")


def resolve_probe(probe: str, device: str | None = None) -> str:
    """``lgbm`` or ``mlp`` for a ``--probe`` value: ``auto`` is ``mlp`` when ``device`` is a CUDA device (or, with no
    ``device``, when CUDA is present), else ``lgbm``; anything else is returned unchanged."""
    if probe != "auto":
        return probe
    if device is not None:
        return "mlp" if str(device).startswith("cuda") else "lgbm"
    import torch
    return "mlp" if torch.cuda.is_available() else "lgbm"
