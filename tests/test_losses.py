"""Both label-smoothing forms against hand-computed values and their closed-form difference."""

import math

import numpy as np
import pytest

from tlres.losses import SmoothedCrossEntropy, keras_targets, paper_targets

C, EPS = 10, 0.1
LOGITS = np.array([[2.0, 1.0, 0, 0, 0, 0, 0, 0, 0, 0],
                   [0, 0, 0, 3.0, 0, 0, 0, 0, 0, -1.0]], np.float32)
LABELS = np.array([0, 9])


def log_softmax_by_hand(z):
    z = [float(v) for v in z]
    lse = math.log(sum(math.exp(v) for v in z))
    return [v - lse for v in z]


def expected(form):
    out = []
    for z, c in zip(LOGITS, LABELS):
        lp = log_softmax_by_hand(z)
        if form == "paper":  # eq. 11
            q = [1 - EPS if i == c else EPS / (C - 1) for i in range(C)]
        else:  # Keras / PyTorch: y * (1 - eps) + eps / C
            q = [(1 - EPS) * (i == c) + EPS / C for i in range(C)]
        out.append(-sum(qi * li for qi, li in zip(q, lp)))
    return out


@pytest.mark.parametrize("form", ["paper", "keras"])
def test_per_example_loss_matches_hand_computation(form):
    loss = SmoothedCrossEntropy(C, EPS, form, reduction=None)
    np.testing.assert_allclose(np.asarray(loss(LABELS, LOGITS)), expected(form), rtol=1e-6)


@pytest.mark.parametrize("form", ["paper", "keras"])
def test_mean_reduction(form):
    loss = SmoothedCrossEntropy(C, EPS, form)
    assert float(loss(LABELS, LOGITS)) == pytest.approx(np.mean(expected(form)), rel=1e-6)


def test_first_example_by_hand_digits():
    # z = (2, 1, 0 x 8): log-sum-exp = log(e^2 + e + 8)
    lse = math.log(math.e ** 2 + math.e + 8)
    paper = -(0.9 * (2 - lse) + (0.1 / 9) * ((1 - lse) + 8 * (0 - lse)))
    keras_ = -(0.91 * (2 - lse) + 0.01 * ((1 - lse) + 8 * (0 - lse)))
    assert float(SmoothedCrossEntropy(C, EPS, "paper", reduction=None)(LABELS[:1], LOGITS[:1])[0]) \
        == pytest.approx(paper, rel=1e-6)
    assert float(SmoothedCrossEntropy(C, EPS, "keras", reduction=None)(LABELS[:1], LOGITS[:1])[0]) \
        == pytest.approx(keras_, rel=1e-6)


def test_targets_follow_each_definition():
    p = np.asarray(paper_targets(np.array([2]), 5, 0.2))[0]
    k = np.asarray(keras_targets(np.array([2]), 5, 0.2))[0]
    np.testing.assert_allclose(p, [0.05, 0.05, 0.8, 0.05, 0.05], rtol=1e-6)
    np.testing.assert_allclose(k, [0.04, 0.04, 0.84, 0.04, 0.04], rtol=1e-6)


def test_difference_has_closed_form():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(32, C)).astype(np.float32) * 3
    labels = rng.integers(0, C, 32)
    diff = (np.asarray(SmoothedCrossEntropy(C, EPS, "paper", reduction=None)(labels, logits))
            - np.asarray(SmoothedCrossEntropy(C, EPS, "keras", reduction=None)(labels, logits)))
    lp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    true = lp[np.arange(32), labels]
    others = (lp.sum(1) - true) / (C - 1)
    np.testing.assert_allclose(diff, EPS / C * (true - others), atol=2e-6)


def test_zero_epsilon_is_plain_cross_entropy():
    for form in ("paper", "keras"):
        got = np.asarray(SmoothedCrossEntropy(C, 0.0, form, reduction=None)(LABELS, LOGITS))
        want = [-log_softmax_by_hand(z)[c] for z, c in zip(LOGITS, LABELS)]
        np.testing.assert_allclose(got, want, rtol=1e-6)
