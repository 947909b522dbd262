"""Input pipelines: tf.data for training, plain numpy for evaluation.

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


def train_dataset(x, y, cfg):
    """A tf.data.Dataset of (normalized float32 batch, int32 labels)."""
    import tensorflow as tf
    import tensorflow.experimental.numpy as tnp

    if len(x) < cfg.batch_size:
        from tlres.errors import TlresError

        raise TlresError(f"the training split has {len(x)} images, fewer than one batch "
                         f"of {cfg.batch_size}; lower --batch-size")
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
