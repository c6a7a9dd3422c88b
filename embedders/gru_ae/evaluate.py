"""Sku reconstruction accuracy bucketed by how often the sku occurs in the training sequences.

For every event with a sku in the given clients' sequences, the teacher-forced decoder's arg-max over the whole sku
vocabulary (reserved tokens included) is compared with the true sku *id*: a prediction of ``other`` (or of any
reserved token) is wrong, so skus outside a capped ``id`` vocabulary can never be reconstructed. Buckets count
occurrences in the training clients' sequences: ``unseen`` (0), ``1-5``, ``6-50``, ``>50``.
"""
from __future__ import annotations

import numpy as np
import torch

from embedders.gru_ae.model import batch_tensors, valid_mask
from embedders.gru_ae.tokens import N_RESERVED, SKU_ID, tokenize

BUCKETS: tuple[tuple[str, int, float], ...] = (("unseen", 0, 0), ("1-5", 1, 5), ("6-50", 6, 50),
                                               (">50", 51, float("inf")))


@torch.no_grad()
def sku_accuracy_by_frequency(embedder, events, rows: np.ndarray, batch_size: int = 256,
                              chunk: int = 4096) -> dict[str, dict]:
    """{bucket: {"n": sku events, "accuracy": share reconstructed exactly}} for a fitted :class:`GruAE` over
    event-table ``rows``; plus ``"all"``."""
    vocab, model, device = embedder.vocab_, embedder.model_.eval(), embedder.device_
    if model.sku is None:
        raise ValueError(f"variant {embedder.variant!r} has no sku field")
    tok = tokenize(events, vocab, rows, with_sku_ids=True)
    qcodes = events.query_codes if embedder.query else None
    order = np.argsort(tok.lengths, kind="stable")
    true_all, pred_all = [], []
    table = model.sku.rows(torch.arange(N_RESERVED + model.sku.n_items, device=device))
    scale = 1.0 / np.sqrt(model.sku.dim)
    for i in range(0, len(order), batch_size):
        grids, lengths = tok.batch(order[i:i + batch_size])
        batch, lens = batch_tensors(grids, lengths, qcodes, device)
        o, _ = model.decode(batch, lens)
        true = grids[SKU_ID][:, 1:][valid_mask(lens - 1, lens.max().item() - 1).numpy()]
        keep = true >= 0
        h = model.sku_head(o[torch.from_numpy(keep).to(o.device)])
        pred = [(h[j:j + chunk] @ table.T * scale).argmax(1).cpu().numpy() for j in range(0, len(h), chunk)]
        true_all.append(true[keep])
        pred_all.append(np.concatenate(pred) if pred else np.zeros(0, np.int64))
    true = np.concatenate(true_all) if true_all else np.zeros(0, np.int64)
    pred_ids = vocab.sku_token_to_id(np.concatenate(pred_all) if pred_all else np.zeros(0, np.int64))
    correct = pred_ids == true
    counts = vocab.catalogue_count_of(true)
    out = {}
    for name, lo, hi in BUCKETS:
        m = (counts >= lo) & (counts <= hi)
        out[name] = {"n": int(m.sum()), "accuracy": float(correct[m].mean()) if m.any() else float("nan")}
    out["all"] = {"n": int(len(true)), "accuracy": float(correct.mean()) if len(true) else float("nan")}
    return out


__all__ = ["sku_accuracy_by_frequency", "BUCKETS"]
