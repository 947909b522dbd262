"""Cosine annealing: PyTorch's CosineAnnealingLR values per epoch, CosineDecay per step."""

import math
import types

import pytest

from tlres.config import IMPROVED
from tlres.schedules import EpochCosine, current_lr, learning_rate


def test_per_epoch_values_hand_computed():
    # T = 4, eta_max = 1, eta_min = 0: (1 + cos(pi t / 4)) / 2
    import keras

    cb = EpochCosine(epochs=4, lr_max=1.0, lr_min=0.0)
    cb.set_model(types.SimpleNamespace(optimizer=keras.optimizers.SGD(0.5)))
    got = []
    for t in range(4):
        cb.on_epoch_begin(t)
        got.append(current_lr(cb.model.optimizer))
    assert got == pytest.approx([1.0, 0.8535533905932737, 0.5, 0.14644660940672627], rel=1e-6)


@pytest.mark.parametrize("lr_max,lr_min,T", [(0.01, 0.0, 50), (0.1, 1e-4, 7)])
def test_per_epoch_equation_14_every_epoch(lr_max, lr_min, T):
    import keras

    cb = EpochCosine(T, lr_max, lr_min)
    cb.set_model(types.SimpleNamespace(optimizer=keras.optimizers.SGD(1.0)))
    for t in range(T):
        cb.on_epoch_begin(t)
        want = lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * t / T)) / 2
        assert current_lr(cb.model.optimizer) == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_per_step_endpoints_and_midpoint():
    cfg = IMPROVED.replace(schedule="cosine-step", lr=0.1, lr_min=0.001, epochs=10)
    sched, callbacks = learning_rate(cfg, steps_per_epoch=20)
    assert callbacks == []
    assert float(sched(0)) == pytest.approx(0.1, rel=1e-6)
    assert float(sched(100)) == pytest.approx((0.1 + 0.001) / 2, rel=1e-6)
    assert float(sched(200)) == pytest.approx(0.001, rel=1e-5)


def test_constant_schedule():
    lr, callbacks = learning_rate(IMPROVED.replace(schedule="constant", lr=0.3), 10)
    assert lr == 0.3 and callbacks == []
