"""What the sequence embedders (next_event, contrastive) read: the last events of a client as token grids.

The grids are those of :func:`embedders.gru_ae.tokens.tokenize` (``[start, e_1 .. e_k, end]``, ``k <= 126``, padded
to 128 columns; fields ``event_type``, ``category``, ``price``, ``sku`` (catalogue tokens, for the content-initialised
:class:`embedders.gru_ae.sku_table.SkuTable`), ``url`` (the ``vocab_cap`` most frequent), ``age`` ...) plus one
field of their own, :data:`GAP`: the time since the client's previous event, ``5 + min(floor(log2(1 + seconds)),
31)`` (the first event of a client, and start / end, get ``missing``). All vectorised over events.
"""
from __future__ import annotations

import numpy as np

from competition.events import read_positions
from embedders.gru_ae.tokens import (END, MISSING, N_RESERVED, PAD, SEQ_LEN, START, TOKEN_FIELDS, Tokens, Vocab,
                                     tokenize)

GAP = "gap"
N_GAP_BUCKETS = 32
GAP_VOCAB = N_RESERVED + N_GAP_BUCKETS
#: Fields a sequence embedder may read: the token fields of gru_ae and the gap.
SEQUENCE_FIELDS: tuple[str, ...] = (*TOKEN_FIELDS, GAP)
DEFAULT_FIELDS = "event_type,category,price,sku,url,gap"


def parse_fields(spec: str | list | tuple) -> tuple[str, ...]:
    """``"event_type,sku,gap"`` -> a tuple; ValueError naming an unknown field."""
    items = tuple(f.strip() for f in (spec.split(",") if isinstance(spec, str) else spec) if str(f).strip())
    bad = [f for f in items if f not in SEQUENCE_FIELDS]
    if bad or not items:
        raise ValueError(f"unknown sequence field {bad[0]!r}" if bad else "no sequence field given"
                         + f"; known: {', '.join(SEQUENCE_FIELDS)}")
    return items


def gap_grid(events, rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """uint8 ``(len(rows), SEQ_LEN)`` gap tokens aligned with :func:`tokenize`'s grids of ``rows``."""
    n = len(rows)
    pos, counts = events.last_events(np.asarray(rows, dtype=np.int64), SEQ_LEN - 2)
    g = np.zeros((n, SEQ_LEN), dtype=np.uint8)
    g[:, 0] = START
    if len(pos):
        ts = read_positions(events.timestamp, pos).astype(np.int64)
        prev = read_positions(events.timestamp, np.maximum(pos - 1, 0)).astype(np.int64)
        r = np.repeat(np.arange(n, dtype=np.int64), counts)
        first_of_client = pos == np.asarray(events.offsets)[np.asarray(rows)[r]]
        gap = np.maximum(ts - prev, 0)
        tok = N_RESERVED + np.minimum(np.floor(np.log2(1.0 + gap)).astype(np.int64), N_GAP_BUCKETS - 1)
        c = 1 + np.arange(len(pos), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        g[r, c] = np.where(first_of_client, MISSING, tok)
    g[np.arange(n), lengths - 1] = END
    return g


class SequenceInputs:
    """The vocabulary of the fields (fitted on training rows) and the grids of any client rows."""

    def __init__(self, fields: tuple[str, ...], vocab_cap: int = 5000):
        self.fields = tuple(fields)
        self.vocab_cap = vocab_cap

    def fit(self, events, train_rows: np.ndarray) -> "SequenceInputs":
        token_fields = tuple(f for f in self.fields if f != GAP)
        self.vocab = Vocab.fit(events, train_rows, token_fields, sku_mode="catalogue", vocab_cap=self.vocab_cap)
        self.sizes = {**self.vocab.sizes, GAP: GAP_VOCAB}
        return self

    def tokens(self, events, rows: np.ndarray) -> Tokens:
        """Grids of table ``rows`` (-1: a client without events, ``[start, end]``)."""
        rows = np.asarray(rows, dtype=np.int64)
        tok = tokenize(events, self.vocab, rows)
        if GAP in self.fields:
            tok.grids[GAP] = gap_grid(events, rows, tok.lengths)
        tok.grids = {f: tok.grids[f] for f in self.fields}
        return tok

    def state(self) -> dict:
        return {**self.vocab.state(), "fields": list(self.fields), "vocab_cap": self.vocab_cap}


__all__ = ["GAP", "GAP_VOCAB", "SEQUENCE_FIELDS", "DEFAULT_FIELDS", "parse_fields", "gap_grid", "SequenceInputs",
           "PAD", "START", "END", "MISSING", "N_RESERVED", "SEQ_LEN"]
