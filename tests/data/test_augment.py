"""The paper's augmentation: exact flips, windows of the zero-padded image, draw statistics."""

import numpy as np
import pytest

from tlres.data import augment as aug
from tlres.core.config import QUICK


def images(n=4, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(1, 256, (n, h, w, 3), dtype=np.uint8)


def test_flip_mirrors_exactly_eq4():
    x = images()
    z = np.zeros(4, int)
    out = aug.flip_crop(np, x, np.ones(4, bool), z + 4, z + 4, padding=4)  # centre crop
    h, w = x.shape[1:3]
    for i in range(h):
        for j in range(w):
            np.testing.assert_array_equal(out[:, i, j], x[:, i, w - j - 1])


def test_no_flip_centre_crop_is_identity():
    x = images()
    z = np.zeros(4, int)
    np.testing.assert_array_equal(aug.flip_crop(np, x, np.zeros(4, bool), z + 4, z + 4, 4), x)


@pytest.mark.parametrize("dy,dx", [(0, 0), (8, 8), (0, 8), (3, 5), (7, 1)])
def test_crop_is_window_of_zero_padded_image_eq5(dy, dx):
    x = images(2)
    padded = np.zeros((2, 40, 40, 3), np.uint8)
    padded[:, 4:36, 4:36] = x
    out = aug.flip_crop(np, x, np.zeros(2, bool), np.full(2, dy), np.full(2, dx), 4)
    np.testing.assert_array_equal(out, padded[:, dy:dy + 32, dx:dx + 32])
    flipped = aug.flip_crop(np, x, np.ones(2, bool), np.full(2, dy), np.full(2, dx), 4)
    np.testing.assert_array_equal(flipped, padded[:, :, ::-1][:, dy:dy + 32, dx:dx + 32])


def test_tf_and_jax_run_the_same_definition_pixel_for_pixel():
    import jax.numpy as jnp
    import tensorflow as tf
    import tensorflow.experimental.numpy as tnp

    x = images(6)
    rng = np.random.default_rng(3)
    flip = rng.random(6) < 0.5
    dy, dx = rng.integers(0, 9, 6).astype(np.int32), rng.integers(0, 9, 6).astype(np.int32)
    ref = aug.flip_crop(np, x, flip, dy, dx, 4)
    got_tf = tf.function(lambda *a: aug.flip_crop(tnp, *a, 4))(
        tf.constant(x), tf.constant(flip), tf.constant(dy), tf.constant(dx)).numpy()
    got_jax = np.asarray(aug.flip_crop(jnp, jnp.asarray(x), jnp.asarray(flip), jnp.asarray(dy),
                                       jnp.asarray(dx), 4))
    np.testing.assert_array_equal(got_tf, ref)
    np.testing.assert_array_equal(got_jax, ref)


def _tf_draws(batches=200, batch=64):
    import tensorflow as tf

    out = [aug.draw_tf(batch, 4, tf.constant([7, i], tf.int64)) for i in range(batches)]
    return tuple(np.concatenate([d[k].numpy() for d in out]) for k in range(3))


def _jax_draws(n=12800):
    import jax

    return tuple(np.asarray(a) for a in aug.draw_jax(n, 4, jax.random.key(0)))


def _cells(dy, dx):
    return np.bincount(dy * 9 + dx, minlength=81)


# The draws below are seeded, so each check gives the same answer on every host; the thresholds
# say how unlikely a fair sampler is to fail them: a p-value under 1e-4.
P_MIN = 1e-4


@pytest.mark.parametrize("draw", [_tf_draws, _jax_draws], ids=["tf", "jax"])
def test_draws_flip_at_one_half_and_offsets_uniform_on_all_81_cells(draw):
    from scipy import stats

    flip, dy, dx = draw()
    assert len(flip) == 12800 and flip.dtype == bool
    assert stats.binomtest(int(flip.sum()), len(flip), aug.FLIP_P).pvalue > P_MIN, flip.mean()
    cells = _cells(dy, dx)
    assert cells.min() > 0 and dy.min() == dx.min() == 0 and dy.max() == dx.max() == 8
    assert stats.chisquare(cells).pvalue > P_MIN, cells  # uniform over (dy, dx) in 0..8 x 0..8


def test_tf_and_jax_draws_come_from_the_same_distribution():
    """The two pipelines draw with different generators; a two-sample chi-square test of their
    (flip, dy, dx) counts finds no difference between them."""
    from scipy import stats

    tf_flip, tf_dy, tf_dx = _tf_draws()
    jx_flip, jx_dy, jx_dx = _jax_draws()
    table = np.array([np.bincount(tf_flip * 81 + tf_dy * 9 + tf_dx, minlength=162),
                      np.bincount(jx_flip * 81 + jx_dy * 9 + jx_dx, minlength=162)])
    assert stats.chi2_contingency(table).pvalue > P_MIN
    assert not np.array_equal(tf_dy, jx_dy)  # and they are different generators, not one


def test_normalize_paper_maps_0_to_minus1_and_255_to_1():
    x = np.array([[[[0, 255, 127.5]]]])
    out = aug.normalize(np, x, "paper")
    # exact: 0/255, 255/255 and 127.5/255 = 0.5 are exact in IEEE division, and so is the rest
    np.testing.assert_array_equal(out[0, 0, 0], [-1.0, 1.0, 0.0])
    assert out.dtype == np.float32


def test_normalize_caffe_is_bgr_minus_imagenet_mean():
    x = np.array([[[[10.0, 20.0, 30.0]]]])
    # float32: the mean rounds (u of <= 124) and the subtraction rounds (u of the result, >= 73):
    # <= u (1 + 124 / 73) < 3u relative to the float64 value
    np.testing.assert_allclose(aug.normalize(np, x, "caffe")[0, 0, 0],
                               [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=3 * 2.0 ** -24, atol=0)


def _one_epoch(cfg, x, y):
    from tlres.data import pipeline

    xs, ys = [], []
    for bx, by in pipeline.train_dataset(x, y, cfg):
        xs.append(bx.numpy())
        ys.append(by.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def test_pipeline_without_augmentation_is_the_normalized_input():
    x = images(20)
    y = np.arange(20, dtype=np.int32)
    cfg = QUICK.replace(batch_size=8, augment=False)
    bx, by = _one_epoch(cfg, x, y)
    assert bx.shape == (16, 32, 32, 3)  # 20 // 8 whole batches: the ragged rest is dropped
    np.testing.assert_array_equal(bx, aug.normalize(np, x[by], "paper"))


def test_pipeline_augments_with_windows_and_reshuffles_each_epoch():
    x = images(16)
    y = np.arange(16, dtype=np.int32)
    cfg = QUICK.replace(batch_size=8, augment=True, flip=True, crop_padding=4, seed=5)
    from tlres.data import pipeline

    orders = []
    for epoch in range(2):
        ds = pipeline.train_dataset(x, y, cfg, start_epoch=epoch)
        bxs, bys = zip(*[(bx.numpy(), by.numpy()) for bx, by in ds])
        bx, by = np.concatenate(bxs), np.concatenate(bys)
        orders.append(by.tolist())
        for img, label in zip(bx, by):  # each output is some flip/window of its own input
            padded = np.zeros((40, 40, 3), np.float32) - 1.0
            padded[4:36, 4:36] = aug.normalize(np, x[label], "paper")
            candidates = [src[dy:dy + 32, dx:dx + 32] for src in (padded, padded[:, ::-1])
                          for dy in range(9) for dx in range(9)]
            assert any(np.array_equal(img, c) for c in candidates)
    assert orders[0] != orders[1]
    assert sorted(orders[0]) == list(range(16))


def test_pipeline_is_seeded():
    x, y = images(16), np.arange(16, dtype=np.int32)
    cfg = QUICK.replace(batch_size=8, augment=True, flip=True, seed=11)
    a, b = _one_epoch(cfg, x, y), _one_epoch(cfg, x, y)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = _one_epoch(cfg.replace(seed=12), x, y)  # another seed: another order and other draws
    assert a[1].tolist() != c[1].tolist()
    by_label = {int(l): img for img, l in zip(*a)}
    assert sum(not np.array_equal(by_label[int(l)], img) for img, l in zip(*c)) >= 8


def test_test_split_is_never_augmented():
    from tlres.data import pipeline

    x = images(10)
    xe, n = pipeline.eval_arrays(x, 4, "paper")
    assert n == 10 and xe.shape == (12, 32, 32, 3)  # padded to whole batches
    np.testing.assert_array_equal(xe[:10], aug.normalize(np, x, "paper"))


def test_pipeline_epoch_is_a_pure_function_of_seed_and_epoch():
    """Epoch 2 of one stream over epochs 0..2 equals epoch 2 built alone (what a resume builds)."""
    from tlres.data import pipeline

    x, y = images(24), np.arange(24, dtype=np.int32)
    cfg = QUICK.replace(batch_size=8, augment=True, flip=True, crop_padding=4, seed=3)
    stream = [(bx.numpy(), by.numpy()) for bx, by in pipeline.train_dataset(x, y, cfg, 0, 3)]
    alone = [(bx.numpy(), by.numpy()) for bx, by in pipeline.train_dataset(x, y, cfg, 2)]
    assert len(stream) == 9 and len(alone) == 3
    for (a, la), (b, lb) in zip(stream[6:], alone):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    orders = [np.concatenate([lb for _, lb in stream[i:i + 3]]).tolist() for i in (0, 3, 6)]
    assert len({tuple(o) for o in orders}) == 3  # still a new order every epoch
    assert all(sorted(o) == list(range(24)) for o in orders)
