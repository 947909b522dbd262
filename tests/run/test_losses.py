"""Both label-smoothing forms against hand-computed values and their closed-form difference.

The hand computations run in float64 (Python's math); the loss runs in float32, so each
comparison allows the float32 error bound of a log-softmax cross-entropy (tests/fpbounds.py).
"""

import math

import numpy as np
import pytest

from fpbounds import U32, cross_entropy_error, eq11_targets, keras_smoothing_targets, mean_error
from tlres.run.losses import SmoothedCrossEntropy, keras_targets, paper_targets

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


TARGETS = {"paper": eq11_targets, "keras": keras_smoothing_targets}


def bound(form, labels=LABELS, logits=LOGITS, eps=EPS):
    """Per-example float32 error bound of the loss (log-softmax, C-term sum, rounded targets)."""
    return cross_entropy_error(logits, TARGETS[form](labels, C, eps))[0]


@pytest.mark.parametrize("form", ["paper", "keras"])
def test_per_example_loss_matches_hand_computation(form):
    loss = SmoothedCrossEntropy(C, EPS, form, reduction=None)
    got = np.asarray(loss(LABELS, LOGITS), "float64")
    assert np.all(np.abs(got - expected(form)) <= bound(form))


@pytest.mark.parametrize("form", ["paper", "keras"])
def test_mean_reduction(form):
    loss = SmoothedCrossEntropy(C, EPS, form)
    want = expected(form)
    assert abs(float(loss(LABELS, LOGITS)) - np.mean(want)) <= mean_error(bound(form), want)


def test_first_example_by_hand_digits():
    # z = (2, 1, 0 x 8): log-sum-exp = log(e^2 + e + 8)
    lse = math.log(math.e ** 2 + math.e + 8)
    paper = -(0.9 * (2 - lse) + (0.1 / 9) * ((1 - lse) + 8 * (0 - lse)))
    keras_ = -(0.91 * (2 - lse) + 0.01 * ((1 - lse) + 8 * (0 - lse)))
    got_paper = float(SmoothedCrossEntropy(C, EPS, "paper", reduction=None)(LABELS[:1], LOGITS[:1])[0])
    got_keras = float(SmoothedCrossEntropy(C, EPS, "keras", reduction=None)(LABELS[:1], LOGITS[:1])[0])
    assert abs(got_paper - paper) <= bound("paper")[0]
    assert abs(got_keras - keras_) <= bound("keras")[0]


def test_targets_follow_each_definition():
    p = np.asarray(paper_targets(np.array([2]), 5, 0.2))[0]
    k = np.asarray(keras_targets(np.array([2]), 5, 0.2))[0]
    # float32 targets: the constants, a product and a sum, each rounding once: <= 4u relative
    np.testing.assert_allclose(p, [0.05, 0.05, 0.8, 0.05, 0.05], rtol=4 * U32, atol=0)
    np.testing.assert_allclose(k, [0.04, 0.04, 0.84, 0.04, 0.04], rtol=4 * U32, atol=0)


def test_difference_has_closed_form():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(32, C)).astype(np.float32) * 3
    labels = rng.integers(0, C, 32)
    diff = (np.asarray(SmoothedCrossEntropy(C, EPS, "paper", reduction=None)(labels, logits), "float64")
            - np.asarray(SmoothedCrossEntropy(C, EPS, "keras", reduction=None)(labels, logits)))
    z = logits.astype("float64")
    lp = z - np.log(np.exp(z).sum(1, keepdims=True))
    true = lp[np.arange(32), labels]
    others = (lp.sum(1) - true) / (C - 1)
    closed = EPS / C * (true - others)
    # each float32 loss within its bound of the exact loss, and their difference rounds once more
    tol = bound("paper", labels, logits) + bound("keras", labels, logits) + U32 * np.abs(diff)
    assert np.all(np.abs(diff - closed) <= tol)
    assert np.abs(closed).max() > 100 * tol.max()  # the forms differ far beyond the tolerance


def test_zero_epsilon_is_plain_cross_entropy():
    for form in ("paper", "keras"):
        got = np.asarray(SmoothedCrossEntropy(C, 0.0, form, reduction=None)(LABELS, LOGITS), "float64")
        want = [-log_softmax_by_hand(z)[c] for z, c in zip(LOGITS, LABELS)]
        assert np.all(np.abs(got - want) <= bound(form, eps=0.0))


def _mixed_targets(n=16, seed=3):
    """MixUp-like targets w e_a + (1 - w) e_b (float32, exactly the values the loss sees)."""
    rng = np.random.default_rng(seed)
    a, b, w = rng.integers(0, C, n), rng.integers(0, C, n), rng.uniform(size=n)
    t = np.zeros((n, C))
    t[np.arange(n), a] += w
    t[np.arange(n), b] += 1 - w
    return t.astype(np.float32), (rng.normal(size=(n, C)) * 3).astype(np.float32)


@pytest.mark.parametrize("form", ["paper", "keras"])
def test_soft_targets_are_smoothed_by_the_affine_forms(form):
    """Soft (mixed) targets t: paper q = t(1-eps) + (1-t) eps/(C-1), keras q = t(1-eps) + eps/C,
    loss -sum q log_softmax(z), against float64 numpy; tolerance twice the float32 bound (the
    smoothing of t rounds a few more times than eq. 11's constants)."""
    t, logits = _mixed_targets()
    t64 = t.astype(np.float64)
    q = t64 * (1 - EPS) + ((1 - t64) * EPS / (C - 1) if form == "paper" else EPS / C)
    np.testing.assert_allclose(q.sum(axis=1), 1, atol=1e-12)
    bound, exact = cross_entropy_error(logits, q)
    got = np.asarray(SmoothedCrossEntropy(C, EPS, form, reduction=None)(t, logits), "float64")
    assert np.all(np.abs(got - exact) <= 2 * bound)


@pytest.mark.parametrize("form", ["paper", "keras"])
def test_one_hot_soft_targets_equal_integer_labels(form):
    loss = SmoothedCrossEntropy(C, EPS, form, reduction=None)
    one_hot = np.eye(C, dtype=np.float32)[LABELS]
    np.testing.assert_array_equal(np.asarray(loss(one_hot, LOGITS)), np.asarray(loss(LABELS, LOGITS)))
