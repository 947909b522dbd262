"""Cosine annealing (the paper's eq. 14) per epoch and per step, and a constant rate.

Per epoch, as PyTorch's ``CosineAnnealingLR(T_max=epochs, eta_min)`` stepped once
after every epoch: epoch t (0-based) trains at

    eta_t = eta_min + (eta_max - eta_min) * (1 + cos(pi * t / T)) / 2.

Per step: ``keras.optimizers.schedules.CosineDecay`` over all training steps,
from eta_max at step 0 to eta_min at the last.
"""

import math

import keras
import numpy as np


def cosine(t, total, lr_max, lr_min=0.0):
    """Eq. 14 in closed form."""
    return lr_min + (lr_max - lr_min) * (1.0 + math.cos(math.pi * t / total)) / 2.0


class EpochCosine(keras.callbacks.Callback):
    """Sets the optimizer's rate to `cosine(epoch, epochs, ...)` before each epoch."""

    def __init__(self, epochs, lr_max, lr_min=0.0):
        super().__init__()
        self.epochs, self.lr_max, self.lr_min = epochs, lr_max, lr_min

    def on_epoch_begin(self, epoch, logs=None):
        self.model.optimizer.learning_rate = cosine(epoch, self.epochs, self.lr_max, self.lr_min)


def learning_rate(cfg, steps_per_epoch):
    """The optimizer's `learning_rate` argument and the callbacks that drive it."""
    if cfg.schedule == "cosine-step":
        total = cfg.epochs * steps_per_epoch
        alpha = cfg.lr_min / cfg.lr if cfg.lr else 0.0
        return keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=total, alpha=alpha), []
    if cfg.schedule == "cosine-epoch":
        return cfg.lr, [EpochCosine(cfg.epochs, cfg.lr, cfg.lr_min)]
    if cfg.schedule == "constant":
        return cfg.lr, []
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def current_lr(optimizer):
    """The rate the optimizer applies at its current step: the float32 it holds, as the shortest
    decimal that identifies that float32 (0.001, not 0.0010000000474974513)."""
    lr = np.float32(keras.ops.convert_to_numpy(optimizer.learning_rate))
    return float(str(lr))  # numpy prints a float32 with the fewest digits that round-trip it
