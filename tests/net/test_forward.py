"""Inference through the model's one jitted forward function (`tlres.net.model.forward`).

It traces the very function Keras' predict step runs (`stateless_call`, training=False) on the
same variable values, so its logits must equal `model.predict`'s exactly, not within a bound.
"""

import numpy as np
import pytest

from tlres.net import model
from tlres.run import evaluate
from tlres.core.config import QUICK


def _net(arch, size, conv):
    return model.build(10, QUICK.replace(arch=arch, image_size=size, weights="none", conv=conv))


def test_forward_equals_predict_and_follows_training():
    from tlres.run import train

    net = _net("tiny", 8, "xla")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 8, 8, 3)).astype(np.float32)
    before = np.asarray(model.forward(net)(x))
    np.testing.assert_array_equal(before, net.predict(x, batch_size=6, verbose=0))
    train.compile_model(net, QUICK.replace(lr=0.1), 10, 1)
    net.fit(x, rng.integers(0, 10, 6), batch_size=6, epochs=1, verbose=0)  # weights and BN statistics move
    after = np.asarray(model.forward(net)(x))
    assert model.forward(net) is model.forward(net)  # built once per model
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after, net.predict(x, batch_size=6, verbose=0))


def test_predict_logits_drops_the_padding_rows():
    net = _net("tiny", 8, "xla")
    x = np.random.default_rng(1).normal(size=(8, 8, 8, 3)).astype(np.float32)  # 5 real rows, batch 4
    got = evaluate.predict_logits(net, x, 5, 4)
    assert got.shape == (5, 10) and got.dtype == np.float32
    np.testing.assert_array_equal(got, net.predict(x[:4], verbose=0).tolist() + net.predict(
        x[4:], verbose=0)[:1].tolist())


@pytest.mark.slow  # builds and compiles ResNet50 twice
def test_forward_equals_predict_on_resnet50_at_32px():
    net = _net("resnet50", 32, "matmul")  # the kernels a CPU run uses
    x = np.random.default_rng(2).normal(size=(4, 32, 32, 3)).astype(np.float32)
    got = np.asarray(model.forward(net)(x))
    assert got.shape == (4, 10) and np.all(np.isfinite(got))
    np.testing.assert_array_equal(got, net.predict(x, batch_size=4, verbose=0))
