"""Input pipelines: tf.data for training, plain numpy for evaluation.

Training, epoch e: a permutation of the training split drawn from the
stateless key (seed, e) -> batches of it with the remainder dropped (one static
shape, one compiled step) -> gather, augment and normalize on the whole batch
(`tlres.augment`, traced by tf.data) -> prefetch. Batch b of epoch e draws its
augmentation from the stateless key (seed, e, b).

So every epoch's data order and augmentation are a pure function of
(seed, epoch): a different order each epoch, yet the same order for epoch e
whether the process trained epochs 0..e-1 itself or resumed from a checkpoint
(`train_dataset(..., start_epoch=e)`). tf.data's `reshuffle_each_iteration`
would not give that: its order for an epoch depends on how many times this
process already iterated the dataset.

Evaluation never augments: it normalizes the test split in numpy, and pads it
to whole batches so inference compiles once; padded rows are dropped again.
"""

import numpy as np

from tlres import augment as aug

_SHUFFLE, _AUGMENT = 0, 1  # stream ids folded into the seed: independent draws


def train_dataset(x, y, cfg, start_epoch=0, end_epoch=None):
    """(normalized float32 batch, int32 labels) for epochs start_epoch..end_epoch-1.

    `end_epoch` defaults to start_epoch + 1 (one epoch). Each epoch is exactly
    len(x) // batch_size batches, so `model.fit(steps_per_epoch=...)` consumes
    one epoch of this stream per Keras epoch.
    """
    import tensorflow as tf
    import tensorflow.experimental.numpy as tnp

    if len(x) < cfg.batch_size:
        from tlres.errors import TlresError

        raise TlresError(f"the training split has {len(x)} images, fewer than one batch "
                         f"of {cfg.batch_size}; lower --batch-size")
    end_epoch = start_epoch + 1 if end_epoch is None else end_epoch
    n, bs = len(x), cfg.batch_size
    steps = n // bs
    images, labels = tf.constant(x), tf.constant(y)
    base = tf.constant([cfg.seed, 0], tf.int64)
    fold = tf.random.experimental.stateless_fold_in

    def epoch(e):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=fold(fold(base, _SHUFFLE), e))
        index = tf.reshape(order[:steps * bs], (steps, bs))
        return tf.data.Dataset.from_tensor_slices(
            (index, tf.fill([steps], e), tf.range(steps, dtype=tf.int64)))

    def transform(index, e, step):
        batch_x, batch_y = tf.gather(images, index), tf.gather(labels, index)
        if cfg.augment:
            seed = fold(fold(fold(base, _AUGMENT), e), step)
            flip, dy, dx = aug.draw_tf(bs, cfg.crop_padding, seed)
            batch_x = aug.augment(tnp, batch_x, flip, dy, dx, cfg.crop_padding, cfg.flip)
        return aug.normalize(tnp, batch_x, cfg.input_norm), batch_y

    ds = tf.data.Dataset.range(start_epoch, end_epoch).flat_map(epoch)
    ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_arrays(x, batch_size, input_norm):
    """Normalized test images padded to whole batches, and the real count."""
    n = len(x)
    pad = (-n) % batch_size
    if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    return aug.normalize(np, x, input_norm), n
