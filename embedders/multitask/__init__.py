"""Supervised multi-task embedder trained on windows shifted back inside its own event period (the winners' lever).

Modules: :mod:`.windows` (anchor times and the six tasks' labels of each window), :mod:`.inputs` (what the network
reads: other blocks built at each anchor, or the event sequence), :mod:`.model` (encoder -> exported bottleneck ->
the organisers' trunk -> six heads), :mod:`.train` (the :class:`MultiTaskEmbedder`: training loop, checkpoints,
resume, DDP, inference). CLI: ``python -m embedders.multitask --help``. See docs/multitask.md.
"""
from embedders.multitask.train import MultiTaskEmbedder

__all__ = ["MultiTaskEmbedder"]
