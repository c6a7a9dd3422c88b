"""Bag-of-tokens per client, TF-IDF weighted and reduced by randomized truncated SVD (latent semantic analysis).

``python -m embedders.tfidf_svd --data-dir D --out E --dim K --seed S [--families items,urls]
[--mode joint|per-family] [--min-df N]``

Each client with events is a document whose tokens come from its input events, one family per kind of token:

=========  =====================================================================================
``buy``    ``buy:<sku>`` per product_buy (raw sku id)
``add``    ``add:<sku>`` per add_to_cart
``remove`` ``remove:<sku>`` per remove_from_cart
``visit``  ``visit:<url>`` per page_visit
``cat``    ``cat:<category>`` per product event (buy, add or remove) whose sku has a known category
``price``  ``price:<bucket>`` per product event with a known price bucket (0..99)
``query``  16 tokens per search, one per position and code: ``q<pos>_<code>`` (id ``pos * 256 + code``)
=========  =====================================================================================

Aliases: ``items`` = buy, add, remove, cat, price; ``urls`` = visit; ``queries`` = query; ``all`` = every family.
The default is ``items,urls`` (see :data:`DEFAULT_FAMILIES`: query tokens are opt-in).

The client x token count matrix is built directly as a scipy CSR matrix (integer token ids from a dense lookup
table -- or ``searchsorted`` for huge or negative ids -- into per-family sorted vocabularies, then COO -> CSR
summing duplicates), chunk by chunk over contiguous client rows of the event table, in two passes: (1) document
frequency of every token (distinct (client, token) pairs per chunk, merged across chunks) -> vocabulary = tokens
with df >= ``min_df``; (2) counts of the kept tokens, TF-IDF weighted per chunk as it is built: ``tf = 1 +
ln(count)`` (sublinear), ``idf = ln((1 + n_docs) / (1 + df)) + 1`` (smoothed; n_docs = fitted documents), rows
L2-normalised -- exactly scikit-learn's ``TfidfTransformer(sublinear_tf=True, smooth_idf=True)``.
``TruncatedSVD(algorithm="randomized", random_state=seed)`` then reduces the matrix to ``dim`` columns.

Modes: ``joint`` (default) -- one TF-IDF space and one SVD over the union of the listed families; ``per-family``
-- each comma-separated entry of ``--families`` (an alias stays one group) gets its own row normalisation and SVD,
``dim`` is split evenly across the groups (the first groups take the remainder) and the parts are concatenated
into one block in ``--families`` order. For separate blocks, run the CLI once per family with ``--mode joint``.

Fitting uses every client with events in the table (relevant or not: more data for the SVD) unless ``--fit-on
relevant`` or ``--fit-max-clients`` limit it. The embeddings of fitted clients are kept from the fit
(``X @ components.T``); other requested clients are projected chunk by chunk with the fitted vocabulary and idf.
Clients without events, or without any kept token of a group, get that group's projection of an empty document:
the zero vector (TruncatedSVD does not centre, so an empty document maps exactly to the origin). If a group has
fewer usable tokens or documents than its dimensions, its extra columns are zeros.

Memory: the fitted TF-IDF matrix (float32 data + int32 indices, ~8 bytes per non-zero; twice that for a moment
while the chunks are stacked) plus the SVD's dense ``n_docs x (dim + 10)`` work arrays; the raw events are only
ever held one chunk at a time (read with ``np.fromfile``, so the table's pages do not count in the resident set).
"""
from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from competition.progress import progress as progress_of
from competition.schema import CODE_LEN, EVENT_CODE, EVENT_TYPES, SKU_EVENTS
from embedders.base import Block, Embedder
from embedders.chunks import (DENSE_LIMIT, CountTable, EventChunk, gather, index_sorted, map_chunks, present_rows,
                              row_chunks)

BUY, ADD, REMOVE, VISIT, SEARCH = (EVENT_CODE[e] for e in EVENT_TYPES)
PRODUCT_CODES = np.array([EVENT_CODE[e] for e in SKU_EVENTS], dtype=np.uint8)
N_CODES = 256
#: Token families, in the order their columns are laid out.
FAMILIES: tuple[str, ...] = ("buy", "add", "remove", "visit", "cat", "price", "query")
ALIASES: dict[str, tuple[str, ...]] = {"items": ("buy", "add", "remove", "cat", "price"), "urls": ("visit",),
                                       "queries": ("query",), "all": FAMILIES}
