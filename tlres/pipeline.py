"""Input pipelines: tf.data or JAX for training, plain numpy for evaluation.

`train_data(x, y, cfg)` picks one of two training pipelines (``--pipeline``):

* ``tf`` (`train_dataset`): tf.data, described below.
* ``jax`` (`jax_batches`): a seeded numpy permutation per epoch (remainder
  dropped) gathers uint8 batches, and one jitted JAX function runs the same
  `tlres.augment.augment` / `normalize` on the device with `draw_jax` draws.
  Nothing on this path imports tensorflow, so it runs where tensorflow is not
  installed (``auto`` picks it then). Both paths draw flips and offsets from
  the same distribution; they are not the same random streams.

Training: shuffle (seeded, reshuffled every epoch) -> batch with the remainder
dropped (one static shape, one compiled step) -> augment and normalize on the
whole batch (`tlres.augment`, traced by tf.data) -> prefetch. Each batch's
random draws come from a seeded `tf.data.Dataset.random` stream, so a run is
reproducible from its seed.

Evaluation never augments: it normalizes the test split in numpy, and pads it
to whole batches so inference compiles once; padded rows are dropped again.
"""

import numpy as np

from tlres import augment as aug


def resolve(name):
    """``auto`` -> ``tf`` when tensorflow is importable, else ``jax`` (without importing it)."""
    if name != "auto":
        return name
    import importlib.util

    try:
        found = importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        found = False
    return "tf" if found else "jax"


def train_data(x, y, cfg):
    """The training input for `model.fit`, from the pipeline `cfg.pipeline` names."""
    _check_size(x, cfg.batch_size)
    if resolve(cfg.pipeline) == "jax":
        return jax_batches(x, y, cfg)
    return train_dataset(x, y, cfg)


def _check_size(x, batch_size):
    if len(x) < batch_size:
        from tlres.errors import TlresError

        raise TlresError(f"the training split has {len(x)} images, fewer than one batch "
                         f"of {batch_size}; lower --batch-size")


def device_transform(cfg):
    """jitted (uint8 batch, key) -> normalized float32 batch: augmentation on the device."""
    import jax
    import jax.numpy as jnp

    def transform(images, key):
        if cfg.augment:
            flip, dy, dx = aug.draw_jax(images.shape[0], cfg.crop_padding, key)
            images = aug.augment(jnp, images, flip, dy, dx, cfg.crop_padding, cfg.flip)
        return aug.normalize(jnp, images, cfg.input_norm)

    return jax.jit(transform)


def jax_batches(x, y, cfg):
    """An endless iterator of (normalized batch on the device, int32 labels), tensorflow-free.

    Epoch e visits the images in a permutation drawn from a numpy generator
    seeded with ``cfg.seed`` (a new permutation each epoch, remainder
    dropped); batch t's augmentation key is ``fold_in(PRNGKey(seed), t)``.
    """
    import jax

    _check_size(x, cfg.batch_size)
    transform = device_transform(cfg)
    bs, steps = cfg.batch_size, len(x) // cfg.batch_size
    y = np.asarray(y, np.int32)

    def batches():
        rng = np.random.default_rng(cfg.seed)
        base = jax.random.PRNGKey(cfg.seed)
        t = 0
        while True:
            order = rng.permutation(len(x))
            for i in range(steps):
                idx = np.sort(order[i * bs:(i + 1) * bs])  # sorted: a faster gather, same set
                yield transform(x[idx], jax.random.fold_in(base, t)), y[idx]
                t += 1

    return batches()


def train_dataset(x, y, cfg):
    """A tf.data.Dataset of (normalized float32 batch, int32 labels)."""
    import tensorflow as tf
    import tensorflow.experimental.numpy as tnp

    _check_size(x, cfg.batch_size)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(len(x), seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(cfg.batch_size, drop_remainder=True)
    seeds = tf.data.Dataset.random(seed=cfg.seed, rerandomize_each_iteration=True).batch(2)

    def transform(batch, seed):
        images, labels = batch
        if cfg.augment:
            flip, dy, dx = aug.draw_tf(cfg.batch_size, cfg.crop_padding, seed)
            images = aug.augment(tnp, images, flip, dy, dx, cfg.crop_padding, cfg.flip)
        return aug.normalize(tnp, images, cfg.input_norm), labels

    ds = tf.data.Dataset.zip((ds, seeds)).map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_arrays(x, batch_size, input_norm):
    """Normalized test images padded to whole batches, and the real count."""
    n = len(x)
    pad = (-n) % batch_size
    if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    return aug.normalize(np, x, input_norm), n
