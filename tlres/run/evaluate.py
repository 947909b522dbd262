"""Whole-test-split evaluation: the paper's metrics, with their uncertainty.

The paper's "accuracy" is the mean of per-class accuracies (its section IV.B);
we report it as ``mean_class_accuracy`` beside plain ``accuracy`` (correct /
total). The paper's headline 93.75% vs 87.50% are 60/64 and 56/64: one batch.
Here every number is over the whole test split, with a 95% interval (`tlres.core.stats`).
"""

import math

import numpy as np

from tlres.run import distributed
from tlres.core.stats import Z95, wilson_interval
from tlres.net.model import forward


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

    Through the model's one jitted forward function (`tlres.net.model.forward`), every batch
    dispatched before any is read. With several processes each feeds its rows of every batch
    and all receive every logit (`tlres.run.distributed.predict`): the whole split, evaluated once."""
    fwd = forward(model)
    if distributed.processes() > 1:
        return distributed.predict(fwd, x_padded, batch_size)[:n]
    out = [fwd(x_padded[b:b + batch_size]) for b in range(0, len(x_padded), batch_size)]
    return np.concatenate([np.asarray(o, np.float32) for o in out])[:n]


def prediction_metrics(labels, predictions, num_classes):
    """The metrics of metrics.json that need only predicted classes (no logits, so no loss).

    For results from another framework (`tlres results convert`):
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