MODES = ("joint", "per-family")
#: Default families: query-code tokens are opt-in (``all`` or ``queries``). On a synthetic 100k-client world (LightGBM
#: probe) adding them to the joint block lowered propensity_category (0.676 -> 0.663), left churn level and doubled
#: the time; alone they were the weakest family (0.687 churn / 0.571 category).
DEFAULT_FAMILIES = "items,urls"
FIT_ON = ("all", "relevant")


def parse_families(spec: str | list[str] | tuple[str, ...], mode: str = "joint") -> list[tuple[str, ...]]:
    """Groups of families from ``"items,urls,queries"``-style specs: one group (their union) in joint mode, one
    group per comma-separated entry in per-family mode. Raises ValueError naming an unknown family."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    entries = [e.strip() for e in (spec.split(",") if isinstance(spec, str) else spec) if e.strip()]
    if not entries:
        raise ValueError("no token family given")
    groups: list[tuple[str, ...]] = []
    for e in entries:
        if e in ALIASES:
            groups.append(ALIASES[e])
        elif e in FAMILIES:
            groups.append((e,))
        else:
            raise ValueError(f"unknown token family {e!r}; choose from {', '.join(FAMILIES)} or the aliases "
                             f"{', '.join(ALIASES)}")
    if mode == "joint":
        used = {f for g in groups for f in g}
        return [tuple(f for f in FAMILIES if f in used)]
    out: list[tuple[str, ...]] = []
    for g in groups:
        if g in out:
            continue
        overlap = {f for o in out for f in o} & set(g)
        if overlap:
            raise ValueError(f"family {sorted(overlap)[0]!r} appears in two groups of {spec!r}")
        out.append(g)
    return out


def family_tokens(c: EventChunk, family: str, query_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of one family in a chunk: ``(row int64 (t,), token value int64 (t,))``, one entry per occurrence."""
    et = c.event_type
    if family in ("buy", "add", "remove"):
        m = (et == {"buy": BUY, "add": ADD, "remove": REMOVE}[family]) & (c.sku >= 0)
        return c.row[m], c.sku[m].astype(np.int64)
    if family == "visit":
        m = (et == VISIT) & (c.url >= 0)
        return c.row[m], c.url[m].astype(np.int64)
    if family in ("cat", "price"):
        col = c.category if family == "cat" else c.price
        m = np.isin(et, PRODUCT_CODES) & (col >= 0)
        return c.row[m], col[m].astype(np.int64)
    if family == "query":
        m = (et == SEARCH) & (c.query >= 0)
        codes = np.asarray(query_codes[c.query[m]], dtype=np.int64).reshape(-1, CODE_LEN)
        values = (np.arange(CODE_LEN, dtype=np.int64) * N_CODES + codes).ravel()
        return np.repeat(c.row[m], CODE_LEN), values
    raise ValueError(f"unknown token family {family!r}")


def doc_freq(row: np.ndarray, values: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Documents (rows) holding each token value: ``(values sorted int64, df int64)`` over the distinct values.

    Distinct (row, value) pairs come from a CSR matrix with summed duplicates (linear time, no global sort);
    values index the columns directly when small and non-negative, else their rank from ``np.unique``."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    dense = values.min() >= 0 and values.max() < DENSE_LIMIT
    uv, col = (None, values) if dense else np.unique(values, return_inverse=True)
    n_cols = int(values.max()) + 1 if dense else len(uv)
    x = sp.csr_matrix((np.ones(len(col), dtype=np.float32), (row, col)), shape=(n_rows, n_cols))
    x.sum_duplicates()
    df = np.bincount(x.indices, minlength=n_cols)
    nz = np.flatnonzero(df)
    return (nz.astype(np.int64) if dense else uv[nz]), df[nz].astype(np.int64)


class Vocabulary:
    """Sorted token values of one family -> column 0..n-1 (``-1`` for values outside), vectorised."""

    def __init__(self, values: np.ndarray):
        self.values = np.asarray(values, dtype=np.int64)
        self._lut = None
        if len(self.values) and self.values[0] >= 0 and self.values[-1] < DENSE_LIMIT:
            self._lut = np.full(int(self.values[-1]) + 1, -1, dtype=np.int32)
            self._lut[self.values] = np.arange(len(self.values), dtype=np.int32)

    def __len__(self) -> int:
        return len(self.values)

    def index(self, values: np.ndarray) -> np.ndarray:
        """Column of each value, int64 (-1 when not in the vocabulary)."""
        values = np.asarray(values, dtype=np.int64)
        if self._lut is not None:
            ok = (values >= 0) & (values < len(self._lut))
            return np.where(ok, self._lut[np.where(ok, values, 0)], -1).astype(np.int64)
        return index_sorted(self.values, values)


def count_matrix(c: EventChunk, group: tuple[str, ...], vocab: dict[str, Vocabulary], col0: dict[str, int],
                 n_cols: int, query_codes: np.ndarray) -> sp.csr_matrix:
    """Token counts of a chunk, float32 CSR ``(c.n_rows, n_cols)``; tokens outside ``vocab`` are dropped."""
    rows, cols = [], []
    for f in group:
        r, v = family_tokens(c, f, query_codes)
        if len(vocab[f]) == 0 or len(v) == 0:
            continue
        col = vocab[f].index(v)
        keep = col >= 0
        rows.append(r[keep])
        cols.append(col[keep] + col0[f])
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    k = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    x = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, k)), shape=(c.n_rows, n_cols))
    x.sum_duplicates()
    return x


