"""torchvision's ResNet50 (v1.5, the paper's network) on plain Keras layers: `--arch resnet50_v1_5`.

`keras.applications.ResNet50` (`--arch resnet50`) is ResNet v1: a downsampling block puts its
stride on the first 1x1 convolution, and its convolutions have biases. torchvision's v1.5 puts
the stride on the 3x3, has no convolution bias and starts from Kaiming-normal (fan_out) weights.
This module builds the latter layer for layer, padding as torch pads (the note above `resnet50_v1_5`), with layer
names that mirror torchvision's parameters ("." -> "_": `conv1`, `layer1_0_conv1`,
`layer2_0_downsample_0`, ...), so a torchvision or timm state dict loads by a rename
(`tlres.net.convert`). Written here, not taken from keras-hub: keras-hub needs full tensorflow
(through tensorflow-text), at odds with tlres' tensorflow-cpu and TensorFlow-free `--pipeline jax`.
"""

NAME = "resnet50_v1_5"
STAGES = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))
"""(blocks, width, stride of the first block) of layer1..layer4; a block outputs 4 x width."""


# Padding follows torch exactly. torch pads symmetrically; Keras' "same" pads a stride-2
# convolution of an even-sized input only at the bottom/right, so every strided convolution here
# is an explicit `ZeroPadding2D` + "valid" convolution (as Keras' own ResNet50 does for its stem).
# Stride-1 3x3 convolutions use "same", which is symmetric (one pixel each side). torch's max-pool
# pads with -inf; here the pool's input is post-ReLU (>= 0) and every 3x3 window of the padded
# map holds at least one real pixel, so zero padding gives the same maxima.
def resnet50_v1_5(input_shape, name=NAME):
    """The backbone without avgpool and fc: image (H, W, 3) -> (H/32, W/32, 2048) features."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = _conv(64, 7, 2, "conv1")(x)
    x = _bn("bn1")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.ZeroPadding2D(1, name="maxpool_pad")(x)  # >= 0 inputs: zeros act as torch's -inf
    x = layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for i, (blocks, width, stride) in enumerate(STAGES, start=1):
        for j in range(blocks):
            x = bottleneck(x, width, stride if j == 0 else 1, f"layer{i}_{j}", downsample=j == 0)
    return keras.Model(inputs, x, name=name)


def bottleneck(x, width, stride, name, downsample):
    """torchvision's Bottleneck: 1x1 -> 3x3 (stride here, v1.5) -> 1x1 (4 x width), + shortcut, ReLU."""
    from keras import layers

    shortcut = x
    y = layers.ReLU(name=f"{name}_relu1")(_bn(f"{name}_bn1")(_conv(width, 1, 1, f"{name}_conv1")(x)))
    if stride == 1:
        y = _conv(width, 3, 1, f"{name}_conv2", padding="same")(y)
    else:
        y = _conv(width, 3, stride, f"{name}_conv2")(layers.ZeroPadding2D(1, name=f"{name}_pad2")(y))
    y = layers.ReLU(name=f"{name}_relu2")(_bn(f"{name}_bn2")(y))
    y = _bn(f"{name}_bn3")(_conv(4 * width, 1, 1, f"{name}_conv3")(y))
    if downsample:  # 1x1 stride s + BN: torchvision's downsample.0 / downsample.1
        shortcut = _bn(f"{name}_downsample_1")(_conv(4 * width, 1, stride, f"{name}_downsample_0")(x))
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([y, shortcut]))


def _conv(filters, kernel, stride, name, padding="valid"):
    import keras

    # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), i.e. N(0, 2 / (k*k*out))
    init = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                               kernel_initializer=init, name=name)


def _bn(name):
    import keras

    # torch's BatchNorm2d defaults (momentum 0.1 = Keras 0.9); tlres.net.model.build sets Config's values
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)
