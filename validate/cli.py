"""The probe flag, the same in ``validate.probe``, ``validate.search`` and ``submit.pack``: same choices, same
default, same help.

The default is ``auto``, CPU-sized: the organisers' network (``mlp``, the replica) when CUDA is present, else the
fast probe that ranks most like it (:data:`CPU_PROBE`). The replica takes minutes per block on a CPU even at a few
thousand clients; the proxies seconds.
"""
from __future__ import annotations

import argparse

#: The probes (``validate.probe.make_probe`` builds them), fastest last; ``mlp`` is the replica; ``mlp16`` is the
#: replica's net, initial weights and loop with its matmuls in bfloat16 (~2.5x cheaper on a CPU: the decision probe).
PROBES = ("mlp", "mlp16", "narrow", "linear", "lgbm")
#: What ``--probe`` accepts; ``auto`` is resolved by :func:`resolve_probe`.
PROBE_CHOICES = ("auto",) + PROBES
DEFAULT_PROBE = "auto"
#: What ``auto`` means without CUDA: the fast probe that ranked most like the replica in the agreement tables of
#: docs/probes.md (``python -m validate.agreement``; LightGBM, though on no probe every task reached 0.9).
CPU_PROBE = "lgbm"
#: Probes whose score depends on a block's scale (so the search tunes block weights with them).
SCALE_SENSITIVE = ("mlp", "mlp16", "narrow")
#: What decides the shipped ensemble (validate.decide) without CUDA: the organisers' network at bfloat16 matmuls.
CPU_DECISION_PROBE = "mlp16"
PROBE_HELP = ("mlp: the organisers' network (the replica; ~10 min per block at 2,000 clients on a 2-core CPU, for a "
              "GPU); mlp16: the same network, weights and loop with bfloat16 matmuls (~2.5x faster on a CPU, close "
              "to but not the replica's figures); narrow: the organisers' loop with a 512/1024 net (~20x faster); "
              "linear: ridge regression on "
              "standardised columns (~100x faster); lgbm: LightGBM (seconds); all but mlp are proxies, not the "
              f"organisers' number (docs/probes.md); auto: mlp when CUDA is present, else {CPU_PROBE} (CPU-sized)")


def add_probe(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    """``--probe {auto,mlp,narrow,linear,lgbm}`` (default auto); ``what``: what the probe scores here, e.g. "each trial"."""
    parser.add_argument("--probe", choices=PROBE_CHOICES, default=DEFAULT_PROBE, help=f"probe of {what}. {PROBE_HELP}")


def resolve_probe(probe: str, device: str | None = None) -> str:
    """One of :data:`PROBES` for a ``--probe`` value: ``auto`` is ``mlp`` when ``device`` is a CUDA device (or, with
    no ``device``, when CUDA is present), else :data:`CPU_PROBE`; anything else is returned unchanged."""
    return _auto(probe, device, CPU_PROBE)


#: The probes that may decide (the organisers' network, at fp32 or bfloat16), and what ``--decision-probe``
#: accepts (``validate.decide``, ``submit.pack``).
DECISION_PROBES = ("mlp", CPU_DECISION_PROBE)
DECISION_PROBE_CHOICES = ("auto",) + DECISION_PROBES


def add_decision_probe(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--decision-probe {auto,mlp,mlp16}`` (default auto), the same in ``validate.decide`` and ``submit.pack``."""
    parser.add_argument("--decision-probe", choices=DECISION_PROBE_CHOICES, default="auto",
                        help="the network that picks the shipped ensemble: mlp (the replica) or mlp16 (the same "
                             "with bfloat16 matmuls, ~2.5x faster on a CPU); auto: mlp with CUDA, else mlp16")


def resolve_decision_probe(probe: str, device: str | None = None) -> str:
    """The probe that decides the shipped ensemble for a ``--decision-probe`` value: ``auto`` is the replica
    (``mlp``) on a CUDA device (or, with no ``device``, when CUDA is present), else :data:`CPU_DECISION_PROBE`."""
    return _auto(probe, device, CPU_DECISION_PROBE)


def _auto(probe: str, device: str | None, on_cpu: str) -> str:
    """``probe`` itself unless "auto"; then ``mlp`` on a CUDA ``device`` (no device: when CUDA is present), else
    ``on_cpu``."""
    if probe != "auto":
        return probe
    if device is not None:
        return "mlp" if str(device).startswith("cuda") else on_cpu
    import torch
    return "mlp" if torch.cuda.is_available() else on_cpu
