"""Metrics against hand-computed values and published interval examples.

Published values have 4 decimals, so they hold to 5e-5 (half their last digit). Everything else is
float64 on both sides (ratios of small counts, the same formula written twice): pytest.approx's
default, 1e-6 relative, is ~1e9 float64 ulps above their rounding and far below any formula slip
(n for n - 1, a wrong quantile) that moves them by >= 1e-3.
"""

import numpy as np
import pytest

from tlres.core import stats
from tlres.run.evaluate import confusion_matrix, metrics
from tlres.core.stats import wilson_interval


def test_wilson_interval_matches_newcombe_1998_example():
    # Newcombe (1998), Stat. Med. 17:857, example 81/263: Wilson 95% CI 0.2553 to 0.3662
    lo, hi = wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=5e-5) and hi == pytest.approx(0.3662, abs=5e-5)  # 4 decimals


def test_wilson_interval_for_the_papers_one_batch():
    # 60/64 (the paper's 93.75%): wide, because n = 64. By hand, z = 1.959964, p = 60/64:
    # (p + z^2/128 -+ z sqrt(p(1-p)/64 + z^2/16384)) / (1 + z^2/64) = 0.85003, 0.97543
    lo, hi = wilson_interval(60, 64)
    assert lo == pytest.approx(0.8500, abs=5e-5) and hi == pytest.approx(0.9754, abs=5e-5)  # 4 decimals


def test_confusion_and_accuracies_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 0, 2, 2, 2, 2])
    logits = np.eye(3)[preds] * 5.0
    m = metrics(logits, labels, 3)
    assert m["confusion_matrix"] == [[3, 1, 0], [1, 1, 0], [0, 0, 4]]
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["per_class_accuracy"] == pytest.approx([0.75, 0.5, 1.0])
    assert m["mean_class_accuracy"] == pytest.approx(0.75)  # differs from accuracy: imbalance
    assert m["num_test"] == 10 and m["correct"] == 8
    # plain cross-entropy: -log softmax of (5,0,0) at the right or wrong class
    right = -np.log(np.exp(5) / (np.exp(5) + 2))
    wrong = -np.log(1 / (np.exp(5) + 2))
    assert m["cross_entropy"] == pytest.approx((8 * right + 2 * wrong) / 10)
    lo, hi = m["accuracy_ci95"]
    assert lo < 0.8 < hi


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(np.array([2, 2, 1]), np.array([0, 2, 1]), 3)
    assert cm.tolist() == [[0, 0, 0], [0, 1, 0], [1, 0, 1]]


def test_newcombe_difference_matches_newcombe_1998_example():
    # Newcombe (1998), Stat. Med. 17:873, table II, example (a) 56/70 vs 48/80: method 10
    # (score interval) gives 0.2000 with 95% CI 0.0524 to 0.3339.
    from tlres.core.stats import newcombe_interval

    d, (lo, hi) = newcombe_interval(56, 70, 48, 80)
    assert d == pytest.approx(0.2, abs=1e-12)  # 56/70 - 48/80 in float64: a few ulps
    assert lo == pytest.approx(0.0524, abs=5e-5) and hi == pytest.approx(0.3339, abs=5e-5)  # 4 decimals


def test_welch_interval_matches_scipy_and_a_hand_computation():
    from scipy import stats

    from tlres.core.stats import welch_interval

    a, b = [0.91, 0.93, 0.92, 0.95], [0.88, 0.90, 0.86]
    d, (lo, hi), df = welch_interval(a, b)
    # by hand: means 0.9275 and 0.88; s^2/n = 0.000291667/4 and 0.0004/3
    va, vb = 0.000291666667 / 4, 0.0004 / 3
    assert d == pytest.approx(0.0475, abs=1e-12)  # two float64 means of 3-4 values: a few ulps
    assert df == pytest.approx((va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2), rel=1e-6)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-12)  # scipy, float64: a few ulps
    # one seed per side: no interval; identical constant seeds: zero width
    assert np.isnan(welch_interval([0.9], [0.8])[1][0])
    assert welch_interval([0.9, 0.9], [0.8, 0.8])[1] == pytest.approx((0.1, 0.1))


def test_detectable_difference_welch_against_a_hand_computed_case():
    # sd 1 on both sides, 3 seeds each: se = sqrt(2/3), Welch df = (2/3)^2 / (2 (1/3)^2 / 2) = 4;
    # t tables: t_0.975,4 = 2.776445, t_0.80,4 = 0.940965 -> (3.717410) * 0.816497 = 3.035257
    a, b = [0.0, 1.0, 2.0], [5.0, 6.0, 7.0]
    assert stats.detectable_welch(a, b) == pytest.approx(3.035257, abs=1e-5)
    assert stats.detectable_welch([1.0], b) != stats.detectable_welch([1.0], b)  # nan
    assert stats.detectable_welch([1.0, 1.0], [2.0, 2.0]) == 0.0


def test_detectable_difference_of_proportions_against_a_hand_computed_case():
    # p = 0.9, 360 images each: sqrt(0.09 * 2/360) = 0.0223607; z_0.975 + z_0.8 = 2.801585
    assert stats.detectable_proportions(0.9, 360, 360) == pytest.approx(0.0626453, abs=1e-6)
