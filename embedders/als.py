"""Implicit-feedback matrix factorisation (ALS, the ``implicit`` library) of client x item confidence matrices.

``python -m embedders.als --data-dir D --out E --dim K [--matrices category,url] [--mode per-matrix|joint]
[--weighting none|bm25|tfidf]``

Matrices (rows: every client with events in the table; columns: the items seen there at least ``min_df`` times):

============  ==================================================================================================
``category``  the category of every product event: ``buy_weight`` per buy (3), ``add_weight`` per add (1),
              ``remove_weight`` per remove (0)
``sku``       the sku of every product event, with the same weights
``url``       the url of every page visit, ``visit_weight`` each (0.5; page visits are the data's only visits)
============  ==================================================================================================

A cell holds the sum of its events' weights (the confidence of implicit ALS, Hu, Koren and Volinsky 2008), optionally
re-weighted before the factorisation: ``bm25`` (``c (K1 + 1) / (K1 (1 - B + B len / avg_len) + c) * idf``) or
``tfidf`` (``sqrt(c) * idf``), with ``idf = max(ln N - ln(1 + df), 0)`` -- the formulas of
``implicit.nearest_neighbours.bm25_weight`` / ``tfidf_weight`` with the statistics (N, df, avg_len) frozen at fit
time, so any later table is weighted like the fitted one. The matrices are built column-wise per chunk of clients
(numpy + scipy COO -> CSR with summed duplicates; no loop over events), then stacked.

Modes: ``per-matrix`` (default) -- one factorisation per matrix, ``dim`` split evenly (first ones take the
remainder), parts concatenated in ``--matrices`` order; ``joint`` -- one factorisation over the matrices side by
side. For one block per matrix, run the CLI once per matrix.

The client vectors are the least-squares user factors given the fitted item factors, solved exactly (Cholesky,
``implicit``'s ``recalculate_user``) from each requested client's row in the table given to ``transform``; for the
fitted table that is one last user half-step of ALS. A client absent from a matrix (no events of its kinds, or no
events at all) has an empty row there, whose solution is exactly the zero vector: that block part's defined
fallback. Deterministic for a seed: BLAS runs on one thread, each client's solve is independent of the others, so
``threads`` (the ALS solver's threads; 0 = the free cores, cores minus the load average) changes speed, not bytes.
``device``: ``cuda`` uses implicit's GPU build when it has one (the PyPI wheel has none: ``auto`` is then the CPU).

Memory: the CSR matrices (float32 data + int32 indices, ~8 bytes per non-zero, and their transpose while fitting)
plus the factors (float32, (clients + items) x dim). See docs/new_blocks.md for measured time and memory.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from competition.progress import progress as progress_of
from competition.schema import EVENT_CODE, PRODUCT_BUY, ADD_TO_CART, REMOVE_FROM_CART, PAGE_VISIT
from embedders.base import Block, Embedder
from embedders.chunks import CountTable, EventChunk, gather, row_chunks
from embedders.tfidf_svd import Vocabulary, doc_freq
from embedders.threads import free_cores

MATRICES: tuple[str, ...] = ("category", "sku", "url")
MODES = ("per-matrix", "joint")
WEIGHTINGS = ("none", "bm25", "tfidf")
ALS_DEVICES = ("auto", "cpu", "cuda")
DEFAULT_MATRICES = "category,url"
BUY, ADD, REMOVE, VISIT = (EVENT_CODE[e] for e in (PRODUCT_BUY, ADD_TO_CART, REMOVE_FROM_CART, PAGE_VISIT))


def parse_matrices(spec: str | list | tuple) -> tuple[str, ...]:
    """``"category,url"`` -> ("category", "url"); ValueError naming an unknown or repeated matrix."""
    items = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if str(m).strip()]
    if not items:
        raise ValueError("no matrix given; choose from " + ", ".join(MATRICES))
    bad = [m for m in items if m not in MATRICES]
    if bad:
        raise ValueError(f"unknown matrix {bad[0]!r}; choose from {', '.join(MATRICES)}")
    if len(set(items)) != len(items):
        raise ValueError(f"a matrix appears twice in {spec!r}")
    return tuple(items)


def matrix_entries(c: EventChunk, matrix: str, weights: dict[int, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row int64, item value int64, weight float32)`` of one matrix's events in a chunk (weight 0 left out)."""
    et = c.event_type
    if matrix == "url":
        codes, item = (VISIT,), c.url
    else:
        codes, item = (BUY, ADD, REMOVE), (c.category if matrix == "category" else c.sku)
    w = np.zeros(len(et), dtype=np.float32)
    for code in codes:
        w[et == code] = weights.get(code, 0.0)
    keep = (w > 0) & (item >= 0)
    return c.row[keep], item[keep].astype(np.int64), w[keep]


