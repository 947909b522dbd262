"""Whole-test-split evaluation: the paper's metrics, with their uncertainty.

The paper's "accuracy" is the mean of per-class accuracies (its section IV.B);
we report it as ``mean_class_accuracy`` beside plain ``accuracy`` (correct /
total). The paper's headline 93.75% vs 87.50% are 60/64 and 56/64: one batch.
Here every number is over the whole test split, with a 95% interval.
"""

import math

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(correct, n, z=Z95):
    """Wilson score interval for a binomial proportion (Wilson, 1927)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (centre - half, centre + half)


def newcombe_interval(correct_a, n_a, correct_b, n_b, z=Z95):
    """p_a - p_b and its 95% interval for two independent proportions.

    Newcombe (1998), method 10: the hybrid score interval built from the two
    Wilson intervals. Used for two single runs scored on independent samples
    (e.g. tlres' whole test split against the paper's one batch of 64).
    """
    pa, pb = correct_a / n_a, correct_b / n_b
    la, ua = wilson_interval(correct_a, n_a, z)
    lb, ub = wilson_interval(correct_b, n_b, z)
    d = pa - pb
    return d, (d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2),
               d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2))


def welch_interval(a, b, level=0.95):
    """mean(a) - mean(b) over seeds, its Welch t interval and degrees of freedom.

    Unequal variances, Welch-Satterthwaite degrees of freedom. Needs two or
    more values on each side (else the interval is (nan, nan)); zero spread on
    both sides gives a zero-width interval.
    """
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return d, (float("nan"), float("nan")), float("nan")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return d, (d, d), float("inf")
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(va + vb)
    return d, (d - half, d + half), float(df)


def detectable_welch(a, b, power=0.8, level=0.95):
    """The smallest true difference of means a Welch test over these seeds detects with `power`.

    (t_{(1+level)/2, df} + t_{power, df}) * sqrt(s_a^2/n_a + s_b^2/n_b), with the observed
    sample sds and Welch-Satterthwaite df: the usual normal-shift approximation to the
    noncentral t (e.g. Chow, Shao & Wang, Sample Size Calculations, sec. 3.2). A
    "no difference found" then reads "none larger than this". nan with fewer than two
    values a side.
    """
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return 0.0
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float((stats.t.ppf(0.5 + level / 2, df) + stats.t.ppf(power, df)) * math.sqrt(va + vb))


def detectable_proportions(p, n_a, n_b, power=0.8, level=0.95):
    """The smallest difference of two accuracies near `p`, on test sets of n_a and n_b
    images, that a two-sided z test at `level` detects with `power`:
    (z_{(1+level)/2} + z_{power}) * sqrt(p (1-p) (1/n_a + 1/n_b)) (normal approximation)."""
    from scipy import stats

    z = stats.norm.ppf(0.5 + level / 2) + stats.norm.ppf(power)
    return float(z * math.sqrt(p * (1 - p) * (1 / n_a + 1 / n_b)))


def confusion_matrix(labels, predictions, num_classes):
    """counts[i, j] = images of true class i predicted as class j."""
    return np.bincount(labels * num_classes + predictions,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def criterion(label_smoothing, smoothing_form):
    """What a run's `loss` is, in words: metrics.json's `loss_criterion`."""
    if not label_smoothing:
        return "cross-entropy (the training criterion; no label smoothing)"
    form = "the paper's eq. 11" if smoothing_form == "paper" else "Keras' and PyTorch's"
    return (f"label-smoothed cross-entropy, epsilon {label_smoothing:g}, {form} form (the training "
            "criterion; cross_entropy is the plain one)")


def metrics(logits, labels, num_classes, loss_fn=None, loss_criterion=None):
    """Every metric of metrics.json from test-set logits and integer labels.

    `loss` is `loss_fn` (the training criterion) on the test split, and `loss_criterion` says
    what that is (default: the loss_fn's own `criterion`); without a loss_fn it is plain
    cross-entropy."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    pred = logits.argmax(axis=1)
    cm = confusion_matrix(labels, pred, num_classes)
    support = cm.sum(axis=1)
    per_class = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    present = support > 0
    correct = int(np.trace(cm))
    n = len(labels)
    # Mean per-class accuracy: normal approximation of the mean of independent binomials.
    pc = per_class[present]
    mca = float(pc.mean())
    se = math.sqrt(float(np.sum(pc * (1 - pc) / support[present]))) / present.sum()
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    out = {
        "num_test": n,
        "correct": correct,
        "accuracy": correct / n,
        "accuracy_ci95": list(wilson_interval(correct, n)),
        "mean_class_accuracy": mca,
        "mean_class_accuracy_ci95": [mca - Z95 * se, mca + Z95 * se],
        "per_class_accuracy": [float(v) for v in per_class],
        "cross_entropy": float(-log_probs[np.arange(n), labels].mean()),
        "confusion_matrix": cm.tolist(),
    }
    if loss_fn is not None:  # the training criterion (label-smoothed when smoothing is on)
        out["loss"] = float(np.mean(np.asarray(loss_fn(labels, logits.astype(np.float32)))))
        out["loss_criterion"] = loss_criterion or getattr(loss_fn, "criterion", "the training criterion")
    else:
        out["loss"] = out["cross_entropy"]
        out["loss_criterion"] = loss_criterion or "cross-entropy"
    return out


def predict_logits(model, x_padded, n, batch_size):
    """Logits for the first n rows of a batch-padded, normalized test array.

    With several processes each feeds its rows of every batch and all receive every logit
    (`tlres.distributed.predict`): the whole split, evaluated once."""
    from tlres import distributed

    if distributed.processes() > 1:
        return distributed.predict(model, x_padded, batch_size)[:n]
    return model.predict(x_padded, batch_size=batch_size, verbose=0)[:n]


def prediction_metrics(labels, predictions, num_classes):
    """The metrics of metrics.json that need only predicted classes (no logits, so no loss).

    For results from another framework (`python -m tlres.results convert`):
    accuracy with its Wilson interval, mean per-class accuracy with its normal
    interval, per-class accuracy and the confusion matrix, as `metrics` computes them.
    """
    labels = np.asarray(labels, np.int64)
    predictions = np.asarray(predictions, np.int64)
    onehot = np.zeros((len(labels), num_classes))
    onehot[np.arange(len(labels)), predictions] = 1.0  # argmax = the prediction
    m = metrics(onehot, labels, num_classes)
    for k in ("cross_entropy", "loss", "loss_criterion"):  # meaningless on one-hot scores
        m.pop(k)
    return m
