"""CoLES-style contrastive sequence embedder: :mod:`.model` (encoder over next_event's event embedding, InfoNCE and
CoLES margin losses), :mod:`.train` (random slices, the :class:`ContrastiveEmbedder` on the shared sequence loop).
CLI: ``python -m embedders.contrastive --help``. See docs/new_blocks.md.
"""
from embedders.contrastive.train import ContrastiveEmbedder

__all__ = ["ContrastiveEmbedder"]