def tfidf_inplace(x: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """``(1 + ln tf) * idf`` then L2-normalise each row, in place (empty rows stay zero). Returns ``x``."""
    np.log(x.data, out=x.data)
    x.data += 1.0
    x.data *= idf[x.indices]
    r = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    norms = np.sqrt(np.bincount(r, weights=x.data.astype(np.float64) ** 2, minlength=x.shape[0]))
    x.data /= norms[r].astype(np.float32)
    return x


class TfidfSvdEmbedder(Embedder):
    """TF-IDF over typed tokens, reduced by randomized TruncatedSVD (see the module docstring).

    Parameters
    ----------
    dim : int
        total block width
    seed : int
        SVD random_state and the fit subsample
    families : str
        comma-separated token families (buy, add, remove, visit, cat, price, query) or aliases
        (items=buy+add+remove+cat+price, urls=visit, queries=query, all)
    mode : str
        joint: one SVD over all listed families; per-family: one SVD per comma-separated entry, --dim split
        evenly, parts concatenated
    min_df : int
        drop tokens held by fewer clients than this
    n_iter : int
        power iterations of the randomized SVD
    fit_on : str
        clients the vocabulary, idf and SVD are fitted on: all clients with events, or only the relevant ones
    fit_max_clients : int | None
        fit on a seeded subsample of at most this many clients (memory; None or more than there are: all); the
        others are projected.
        The default bounds the fit at the real data's ~19M clients with events: fitted on all of them, the SVD
        held 19 GB at 1M relevant clients (docs/scale.md); worlds of up to 2M clients are fitted whole, as before
    chunk_events : int
        events per chunk (bounds memory)
    blas_threads : int | None
        BLAS threads during the SVD (a fixed number: the same bytes run after run, whatever the machine's load);
        0 or None = library default. 2, the reference machine's cores: the SVD's dense steps (LU, QR, the small
        SVD) are more than half its time at 1M clients, and 2 threads made the whole block 1.2x faster there
        (docs/scale.md). On a machine busy with other work, 1 avoids oversubscribed threads
    progress : bool
        progress bars on stderr

    Fitted attributes: ``groups_``, ``dims_`` (columns per group), ``vocab_`` {family: :class:`Vocabulary`},
    ``df_`` {family: document frequency of each vocab token}, ``n_docs_``, ``svds_`` (TruncatedSVD or None per
    group), ``stats_`` (per-group facts for meta.json).
    """

    name = "tfidf_svd"
    unknown_sku_note = ("their sku tokens (buy, add, remove) are kept; they give no cat: or price: token")

    def __init__(self, dim: int = 64, seed: int = 0, families: str = DEFAULT_FAMILIES, mode: str = "joint",
                 min_df: int = 2, n_iter: int = 5, fit_on: str = "all", fit_max_clients: int | None = 2_000_000,
                 chunk_events: int = 5_000_000, blas_threads: int | None = 2, progress: bool = True):
        super().__init__(dim, seed)
        self.families = families
        self.mode = mode
        self.min_df = min_df
        self.n_iter = n_iter
        self.fit_on = fit_on
        self.fit_max_clients = fit_max_clients
        self.chunk_events = chunk_events
        self.blas_threads = blas_threads
        self.progress = progress

    def validate(self) -> None:
        """Known families and mode, ``dim`` >= the number of groups, ``min_df`` >= 1, a known ``fit_on``,
        ``fit_max_clients`` >= 1 or None."""
        groups = parse_families(self.families, self.mode)
        if self.dim < len(groups):
            raise ValueError(f"dim ({self.dim}) must be at least the number of family groups ({len(groups)})")
        if self.min_df < 1:
            raise ValueError(f"min_df must be >= 1, got {self.min_df}")
        if self.fit_on not in FIT_ON:
            raise ValueError(f"fit_on must be one of {FIT_ON}, got {self.fit_on!r}")
        if self.fit_max_clients is not None and self.fit_max_clients < 1:
            raise ValueError(f"fit_max_clients must be >= 1 (or None: all), got {self.fit_max_clients}")

    # -- fit -------------------------------------------------------------------------------------------------------
    def _fit_rows(self, events) -> np.ndarray:
        rows = np.arange(events.n_clients, dtype=np.int64)
        if self.fit_on == "relevant":
            from competition.load import read_relevant_clients
            if events.data_dir is None:
                raise ValueError("fit_on='relevant' needs an event table opened with its data directory")
            rows, _ = present_rows(events, read_relevant_clients(events.data_dir))
        if self.fit_max_clients is not None and len(rows) > self.fit_max_clients:
            rng = np.random.default_rng(self.seed)
            rows = np.sort(rng.choice(rows, size=self.fit_max_clients, replace=False))
        return rows

    def fit(self, events) -> "TfidfSvdEmbedder":
        from sklearn.decomposition import TruncatedSVD
        self.validate()
        t0 = time.perf_counter()
        self.groups_ = parse_families(self.families, self.mode)
        base, extra = divmod(self.dim, len(self.groups_))
        self.dims_ = [base + (1 if i < extra else 0) for i in range(len(self.groups_))]
        families = [f for g in self.groups_ for f in g]
        rows = self._fit_rows(events)
        self.n_docs_ = int(len(rows))
        chunks = row_chunks(events.lengths[rows], self.chunk_events)

        # Pass 1: document frequency per token, then the vocabulary (df >= min_df).
        df = {f: CountTable() for f in families}
        def freqs(bounds: tuple[int, int]) -> dict:
            c = gather(events, rows[bounds[0]:bounds[1]])
            return {f: doc_freq(*family_tokens(c, f, events.query_codes), c.n_rows) for f in families}

        # chunks are computed in threads and merged in order: the same bytes as one thread (chunks.map_chunks)
        done = map_chunks(freqs, chunks)
        for _ in progress_of(chunks, desc="tfidf_svd: vocabulary", enabled=self.progress, unit="chunk"):
            for f, counts in next(done).items():
                df[f].add(*counts)
        self.vocab_, self.df_, n_seen = {}, {}, {}
        for f in families:
            values, counts = df[f].values, df[f].counts
            keep = counts >= self.min_df
            self.vocab_[f], self.df_[f] = Vocabulary(values[keep]), counts[keep]
            n_seen[f] = int(len(keep))
        self._layout()

        # Pass 2: TF-IDF rows per chunk, stacked per group.
        parts: list[list[sp.csr_matrix]] = [[] for _ in self.groups_]
        done = map_chunks(lambda b: self._tfidf_rows(gather(events, rows[b[0]:b[1]]), events.query_codes), chunks)
        for _ in progress_of(chunks, desc="tfidf_svd: matrix", enabled=self.progress, unit="chunk"):
            for gi, x in enumerate(next(done)):
                parts[gi].append(x)

        self.svds_, self.stats_ = [], []
        z = np.zeros((len(rows), self.dim), dtype=np.float32)
        col = 0
        for gi, (group, k) in enumerate(zip(self.groups_, self.dims_)):
            x = sp.vstack(parts[gi], format="csr") if parts[gi] else sp.csr_matrix((0, self._n_cols[gi]),
                                                                                     dtype=np.float32)
            parts[gi] = []
            k_eff = min(k, x.shape[1], int((np.diff(x.indptr) > 0).sum()))
            info = {"families": list(group), "dim": k, "dim_used": int(k_eff), "n_tokens": int(x.shape[1]),
                    "tokens_seen": int(sum(n_seen[f] for f in group)), "nnz": int(x.nnz),
                    "empty_docs": int((np.diff(x.indptr) == 0).sum())}
            svd = None
            if k_eff >= 1 and x.shape[1] >= 2:
                t1 = time.perf_counter()
                svd = TruncatedSVD(n_components=k_eff, algorithm="randomized", n_iter=self.n_iter,
                                   random_state=self.seed)
                with threadpool_limits(self.blas_threads, user_api="blas") if self.blas_threads else nullcontext():
                    z[:, col:col + k_eff] = svd.fit_transform(x)
                info["svd_seconds"] = round(time.perf_counter() - t1, 2)
                info["explained_variance_ratio"] = round(float(svd.explained_variance_ratio_.sum()), 4)
            else:
                info["dim_used"] = 0
            del x
            self.svds_.append(svd)
            self.stats_.append(info)
            col += k
        self._fit_table_rows, self._fit_z, self._fit_fingerprint = rows, z, events.fingerprint
        self.fit_seconds_ = round(time.perf_counter() - t0, 2)
        return self

    def _layout(self) -> None:
        """Column offset of each family inside its group, the group widths and the idf of every column."""
        self._col0, self._n_cols, self._idf = {}, [], []
        for group in self.groups_:
            n = 0
            idf = []
            for f in group:
                self._col0[f] = n
                n += len(self.vocab_[f])
                idf.append(np.log((1.0 + self.n_docs_) / (1.0 + self.df_[f])) + 1.0)
            self._n_cols.append(n)
            self._idf.append(np.concatenate(idf).astype(np.float32) if idf else np.zeros(0, dtype=np.float32))

    def _tfidf_rows(self, c: EventChunk, query_codes: np.ndarray) -> list[sp.csr_matrix]:
        """One L2-normalised TF-IDF CSR matrix ``(c.n_rows, n_cols_g)`` per group."""
        return [tfidf_inplace(count_matrix(c, g, self.vocab_, self._col0, self._n_cols[gi], query_codes),
                              self._idf[gi])
                for gi, g in enumerate(self.groups_)]

    # -- transform ---------------------------------------------------------------------------------------------------
    def _project(self, c: EventChunk, query_codes: np.ndarray) -> np.ndarray:
        out = np.zeros((c.n_rows, self.dim), dtype=np.float32)
        col = 0
        for x, svd, k in zip(self._tfidf_rows(c, query_codes), self.svds_, self.dims_):
            if svd is not None:
                out[:, col:col + svd.n_components] = svd.transform(x)
            col += k
        return out

    def transform(self, events, client_ids: np.ndarray) -> Block:
        """float32 ``(len(client_ids), dim)`` in ``client_ids`` order; clients without events get zeros."""
        client_ids = np.asarray(client_ids, dtype=np.int64)
        table_rows, where = present_rows(events, client_ids)
        z = np.zeros((len(table_rows), self.dim), dtype=np.float32)
        todo = np.ones(len(table_rows), dtype=bool)
        if events.fingerprint == self._fit_fingerprint and len(self._fit_table_rows):
            pos = index_sorted(self._fit_table_rows, table_rows)
            cached = pos >= 0
            z[cached] = self._fit_z[pos[cached]]
            todo &= ~cached
        idx = np.flatnonzero(todo)
        chunks = row_chunks(events.lengths[table_rows[idx]], self.chunk_events)
        done = map_chunks(lambda b: self._project(gather(events, table_rows[idx[b[0]:b[1]]]), events.query_codes),
                          chunks)
        for lo, hi in progress_of(chunks, desc="tfidf_svd: project", enabled=self.progress and len(idx) > 0,
                                  unit="chunk"):
            z[idx[lo:hi]] = next(done)
        out = np.zeros((len(client_ids), self.dim), dtype=np.float32)
        out[where >= 0] = z[where[where >= 0]]
        meta = {"name": self.name, "groups": self.stats_, "n_fit_docs": self.n_docs_,
                "fit_seconds": self.fit_seconds_, "clients_without_events": int((where < 0).sum()),
                "projected_outside_fit": int(len(idx)),
                "columns": [f"{'+'.join(g)}:{i}" for g, k in zip(self.groups_, self.dims_) for i in range(k)]}
        return Block(client_ids, out, meta)


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from embedders.cli import add_params, base_parser
    parser = base_parser("python -m embedders.tfidf_svd",
                         "TF-IDF over typed item, url and query-code tokens per client, reduced by randomized "
                         "truncated SVD (see the module docstring).", default_dim=64)
    return add_params(parser, TfidfSvdEmbedder, choices={"mode": MODES, "fit_on": FIT_ON})


def make(args: argparse.Namespace) -> TfidfSvdEmbedder:
    """The embedder of the parsed flags; ``--blas-threads 0`` is the library default (None)."""
    from embedders.cli import from_args
    return from_args(TfidfSvdEmbedder, args, blas_threads=args.blas_threads or None)


def main(argv: list[str] | None = None) -> int:
    from embedders.cli import run
    return run(build_parser(), make, argv)


if __name__ == "__main__":
    raise SystemExit(main())