def confidence_matrix(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """float32 CSR of summed ``values`` at ``(rows, cols)`` (columns sorted within rows)."""
    x = sp.csr_matrix((values.astype(np.float32), (rows, cols)), shape=shape)
    x.sum_duplicates()
    return x


def weigh(x: sp.csr_matrix, weighting: str, idf: np.ndarray, avg_len: float, k1: float, b: float) -> sp.csr_matrix:
    """Re-weight the confidences of ``x`` in place (see module docstring) with fitted ``idf`` / ``avg_len``; the cells
    that become 0 are dropped. Returns ``x``."""
    if weighting == "none" or x.nnz == 0:
        return x
    w_idf = idf[x.indices]
    if weighting == "tfidf":
        x.data = (np.sqrt(x.data) * w_idf).astype(np.float32)
    else:
        r = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        row_sums = np.bincount(r, weights=x.data.astype(np.float64), minlength=x.shape[0])
        norm = (1.0 - b) + b * row_sums / max(avg_len, 1e-12)
        x.data = (x.data * (k1 + 1.0) / (k1 * norm[r] + x.data) * w_idf).astype(np.float32)
    x.eliminate_zeros()
    return x


def als_model(factors: int, regularization: float, alpha: float, iterations: int, seed: int, threads: int,
              device: str):
    """An implicit ``AlternatingLeastSquares`` (conjugate-gradient solver, float32) on the CPU or implicit's GPU."""
    import implicit
    if device == "cuda":
        from implicit.gpu import HAS_CUDA
        if not HAS_CUDA:
            raise ValueError("device='cuda': this implicit build has no CUDA support (pip's wheel is CPU-only); "
                             "use device='cpu' or 'auto'")
        from implicit.gpu.als import AlternatingLeastSquares
        return AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                       iterations=iterations, random_state=seed)
    return implicit.cpu.als.AlternatingLeastSquares(
        factors=factors, regularization=regularization, alpha=alpha, iterations=iterations, random_state=seed,
        num_threads=threads)


def resolve_als_device(device: str) -> str:
    """'auto' -> 'cuda' when implicit has a GPU build and a device, else 'cpu'."""
    if device not in ALS_DEVICES:
        raise ValueError(f"device must be one of {ALS_DEVICES}, got {device!r}")
    if device != "auto":
        return device
    try:
        from implicit.gpu import HAS_CUDA
    except ImportError:  # pragma: no cover - old implicit
        HAS_CUDA = False
    return "cuda" if HAS_CUDA else "cpu"


def fit_factors(x: sp.csr_matrix, dim: int, seed: int, iterations: int = 15, regularization: float = 0.01,
                alpha: float = 1.0, threads: int = 1, device: str = "cpu", progress: bool = False):
    """ALS on a client x item confidence matrix ``x`` (float32 CSR). Returns the fitted model (``item_factors``
    float32 ``(n_items, dim)`` on the CPU and ``user_factors`` ``(n_clients, dim)``)."""
    import implicit.cpu.als  # noqa: F401  (loaded before the limit, so its BLAS is limited too)
    with threadpool_limits(1, user_api="blas"):
        model = als_model(dim, regularization, alpha, iterations, seed, threads, device)
        # our progress (a bar on a terminal, lines in a log), not implicit's own tqdm bar
        with progress_of(total=iterations, desc="als: iterations", enabled=progress, unit="iteration",
                         leave=False) as bar:
            model.fit(x.astype(np.float32), show_progress=False, callback=lambda *_: bar.update(1))
    return model.to_cpu() if device == "cuda" else model


