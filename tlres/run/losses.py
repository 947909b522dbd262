"""Label-smoothed cross-entropy in its two named forms, on integer labels or soft targets, and logits.

With C classes, smoothing eps and true class c, the targets q are
``paper`` (eq. 11): q_c = 1 - eps, q_i = eps / (C - 1) for i != c; ``keras`` (Keras'
``CategoricalCrossentropy(label_smoothing=eps)``, PyTorch's too): q_c = 1 - eps + eps/C,
q_i = eps / C. The loss is -sum_i q_i log softmax(z)_i (eq. 16); with eps = 0 both are plain
cross-entropy. For log-probabilities l,
loss_paper - loss_keras = (eps / C) * (l_c - mean_{i != c} l_i) (docs/presets.md).
Both are affine in the one-hot vector t, so a mixed target t (--mixup, --cutmix: (batch, C))
is smoothed by the same formulas: paper t(1-eps) + (1-t) eps/(C-1), keras t(1-eps) + eps/C.
"""

import keras
from keras import ops

from tlres.run.evaluate import criterion


def paper_targets(labels, num_classes, epsilon):
    return paper_smoothing(ops.one_hot(labels, num_classes), num_classes, epsilon)


def keras_targets(labels, num_classes, epsilon):
    return ops.one_hot(labels, num_classes) * (1.0 - epsilon) + epsilon / num_classes


def paper_smoothing(t, num_classes, epsilon):
    """eq. 11 applied to a target distribution t (one-hot or mixed), (batch, C)."""
    return t * (1.0 - epsilon) + (1.0 - t) * (epsilon / (num_classes - 1))


class SmoothedCrossEntropy(keras.losses.Loss):
    """Cross-entropy of logits against label-smoothed targets from integer labels (batch,) or
    soft targets (batch, C) (mixed labels)."""

    def __init__(self, num_classes, epsilon=0.1, form="paper", reduction="sum_over_batch_size",
                 name=None):
        super().__init__(name=name or f"ce_{form}_ls{epsilon:g}", reduction=reduction)
        if form not in ("paper", "keras"):
            raise ValueError(f"unknown smoothing form {form!r}")
        self.num_classes, self.epsilon, self.form = num_classes, float(epsilon), form
        if form == "keras":
            self._keras = keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=self.epsilon, reduction=None)

    @property
    def criterion(self):
        """In words, for metrics.json's `loss_criterion`."""
        return criterion(self.epsilon, self.form)

    def call(self, y_true, y_pred):
        logits = ops.cast(y_pred, "float32")  # the loss is always computed in float32
        if len(y_true.shape) == 2 and y_true.shape[-1] == self.num_classes and self.num_classes > 1:
            t = ops.cast(y_true, "float32")  # soft targets
        else:
            t = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), self.num_classes)
        if self.form == "keras":
            return self._keras(t, logits)
        targets = paper_smoothing(t, self.num_classes, self.epsilon)
        return -ops.sum(targets * ops.log_softmax(logits, axis=-1), axis=-1)

    def get_config(self):
        return {"num_classes": self.num_classes, "epsilon": self.epsilon, "form": self.form,
                "name": self.name, "reduction": self.reduction}
