"""The im2col + matmul convolution (`--conv matmul`, the CPU default) against two references:
a direct numpy convolution written from the definition, and XLA's own (keras.ops.conv)."""

import numpy as np
import pytest

from tlres import model as model_lib
from tlres.config import IMPROVED


def numpy_conv(x, w, stride, padding):
    """out[b, i, j, o] = sum_{u, v, c} xpad[b, i*s + u, j*s + v, c] * w[u, v, c, o].

    "same" as TensorFlow defines it: out = ceil(n / s), total padding
    max((out - 1) * s + k - n, 0), the smaller half before.
    """
    b, h, wd, _ = x.shape
    kh, kw, _, co = w.shape
    if padding == "same":
        ho, wo = -(-h // stride), -(-wd // stride)
        th, tw = max((ho - 1) * stride + kh - h, 0), max((wo - 1) * stride + kw - wd, 0)
        x = np.pad(x, ((0, 0), (th // 2, th - th // 2), (tw // 2, tw - tw // 2), (0, 0)))
    else:
        ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((b, ho, wo, co))
    for i in range(ho):
        for j in range(wo):
            window = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.einsum("buvc,uvco->bo", window, w)
    return out


CASES = [  # (h, w, cin, cout, k, stride, padding): ResNet50's shapes at 32 px and the awkward ones
    (8, 8, 4, 5, 3, 1, "same"),
    (2, 2, 8, 4, 3, 1, "same"),     # stage 4 at 32 px: the case XLA:CPU is slow on
    (1, 1, 8, 4, 3, 1, "same"),     # stage 5 at 32 px: only the centre tap sees data
    (6, 6, 2, 3, 3, 2, "same"),     # even size, stride 2: padding (0, 1), as the tiny net
    (7, 5, 2, 3, 2, 1, "same"),     # even kernel, non-square input
    (38, 38, 3, 4, 7, 2, "valid"),  # the stem after its ZeroPadding2D(3)
    (8, 8, 6, 4, 1, 2, "valid"),    # v1's strided 1x1 at a downsampling block
    (4, 4, 6, 4, 1, 1, "valid"),
]


@pytest.mark.parametrize("h,w,cin,cout,k,stride,padding", CASES)
def test_matmul_conv_equals_the_definition_and_xla(h, w, cin, cout, k, stride, padding):
    from keras import ops

    rng = np.random.default_rng(h * 100 + k)
    x = rng.normal(size=(3, h, w, cin)).astype("float32")
    kern = rng.normal(size=(k, k, cin, cout)).astype("float32")
    got = np.asarray(model_lib.matmul_conv(x, kern, (stride, stride), padding))
    np.testing.assert_allclose(got, numpy_conv(x.astype("float64"), kern.astype("float64"), stride, padding),
                               rtol=1e-4, atol=1e-4)
    xla = np.asarray(ops.conv(x, kern, strides=stride, padding=padding))
    np.testing.assert_allclose(got, xla, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5]])
def test_matmul_conv_gradients_equal_xla_ones(case):
    import jax
    import jax.numpy as jnp
    from keras import ops

    h, w, cin, cout, k, stride, padding = case
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, h, w, cin)), "float32")
    kern = jnp.asarray(rng.normal(size=(k, k, cin, cout)), "float32")
    probe = jnp.asarray(rng.normal(size=np.asarray(ops.conv(x, kern, stride, padding)).shape), "float32")

    def grads(conv):
        return jax.grad(lambda a, b: jnp.sum(conv(a, b) * probe), argnums=(0, 1))(x, kern)

    for g, ref in zip(grads(lambda a, b: model_lib.matmul_conv(a, b, (stride, stride), padding)),
                      grads(lambda a, b: ops.conv(a, b, strides=stride, padding=padding))):
        np.testing.assert_allclose(np.asarray(g), np.asarray(ref), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["tiny", "resnet50"])
def test_whole_model_computes_the_same_function_with_either_kernel(arch):
    cfg = IMPROVED.replace(arch=arch, weights="none", seed=3)
    xla, mm = model_lib.build(10, cfg.replace(conv="xla")), model_lib.build(10, cfg.replace(conv="matmul"))
    mm.set_weights(xla.get_weights())
    assert len(model_lib.conv2d_layers(mm)) == (3 if arch == "tiny" else 53)
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    for training in (False, True):
        a, b = np.asarray(xla(x, training=training)), np.asarray(mm(x, training=training))
        assert np.abs(a).max() > 1e-3  # a real signal, not two zero outputs
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-4 * np.abs(a).max())


def test_auto_is_matmul_on_cpu_and_xla_on_gpu(monkeypatch):
    """ResNet50 has 53 convolutions: 36 1x1 (2 per block x 16 + 4 shortcuts), 16 3x3, the 7x7 stem."""
    import jax

    cfg = IMPROVED.replace(weights="none")
    assert model_lib.conv_plan(model_lib.build(10, cfg)) == "matmul 53/53"
    assert model_lib.conv_plan(model_lib.build(10, cfg.replace(conv="xla"))) == "matmul 0/53"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert model_lib.conv_plan(model_lib.build(10, cfg)) == "matmul 0/53"
    assert model_lib.conv_plan(model_lib.build(10, cfg.replace(conv="matmul"))) == "matmul 53/53"
