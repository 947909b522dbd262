"""Cosine annealing: PyTorch's CosineAnnealingLR values per epoch, CosineDecay per step."""

import math
import types

import pytest

from fpbounds import U32
from tlres.core.config import IMPROVED

# The per-epoch rate is eq. 14 in float64 Python, stored once in the optimizer's float32
# variable: one rounding, <= u = 2**-24 relative.
STORED = U32
# current_lr shows that float32 as its shortest round-tripping decimal, which lies within half a
# float32 ulp of it (<= u relative) again: the shown rate is within 2u of the float64 value.
SHOWN = STORED + U32
from tlres.run.schedules import EpochCosine, current_lr, learning_rate


def test_per_epoch_values_hand_computed():
    # T = 4, eta_max = 1, eta_min = 0: (1 + cos(pi t / 4)) / 2
    import keras

    cb = EpochCosine(epochs=4, lr_max=1.0, lr_min=0.0)
    cb.set_model(types.SimpleNamespace(optimizer=keras.optimizers.SGD(0.5)))
    got = []
    for t in range(4):
        cb.on_epoch_begin(t)
        got.append(current_lr(cb.model.optimizer))
    assert got == pytest.approx([1.0, 0.8535533905932737, 0.5, 0.14644660940672627], rel=SHOWN, abs=0)


@pytest.mark.parametrize("lr_max,lr_min,T", [(0.01, 0.0, 50), (0.1, 1e-4, 7)])
def test_per_epoch_equation_14_every_epoch(lr_max, lr_min, T):
    import keras

    cb = EpochCosine(T, lr_max, lr_min)
    cb.set_model(types.SimpleNamespace(optimizer=keras.optimizers.SGD(1.0)))
    for t in range(T):
        cb.on_epoch_begin(t)
        want = lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * t / T)) / 2
        assert current_lr(cb.model.optimizer) == pytest.approx(want, rel=SHOWN, abs=0)


def cosine_decay_error(f, alpha):
    """Relative float32 error bound of Keras' CosineDecay, lr * ((1 - alpha) cd + alpha) with
    cd = (1 + cos(pi f)) / 2: pi * f rounds twice (2u relative, times |sin|), cos itself to 2u
    absolute, the sum to u |1 + cos|; then the blend and the product round 2u and u."""
    x = math.pi * f
    e_cd = 0.5 * (2 * U32 * x * abs(math.sin(x)) + 2 * U32 + U32 * (1 + math.cos(x)))
    decayed = (1 - alpha) * 0.5 * (1 + math.cos(x)) + alpha
    return ((1 - alpha) * e_cd + 2 * U32 * decayed) / decayed + U32


def test_per_step_endpoints_and_midpoint():
    cfg = IMPROVED.replace(schedule="cosine-step", lr=0.1, lr_min=0.001, epochs=10)
    sched, callbacks = learning_rate(cfg, steps_per_epoch=20)
    assert callbacks == []
    alpha = 0.001 / 0.1
    for step, want in ((0, 0.1), (100, (0.1 + 0.001) / 2), (200, 0.001)):
        # the bound: 3.0e-7 at the start, 5.4e-7 midway, 6.1e-6 at the end, where the rate is
        # alpha = 1% of its peak and the cosine's absolute u becomes ~100u relative
        assert float(sched(step)) == pytest.approx(want, rel=cosine_decay_error(step / 200, alpha), abs=0)


def test_constant_schedule():
    lr, callbacks = learning_rate(IMPROVED.replace(schedule="constant", lr=0.3), 10)
    assert lr == 0.3 and callbacks == []
