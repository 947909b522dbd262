"""Cosine annealing (the paper's eq. 14) per epoch and per step, and a constant rate.

Per epoch, as PyTorch's ``CosineAnnealingLR(T_max=epochs, eta_min)`` stepped once
after every epoch: epoch t (0-based) trains at

    eta_t = eta_min + (eta_max - eta_min) * (1 + cos(pi * t / T)) / 2.

Per step: ``keras.optimizers.schedules.CosineDecay`` over all training steps,
from eta_max at step 0 to eta_min at the last. --warmup-epochs W (`Warmup`): the first W
epochs' steps ramp up linearly, then the schedule runs as over a run of epochs - W epochs.
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


class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup per step into --schedule, as a function of the optimizer's step (so a resumed
    run, mid-epoch too, continues the same rates). With w = warmup_epochs * steps_per_epoch,
    step s < w trains at lr*(s+1)/w (torch's LinearLR(start_factor=1/w, total_iters=w-1)); from
    step w on, as torch's SequentialLR(milestones=[w]) hands over: cosine-epoch, epoch t trains at
    `cosine(t - warmup_epochs, epochs - warmup_epochs)` (each epoch's rate rounded once to float32,
    as `EpochCosine` stores it); cosine-step, CosineDecay over the remaining steps; constant, lr."""

    def __init__(self, schedule, lr, lr_min, epochs, warmup_epochs, steps_per_epoch):
        self.schedule, self.lr, self.lr_min, self.epochs = schedule, lr, lr_min, epochs
        self.warmup_epochs, self.steps_per_epoch = warmup_epochs, steps_per_epoch
        self.warmup_steps, left = warmup_epochs * steps_per_epoch, epochs - warmup_epochs
        self.rates = np.float32([cosine(t, left, lr, lr_min) for t in range(left)])
        self.decay = keras.optimizers.schedules.CosineDecay(
            lr, decay_steps=left * steps_per_epoch, alpha=lr_min / lr if lr else 0.0)

    def __call__(self, step):
        from keras import ops

        step = ops.cast(step, "int32")
        warm = ops.cast(step + 1, "float32") * self.lr / self.warmup_steps
        after = ops.maximum(step - self.warmup_steps, 0)
        if self.schedule == "cosine-epoch":
            rest = ops.take(self.rates, ops.minimum(after // self.steps_per_epoch, len(self.rates) - 1))
        elif self.schedule == "cosine-step":
            rest = self.decay(after)
        else:
            rest = ops.cast(self.lr, "float32")
        return ops.where(step < self.warmup_steps, warm, rest)

    def get_config(self):
        return {"schedule": self.schedule, "lr": self.lr, "lr_min": self.lr_min, "epochs": self.epochs,
                "warmup_epochs": self.warmup_epochs, "steps_per_epoch": self.steps_per_epoch}


def learning_rate(cfg, steps_per_epoch):
    """The optimizer's `learning_rate` argument and the callbacks that drive it."""
    if cfg.schedule not in ("cosine-step", "cosine-epoch", "constant"):
        raise ValueError(f"unknown schedule {cfg.schedule!r}")
    if cfg.warmup_epochs:
        return Warmup(cfg.schedule, cfg.lr, cfg.lr_min, cfg.epochs, cfg.warmup_epochs, steps_per_epoch), []
    if cfg.schedule == "cosine-step":
        total = cfg.epochs * steps_per_epoch
        alpha = cfg.lr_min / cfg.lr if cfg.lr else 0.0
        return keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=total, alpha=alpha), []
    if cfg.schedule == "cosine-epoch":
        return cfg.lr, [EpochCosine(cfg.epochs, cfg.lr, cfg.lr_min)]
    return cfg.lr, []  # constant


def current_lr(optimizer):
    """The rate the optimizer applies at its current step: the float32 it holds, as the shortest
    decimal that identifies that float32 (0.001, not 0.0010000000474974513)."""
    lr = np.float32(keras.ops.convert_to_numpy(optimizer.learning_rate))
    return float(str(lr))  # numpy prints a float32 with the fewest digits that round-trip it
