"""The device-resident input path (--data-on-device): the jax pipeline's very batches, bit for bit."""

import numpy as np
import pytest

from tlres.data import augment as aug
from tlres.data import pipeline
from tlres.core.config import QUICK
from tlres.core.errors import TlresError

# 37 images of batch 4: 9 steps an epoch (one chunk of 8 and one of 1), one image dropped
CFG = QUICK.replace(arch="tiny", image_size=8, batch_size=4, augment=True, flip=True, crop_padding=2,
                    seed=5, pipeline="jax")


def _data(n=37, size=8, classes=3):
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % classes


def _stream(batches):
    return [(np.asarray(bx), np.asarray(by)) for bx, by in batches]


@pytest.mark.parametrize("start_epoch,start_step", [(0, 0), (1, 3), (1, 8)])
def test_device_batches_are_the_host_batches_bit_for_bit(start_epoch, start_step):
    """Same normalized floats and labels as `jax_batches`, also from a mid-epoch start (a resume)."""
    x, y = _data()
    host = _stream(pipeline.jax_batches(x, y, CFG, start_epoch, 3, start_step))
    dev = _stream(pipeline.train_data(x, y, CFG.replace(data_on_device=True), start_epoch, 3, start_step))
    assert len(dev) == len(host) == 9 * (3 - start_epoch) - start_step
    for (hx, hy), (dx, dy) in zip(host, dev):
        assert hx.dtype == dx.dtype == np.float32 and hx.shape == dx.shape == (4, 8, 8, 3)
        np.testing.assert_array_equal(dx, hx)
        np.testing.assert_array_equal(dy, hy)
    if start_step:  # and those are the uninterrupted epoch's batches from that step on
        whole = _stream(pipeline.device_batches(x, y, CFG, start_epoch, 3))
        for (wx, wy), (dx, dy) in zip(whole[start_step:], dev):
            np.testing.assert_array_equal(dx, wx)
            np.testing.assert_array_equal(dy, wy)


def test_device_uint8_batches_follow_the_documented_order_and_draws():
    """uint8 batch b of epoch e: the sorted slice b of numpy's permutation seeded (seed, e), flipped
    and cropped per image by the draws of key fold_in(fold_in(PRNGKey(seed), e), b)."""
    import jax

    x, y = _data()
    got = _stream(pipeline.device_batches(x, y, CFG, 0, 2, normalize=False))
    assert len(got) == 18
    for e in range(2):
        order = np.random.default_rng([CFG.seed, e]).permutation(len(x))
        for b in range(9):
            idx = np.sort(order[4 * b:4 * b + 4])
            key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(CFG.seed), e), b)
            flip, dy, dx = (np.asarray(a) for a in aug.draw_jax(4, 2, key))
            want = []
            for i, img in enumerate(x[idx]):  # pad by 2, flip the padded image, take the window
                p = np.pad(img, ((2, 2), (2, 2), (0, 0)))
                p = p[:, ::-1] if flip[i] else p
                want.append(p[dy[i]:dy[i] + 8, dx[i]:dx[i] + 8])
            bx, by = got[9 * e + b]
            assert bx.dtype == np.uint8
            np.testing.assert_array_equal(bx, np.stack(want))
            np.testing.assert_array_equal(by, y[idx])


def _fit_losses(cfg, x, y, steps):
    import keras

    from tlres.net import model
    from tlres.run import train

    net = model.build(3, cfg)
    train.compile_model(net, cfg, 3, steps)
    losses = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append(float(logs["loss"]))

    net.fit(pipeline.train_data(x, y, cfg, 0, 2), epochs=2, steps_per_epoch=steps, shuffle=False,
            callbacks=[Record()], verbose=0)
    return losses, [np.asarray(w) for w in net.weights]


def test_tiny_net_trains_to_the_same_losses_and_weights_on_either_path():
    x, y = _data()
    host_losses, host_weights = _fit_losses(CFG, x, y, 9)
    dev_losses, dev_weights = _fit_losses(CFG.replace(data_on_device=True), x, y, 9)
    assert len(host_losses) == 18 and np.all(np.isfinite(host_losses))
    assert dev_losses == host_losses  # exact: the same batches through the same compiled step
    assert len(set(host_losses)) > 1  # it trained
    for a, b in zip(host_weights, dev_weights):
        np.testing.assert_array_equal(a, b)


def test_data_on_device_needs_the_jax_pipeline():
    with pytest.raises(TlresError, match="^--data-on-device builds the jax pipeline's batches on the "
                                         "device, but the pipeline is tf; add --pipeline jax$"):
        pipeline.check(CFG.replace(pipeline="tf", data_on_device=True))
    pipeline.check(CFG.replace(data_on_device=True))  # jax: fine
