"""--randaugment, --mixup and --cutmix on the training pipelines, each against its definition.

MixUp and CutMix run on batches of constant images (image j is the value 20 j + 10, label j),
so a mixed pixel says which images went into it and in what share; labels must say the same.
"""

import numpy as np
import pytest

from tlres.core.config import Config
from tlres.data import keras_augment as ka
from tlres.data import pipeline

C = 10
MIX = Config(batch_size=C, augment=False, seed=4)


def _constants(size=16):
    """The whole split is one batch: C images, image j constant 20 j + 10, label j."""
    values = (20 * np.arange(C) + 10).astype(np.uint8)
    return np.broadcast_to(values[:, None, None, None], (C, size, size, 3)).copy(), np.arange(C)


def _norm(v):  # the paper's normalization of a pixel value, float64
    return (np.asarray(v, np.float64) / 255 - 0.5) / 0.5


def _stream(which, cfg, epochs, x=None, y=None):
    if x is None:
        x, y = _constants()
    make = pipeline.train_dataset if which == "tf" else pipeline.jax_batches
    return [(np.asarray(bx, np.float64), np.asarray(by, np.float64)) for bx, by in make(x, y, cfg, 0, epochs)]


def _support(label):
    return [c for c in range(C) if label[c] > 0]


@pytest.mark.parametrize("which", ["jax", "tf"])
def test_mixup_mixes_labels_with_the_pixels_weight_drawn_from_beta(which):
    """Each image is w x_a + (1 - w) x_b with label w e_a + (1 - w) e_b: the weight recovered from
    the pixels is the label's. w ~ Beta(0.2, 0.2): KS test p > 0.001, mean 0.5 within 4 standard errors."""
    from scipy import stats

    alpha, weights = 0.2, []
    for bx, by in _stream(which, MIX.replace(mixup=alpha), 60):
        assert by.shape == (C, C) and np.allclose(by.sum(axis=1), 1, atol=1e-6)
        for img, label in zip(bx, by):
            assert np.ptp(img) == 0  # MixUp of constant images is constant
            support = _support(label)
            if len(support) == 1:  # mixed with itself
                assert np.isclose(img[0, 0, 0], _norm(20 * support[0] + 10), atol=1e-6)
                continue
            a, b = support
            w = (img[0, 0, 0] - _norm(20 * b + 10)) / (_norm(20 * a + 10) - _norm(20 * b + 10))
            assert abs(w - label[a]) < 1e-4 and abs((1 - w) - label[b]) < 1e-4
            weights.append(w)
    weights = np.array(weights)
    assert len(weights) > 400
    assert stats.kstest(weights, stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    se = np.sqrt(1 / (4 * (2 * alpha + 1)) / len(weights))  # Beta(a, a): variance 1 / (4 (2a + 1))
    assert abs(weights.mean() - 0.5) < 4 * se


def _bbox_filled(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return mask.sum() == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)


@pytest.mark.parametrize("which", ["jax", "tf"])
def test_cutmix_label_weight_is_the_share_of_pixels_kept(which):
    """Each image holds two values; the label weight of each is its share of the pixels exactly,
    one of the two fills a rectangle (the box)."""
    boxes = 0
    for bx, by in _stream(which, MIX.replace(cutmix=1.0), 20):
        for img, label in zip(bx, by):
            support = _support(label)
            for c in range(C):
                share = np.mean(np.isclose(img[..., 0], _norm(20 * c + 10), atol=1e-6))
                assert abs(label[c] - share) < 1e-6
            if len(support) == 2:
                masks = [np.isclose(img[..., 0], _norm(20 * c + 10), atol=1e-6) for c in support]
                assert any(_bbox_filled(m) for m in masks)
                boxes += 1
    assert boxes > 100


@pytest.mark.parametrize("which", ["jax", "tf"])
def test_mixup_and_cutmix_each_take_about_half_the_batches(which):
    """A MixUp batch has constant images only; CutMix's have two-valued ones (Binomial(60, 1/2):
    outside 15..45 with probability below 1e-4)."""
    stream = _stream(which, MIX.replace(mixup=0.2, cutmix=1.0), 60)
    mixup = sum(all(np.ptp(img) == 0 for img in bx) for bx, _ in stream)
    assert 15 <= mixup <= 45


def _instrumented(cfg, add):
    """Keras' RandAugment for cfg with operation k replaced by `+ add(k)` (a counter)."""
    ra = ka.randaugment_layer(cfg, "tf" if cfg.pipeline == "tf" else "jax")
    for k, name in enumerate(ra._AUGMENT_LAYERS):
        setattr(getattr(ra, name), "transform_images",
                lambda images, transformation=None, training=True, k=k: images + add(k))
    return ra


def _run_randaugment(ra, images, framework):
    if framework == "jax":
        import jax

        return np.asarray(jax.jit(lambda im, key: ka.randaugment_jax(ra, im, key))(images, jax.random.PRNGKey(3)))
    import tensorflow as tf

    f = tf.function(lambda im: ka.randaugment_tf(ra, im, tf.constant([3, 0], tf.int64), images.shape[0]))
    return f(tf.constant(images)).numpy()


@pytest.mark.parametrize("framework", ["jax", "tf"])
def test_randaugment_applies_n_operations_to_each_image_chosen_per_image(framework):
    """Every operation counting 1: each image counts N. Operation k adding 2^k (N = 2): each image's
    pair decodes, the pairs differ between images, and (64 images) most of the 11 operations occur."""
    zeros = np.zeros((64, 4, 4, 3), np.float32)
    for n in (1, 3):
        ra = _instrumented(Config(randaugment=f"{n},9", pipeline=framework), lambda k: 1.0)
        np.testing.assert_array_equal(_run_randaugment(ra, zeros, framework), n)
    got = _run_randaugment(_instrumented(Config(randaugment="2,9", pipeline=framework), lambda k: 2.0 ** k),
                           zeros, framework)
    pairs = []
    for img in got.astype(np.int64):
        assert np.ptp(img) == 0
        bits = [i for i in range(12) if img.flat[0] >> i & 1]
        assert len(bits) in (1, 2)
        pairs.append(tuple(bits) if len(bits) == 2 else (bits[0] - 1,) * 2)
    assert len(set(pairs)) > 10
    assert len({k for p in pairs for k in p}) >= 9


def test_randaugment_magnitude_is_keras_factor_m_over_30():
    """--randaugment N,M builds Keras' RandAugment with N operations and factor M/30: rotation angles
    drawn in [0, 360 M/30] degrees and brightness shifts in [0, 255 M/30] (Keras' ranges for that factor)."""
    import jax

    for m in (9, 30):
        ra = ka.randaugment_layer(Config(randaugment=f"2,{m}"))
        assert ra.num_ops == 2 and ra.factor == (0, m / 30) and ra.value_range == (0, 255)
        one = np.zeros((1, 8, 8, 3), np.float32)
        keys = [jax.random.PRNGKey(i) for i in range(200)]
        angles = [float(ra.random_rotation.get_random_transformation(one, seed=k)["angle"][0]) for k in keys]
        deltas = [float(ra.random_brightness.get_random_transformation(one, seed=k)["rgb_delta"].ravel()[0])
                  for k in keys]
        for got, top in ((angles, 360 * m / 30), (deltas, 255 * m / 30)):
            assert min(got) >= 0 and max(got) <= top * (1 + 1e-6) and max(got) > 0.9 * top


def test_randaugment_equalization_histogram_is_keras_own():
    """tlres' jittable histogram gives Keras' Equalization output on an image."""
    import keras

    img = np.random.default_rng(0).integers(0, 256, (1, 6, 6, 3)).astype(np.float32)
    ours = ka.randaugment_layer(Config(randaugment="1,5")).equalization
    want = keras.layers.Equalization(value_range=(0, 255)).transform_images(img, None)
    np.testing.assert_array_equal(np.asarray(ours.transform_images(img, None)), np.asarray(want))


OPTIONS = Config(batch_size=4, crop_padding=2, randaugment="2,9", mixup=0.2, cutmix=1.0, seed=6)


def _data(n=18, size=8):
    rng = np.random.default_rng(2)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 3


def _batches(stream):
    return [(np.asarray(a), np.asarray(b)) for a, b in stream]


def _assert_same(got, want):
    assert len(got) == len(want)
    for (gx, gy), (wx, wy) in zip(got, want):
        np.testing.assert_array_equal(gx, wx)
        np.testing.assert_array_equal(gy, wy)


def test_tf_options_are_a_pure_function_of_seed_epoch_and_step():
    """Two fresh tf.data pipelines give the same batches; a mid-epoch start gives that epoch's later ones."""
    x, y = _data()
    first = _batches(pipeline.train_dataset(x, y, OPTIONS, 0, 2))
    assert len(first) == 8 and first[0][1].shape == (4, 3)
    _assert_same(_batches(pipeline.train_dataset(x, y, OPTIONS, 0, 2)), first)
    _assert_same(_batches(pipeline.train_dataset(x, y, OPTIONS, 1, 2, 2)), first[6:])
    assert not np.array_equal(first[0][0], first[4][0])


@pytest.mark.slow
def test_jax_and_device_batches_with_the_options_resume_bit_for_bit(monkeypatch):
    """`jax_batches` from a mid-epoch start are that epoch's later batches, and --data-on-device
    gives `jax_batches`' very batches with RandAugment, MixUp and CutMix on (a chunk of 2: each
    chunk compiles its steps unrolled)."""
    monkeypatch.setattr(pipeline, "CHUNK", 2)
    x, y = _data()
    first = _batches(pipeline.jax_batches(x, y, OPTIONS, 0, 2))
    assert len(first) == 8 and first[0][1].shape == (4, 3)
    _assert_same(_batches(pipeline.jax_batches(x, y, OPTIONS, 1, 2, 2)), first[6:])
    _assert_same(_batches(pipeline.device_batches(x, y, OPTIONS, 0, 2)), first)


def test_mixing_with_the_jax_pipeline_split_between_processes_is_one_line():
    from tlres.core.errors import TlresError

    with pytest.raises(TlresError, match="use --pipeline tf with several processes"):
        pipeline.check(Config(mixup=0.2, num_processes=2, process_id=0, pipeline="jax"))
    pipeline.check(Config(mixup=0.2, num_processes=2, process_id=0, pipeline="tf"))
