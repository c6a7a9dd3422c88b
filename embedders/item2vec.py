"""item2vec: word2vec (skip-gram, negative sampling) over per-client chronological item sequences; a client is
the recency-weighted mean of its items' vectors, per kind of interaction, concatenated and reduced by PCA.

``python -m embedders.item2vec --data-dir D --out E [--dim 128] [--seed 0] [--sequences sku,category,url]
[--oov content|skip] [--no-deterministic --workers N]``

Training corpus (:func:`write_corpus`). One sentence per (client, token kind), for every client of the event table
(relevant or not; a seeded sample of them above the corpus cap, below), in time order, keeping the ``max_len`` most
recent tokens:

- ``sku``: the sku of every product_buy / add_to_cart / remove_from_cart event;
- ``category`` (option): the category of those same events;
- ``url`` (option): the url of every page_visit, each kept with probability ``url_rate`` (a hash of the event's
  position and the seed, so the choice does not depend on chunking).

Tokens are dense integers (kind offset + rank of the value among the kind's sorted values), written in gensim's
LineSentence format (space-separated, one sentence a line, client by client, kinds in the order above) by a
vectorised encoder, chunk of clients by chunk, and trained with ``corpus_file=`` (the vocabulary comes from
numpy counts via ``build_vocab_from_freq``, so no Python pass over tokens). ``deterministic=True`` (the default)
trains with one worker (gensim is only reproducible single-threaded); otherwise ``workers`` threads.

Item vectors: the L2-normalised word2vec vectors (``normalize=True``). Skus outside the vocabulary (below
``min_count``, or never in the corpus, e.g. new products) with ``oov="content"`` get their content vector (the 16
name codes of product_properties, standardised per column) mapped by a ridge regression fitted from content to
word2vec vectors on the in-vocabulary skus; with ``oov="skip"`` they are ignored. Out-of-vocabulary urls and
categories are always ignored.

Client vector: for each part, the weighted mean of the item vectors of the client's events of that part, weight
``0.5 ** (age_days / half_life_days)`` (``half_life_days=0``: plain mean). The mean is invariant to a common
factor, so ages are taken from the client's latest event of the part (same result as ages from the cut, without
float32 underflow). Parts (each ``vector_size`` wide, zero where the client has no such item):

- ``bought``: product_buy skus; ``carted``: add_to_cart skus (needs ``sku``);
- ``viewed``: page-visit urls when ``url`` is among the sequences; otherwise every sku event (buy, add, remove);
- ``category``: categories of every sku event (when ``category`` is among the sequences).

The concatenation (``n_parts * vector_size``) is centred on the mean of a sample of clients with items and
projected on its top ``dim`` principal components (fitted in :meth:`Item2Vec.fit` on up to ``pca_sample`` clients);
when it is already ``<= dim`` wide it is only centred (the block is then ``n_parts * vector_size`` wide).
**Fallback**: a client without any embeddable item (no event, or only unknown items) gets the zero row, which is the
projection of the mean client vector (the global mean).

Corpus cap (``max_corpus_tokens``, 4M by default): above it word2vec trains on a seeded sample of clients (a hash
of the client's row and the seed) holding about that many tokens, and every client is still embedded. The cap keeps
training time flat with the number of clients, while the per-token cost grows with the vocabulary (its tables leave
the CPU caches). Items the sample never shows go through the content fallback below. Below the cap, nothing is
sampled and the bytes are those of an uncapped run.

Cost: word2vec dominates, about 4.7 CPU-microseconds per corpus token and epoch (skip-gram, 64 dims, window 5,
5 negatives), so the corpus size decides. Sku tokens are ~5% of events (about 0.9M for a 100k-client world of 18M
input events: 26 CPU-seconds in all, peak RSS 1.3 GB); page visits are ~88%, hence ``url_rate=0.3`` by default.
At 1M relevant clients (284M events, 12.2M sku tokens) the per-token cost rises to ~8.9 microseconds and the
uncapped block took 376 s; capped at 4M tokens, 124-137 s (docs/scale.md). Client vectors are computed per chunk of
``chunk_events`` events with a sparse (client x item) weight matrix times the item table.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from competition.events import read_positions, read_range
from competition.io import remove_leftovers
from competition.load import DataError, codes_to_numpy
from competition.progress import progress as progress_of
from competition.schema import (ADD_TO_CART, CATEGORY, EVENT_CODE, NAME, PAGE_VISIT, PRODUCT_BUY, SKU, SKU_EVENTS,
                                URL, DataPaths)
from embedders.base import Block, Embedder
from embedders.chunks import index_sorted

#: The corpus folders :meth:`Item2Vec.fit` makes in ``work_dir`` (``item2vec-<pid>-<random>``).
CORPUS_PATTERN = r"item2vec-(?P<pid>\d+)-[A-Za-z0-9_]+"

#: Token kinds, in the order their sentences are written for a client.
KINDS: tuple[str, ...] = (SKU, CATEGORY, URL)
OOV_MODES: tuple[str, ...] = ("content", "skip")
_SKU_CODES = np.array([EVENT_CODE[e] for e in SKU_EVENTS], dtype=np.uint8)
_SECONDS_PER_DAY = 86400.0
#: gensim's corpus_file reader cuts sentences at this many tokens.
_MAX_SENTENCE = 10_000


# ---------------------------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------------------------
def encode_lines(tokens: np.ndarray, counts: np.ndarray) -> bytes:
    """LineSentence text of consecutive sentences: ``tokens`` (non-negative ints, concatenated sentences) split by
    ``counts`` (tokens per sentence; zero-length sentences are dropped). Vectorised: digits are written into one
    byte buffer by position arithmetic, no per-token Python work.

    >>> encode_lines(np.array([3, 10, 7]), np.array([2, 0, 1]))
    b'3 10\\n7\\n'
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != len(tokens):
        raise ValueError(f"counts sum to {counts.sum()} but there are {len(tokens)} tokens")
    if len(tokens) == 0:
        return b""
    if tokens.min() < 0:
        raise ValueError("tokens must be non-negative")
    n_digits = np.ones(len(tokens), dtype=np.int64)
    power = 10
    while power <= tokens.max():
        n_digits += tokens >= power
        power *= 10
    end = np.cumsum(n_digits + 1)
    start = end - (n_digits + 1)
    buf = np.full(int(end[-1]), ord(" "), dtype=np.uint8)
    last_of_line = np.cumsum(counts[counts > 0]) - 1
    buf[end[last_of_line] - 1] = ord("\n")
    rest = tokens.copy()
    for j in range(int(n_digits.max())):
        has = n_digits > j
        buf[start[has] + n_digits[has] - 1 - j] = ord("0") + (rest[has] % 10)
        rest //= 10
    return buf.tobytes()


