"""Input pipelines: tf.data or JAX for training, plain numpy for evaluation.

`train_data(x, y, cfg)` picks one (``--pipeline``): ``tf`` (`train_dataset`: tf.data traces
`tlres.data.augment`) or ``jax`` (`jax_batches`: a jitted JAX function augments on the device;
nothing imports tensorflow, so ``auto`` picks it where tensorflow is missing). With
``--data-on-device`` (`device_batches`) the whole uint8 split is held on the device and batches
are built there, `CHUNK` per jitted call. Epoch e's order is a permutation drawn from (seed, e),
remainder dropped, and batch b augments with the key (seed, e, b), so a resumed run sees the very
batches an uninterrupted one would. Order: flip and crop, --randaugment per image, normalization,
--mixup / --cutmix (soft labels) on the batch (`keras_augment`, draws from the batch's key too).
Evaluation never augments or mixes: it normalizes in numpy and pads to whole batches.
"""

import numpy as np

from tlres.data import augment as aug, keras_augment as ka
from tlres.core.errors import TlresError

_SHUFFLE, _AUGMENT = 0, 1  # stream ids folded into the seed: independent draws

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


def train_data(x, y, cfg, start_epoch=0, end_epoch=None, start_step=0, rows=None, num_classes=None):
    """The training input for `model.fit`, from the pipeline `cfg.pipeline` names.

    `start_step` skips the first batches of `start_epoch` (a mid-epoch resume): the rest
    are the very batches, with the same augmentation draws, that epoch has from the start.
    `rows`: this process' rows of every global batch, with several processes (jax pipeline).
    `num_classes`: the soft labels' width with --mixup / --cutmix (default: max(y) + 1).
    """
    if resolve(cfg.pipeline) == "jax":
        batches = device_batches if cfg.data_on_device else jax_batches
        return batches(x, y, cfg, start_epoch, end_epoch, start_step, rows=rows, num_classes=num_classes)
    return train_dataset(x, y, cfg, start_epoch, end_epoch, start_step, num_classes=num_classes)


def mixing(cfg):
    """Whether batches are mixed (--mixup or --cutmix): the labels are then soft, (batch, classes)."""
    return bool(cfg.mixup or cfg.cutmix)


_SPLIT_MIX = ("--mixup and --cutmix mix images across the whole batch, which the jax pipeline "
              "splits between processes; use --pipeline tf with several processes")


def _check_size(x, cfg, rows=None):
    if len(x) < cfg.batch_size:
        raise TlresError(f"the training split has {len(x)} images, fewer than one batch "
                         f"of {cfg.batch_size}; lower --batch-size")
    if rows is not None and mixing(cfg):
        raise TlresError(_SPLIT_MIX)


def check(cfg):
    """Settings the pipelines cannot honour, found before anything is built."""
    if mixing(cfg) and (cfg.num_processes or 1) > 1 and resolve(cfg.pipeline) == "jax":
        raise TlresError(_SPLIT_MIX)
    if cfg.data_on_device and resolve(cfg.pipeline) != "jax":
        raise TlresError(f"--data-on-device builds the jax pipeline's batches on the device, but the "
                         f"pipeline is {resolve(cfg.pipeline)}; add --pipeline jax")


def device_transform(cfg, rows=None, normalize=True):
    """jitted (uint8 batch, key) -> normalized float32 batch: augmentation on the device.

    `rows` (a slice of a global batch of cfg.batch_size): the images are those rows of it, and
    get those rows' draws, the draws of the whole batch being made from `key` as in one process.
    --randaugment draws from fold_in(key, RANDAUGMENT), per image (`keras_augment.randaugment_jax`).
    normalize=False: the augmented uint8 batch instead (float32 0..255 with --randaugment).
    """
    import jax
    import jax.numpy as jnp

    ra = ka.randaugment_layer(cfg)

    def transform(images, key):
        if cfg.augment:
            if rows is None:
                flip, dy, dx = aug.draw_jax(images.shape[0], cfg.crop_padding, key)
            else:
                flip, dy, dx = (d[rows] for d in aug.draw_jax(cfg.batch_size, cfg.crop_padding, key))
            images = aug.augment(jnp, images, flip, dy, dx, cfg.crop_padding, cfg.flip)
        if ra is not None:
            images = ka.randaugment_jax(ra, images, jax.random.fold_in(key, ka.RANDAUGMENT),
                                        None if rows is None else cfg.batch_size, rows)
        return aug.normalize(jnp, images, cfg.input_norm) if normalize else images

    return jax.jit(transform)