def user_factors(model, x: sp.csr_matrix, batch: int = 200_000) -> np.ndarray:
    """Least-squares user factors of the rows of ``x`` given the model's item factors (float32 ``(n, dim)``; an
    empty row gives exactly 0)."""
    out = np.zeros((x.shape[0], model.item_factors.shape[1]), dtype=np.float32)
    with threadpool_limits(1, user_api="blas"):
        for lo in range(0, x.shape[0], batch):
            part = x[lo:lo + batch]
            if part.nnz:
                out[lo:lo + part.shape[0]] = model.recalculate_user(np.arange(part.shape[0]), part)
    return out


class AlsEmbedder(Embedder):
    """Implicit ALS of client x category / sku / url confidence matrices (see the module docstring).

    Parameters: ``dim`` (block width), ``seed`` (factor initialisation), ``matrices`` (comma-separated, of
    :data:`MATRICES`), ``mode`` ("per-matrix" | "joint"), ``weighting`` ("none" | "bm25" | "tfidf"), ``buy_weight``
    / ``add_weight`` / ``remove_weight`` (product events), ``visit_weight`` (page visits), ``bm25_k1`` /
    ``bm25_b``, ``iterations``, ``regularization``, ``alpha`` (confidence scale), ``min_df`` (items held by fewer
    clients are dropped), ``chunk_events``, ``threads`` (0 = free cores), ``device``, ``progress``.

    Fitted attributes: ``matrices_``, ``groups_`` (matrix names per factorisation), ``dims_``, ``vocab_`` {matrix:
    :class:`embedders.tfidf_svd.Vocabulary`}, ``idf_`` / ``avg_len_`` per group, ``models_`` (None where a group
    had nothing to factorise), ``stats_`` (facts for meta.json).
    """

    name = "als"
    unknown_sku_note = ("kept in the sku matrix; left out of the category matrix")
    runtime_params = Embedder.runtime_params | {"threads", "chunk_events"}

    def __init__(self, dim: int = 128, seed: int = 0, matrices: str = DEFAULT_MATRICES, mode: str = "per-matrix",
                 weighting: str = "none", buy_weight: float = 3.0, add_weight: float = 1.0,
                 remove_weight: float = 0.0, visit_weight: float = 0.5, bm25_k1: float = 100.0, bm25_b: float = 0.8,
                 iterations: int = 15, regularization: float = 0.01, alpha: float = 1.0, min_df: int = 1,
                 chunk_events: int = 5_000_000, threads: int = 0, device: str = "auto", progress: bool = True):
        super().__init__(dim, seed)
        self.matrices = matrices
        self.mode = mode
        self.weighting = weighting
        self.buy_weight = buy_weight
        self.add_weight = add_weight
        self.remove_weight = remove_weight
        self.visit_weight = visit_weight
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.iterations = iterations
        self.regularization = regularization
        self.alpha = alpha
        self.min_df = min_df
        self.chunk_events = chunk_events
        self.threads = threads
        self.device = device
        self.progress = progress
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad parameter."""
        mats = parse_matrices(self.matrices)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        n_groups = len(mats) if self.mode == "per-matrix" else 1
        if not isinstance(self.dim, (int, np.integer)) or self.dim < n_groups:
            raise ValueError(f"dim ({self.dim}) must be an integer >= the number of factorisations ({n_groups})")
        for k in ("buy_weight", "add_weight", "remove_weight", "visit_weight", "bm25_k1", "regularization"):
            if not (getattr(self, k) >= 0 and np.isfinite(getattr(self, k))):
                raise ValueError(f"{k} must be finite and >= 0, got {getattr(self, k)}")
        if not (0.0 <= self.bm25_b <= 1.0):
            raise ValueError(f"bm25_b must be in [0, 1], got {self.bm25_b}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        for k in ("iterations", "min_df", "chunk_events"):
            if not isinstance(getattr(self, k), (int, np.integer)) or getattr(self, k) < 1:
                raise ValueError(f"{k} must be an integer >= 1, got {getattr(self, k)!r}")
        if not isinstance(self.threads, (int, np.integer)) or self.threads < 0:
            raise ValueError(f"threads must be an integer >= 0, got {self.threads!r}")
        resolve_als_device(self.device)

    # -- matrices ---------------------------------------------------------------------------------------------------
    def _weights(self) -> dict[int, float]:
        return {BUY: float(self.buy_weight), ADD: float(self.add_weight), REMOVE: float(self.remove_weight),
                VISIT: float(self.visit_weight)}

    def _matrices(self, events, rows: np.ndarray, desc: str) -> list[sp.csr_matrix]:
        """One confidence matrix per group for table ``rows`` (columns: the fitted vocabularies side by side)."""
        weights = self._weights()
        parts: list[list[sp.csr_matrix]] = [[] for _ in self.groups_]
        chunks = row_chunks(events.lengths[rows], self.chunk_events) if len(rows) else []
        for lo, hi in progress_of(chunks, desc=desc, enabled=self.progress, unit="chunk", leave=False):
            c = gather(events, rows[lo:hi])
            for gi, group in enumerate(self.groups_):
                rr, cc, vv = [], [], []
                col0 = 0
                for m in group:
                    r, v, w = matrix_entries(c, m, weights)
                    col = self.vocab_[m].index(v)
                    keep = col >= 0
                    rr.append(r[keep])
                    cc.append(col[keep] + col0)
                    vv.append(w[keep])
                    col0 += len(self.vocab_[m])
                parts[gi].append(confidence_matrix(np.concatenate(rr), np.concatenate(cc), np.concatenate(vv),
                                                   (c.n_rows, self._n_cols[gi])))
        return [sp.vstack(p, format="csr") if p else sp.csr_matrix((len(rows), self._n_cols[gi]), dtype=np.float32)
                for gi, p in enumerate(parts)]

    # -- fit / transform --------------------------------------------------------------------------------------------
    def fit(self, events) -> "AlsEmbedder":
        """Vocabularies, confidence matrices of every client with events, then ALS per group."""
        self.validate()
        t0 = time.perf_counter()
        self.matrices_ = parse_matrices(self.matrices)
        self.groups_ = [(m,) for m in self.matrices_] if self.mode == "per-matrix" else [self.matrices_]
        base, extra = divmod(self.dim, len(self.groups_))
        self.dims_ = [base + (1 if i < extra else 0) for i in range(len(self.groups_))]
        self.device_ = resolve_als_device(self.device)
        self.threads_ = int(self.threads) or free_cores()
        rows = np.arange(events.n_clients, dtype=np.int64)
        weights = self._weights()
        df = {m: CountTable() for m in self.matrices_}
        for lo, hi in progress_of(row_chunks(events.lengths, self.chunk_events), desc="als: vocabulary",
                                  enabled=self.progress, unit="chunk", leave=False):
            c = gather(events, rows[lo:hi])
            for m in self.matrices_:
                r, v, _ = matrix_entries(c, m, weights)
                df[m].add(*doc_freq(r, v, c.n_rows))
        self.vocab_, item_df = {}, {}
        for m in self.matrices_:
            keep = df[m].counts >= self.min_df
            self.vocab_[m], item_df[m] = Vocabulary(df[m].values[keep]), df[m].counts[keep]
        self._n_cols = [sum(len(self.vocab_[m]) for m in g) for g in self.groups_]
        xs = self._matrices(events, rows, "als: matrices")
        self.idf_, self.avg_len_, self.models_, self.stats_ = [], [], [], []
        n_docs = max(events.n_clients, 1)
        for gi, (group, x) in enumerate(zip(self.groups_, xs)):
            gdf = np.concatenate([item_df[m] for m in group]) if group else np.zeros(0, np.int64)
            self.idf_.append(np.maximum(np.log(n_docs) - np.log1p(gdf), 0.0).astype(np.float32))
            self.avg_len_.append(float(x.sum() / n_docs))
            x = weigh(x, self.weighting, self.idf_[gi], self.avg_len_[gi], self.bm25_k1, self.bm25_b)
            info = {"matrices": list(group), "dim": self.dims_[gi], "n_items": int(x.shape[1]), "nnz": int(x.nnz),
                    "empty_rows": int((np.diff(x.indptr) == 0).sum())}
            model = None
            if x.nnz and x.shape[1]:
                t1 = time.perf_counter()
                model = fit_factors(x, self.dims_[gi], self.seed, self.iterations, self.regularization, self.alpha,
                                    self.threads_, self.device_, progress=self.progress)
                info["als_seconds"] = round(time.perf_counter() - t1, 2)
            self.models_.append(model)
            self.stats_.append(info)
        self.fit_seconds_ = round(time.perf_counter() - t0, 2)
        return self

    def transform(self, events, client_ids: np.ndarray) -> Block:
        """User factors float32 ``(len(client_ids), dim)`` from each client's rows in ``events`` (zeros for a client
        absent from a matrix)."""
        client_ids = np.asarray(client_ids, dtype=np.int64)
        rows = events.rows_of(client_ids)
        present = np.unique(rows[rows >= 0])
        xs = self._matrices(events, present, "als: client rows")
        where = np.searchsorted(present, rows)
        out = np.zeros((len(client_ids), self.dim), dtype=np.float32)
        col = 0
        for gi, x in enumerate(xs):
            k = self.dims_[gi]
            if self.models_[gi] is not None and len(present):
                x = weigh(x, self.weighting, self.idf_[gi], self.avg_len_[gi], self.bm25_k1, self.bm25_b)
                f = user_factors(self.models_[gi], x)
                out[rows >= 0, col:col + k] = f[where[rows >= 0]]
            col += k
        meta = {"name": self.name, "groups": self.stats_, "fit_seconds": self.fit_seconds_,
                "threads_used": self.threads_, "device_used": self.device_,
                "clients_without_events": int((rows < 0).sum()),
                "n_parameters": int(sum(m.item_factors.size for m in self.models_ if m is not None))}
        return Block(client_ids, out, meta)


def build_parser() -> argparse.ArgumentParser:
    from embedders.cli import base_parser
    p = base_parser("python -m embedders.als", __doc__.split("\n\n")[0], default_dim=128)
    p.add_argument("--matrices", default=DEFAULT_MATRICES,
                   help=f"comma-separated client x item matrices, of {', '.join(MATRICES)}")
    p.add_argument("--mode", choices=MODES, default="per-matrix",
                   help="per-matrix: one factorisation each, --dim split evenly; joint: one over all side by side")
    p.add_argument("--weighting", choices=WEIGHTINGS, default="none", help="confidence re-weighting before ALS")
    p.add_argument("--buy-weight", type=float, default=3.0, help="confidence of a buy (category, sku matrices)")
    p.add_argument("--add-weight", type=float, default=1.0, help="confidence of an add to cart")
    p.add_argument("--remove-weight", type=float, default=0.0, help="confidence of a remove from cart")
    p.add_argument("--visit-weight", type=float, default=0.5, help="confidence of a page visit (url matrix)")
    p.add_argument("--bm25-k1", type=float, default=100.0, help="BM25 K1 (--weighting bm25)")
    p.add_argument("--bm25-b", type=float, default=0.8, help="BM25 B (--weighting bm25)")
    p.add_argument("--iterations", type=int, default=15, help="ALS iterations")
    p.add_argument("--regularization", type=float, default=0.01, help="L2 regularisation of the factors")
    p.add_argument("--alpha", type=float, default=1.0, help="confidence scale (implicit's alpha)")
    p.add_argument("--min-df", type=int, default=1, help="drop items held by fewer clients")
    p.add_argument("--threads", type=int, default=0,
                   help="ALS solver threads (0: the free cores, cores minus the load average); not in the bytes")
    p.add_argument("--device", choices=ALS_DEVICES, default="auto",
                   help="auto: implicit's GPU build when it has one and a device is present, else the CPU")
    return p


def main(argv: list[str] | None = None) -> int:
    from embedders.cli import run
    parser = build_parser()

    def make(args: argparse.Namespace) -> AlsEmbedder:
        try:
            return AlsEmbedder(dim=args.dim, seed=args.seed, matrices=args.matrices, mode=args.mode,
                               weighting=args.weighting, buy_weight=args.buy_weight, add_weight=args.add_weight,
                               remove_weight=args.remove_weight, visit_weight=args.visit_weight,
                               bm25_k1=args.bm25_k1, bm25_b=args.bm25_b, iterations=args.iterations,
                               regularization=args.regularization, alpha=args.alpha, min_df=args.min_df,
                               threads=args.threads, device=args.device, progress=not args.no_progress)
        except ValueError as exc:
            parser.error(str(exc))

    return run(parser, make, argv)


if __name__ == "__main__":
    sys.exit(main())
