import time

import numpy as np
import pytest

from validate import metrics as M


def test_auroc_hand_computed():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: pairs won 1 + 2 = 3 of 4
    assert M.auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auroc_ties_count_half():
    # pos 0.5 vs neg 0.5: 1/2; pos 0.5 vs neg 0.2: 1; pos 0.9 vs both: 2 -> 3.5 / 4
    assert M.auroc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)


def test_auroc_all_equal_predictions_is_half():
    assert M.auroc([0, 1, 1, 0, 1], [0.3] * 5) == pytest.approx(0.5)


def test_auroc_without_positives_or_negatives_is_zero():
    assert M.auroc([0, 0, 0], [0.1, 0.2, 0.3]) == 0.0
    assert M.auroc([1, 1, 1], [0.1, 0.2, 0.3]) == 0.0


def test_macro_auroc_counts_output_without_positives_as_zero():
    y = np.array([[0, 0], [0, 0], [1, 0], [1, 0]])
    s = np.array([[0.1, 0.5], [0.4, 0.5], [0.35, 0.5], [0.8, 0.5]])
    assert M.auroc_per_output(y, s).tolist() == pytest.approx([0.75, 0.0])
    assert M.macro_auroc(y, s) == pytest.approx(0.375)


def test_to_probabilities_follows_torchmetrics_batch_rule():
    # batch 1 (rows 0-1) lies in [0, 1]: kept; batch 2 has a logit outside: sigmoid
    s = np.array([0.2, 0.9, 3.0, 0.5], dtype=np.float32)
    p = M.to_probabilities(s, batch_size=2)
    assert p[:2].tolist() == pytest.approx([0.2, 0.9])
    assert p[2:].tolist() == pytest.approx([1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(-0.5))])
    # float32 saturation makes huge logits tie at 1.0, as in torch
    assert M.sigmoid(np.array([20.0, 30.0], dtype=np.float32)).tolist() == [1.0, 1.0]


def test_diversity_uniform_is_one_and_peaked_is_zero():
    assert M.diversity(np.zeros((3, 4))) == pytest.approx(1.0)
    assert M.diversity(np.array([[100.0, -200.0, -200.0, -200.0]])) == pytest.approx(0.0, abs=1e-6)
    # row 1 uniform (1.0), row 2: p = [1, 1, 0, 0] / 2 -> 1 bit / 2 bits = 0.5; mean 0.75
    logits = np.array([[0.0, 0.0, 0.0, 0.0], [100.0, 100.0, -200.0, -200.0]])
    assert M.diversity(logits) == pytest.approx(0.75, abs=1e-6)


def test_novelty_fewer_than_ten_outputs():
    # 3 outputs: k = 3, popularity normalised by 1 + 2 + 3; only output 0 (pop 1/6) has sigmoid 0.5
    logits = np.array([[0.0, -1000.0, -1000.0]])
    assert M.novelty(logits, np.array([1.0, 2.0, 3.0])) == pytest.approx((1 - 0.5 / 6) ** 100)


def test_novelty_top_ten_of_twelve():
    # pop 1..12 normalised by the 10 largest (3 + ... + 12 = 75); output 0 (pop 1) has 0.5, the rest 0
    logits = np.full((2, 12), -1000.0)
    logits[:, 0] = 0.0
    assert M.novelty(logits, np.arange(1.0, 13.0)) == pytest.approx((1 - 0.5 / 75) ** 100)


def test_novelty_popular_predictions_score_lower():
    pop = np.arange(1.0, 21.0)
    low = np.where(np.arange(20) < 10, 5.0, -5.0)[None, :]    # confident on the unpopular outputs
    high = -low
    assert M.novelty(low, pop) > M.novelty(high, pop)


def test_task_score_weights_and_churn():
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    logits = np.array([[2.0, -2.0], [-2.0, 2.0], [1.0, -1.0], [-1.0, 1.0]])
    pop = np.array([3.0, 1.0])
    s = M.task_score("propensity_category", y, logits, pop)
    assert s["auroc"] == pytest.approx(1.0)
    assert s["score"] == pytest.approx(0.8 * s["auroc"] + 0.1 * s["diversity"] + 0.1 * s["novelty"])
    churn = M.task_score("churn", np.array([0, 1, 1]), np.array([[-1.0], [2.0], [0.5]]))
    assert churn["score"] == churn["auroc"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.task_score("propensity_sku", y, logits)  # no popularity


def test_metrics_fast_on_100k_by_100():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((100_000, 100)).astype(np.float32)
    y = rng.random((100_000, 100)) < 0.02
    t = time.perf_counter()
    s = M.task_score("propensity_sku", y, logits, rng.integers(1, 100, 100).astype(float))
    assert time.perf_counter() - t < 10
    assert 0.45 < s["auroc"] < 0.55
