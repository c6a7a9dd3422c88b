"""Next-event causal Transformer embedder (nanoGPT-shaped): :mod:`.inputs` (token grids + time gaps),
:mod:`.model` (the network, one file), :mod:`.train` (the shared sequence-embedder loop and the
:class:`NextEventEmbedder`). CLI: ``python -m embedders.next_event --help``. See docs/new_blocks.md.
"""
from embedders.next_event.train import NextEventEmbedder

__all__ = ["NextEventEmbedder"]