def device_mixed(cfg, num_classes, rows=None, normalize=True):
    """jitted (uint8 batch, int labels, key) -> (`device_transform`'s batch mixed, soft labels),
    MixUp / CutMix drawn from fold_in(key, MIX); None without --mixup and --cutmix. One program
    for both steps, on either path: XLA fuses them, and two programs would round differently."""
    import jax

    if not mixing(cfg):
        return None
    transform, (mixup, cutmix) = device_transform(cfg, rows, normalize), ka.mix_layers(cfg)

    def batch(images, labels, key):
        seeds = ka.batch_seeds(jax.random.fold_in(key, ka.MIX), "jax")
        return ka.mix(mixup, cutmix, transform(images, key), labels, num_classes, seeds)

    return jax.jit(batch)


def _num_classes(y, num_classes):
    return int(np.max(y)) + 1 if num_classes is None else num_classes


def jax_batches(x, y, cfg, start_epoch=0, end_epoch=None, start_step=0, rows=None, num_classes=None):
    """(normalized batch on the device, int32 labels) for epochs start_epoch..end_epoch-1, tensorflow-free.

    As with `train_dataset`, epoch e is a pure function of (seed, e): its order is
    a numpy permutation seeded with (seed, e) (remainder dropped), and batch b's
    augmentation key is fold_in(fold_in(PRNGKey(seed), e), b). With --mixup / --cutmix the
    labels are soft (`device_mixed`, the same key).

    With several processes each yields only its `rows` of every global batch
    (`tlres.run.distributed.local_rows`), gathered and augmented as in one process; Keras'
    trainer assembles the global batch (`jax.make_array_from_process_local_data`).
    """
    import jax

    _check_size(x, cfg, rows)
    end_epoch = start_epoch + 1 if end_epoch is None else end_epoch
    transform, mixed = device_transform(cfg, rows), device_mixed(cfg, _num_classes(y, num_classes), rows)
    bs, steps = cfg.batch_size, len(x) // cfg.batch_size
    y = np.asarray(y, np.int32)
    base = jax.random.PRNGKey(cfg.seed)

    def batches():
        for e in range(start_epoch, end_epoch):
            order = np.random.default_rng([cfg.seed, e]).permutation(len(x))
            key = jax.random.fold_in(base, e)
            for b in range(start_step if e == start_epoch else 0, steps):
                idx = np.sort(order[b * bs:(b + 1) * bs])  # sorted: a faster gather, same set
                if rows is not None:
                    idx = idx[rows]
                k = jax.random.fold_in(key, b)
                yield (transform(x[idx], k), y[idx]) if mixed is None else mixed(x[idx], y[idx], k)

    return batches()


CHUNK = 8
"""Batches the device path builds per dispatch (one jitted call returns this many)."""


def _device_chunk(cfg, rows=None, normalize=True, num_classes=None):
    """jitted (images, labels, index (k, batch), epoch key, first step) -> k (batch, labels) pairs.

    Each is what `jax_batches` yields for that step: row i of `index` sorted (its gather order),
    this process' `rows` of it, gathered and transformed with key fold_in(epoch key, first + i).
    The k steps are unrolled (a `lax.map` would compile once, but XLA fuses MixUp's arithmetic
    differently there: results one float32 ulp off `jax_batches`'), so --randaugment, --mixup and
    --cutmix take k times as long to compile here as on the host path.
    """
    import jax
    import jax.numpy as jnp

    transform, mixed = device_transform(cfg, rows, normalize), device_mixed(cfg, num_classes, rows, normalize)

    def step(images, labels, row, key):
        idx = jnp.sort(row)
        if rows is not None:
            idx = idx[rows]
        batch, labels = jnp.take(images, idx, axis=0), jnp.take(labels, idx, axis=0)
        return (transform(batch, key), labels) if mixed is None else mixed(batch, labels, key)

    def chunk(images, labels, index, key, first):
        return tuple(step(images, labels, index[i], jax.random.fold_in(key, first + i))  # unrolled
                     for i in range(index.shape[0]))

    return jax.jit(chunk)


