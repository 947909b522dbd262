"""The paper's augmentation and input normalization, defined once.

Every function here is written against a numpy-like module ``xp`` and runs unchanged with
``numpy`` (the tests' reference), ``jax.numpy`` (on device) and ``tensorflow.experimental.numpy``
(inside tf.data). Only the random draws differ per framework (`draw_tf`, `draw_jax`), from the
same distribution: flip with probability ``FLIP_P``, crop offsets uniform in ``0..2*padding``.
Order, as the paper lists it (eqs. 4-5): flip, then zero-pad and crop; normalization after, so
padded pixels are black before it, as torchvision's ``RandomCrop(32, padding=4)`` + ``Normalize``.
"""

FLIP_P = 0.5
PAPER_MEAN, PAPER_STD = 0.5, 0.5  # eq. 7, per channel, on [0, 1] pixels
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # Keras' imagenet_utils "caffe" mode
NORM_FORMULAS = {"paper": "(x / 255 - 0.5) / 0.5 per channel",
                 "caffe": "RGB -> BGR, then subtract the BGR mean (103.939, 116.779, 123.68)"}


def flip_crop(xp, images, flip, dy, dx, padding):
    """Flip where ``flip``, then take the window at (dy, dx) of the zero-padded image.

    images: (B, H, W, C); flip: (B,) bool; dy, dx: (B,) ints in [0, 2*padding].
    Returns (B, H, W, C) of the same dtype.
    """
    _, h, w, _ = images.shape
    padded = xp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="constant")
    rows = dy[:, None] + xp.arange(h, dtype=dy.dtype)[None, :]
    cols = dx[:, None] + xp.arange(w, dtype=dx.dtype)[None, :]
    # Flipping the padded image maps column c to (W + 2p - 1 - c).
    cols = xp.where(flip[:, None], w + 2 * padding - 1 - cols, cols)
    out = xp.take_along_axis(padded, rows[:, :, None, None], axis=1)
    return xp.take_along_axis(out, cols[:, None, :, None], axis=2)


def normalize(xp, images, mode="paper"):
    """uint8-valued RGB images -> float32 model input.

    paper: (x/255 - 0.5)/0.5 per channel, so 0 -> -1 and 255 -> 1 (eq. 6-7).
    caffe: RGB -> BGR and subtract the ImageNet BGR mean, no scaling: what
    Keras' ResNet50 ImageNet weights were trained with.
    """
    x = xp.asarray(images, dtype="float32")
    if mode == "paper":
        return (x / 255.0 - PAPER_MEAN) / PAPER_STD
    if mode == "caffe":
        return x[..., ::-1] - xp.asarray(CAFFE_BGR_MEAN, dtype="float32")
    raise ValueError(f"unknown input normalization {mode!r}")


def augment(xp, images, flip, dy, dx, padding, use_flip=True):
    """The training transform for given draws; padding=0 disables the crop."""
    if not use_flip:
        flip = xp.zeros_like(flip)
    if padding == 0:
        dy, dx = xp.zeros_like(dy), xp.zeros_like(dx)
    return flip_crop(xp, images, flip, dy, dx, padding)


def draw_tf(batch, padding, seed):
    """Flip decisions and crop offsets for one batch, stateless in ``seed`` (shape (2,))."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 3)
    flip = tf.random.stateless_uniform([batch], seeds[0]) < FLIP_P
    dy = tf.random.stateless_uniform([batch], seeds[1], 0, 2 * padding + 1, dtype=tf.int32)
    dx = tf.random.stateless_uniform([batch], seeds[2], 0, 2 * padding + 1, dtype=tf.int32)
    return flip, dy, dx


def draw_jax(batch, padding, key):
    import jax

    kf, ky, kx = jax.random.split(key, 3)
    flip = jax.random.uniform(kf, (batch,)) < FLIP_P
    dy = jax.random.randint(ky, (batch,), 0, 2 * padding + 1)
    dx = jax.random.randint(kx, (batch,), 0, 2 * padding + 1)
    return flip, dy, dx
