import numpy as np

from competition.schema import CHURN, PROPENSITY_NEW_SKU
from validate.lgbm import LGBMProbe


def _propensity_data(n=3000, k=6, seed=0):
    """Output 0 is common and driven by feature 0; outputs 1.. are rare (a handful of train positives each) and all
    driven by feature 1; feature 2 is noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3)).astype(np.float32)
    def draw():
        y = np.zeros((n, k), np.float32)
        y[:, 0] = rng.random(n) < 1 / (1 + np.exp(-(2 * X[:, 0] - 1)))
        rare = rng.random((n, k - 1)) < 0.002 * np.exp(1.5 * X[:, 1:2])
        y[:, 1:] = rare
        return y
    popularity = np.array([0.5] + [0.01] * (k - 1))
    return X, draw(), draw(), popularity


def test_rare_outputs_use_the_pooled_model_and_common_ones_their_own():
    X, y_tr, y_va, pop = _propensity_data()
    probe = LGBMProbe(n_jobs=1, pooled_min_positives=20)
    res = probe.score(PROPENSITY_NEW_SKU, X, y_tr, y_va, pop)
    positives = y_tr.sum(axis=0)
    assert positives[0] > 100 and (positives[1:] < 20).all()  # so fewer than 20 in the fit fold too
    assert res["rounds"][0] > 0 and res["rounds"][1:] == [-1] * 5
    off = LGBMProbe(n_jobs=1, pooled_min_positives=0).score(PROPENSITY_NEW_SKU, X, y_tr, y_va, pop)
    # the pooled model ranks the rare outputs' buyers (feature 1) far better than a model per rare output
    assert res["auroc"] > off["auroc"] + 0.05


def test_pooled_outputs_are_one_ranking_shifted_by_their_base_rates():
    X, y_tr, _, pop = _propensity_data(k=3)
    y_tr[:, 1] = 0
    y_tr[:10, 1] = 1  # 10 buyers of output 1
    y_tr[:, 2] = 0
    y_tr[10:13, 2] = 1  # 3 buyers of output 2
    probe = LGBMProbe(n_jobs=1, pooled_min_positives=10**6, top_k=3)  # every output pooled
    cols, logits, rounds = probe.fit_predict(PROPENSITY_NEW_SKU, X, y_tr, pop)
    assert list(cols) == [0, 1, 2] and rounds == [-1, -1, -1]
    shift = logits - logits[:, :1]
    np.testing.assert_allclose(shift, shift[:1].repeat(len(X), axis=0), atol=1e-5)  # the same ranking
    assert shift[0, 0] > shift[0, 1] > shift[0, 2]  # commoner outputs rank higher across outputs


def test_churn_is_never_pooled():
    X, y_tr, y_va, _ = _propensity_data()
    res = LGBMProbe(n_jobs=1, pooled_min_positives=10**9).score(CHURN, X, y_tr[:, 0], y_va[:, 0])
    assert res["rounds"][0] > 0 and 0.7 < res["auroc"] <= 1.0


def test_outputs_far_below_zero_still_give_a_finite_score():
    """A row whose boosted scores all fall below -88 (float32 sigmoid 0) made the diversity 0 / 0: NaN."""
    X, y_tr, y_va, pop = _propensity_data(n=400)

    class Extreme(LGBMProbe):
        def fit_predict(self, task, X, y_train, popularity=None):
            cols, logits, rounds = super().fit_predict(task, X, y_train, popularity)
            logits[:50] = -500.0 - np.arange(logits.shape[1], dtype=np.float32)   # rows beyond the float32 sigmoid
            return cols, logits, rounds

    res = Extreme(n_jobs=1).score(PROPENSITY_NEW_SKU, X, y_tr, y_va, pop)
    assert np.isfinite(res["score"]) and np.isfinite(res["diversity"])