def _to_device(x, y):
    """The uint8 split and int32 labels on the default device, once; a split too large is one line."""
    import jax

    need = x.nbytes + 4 * len(y)
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # backends without memory statistics (the CPU): host memory holds x already
        stats = {}
    free = stats.get("bytes_limit", 0) - stats.get("bytes_in_use", 0)
    if stats.get("bytes_limit") and need > free // 2:  # half: the model and its batches need the rest
        raise TlresError(f"--data-on-device: the training split ({need / 2**30:.2f} GiB as uint8) needs "
                         f"more than half the device's free memory ({free / 2**30:.2f} GiB); "
                         "drop --data-on-device")
    return jax.device_put(x), jax.device_put(np.asarray(y, np.int32))


def device_batches(x, y, cfg, start_epoch=0, end_epoch=None, start_step=0, normalize=True, rows=None,
                   num_classes=None):
    """`jax_batches`' very batches, built on the device from the split held there whole.

    The split is copied to the device once; each epoch's permutation is the same numpy draw
    from (seed, e) (n indices, uploaded a chunk at a time), and the gather, sort, augmentation
    draws and transform of `CHUNK` batches run as one jitted call (one program: a short last
    chunk is padded, its extra batches unused). normalize=False yields the
    augmented uint8 batches instead (what the float batches are made from).
    """
    import jax

    _check_size(x, cfg, rows)
    end_epoch = start_epoch + 1 if end_epoch is None else end_epoch
    chunk = _device_chunk(cfg, rows, normalize, _num_classes(y, num_classes))
    bs, steps = cfg.batch_size, len(x) // cfg.batch_size
    images, labels = _to_device(x, y)
    base = jax.random.PRNGKey(cfg.seed)

    def batches():
        for e in range(start_epoch, end_epoch):
            order = np.random.default_rng([cfg.seed, e]).permutation(len(x))
            index = order[:steps * bs].reshape(steps, bs).astype(np.int32)
            key = jax.random.fold_in(base, e)
            for b in range(start_step if e == start_epoch else 0, steps, CHUNK):
                part = index[b:b + CHUNK]
                k = len(part)  # a short last chunk is padded to CHUNK: one program, extras unused
                part = np.concatenate([part, np.repeat(part[-1:], CHUNK - k, axis=0)])
                yield from chunk(images, labels, part, key, b)[:k]

    return batches()


def train_dataset(x, y, cfg, start_epoch=0, end_epoch=None, start_step=0, num_classes=None):
    """(normalized float32 batch, int32 or soft labels) for epochs start_epoch..end_epoch-1.

    `end_epoch` defaults to start_epoch + 1 (one epoch). Each epoch is exactly
    len(x) // batch_size batches, so `model.fit(steps_per_epoch=...)` consumes
    one epoch of this stream per Keras epoch. `start_step` drops the first batches
    of `start_epoch` (before they are gathered or augmented); each batch keeps its
    own step number, hence its augmentation key (folded with `keras_augment.RANDAUGMENT` / `MIX`).

    With several processes this is still the global stream: Keras' DataParallel gives
    each process its rows of every batch (`Distribution.distribute_dataset`: rebatch
    into per-process parts, then shard by process).
    """
    import tensorflow as tf
    import tensorflow.experimental.numpy as tnp

    _check_size(x, cfg)
    end_epoch = start_epoch + 1 if end_epoch is None else end_epoch
    n, bs, classes = len(x), cfg.batch_size, _num_classes(y, num_classes)
    ra, (mixup, cutmix) = ka.randaugment_layer(cfg, "tf"), ka.mix_layers(cfg, "tf")
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
        seed = fold(fold(fold(base, _AUGMENT), e), step)
        if cfg.augment:
            flip, dy, dx = aug.draw_tf(bs, cfg.crop_padding, seed)
            batch_x = aug.augment(tnp, batch_x, flip, dy, dx, cfg.crop_padding, cfg.flip)
        if ra is not None:
            batch_x = ka.randaugment_tf(ra, batch_x, fold(seed, ka.RANDAUGMENT), bs)
        batch_x = aug.normalize(tnp, batch_x, cfg.input_norm)
        if mixup or cutmix:
            seeds = ka.batch_seeds(fold(seed, ka.MIX), "tf")
            return ka.mix(mixup, cutmix, batch_x, batch_y, classes, seeds)
        return batch_x, batch_y

    ds = tf.data.Dataset.range(start_epoch, end_epoch).flat_map(epoch).skip(start_step)
    ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_arrays(x, batch_size, input_norm):
    """Normalized test images padded to whole batches, and the real count."""
    n = len(x)
    pad = (-n) % batch_size
    if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    return aug.normalize(np, x, input_norm), n