def hash_uniform(positions: np.ndarray, seed: int) -> np.ndarray:
    """A float64 in [0, 1) per position, from a splitmix64 hash of (position, seed): reproducible, chunk-free."""
    with np.errstate(over="ignore"):
        z = np.asarray(positions, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 1) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def row_chunks(offsets: np.ndarray, chunk_events: int) -> list[tuple[int, int]]:
    """Contiguous client-row ranges ``[r0, r1)`` of about ``chunk_events`` events each (a heavier client alone)."""
    offsets = np.asarray(offsets)
    n = len(offsets) - 1
    bounds = [0]
    while bounds[-1] < n:
        r0 = bounds[-1]
        r1 = int(np.searchsorted(offsets, offsets[r0] + chunk_events, side="right")) - 1
        bounds.append(min(n, max(r1, r0 + 1)))
    return list(zip(bounds[:-1], bounds[1:]))


def _kind_values(events, kind: str, sl: slice, event_type: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask over the slice's events, values of the masked events) for one token kind."""
    if kind == URL:
        values = read_range(events.url, sl.start, sl.stop)
        mask = (event_type == EVENT_CODE[PAGE_VISIT]) & (values >= 0)
    else:
        values = read_range(events.sku if kind == SKU else events.category, sl.start, sl.stop)
        mask = np.isin(event_type, _SKU_CODES) & (values >= 0)
    return mask, values[mask]


def _keep_recent(local: np.ndarray, n_clients: int, max_len: int) -> np.ndarray:
    """Mask keeping the last ``max_len`` entries of each client (``local`` nondecreasing client index)."""
    counts = np.bincount(local, minlength=n_clients)
    group_end = np.cumsum(counts)
    from_end = group_end[local] - 1 - np.arange(len(local))
    return from_end < max_len


@dataclass
class Corpus:
    """What :func:`write_corpus` wrote: the file, its size, and the token dictionary.

    keys[kind]: sorted int64 values of that kind (sku / category / url ids); token of value ``keys[kind][i]`` is
    ``base[kind] + i``. counts: int64 ``(n_tokens_total,)`` occurrences of each token in the file.
    """

    path: Path
    kinds: tuple[str, ...]
    keys: dict[str, np.ndarray]
    base: dict[str, int]
    counts: np.ndarray
    n_tokens: int
    n_sentences: int
    tokens_before_cap: int = 0
    clients_kept: int = 0

    def token_values(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(kind index into ``kinds``, original value) of dense tokens."""
        tokens = np.asarray(tokens, dtype=np.int64)
        bases = np.array([self.base[k] for k in self.kinds], dtype=np.int64)
        kind = np.searchsorted(bases, tokens, side="right") - 1
        values = np.empty(len(tokens), dtype=np.int64)
        for i, k in enumerate(self.kinds):
            m = kind == i
            values[m] = self.keys[k][tokens[m] - bases[i]]
        return kind, values


def _kind_tokens(events, kind: str, e0: int, event_type: np.ndarray, local_all: np.ndarray, n_rows: int,
                 max_len: int, url_rate: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(local row, value) of one kind's corpus tokens in the chunk of events starting at ``e0`` (url sampling and
    the ``max_len`` most recent applied; time-ordered within a row), and every value of that kind in the chunk
    (for the dictionary, which does not depend on sampling)."""
    mask, values = _kind_values(events, kind, slice(e0, e0 + len(event_type)), event_type)
    all_values = values
    if kind == URL and url_rate < 1.0:
        pos = np.flatnonzero(mask)
        keep = hash_uniform(pos + e0, seed) < url_rate
        mask[pos[~keep]] = False
        values = values[keep]
    local = local_all[mask]
    keep = _keep_recent(local, n_rows, max_len)
    return local[keep], values[keep], all_values


def _chunk_events(events, r0: int, r1: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(first event, event types, local row of each event) of client rows [r0, r1)."""
    e0, e1 = int(events.offsets[r0]), int(events.offsets[r1])
    local_all = np.repeat(np.arange(r1 - r0, dtype=np.int64), np.diff(np.asarray(events.offsets[r0:r1 + 1])))
    return e0, read_range(events.event_type, e0, e1), local_all


def _chunk_tokens(events, r0: int, r1: int, kinds, keys, base, max_len: int, url_rate: float,
                  seed: int, keep_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dense tokens of client rows [r0, r1) (those of ``keep_rows``, a bool mask over them, when given), ordered
    by (client, kind, time), and tokens per (client, kind)."""
    n_rows = r1 - r0
    e0, event_type, local_all = _chunk_events(events, r0, r1)
    toks, locs, kind_ix = [], [], []
    for ki, kind in enumerate(kinds):
        local, values, _ = _kind_tokens(events, kind, e0, event_type, local_all, n_rows, max_len, url_rate, seed)
        if keep_rows is not None:
            kept = keep_rows[local]
            local, values = local[kept], values[kept]
        toks.append(base[kind] + np.searchsorted(keys[kind], values))
        locs.append(local)
        kind_ix.append(np.full(len(local), ki, dtype=np.int64))
    tokens = np.concatenate(toks)
    line = np.concatenate(locs) * len(kinds) + np.concatenate(kind_ix)
    order = np.argsort(line, kind="stable")
    counts = np.bincount(line, minlength=n_rows * len(kinds))
    return tokens[order], counts


def sample_rows(row_tokens: np.ndarray, max_tokens: int, seed: int) -> np.ndarray | None:
    """Client rows kept in a corpus capped at about ``max_tokens`` tokens: each row with probability
    ``max_tokens / row_tokens.sum()`` (a hash of the row and the seed, so chunk-free), or None (every row) when
    the corpus is no larger than the cap or ``max_tokens`` is 0 (no cap)."""
    total = int(row_tokens.sum())
    if max_tokens <= 0 or total <= max_tokens:
        return None
    # seed + 1: the url sampling hashes event positions with ``seed``; rows take another stream
    return hash_uniform(np.arange(len(row_tokens)), seed + 1) < max_tokens / total


def write_corpus(events, path: str | Path, kinds: tuple[str, ...] = (SKU,), max_len: int = 200,
                 url_rate: float = 1.0, seed: int = 0, chunk_events: int = 10_000_000,
                 progress: bool = True, max_tokens: int = 0) -> Corpus:
    """Write the training corpus of ``events`` (an EventTable) to ``path`` (see the module docstring).

    Two passes over contiguous chunks of client rows (about ``chunk_events`` events each): the sorted distinct
    values of each kind and the tokens per client, then the tokens (counted with ``np.bincount`` for the
    vocabulary) and their text. ``max_tokens`` > 0 caps the corpus: above it, a seeded sample of clients
    (:func:`sample_rows`) keeps about that many tokens; the dictionary still covers every client.
    """
    path = Path(path)
    kinds = tuple(k for k in KINDS if k in kinds)
    chunks = row_chunks(events.offsets, chunk_events)
    keys: dict[str, list[np.ndarray] | np.ndarray] = {k: [] for k in kinds}
    row_tokens = np.zeros(events.n_clients, dtype=np.int64)
    for r0, r1 in progress_of(chunks, desc="item2vec: vocabulary", enabled=progress, unit="chunk"):
        e0, event_type, local_all = _chunk_events(events, r0, r1)
        for kind in kinds:
            local, _, all_values = _kind_tokens(events, kind, e0, event_type, local_all, r1 - r0, max_len,
                                                url_rate, seed)
            keys[kind].append(np.unique(all_values))
            row_tokens[r0:r1] += np.bincount(local, minlength=r1 - r0)
    keys = {k: (np.unique(np.concatenate(v)) if v else np.zeros(0, np.int64)).astype(np.int64)
            for k, v in keys.items()}
    keep_rows = sample_rows(row_tokens, max_tokens, seed)
    base, total = {}, 0
    for kind in kinds:
        base[kind] = total
        total += len(keys[kind])
    counts = np.zeros(total, dtype=np.int64)
    n_tokens = n_sentences = 0
    with open(path, "wb") as f:
        for r0, r1 in progress_of(chunks, desc="item2vec: corpus", enabled=progress, unit="chunk"):
            tokens, line_counts = _chunk_tokens(events, r0, r1, kinds, keys, base, max_len, url_rate, seed,
                                                None if keep_rows is None else keep_rows[r0:r1])
            counts += np.bincount(tokens, minlength=total)
            n_tokens += len(tokens)
            n_sentences += int((line_counts > 0).sum())
            f.write(encode_lines(tokens, line_counts))
    return Corpus(path, kinds, keys, base, counts, n_tokens, n_sentences,
                  tokens_before_cap=int(row_tokens.sum()),
                  clients_kept=int(len(row_tokens) if keep_rows is None else keep_rows.sum()))


# ---------------------------------------------------------------------------------------------------------------
# The embedder
# ---------------------------------------------------------------------------------------------------------------
class Item2Vec(Embedder):
    """word2vec item vectors -> recency-weighted client means per part -> PCA (see the module docstring).

    Parameters
    ----------
    dim : int
        block width (the PCA's components; the concatenated parts when they are no wider)
    seed : int
        word2vec, url sampling and PCA sample seed
    sequences : str | tuple
        comma-separated token kinds to train on, among sku,category,url
    vector_size : int
        word2vec dimension (per part)
    window : int
        skip-gram window
    negative : int
        negative samples
    epochs : int
        word2vec epochs
    min_count : int
        minimum token count in the vocabulary
    sample : float
        word2vec frequent-token downsampling threshold
    alpha : float
        word2vec initial learning rate
    max_len : int
        most recent tokens per client and kind in the training corpus
    url_rate : float
        fraction of page visits kept in the training corpus (url sequences only)
    max_corpus_tokens : int
        cap on the training corpus: above it, word2vec trains on a seeded sample of clients holding about this many
        tokens (every client is still embedded); 0 = no cap
    half_life_days : float
        recency half-life of the client means, days (0 = plain mean)
    oov : str
        skus outside the word2vec vocabulary: 'content' = ridge projection of their name codes, 'skip' = ignored
    ridge_alpha : float
        ridge penalty of the content projection
    normalize : bool
        L2-normalise the word2vec item vectors
    deterministic : bool
        train with one worker so the same seed gives the same block; --no-deterministic trains with --workers
        threads (faster, not reproducible: gensim is only reproducible single-threaded)
    workers : int
        word2vec threads with --no-deterministic
    pca_sample : int
        clients used to fit the PCA
    chunk_events : int
        events per chunk of clients (corpus writing and client vectors); bounds memory
    work_dir : str | None
        folder for the temporary corpus file (default: system temp)
    progress : bool
        progress bars on stderr

    Fitted attributes: ``item_keys_[kind]`` int64 sorted ids and ``item_vectors_[kind]`` float32
    ``(n_items, vector_size)``; ``content_mean_`` / ``content_scale_`` ``(16,)``, ``content_coef_``
    ``(vector_size, 16)``, ``content_intercept_`` ``(vector_size,)`` (the ridge from standardised name codes to item
    vectors; None when not fitted); ``parts_`` (part names); ``mean_`` ``(n_parts * vector_size,)`` and
    ``components_`` float32 ``(out_dim, n_parts * vector_size)``; ``stats_`` (counts and seconds for meta.json).
    """

    name = "item2vec"
    unknown_sku_note = ("their sku is a word of the sku sequences (out of vocabulary: skipped, having no name codes "
                        "for a content vector); the category sequences leave them out")

    def __init__(self, dim: int = 128, seed: int = 0, sequences: tuple[str, ...] | str = (SKU,),
                 vector_size: int = 64, window: int = 5, negative: int = 5, epochs: int = 5, min_count: int = 3,
                 sample: float = 1e-3, alpha: float = 0.025, max_len: int = 200, url_rate: float = 0.3,
                 max_corpus_tokens: int = 4_000_000, half_life_days: float = 14.0, oov: str = "content", ridge_alpha: float = 1.0,
                 normalize: bool = True, deterministic: bool = True, workers: int = 2,
                 pca_sample: int = 200_000, chunk_events: int = 10_000_000, work_dir: str | None = None,
                 progress: bool = True):
        super().__init__(dim=dim, seed=seed)
        if isinstance(sequences, str):
            sequences = tuple(s.strip() for s in sequences.split(",") if s.strip())
        # one spelling for the same kinds ("url,sku" is ("sku", "url")); unknown kinds are kept for validate()
        known = sequences and all(s in KINDS for s in sequences)
        self.sequences = tuple(k for k in KINDS if k in sequences) if known else tuple(sequences)
        self.vector_size, self.window, self.negative, self.epochs = vector_size, window, negative, epochs
        self.min_count, self.sample, self.alpha = min_count, sample, alpha
        self.max_len, self.url_rate, self.half_life_days = max_len, url_rate, half_life_days
        self.max_corpus_tokens = max_corpus_tokens
        self.oov, self.ridge_alpha, self.normalize = oov, ridge_alpha, normalize
        self.deterministic, self.workers = deterministic, workers
        self.pca_sample, self.chunk_events = pca_sample, chunk_events
        self.work_dir, self.progress = work_dir, progress

    def validate(self) -> None:
        """Known sequence kinds and oov mode, every count and rate in range."""
        if not self.sequences or any(s not in KINDS for s in self.sequences):
            raise ValueError(f"sequences must be a non-empty subset of {','.join(KINDS)}, got "
                             f"{','.join(self.sequences)!r}")
        if self.oov not in OOV_MODES:
            raise ValueError(f"oov must be one of {OOV_MODES}, got {self.oov!r}")
        checks = {"dim": self.dim >= 1, "vector_size": self.vector_size >= 1, "window": self.window >= 1,
                  "negative": self.negative >= 1, "epochs": self.epochs >= 1, "min_count": self.min_count >= 1,
                  "workers": self.workers >= 1, "max_len": 1 <= self.max_len <= _MAX_SENTENCE,
                  "url_rate": 0.0 < self.url_rate <= 1.0,
                  "max_corpus_tokens": self.max_corpus_tokens >= 0, "half_life_days": self.half_life_days >= 0,
                  "sample": self.sample >= 0, "ridge_alpha": self.ridge_alpha >= 0, "pca_sample": self.pca_sample >= 1,
                  "chunk_events": self.chunk_events >= 1}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name} out of range: {getattr(self, name)!r}"
                                 + (f" (at most {_MAX_SENTENCE})" if name == "max_len" else ""))

    # -- parts -----------------------------------------------------------------------------------------------------
    def _part_specs(self) -> list[tuple[str, str, np.ndarray]]:
        """(part name, kind of its item vectors, event-type codes it reads)."""
        specs = []
        if SKU in self.sequences:
            specs += [("bought", SKU, np.array([EVENT_CODE[PRODUCT_BUY]], np.uint8)),
                      ("carted", SKU, np.array([EVENT_CODE[ADD_TO_CART]], np.uint8))]
        if URL in self.sequences:
            specs.append(("viewed", URL, np.array([EVENT_CODE[PAGE_VISIT]], np.uint8)))
        elif SKU in self.sequences:
            specs.append(("viewed", SKU, _SKU_CODES))
        if CATEGORY in self.sequences:
            specs.append(("category", CATEGORY, _SKU_CODES))
        return specs

    # -- fit -------------------------------------------------------------------------------------------------------
    def fit(self, events) -> "Item2Vec":
        """Write the corpus, train word2vec, build item tables (with the content fallback) and the projection."""
        self.validate()
        stats: dict[str, Any] = {}
        t = time.perf_counter()
        if self.work_dir is not None:  # corpora of killed runs (ours only, of processes no longer running)
            Path(self.work_dir).mkdir(parents=True, exist_ok=True)
            remove_leftovers(self.work_dir, CORPUS_PATTERN)
        with tempfile.TemporaryDirectory(dir=self.work_dir, prefix=f"item2vec-{os.getpid()}-") as tmp:
            corpus = write_corpus(events, Path(tmp) / "corpus.txt", self.sequences, self.max_len, self.url_rate,
                                  self.seed, self.chunk_events, self.progress, self.max_corpus_tokens)
            stats.update(corpus_tokens=corpus.n_tokens, corpus_sentences=corpus.n_sentences,
                         corpus_tokens_before_cap=corpus.tokens_before_cap, corpus_clients=corpus.clients_kept,
                         corpus_mb=round(corpus.path.stat().st_size / 2**20, 1),
                         corpus_seconds=round(time.perf_counter() - t, 2))
            if corpus.n_tokens == 0:
                raise DataError(self._source(events), f"no events of the kinds {','.join(self.sequences)} to train "
                                "item2vec on" + (" (after --url-rate subsampling)" if URL in self.sequences else "")
                                + (f" (the --max-corpus-tokens sample kept none of {corpus.tokens_before_cap:,})"
                                   if corpus.tokens_before_cap else ""),
                                column=self.sequences[0])
            t = time.perf_counter()
            model = self._train(corpus, events)
            stats["train_seconds"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        self._build_tables(model, corpus, events, stats)
        del model
        self._fit_projection(events, stats)
        stats["tables_projection_seconds"] = round(time.perf_counter() - t, 2)
        self.stats_ = stats
        return self

    def _source(self, events) -> Path | str:
        """The event file behind the first token kind (for error messages)."""
        if events.data_dir is None:
            return "event table"
        return DataPaths(events.data_dir).table(PAGE_VISIT if self.sequences[0] == URL else PRODUCT_BUY,
                                                events.layout)

    def _train(self, corpus: Corpus, events):
        from gensim.models import Word2Vec
        from gensim.models.callbacks import CallbackAny2Vec

        keep = np.flatnonzero(corpus.counts >= self.min_count)
        if len(keep) == 0:
            raise DataError(self._source(events), f"no item occurs at least min_count={self.min_count} times in the "
                            f"{','.join(self.sequences)} sequences; lower --min-count", column=self.sequences[0])
        freq = dict(zip(keep.astype(str).tolist(), corpus.counts[keep].tolist()))
        workers = 1 if self.deterministic else self.workers
        model = Word2Vec(vector_size=self.vector_size, window=self.window, min_count=self.min_count, sg=1, hs=0,
                         negative=self.negative, sample=self.sample, alpha=self.alpha, seed=self.seed,
                         workers=workers, epochs=self.epochs)
        model.build_vocab_from_freq(freq, corpus_count=corpus.n_sentences)
        del freq
        bar = progress_of(total=self.epochs, desc="item2vec: word2vec epochs", enabled=self.progress, unit="epoch")

        class _Progress(CallbackAny2Vec):
            def on_epoch_end(self, model):
                bar.update(1)

        model.train(corpus_file=str(corpus.path), total_words=corpus.n_tokens, epochs=self.epochs,
                    callbacks=[_Progress()])
        bar.close()
        return model

    def _build_tables(self, model, corpus: Corpus, events, stats: dict) -> None:
        tokens = np.asarray(model.wv.index_to_key).astype(np.int64)
        vectors = model.wv.get_normed_vectors() if self.normalize else model.wv.vectors
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        kind_ix, values = corpus.token_values(tokens)
        self.item_keys_, self.item_vectors_ = {}, {}
        for i, kind in enumerate(corpus.kinds):
            m = kind_ix == i
            order = np.argsort(values[m], kind="stable")
            self.item_keys_[kind] = values[m][order]
            self.item_vectors_[kind] = vectors[m][order]
            stats[f"vocab_{kind}"] = int(m.sum())
            stats[f"distinct_{kind}"] = int(len(corpus.keys[kind]))
        self.content_mean_ = self.content_scale_ = self.content_coef_ = self.content_intercept_ = None
        stats["oov_content_skus"] = 0
        if SKU in corpus.kinds and self.oov == "content" and events.data_dir is not None:
            self._fit_content(events, stats)

    def _fit_content(self, events, stats: dict) -> None:
        """Ridge from standardised name codes to item vectors on in-vocab skus; add predicted rows for the others."""
        from sklearn.linear_model import Ridge

        products = events.products
        skus = products[SKU].to_numpy().astype(np.int64)
        codes = codes_to_numpy(products[NAME]).astype(np.float64)
        self.content_mean_ = codes.mean(axis=0) if len(codes) else np.zeros(codes.shape[1])
        scale = codes.std(axis=0) if len(codes) else np.ones(codes.shape[1])
        self.content_scale_ = np.where(scale > 0, scale, 1.0)
        x = (codes - self.content_mean_) / self.content_scale_
        keys, vecs = self.item_keys_[SKU], self.item_vectors_[SKU]
        rows = index_sorted(keys, skus)
        known = rows >= 0
        if known.sum() < 2:
            stats["content_note"] = "fewer than 2 in-vocabulary skus with content: no content fallback"
            return
        ridge = Ridge(alpha=self.ridge_alpha).fit(x[known], vecs[rows[known]])
        self.content_coef_ = ridge.coef_.astype(np.float64)
        self.content_intercept_ = np.asarray(ridge.intercept_, dtype=np.float64)
        new = ~known
        new_keys = skus[new]
        new_vecs = self.content_vectors(codes[new])
        all_keys = np.concatenate([keys, new_keys])
        order = np.argsort(all_keys, kind="stable")
        self.item_keys_[SKU] = all_keys[order]
        self.item_vectors_[SKU] = np.concatenate([vecs, new_vecs])[order]
        stats["oov_content_skus"] = int(new.sum())
        stats["content_r2_train"] = round(float(ridge.score(x[known], vecs[rows[known]])), 4)

    def content_vectors(self, codes: np.ndarray) -> np.ndarray:
        """Ridge projection of name codes (uint8 ``(n, 16)``) into the item space: float32 ``(n, vector_size)``."""
        if self.content_coef_ is None:
            raise ValueError("the content projection is not fitted (oov='skip' or too few in-vocabulary skus)")
        x = (np.asarray(codes, dtype=np.float64) - self.content_mean_) / self.content_scale_
        return (x @ self.content_coef_.T + self.content_intercept_).astype(np.float32)

    def _fit_projection(self, events, stats: dict) -> None:
        self.parts_ = [p for p, _, _ in self._part_specs()]
        width = len(self.parts_) * self.vector_size
        out_dim = min(self.dim, width)
        n = events.n_clients
        rows = np.arange(n, dtype=np.int64)
        if n > self.pca_sample:
            rows = np.sort(np.random.default_rng(self.seed).choice(n, self.pca_sample, replace=False))
        parts = [raw[has] for _, raw, has in self._raw_chunks(events, rows, "item2vec: projection fit")]
        x = np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, width))
        self.mean_ = (x.mean(axis=0) if len(x) else np.zeros(width)).astype(np.float32)
        components = np.zeros((out_dim, width), dtype=np.float32)
        if width <= self.dim:
            components[:] = np.eye(width, dtype=np.float32)
        elif len(x) >= 2:
            from sklearn.decomposition import PCA
            k = min(out_dim, len(x))
            pca = PCA(n_components=k, svd_solver="covariance_eigh", random_state=self.seed).fit(x)
            components[:k] = pca.components_
            stats["pca_explained_variance"] = round(float(pca.explained_variance_ratio_.sum()), 4)
        self.components_ = components
        stats.update(parts=self.parts_, raw_width=width, out_dim=out_dim, projection_fit_clients=int(len(x)),
                     reduced=bool(width > self.dim))

    # -- client vectors --------------------------------------------------------------------------------------------
    def _raw(self, events, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated part means for client rows (ascending, >= 0): float32 ``(len(rows), width)``, and whether
        each client has any embeddable item."""
        specs = self._part_specs()
        vs = self.vector_size
        raw = np.zeros((len(rows), len(specs) * vs), dtype=np.float32)
        has = np.zeros(len(rows), dtype=bool)
        if len(rows) == 0:
            return raw, has
        lengths = np.asarray(events.offsets[1:])[rows] - np.asarray(events.offsets[:-1])[rows]
        pos, counts = events.last_events(rows, int(max(lengths.max(), 1)))
        nc = len(rows)
        local = np.repeat(np.arange(nc, dtype=np.int64), counts)
        event_type = read_positions(events.event_type, pos)
        ts = read_positions(events.timestamp, pos)
        arrays: dict[str, np.ndarray] = {}
        for j, (part, kind, codes) in enumerate(specs):
            if kind not in arrays:
                column = events.url if kind == URL else events.sku if kind == SKU else events.category
                arrays[kind] = read_positions(column, pos)
            keys, table = self.item_keys_[kind], self.item_vectors_[kind]
            item = index_sorted(keys, arrays[kind])
            m = np.isin(event_type, codes) & (item >= 0)
            loc_m, ts_m, item_m = local[m], ts[m], item[m]
            per_client = np.bincount(loc_m, minlength=nc)
            indptr = np.concatenate([[0], np.cumsum(per_client)])
            present = per_client > 0
            if self.half_life_days > 0:
                last_ts = np.zeros(nc, dtype=np.int64)
                last_ts[present] = ts_m[indptr[1:][present] - 1]  # events are in time order within a client
                age_days = (last_ts[loc_m] - ts_m) / _SECONDS_PER_DAY
                w = np.exp2(-age_days / self.half_life_days).astype(np.float32)
            else:
                w = np.ones(len(ts_m), dtype=np.float32)
            mat = sp.csr_matrix((w, item_m, indptr), shape=(nc, len(keys)))
            num = np.asarray(mat @ table, dtype=np.float32)
            den = np.bincount(loc_m, weights=w, minlength=nc)
            ok = den > 0
            raw[ok, j * vs:(j + 1) * vs] = num[ok] / den[ok, None].astype(np.float32)
            has |= ok
        return raw, has

    def _raw_chunks(self, events, rows: np.ndarray, desc: str):
        """Yield ``(slice of rows, raw, has)`` over chunks of ascending client ``rows`` of at most
        ``chunk_events`` events each (one heavier client alone), so memory stays bounded."""
        lengths = np.asarray(events.offsets[1:])[rows] - np.asarray(events.offsets[:-1])[rows]
        chunks = row_chunks(np.concatenate([[0], np.cumsum(lengths)]), self.chunk_events)
        for a, b in progress_of(chunks, desc=desc, enabled=self.progress, unit="chunk"):
            yield (slice(a, b), *self._raw(events, rows[a:b]))

    def transform(self, events, client_ids: np.ndarray) -> Block:
        """Float32 ``(len(client_ids), out_dim)`` in the order of ``client_ids``; the zero row for clients without
        any embeddable item (see the module docstring)."""
        client_ids = np.asarray(client_ids, dtype=np.int64)
        rows = events.rows_of(client_ids)
        out = np.zeros((len(client_ids), self.components_.shape[0]), dtype=np.float32)
        idx = np.flatnonzero(rows >= 0)
        idx = idx[np.argsort(rows[idx], kind="stable")]
        n_with = 0
        for sl, raw, has in self._raw_chunks(events, rows[idx], "item2vec: clients"):
            sel = idx[sl]
            proj = (raw - self.mean_) @ self.components_.T
            proj[~has] = 0.0
            out[sel] = proj
            n_with += int(has.sum())
        meta = {"name": self.name, "fallback": "zero row (= projection of the mean client) for clients without any "
                "embeddable item", "clients_with_items": n_with,
                "clients_without_items": int(len(client_ids) - n_with), **getattr(self, "stats_", {})}
        return Block(client_ids, out, meta)


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from embedders.cli import add_params, base_parser

    p = base_parser("python -m embedders.item2vec", __doc__.split("\n\n")[0], default_dim=128)
    return add_params(p, Item2Vec, choices={"oov": OOV_MODES})


def make(args: argparse.Namespace) -> Item2Vec:
    """The embedder of the parsed flags."""
    from embedders.cli import from_args
    return from_args(Item2Vec, args)


def main(argv: list[str] | None = None) -> int:
    from embedders.cli import run
    return run(build_parser(), make, argv)


if __name__ == "__main__":
    sys.exit(main())
