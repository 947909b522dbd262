"""RandAugment, MixUp and CutMix (options beyond the paper): Keras' own layers, stateless draws.

The layers' methods are called directly: in `jax.jit` as traced JAX, in tf.data after
`backend.set_backend("tensorflow")` (a Sequential's __call__ would not switch there). Every draw takes
`seed=` a `batch_seeds` object, a SeedGenerator whose i-th draw is fold_in(batch key, i): a
batch's draws are a pure function of (seed, epoch, step) for a given Keras version, never of
a layer's own SeedGenerator state. Keras' RandAugment ignores `seed=` and picks one set of
operations per batch, so tlres draws its N operation indices and each operation's parameters
per image (vmap / map_fn over the batch) and applies Keras' operations in that order.
Two changes to Keras' definitions, both towards the papers': CutMix's label weight is the
share of pixels kept, and its Beta parameter is ALPHA (Keras draws it in [0, factor]).
"""

import functools

from tlres.core.config import randaugment_ops

RANDAUGMENT, MIX = 2, 3  # streams folded into a batch's augmentation key (flip and crop split it)
MIX_P = 0.5  # with both MixUp and CutMix on: the probability that a batch gets MixUp


@functools.cache
def _seeds_class():
    from keras.random import SeedGenerator

    class BatchSeeds(SeedGenerator):
        """Stateless seeds for Keras' random ops: the i-th draw uses fold(key, i)."""

        def __init__(self, key, fold):  # no state variable: nothing advances between batches
            self.key, self.fold, self.count = key, fold, 0

        def next(self, ordered=True):
            self.count += 1
            return self.fold(self.key, self.count)

    return BatchSeeds


def batch_seeds(key, framework):
    """Seeds for Keras' layers from a jax key or a tf stateless seed (shape (2,))."""
    if framework == "jax":
        import jax

        return _seeds_class()(key, jax.random.fold_in)
    import tensorflow as tf

    return _seeds_class()(key, tf.random.experimental.stateless_fold_in)


def _histogram(backend, values, value_range, nbins):
    """Keras' Equalization histogram as one bincount (Keras unrolls nbins compares under JAX,
    minutes of compilation); the same bins."""
    lo, hi = value_range
    scaled = (backend.cast(values, "float32") - lo) * (nbins - 1) / (hi - lo)
    flat = backend.numpy.reshape(backend.numpy.clip(backend.cast(scaled, "int32"), 0, nbins - 1), [-1])
    if backend.name == "jax":
        import jax.numpy as jnp

        return jnp.bincount(flat, length=nbins)
    return backend.numpy.bincount(flat, minlength=nbins)


def _on(framework, *layers):
    """The layers, switched to the TensorFlow backend for tf.data (framework "tf")."""
    for layer in layers:
        if layer is not None and framework == "tf":
            layer.backend.set_backend("tensorflow")
    return layers


def randaugment_layer(cfg, framework="jax"):
    """Keras' RandAugment for --randaugment N,M (N operations, factor M/30, 0..255), or None."""
    import keras

    if not cfg.randaugment:
        return None
    n, m = randaugment_ops(cfg.randaugment)
    ra = keras.layers.RandAugment(value_range=(0, 255), num_ops=n, factor=m / 30)
    eq = ra.equalization
    eq._custom_histogram_fixed_width = functools.partial(_histogram, eq.backend)
    _on(framework, ra, *(getattr(ra, k) for k in ra._AUGMENT_LAYERS))
    return ra


def mix_layers(cfg, framework="jax"):
    """(MixUp or None, CutMix or None) for --mixup / --cutmix ALPHA."""
    import keras

    mixup = keras.layers.MixUp(alpha=cfg.mixup) if cfg.mixup else None
    cutmix = None
    if cfg.cutmix:
        cutmix = keras.layers.CutMix()
        cutmix.factor = (cfg.cutmix, cfg.cutmix)  # Beta(ALPHA, ALPHA); the argument caps it at 1
    return _on(framework, mixup, cutmix)


def _draw_one(ra, batch, seeds):
    """RandAugment's draws for a batch of one image: N operation indices, each operation's parameters."""
    idx = ra.backend.random.randint((ra.num_ops,), 0, len(ra._AUGMENT_LAYERS), seed=seeds)
    return idx, {k: getattr(ra, k).get_random_transformation(batch, training=True, seed=seeds)
                 for k in ra._AUGMENT_LAYERS}


def _randaugment_one_jax(ra, image, key):
    """RandAugment on one image (H, W, C): operation idx[i] of Keras' list, i = 1..N, by
    `lax.switch` in a `fori_loop` (Keras' `transform_images` traces N x 11 operations)."""
    import jax

    batch = image[None].astype("float32")
    idx, transforms = _draw_one(ra, batch, batch_seeds(key, "jax"))
    branches = [functools.partial(lambda k, x: getattr(ra, k).transform_images(x, transforms[k]), k)
                for k in ra._AUGMENT_LAYERS]
    return jax.lax.fori_loop(0, ra.num_ops, lambda i, x: jax.lax.switch(idx[i], branches, x), batch)[0]


def randaugment_jax(ra, images, key, batch_size=None, rows=None):
    """RandAugment per image, float32 0..255; image i draws from split(key, batch_size)[i] (`rows`
    of it with several processes, so each image keeps its draws)."""
    import jax

    keys = jax.random.split(key, images.shape[0] if batch_size is None else batch_size)
    keys = keys if rows is None else keys[rows]
    return jax.vmap(lambda im, k: _randaugment_one_jax(ra, im, k))(images, keys)


def randaugment_tf(ra, images, seed, batch_size):
    """RandAugment per image inside tf.data; image i draws from stateless_split(seed, batch)[i]."""
    import tensorflow as tf

    def one(a):  # Keras' transform_images applies operation i where the image's index says i
        batch = a[0][None]
        idx, transforms = _draw_one(ra, batch, batch_seeds(a[1], "tf"))
        return ra.transform_images(batch, {"transforms": transforms, "layer_idxes": idx})[0]

    seeds = tf.random.experimental.stateless_split(seed, batch_size)
    return tf.map_fn(one, (tf.cast(images, "float32"), seeds), fn_output_signature=tf.float32)


def _cutmix_kept(cutmix, transformation):
    """CutMix's transformation with its label weight set to the share of pixels kept (Keras
    weights by the unrounded box's area, which the pasted pixels differ from)."""
    b = cutmix.backend
    mask = b.cast(transformation["batch_masks"], "float32")
    kept = 1.0 - b.numpy.mean(b.numpy.reshape(mask, [b.shape(mask)[0], -1]), axis=1)
    return {**transformation, "mix_weight": kept}


def mix(mixup, cutmix, images, labels, num_classes, seeds):
    """MixUp or CutMix (each batch one of the two, MixUp with probability `MIX_P`, when both are
    on) of a float batch and its integer labels; returns (images, soft labels (batch, classes))."""
    layer = mixup or cutmix
    b = layer.backend
    soft = b.nn.one_hot(b.cast(labels, "int32"), num_classes)
    out = []
    for lay in (mixup, cutmix):
        if lay is not None:
            t = lay.get_random_transformation(images, training=True, seed=seeds)
            t = _cutmix_kept(lay, t) if lay is cutmix else t
            out.append((lay.transform_images(images, t), lay.transform_labels(soft, t)))
    if len(out) == 1:
        return out[0]
    coin = b.random.uniform((), seed=seeds) < MIX_P
    return b.numpy.where(coin, out[0][0], out[1][0]), b.numpy.where(coin, out[0][1], out[1][1])
