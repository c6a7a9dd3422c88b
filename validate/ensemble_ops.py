"""Block transforms and ensemble assembly: the one place where an ensemble spec becomes a matrix.

``validate.search`` scores ensembles with these functions and ``submit`` builds the final submission with the same
ones, so the searched and the submitted matrices agree. Per block, in this order:

1. align rows to the requested clients (:meth:`embedders.base.Block.align`: missing clients get column means);
2. ``apply_transform``: "l2" (unit rows), "quantile" (each column to uniform [0, 1] by its quantiles), "log"
   (``sign(x) log1p(|x|)``) or "none";
3. PCA to ``dims`` columns when ``dims`` is set and below the width (exact, from the covariance; fitted on the rows
   being assembled, at most ``PCA_MAX_ROWS`` of them, sampled by seed);
4. scale: rows of "l2" blocks are unit length again after PCA; other blocks are divided by their mean row norm, so
   every block enters with rows of (mean) length 1 and ``weight`` alone sets its share;
5. multiply by ``weight``.

Blocks with a positive weight are then concatenated in spec order; the total width must stay within
``schema.MAX_EMBEDDING_COLUMNS``. The spec itself (format, validation, width rule) is :mod:`validate.spec`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from embedders import registry
from embedders.base import Block, read_block
from validate.spec import TRANSFORMS, EnsembleSpec

#: Rows used to fit a PCA or a quantile transform (sampled by seed when there are more).
PCA_MAX_ROWS = 200_000
QUANTILES = 1000
_TINY = 1e-12


def default_transform(meta: Mapping) -> str:
    """The transform of a block by its meta ``embedder`` and ``params``, through
    :func:`embedders.registry.default_transform` ("quantile" for hand-made statistics and multitask's heads, "l2"
    for learned vectors and for an embedder the registry does not know)."""
    return registry.default_transform(meta.get("embedder"), meta.get("params"))


def _sample_rows(n: int, max_rows: int, seed: int) -> np.ndarray | slice:
    if n <= max_rows:
        return slice(None)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def l2_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero). float32 ``(n, d)``."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, _TINY)


def apply_transform(X: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """One of :data:`TRANSFORMS` applied to float ``(n, d)``; returns float32 ``(n, d)``.

    "quantile" maps each column through its empirical CDF (1000 quantiles fitted on up to 200k rows, linear
    interpolation), so heavy-tailed counts become comparable uniform [0, 1] features.
    """
    X = np.asarray(X, dtype=np.float32)
    if kind == "l2":
        return l2_rows(X)
    if kind == "log":
        return (np.sign(X) * np.log1p(np.abs(X))).astype(np.float32)
    if kind == "none":
        return X.copy()
    if kind == "quantile":
        return quantile_uniform(X, seed=seed)
    raise ValueError(f"unknown transform {kind!r}; expected one of {TRANSFORMS}")


def quantile_uniform(X: np.ndarray, n_quantiles: int = QUANTILES, seed: int = 0) -> np.ndarray:
    """Each column through its empirical CDF: float32 values in [0, 1]; constant columns become 0."""
    X = np.asarray(X, dtype=np.float32)
    n, d = X.shape
    out = np.zeros_like(X)
    if n == 0:
        return out
    fit_rows = X[_sample_rows(n, PCA_MAX_ROWS, seed)]
    levels = np.linspace(0.0, 1.0, min(n_quantiles, len(fit_rows)))
    qs = np.quantile(fit_rows, levels, axis=0)  # (q, d)
    for j in range(d):  # a loop over columns (not rows): np.interp is 1-D
        knots, idx = np.unique(qs[:, j], return_index=True)
        if len(knots) < 2:
            continue
        # Average the CDF level over repeated quantile values (ties), as a rank transform would.
        lo = levels[idx]
        hi = levels[np.r_[idx[1:] - 1, len(levels) - 1]]
        out[:, j] = np.interp(X[:, j], knots, 0.5 * (lo + hi))
    return out


@dataclass
class PCAProjection:
    """Centring vector ``mean`` ``(D,)`` and orthonormal ``components`` ``(D, d)``, by decreasing variance."""

    mean: np.ndarray
    components: np.ndarray

    @property
    def dims(self) -> int:
        return int(self.components.shape[1])

    def transform(self, X: np.ndarray, dims: int | None = None) -> np.ndarray:
        """float32 ``(n, dims)`` scores on the first ``dims`` components (default all)."""
        comps = self.components if dims is None else self.components[:, :dims]
        return ((np.asarray(X, dtype=np.float32) - self.mean) @ comps).astype(np.float32)


def fit_pca(X: np.ndarray, dims: int, seed: int = 0, max_rows: int = PCA_MAX_ROWS) -> PCAProjection:
    """Exact PCA of float ``(n, D)`` to ``dims`` components (eigendecomposition of the covariance, float64).

    Deterministic: rows sampled by ``seed`` when ``n > max_rows``; each component's sign makes its largest-magnitude
    loading positive. The first ``d`` components of a fit to ``dims >= d`` equal a fit to ``d``.
    """
    X = np.asarray(X, dtype=np.float32)
    n, D = X.shape
    if not 1 <= dims <= D:
        raise ValueError(f"PCA dims must be in 1..{D} (the block's width), got {dims}")
    rows = X[_sample_rows(n, max_rows, seed)].astype(np.float64)
    mean = rows.mean(axis=0)
    centred = rows - mean
    cov = centred.T @ centred / max(len(rows) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    comps = vectors[:, np.argsort(-values, kind="stable")[:dims]]
    flip = np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(dims)])
    comps *= np.where(flip == 0, 1.0, flip)
    return PCAProjection(mean.astype(np.float32), comps.astype(np.float32))


def scale_block(Z: np.ndarray, kind: str) -> np.ndarray:
    """Step 4: unit rows for "l2" blocks, else division by the mean row norm. float32 ``(n, d)``."""
    if kind == "l2":
        return l2_rows(Z)
    mean_norm = float(np.linalg.norm(Z, axis=1).mean()) if len(Z) else 0.0
    return (Z / max(mean_norm, _TINY)).astype(np.float32)


def block_matrix(block: Block, client_ids: np.ndarray, kind: str, dims: int | None = None,
                 seed: int = 0) -> np.ndarray:
    """Steps 1-4 for one block: float32 ``(len(client_ids), dims or block.dim)`` before the weight."""
    X, _ = block.align(client_ids)
    Z = apply_transform(X, kind, seed=seed)
    if dims is not None and dims < Z.shape[1]:
        Z = fit_pca(Z, dims, seed=seed).transform(Z)
    return scale_block(Z, kind)


def assemble(blocks: Mapping[str, Block] | Sequence[Block] | None, spec: EnsembleSpec | Mapping,
             client_ids: np.ndarray, seed: int = 0) -> np.ndarray:
    """The ensemble matrix float32 ``(len(client_ids), total)`` for ``client_ids`` (in that order).

    spec: an :class:`validate.spec.EnsembleSpec` or its dict (validated here); blocks with weight 0 are left out.
    blocks: loaded blocks by name (or a list, named by ``meta["name"]``); an entry whose block is not given is read
    from its ``path``. Raises :class:`validate.spec.SpecError` (a ValueError) when the total width exceeds
    ``schema.MAX_EMBEDDING_COLUMNS``.
    """
    spec = EnsembleSpec.of(spec)
    if blocks is None:
        blocks = {}
    elif not isinstance(blocks, Mapping):
        blocks = {b.meta.get("name", str(i)): b for i, b in enumerate(blocks)}
    client_ids = np.asarray(client_ids, dtype=np.int64)
    active = spec.active
    loaded = {e.name: blocks[e.name] if e.name in blocks else read_block(e.path) for e in active}
    spec.columns({k: b.dim for k, b in loaded.items()})
    parts = [block_matrix(loaded[e.name], client_ids, e.transform, e.dims, seed) * np.float32(e.weight)
             for e in active]
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)
