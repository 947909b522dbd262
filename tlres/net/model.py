"""The network: ResNet50 backbone + global average pooling + a new Dense head, and its jitted
forward function.

As in the paper (eq. 2, ``model.fc = nn.Linear(2048, 10)``): the ImageNet classifier is dropped
and replaced by one Dense layer with as many outputs as the data has classes; every layer is
trained. `--arch resnet50` is Keras' ResNet v1 (stride 2 on a downsampling block's first 1x1
convolution); `--arch resnet50_v1_5` is torchvision's (`tlres.net.resnet_v15`: stride on the
3x3, the network the paper trained). Their ImageNet weights are not interchangeable
(`tlres.net.weights`); the kernels each convolution runs: `tlres.net.cpu.kernel_choice`.
"""

import random
import weakref

import numpy as np

from tlres.data import pipeline
from tlres.net import resnet_v15, weights
from tlres.net.cpu import kernel_choice


def build(num_classes, cfg):
    """The classifier for `cfg`: weights, BatchNorm settings, input size and kernels applied
    (`kernel_choice.apply_conv`, whose record `kernel_choice.conv_plan_record` reads back)."""
    import keras

    set_random_seed(cfg.seed, tensorflow=pipeline.resolve(cfg.pipeline) == "tf")
    source = weights.resolve_weights(cfg.weights, cfg.arch)
    shape = (cfg.image_size, cfg.image_size, 3)
    if cfg.arch == "tiny":
        backbone = tiny_backbone(shape)
    elif cfg.arch == resnet_v15.NAME:
        backbone = resnet_v15.resnet50_v1_5(shape)
    else:
        backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=shape)
    for layer in backbone.layers:  # PyTorch fidelity: read at call time, so set before tracing
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum, layer.epsilon = cfg.bn_momentum, cfg.bn_epsilon
    inputs = keras.Input(shape, name="image")
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone(inputs))
    logits = keras.layers.Dense(num_classes, name="head", dtype="float32")(features)
    model = keras.Model(inputs, logits, name="tlres_resnet50")
    kernel_choice.apply_conv(model, cfg.conv, cfg.batch_size)
    weights.load(model, backbone, source, cfg)
    return model


def set_random_seed(seed, tensorflow):
    """`keras.utils.set_random_seed(seed)` (Python's, NumPy's and Keras' global seeds, and
    TensorFlow's), with TensorFlow's only when `tensorflow`: Keras' own imports TensorFlow
    wherever it is installed, hundreds of MB of resident memory that training on the jax
    pipeline never uses (Keras' model-file writer still imports it when a run saves). Keras'
    part is its own code's two lines."""
    import keras

    if tensorflow:
        keras.utils.set_random_seed(seed)
        return
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


def backbone(net):
    """The part of `build`'s classifier that came with the weights: its one nested model (ResNet50,
    or tiny's three blocks). The rest, global average pooling and the new Dense `head`, is the head."""
    import keras

    (inner,) = [layer for layer in net.layers if isinstance(layer, keras.Model)]
    return inner


def tiny_backbone(shape):
    """Three conv-BN-ReLU blocks: the same plumbing as ResNet50 in a fraction of the time."""
    import keras
    from keras import layers

    inputs = keras.Input(shape)
    x = inputs
    for i, width in enumerate((8, 16, 32)):
        x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU()(x)
    return keras.Model(inputs, x, name="tiny")


_FORWARD = weakref.WeakKeyDictionary()


def forward(net):
    """`net`'s inference function x -> logits, one jitted program per batch shape.

    Built once per model (`stateless_call`, training=False, as Keras' predict step) and called
    with the variables' current values, so it follows training; it skips `predict`'s and
    `predict_on_batch`'s per-call machinery, which on a GPU cost more than the forward pass.
    Returns a device array: the caller syncs when it reads it.
    """
    fn = _FORWARD.get(net)
    if fn is None:
        import jax

        ref = weakref.ref(net)  # the cache must not keep the model alive
        step = jax.jit(lambda tv, ntv, x: ref().stateless_call(tv, ntv, x, training=False)[0])

        def fn(x):
            model = ref()
            sync = getattr(model, "jax_state_sync", None)  # inside fit: the state fit holds
            if sync is not None:
                sync()
            return step([v.value for v in model.trainable_variables],
                        [v.value for v in model.non_trainable_variables], x)

        _FORWARD[net] = fn
    return fn
