"""embedders.quantile: a fitted QuantileTransformer applied column by column in threads, byte for byte its own
``transform``."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import QuantileTransformer

from embedders.quantile import quantile_transform


def _data(dtype, seed: int = 0) -> np.ndarray:
    """Skewed counts with ties, zeros, a constant column, NaNs and values beyond the fitted range."""
    rng = np.random.default_rng(seed)
    X = rng.gamma(0.5, size=(3000, 7)) * (rng.random((3000, 7)) < 0.6)
    X[:, 2] = np.round(X[:, 2])  # many ties
    X[:, 4] = 1.0  # constant
    X[rng.random(3000) < 0.01, 5] = np.nan
    return X.astype(dtype)


@pytest.mark.parametrize("output", ["normal", "uniform"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 3])
def test_equals_transform_byte_for_byte(output, dtype, threads):
    X = _data(dtype)
    qt = QuantileTransformer(n_quantiles=200, output_distribution=output, subsample=1000, random_state=0).fit(X[:1000])
    new = _data(dtype, seed=1) * 1.5  # other rows, some outside the fitted quantiles
    want = qt.transform(new)
    got = quantile_transform(qt, new, threads=threads)
    assert got.dtype == want.dtype == dtype and got.flags.c_contiguous
    assert got.tobytes() == want.tobytes()
    assert not np.shares_memory(got, new)  # the input is left alone
    assert np.isnan(got[:, 5]).any() and np.nanstd(got[:, 0]) > 0  # NaNs kept, values moved: not a no-op


def test_fallbacks_and_errors():
    X = _data(np.float64)
    qt = QuantileTransformer(n_quantiles=50, random_state=0).fit(np.abs(np.nan_to_num(X)))
    S = sparse.random(40, 7, density=0.3, format="csc", random_state=0)
    np.testing.assert_array_equal(quantile_transform(qt, S).toarray(), qt.transform(S).toarray())  # sparse: sklearn
    with pytest.raises(ValueError, match="features"):
        quantile_transform(qt, X[:, :3])
    with pytest.raises(NotFittedError):
        quantile_transform(QuantileTransformer(), X)
