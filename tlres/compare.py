"""Statistics for comparing two runs on the same test set (issue #5, partial).

Only the paired tests are here so far: McNemar's exact test on per-example
correctness, the agreement rate and the confusion-matrix difference. The CLI
(`python -m tlres.compare SOURCE...`), the results schema and the plots are not
written yet.
"""

import math

import numpy as np


def binom_cdf_half(k, n):
    """P(X <= k) for X ~ Binomial(n, 1/2), exact in rationals then as float."""
    if k < 0:
        return 0.0
    return sum(math.comb(n, i) for i in range(0, min(k, n) + 1)) / 2 ** n


def mcnemar_exact(correct_a, correct_b):
    """Two-sided exact McNemar test on paired per-example correctness.

    b = examples A gets right and B wrong, c = the reverse. Returns
    (b, c, p) with p = min(1, 2 * P(X <= min(b, c))), X ~ Bin(b + c, 1/2);
    p = 1 when b + c = 0.
    """
    a = np.asarray(correct_a, bool)
    bb = np.asarray(correct_b, bool)
    if a.shape != bb.shape:
        raise ValueError(f"paired predictions differ in length: {a.shape} vs {bb.shape}")
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    if b + c == 0:
        return b, c, 1.0
    return b, c, min(1.0, 2.0 * binom_cdf_half(min(b, c), b + c))


def paired(labels, pred_a, pred_b, num_classes):
    """McNemar, agreement rate and confusion-matrix difference (A - B) for one test set."""
    from tlres.evaluate import confusion_matrix

    labels, pred_a, pred_b = (np.asarray(v) for v in (labels, pred_a, pred_b))
    b, c, p = mcnemar_exact(pred_a == labels, pred_b == labels)
    return {
        "n": int(labels.size),
        "only_a_correct": b,
        "only_b_correct": c,
        "mcnemar_p": p,
        "agreement": float(np.mean(pred_a == pred_b)),
        "accuracy_difference": float(np.mean(pred_a == labels) - np.mean(pred_b == labels)),
        "confusion_difference": (confusion_matrix(labels, pred_a, num_classes)
                                 - confusion_matrix(labels, pred_b, num_classes)).tolist(),
    }
