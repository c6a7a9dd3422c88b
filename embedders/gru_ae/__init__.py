"""GRU sequence autoencoder embedder: a user's most recent events become one token sequence, a GRU autoencoder
learns to reconstruct it from a fixed-size vector, and that vector is the user's block.

Modules: :mod:`.tokens` (event table -> token grids), :mod:`.sku_table` (content-initialised sku rows with a
bounded delta), :mod:`.model` (the network), :mod:`.train` (the :class:`GruAE` embedder: training loop,
checkpoints, resume, DDP, inference), :mod:`.evaluate` (sku reconstruction accuracy by frequency).
CLI: ``python -m embedders.gru_ae --help``.
"""
from embedders.gru_ae.model import PRESETS, GruAutoencoder, ModelConfig
from embedders.gru_ae.sku_table import SKU_INITS, SkuTable
from embedders.gru_ae.train import GruAE

__all__ = ["GruAE", "GruAutoencoder", "ModelConfig", "PRESETS", "SKU_INITS", "SkuTable"]
