"""The im2col + matmul convolution (`--conv matmul`, the CPU default), and convolutions whose parts
run either kernel (`kernels.conv`), against two references: a direct convolution written from the
definition (numpy, float64), and XLA's own (keras.ops.conv).

Tolerances come from float32 error bounds against float64 references (tests/fpbounds.py), so they
hold on any CPU (AVX2, AVX-512) and XLA version, whatever summation order each picks.
"""

import functools
import itertools
import types

import numpy as np
import pytest

from fpbounds import U32, U64, float32_products, float64_keras, gamma
from tlres.net import model as model_lib
from tlres.net.cpu import kernel_choice
from tlres.net.cpu import kernels
from tlres.core.config import IMPROVED


def _padded(x, kh, kw, stride, padding):
    """(x zero-padded, its top and left padding, output height and width), as TensorFlow defines
    "same": out = ceil(n / s), total padding max((out - 1) * s + k - n, 0), the smaller half before."""
    _, h, wd, _ = x.shape
    if padding != "same":
        return x, 0, 0, (h - kh) // stride + 1, (wd - kw) // stride + 1
    ho, wo = -(-h // stride), -(-wd // stride)
    th, tw = max((ho - 1) * stride + kh - h, 0), max((wo - 1) * stride + kw - wd, 0)
    x = np.pad(x, ((0, 0), (th // 2, th - th // 2), (tw // 2, tw - tw // 2), (0, 0)))
    return x, th // 2, tw // 2, ho, wo


def numpy_conv(x, w, stride, padding):
    """out[b, i, j, o] = sum_{u, v, c} xpad[b, i*s + u, j*s + v, c] * w[u, v, c, o]."""
    kh, kw, _, co = w.shape
    x, _, _, ho, wo = _padded(x, kh, kw, stride, padding)
    out = np.zeros((x.shape[0], ho, wo, co))
    for i in range(ho):
        for j in range(wo):
            window = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            out[:, i, j, :] = np.einsum("buvc,uvco->bo", window, w)
    return out


def numpy_conv_grads(x, w, p, stride, padding):
    """d/dx and d/dw of sum(conv(x, w) * p), from the definition above: each output (i, j) adds
    p[:, i, j] times the kernel to its window of x, and p[:, i, j] times that window to the kernel."""
    kh, kw, _, _ = w.shape
    xp, top, left, ho, wo = _padded(x, kh, kw, stride, padding)
    gx, gw = np.zeros(xp.shape), np.zeros(w.shape)
    for i in range(ho):
        for j in range(wo):
            rows, cols = slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw)
            gw += np.einsum("buvc,bo->uvco", xp[:, rows, cols, :], p[:, i, j, :])
            gx[:, rows, cols, :] += np.einsum("uvco,bo->buvc", w, p[:, i, j, :])
    return gx[:, top:top + x.shape[1], left:left + x.shape[2], :], gw


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
    exact = numpy_conv(x.astype("float64"), kern.astype("float64"), stride, padding)
    # Each output is a dot of K = k*k*cin float32 products: within gamma(K) * sum|x*w| of the exact
    # value in any summation order (Higham eq. 3.5); the float64 reference's own error is that
    # bound with u = 2**-53, added so that the bound is against the exact value.
    K = k * k * cin
    terms = numpy_conv(np.abs(x).astype("float64"), np.abs(kern).astype("float64"), stride, padding)
    bound = (gamma(K) + gamma(K, U64)) * terms
    with float32_products():
        got = np.asarray(kernels.matmul_conv(x, kern, (stride, stride), padding), "float64")
        xla = np.asarray(ops.conv(x, kern, strides=stride, padding=padding), "float64")
    assert got.shape == xla.shape == exact.shape
    assert np.all(np.abs(got - exact) <= bound), np.max(np.abs(got - exact) / bound)
    assert np.all(np.abs(xla - exact) <= bound), np.max(np.abs(xla - exact) / bound)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3], CASES[5], CASES[6]])
def test_matmul_conv_gradients_equal_xla_ones(case):
    import jax
    import jax.numpy as jnp
    from keras import ops

    h, w, cin, cout, k, stride, padding = case
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, h, w, cin)).astype("float32")
    kern = rng.normal(size=(k, k, cin, cout)).astype("float32")
    out_shape = numpy_conv(x, kern, stride, padding).shape
    probe = rng.normal(size=out_shape).astype("float32")

    def grads(conv, a, b, p):
        return jax.grad(lambda a, b: jnp.sum(conv(a, b) * p), argnums=(0, 1))(a, b)

    def xla_conv(a, b):
        return ops.conv(a, b, strides=stride, padding=padding)

    x64, k64, p64 = (v.astype("float64") for v in (x, kern, probe))
    exact = numpy_conv_grads(x64, k64, p64, stride, padding)  # the exact gradients (float64)
    # d/dx: each element sums at most k*k*cout products |k|*|probe|; d/dkernel: each sums
    # 2*ho*wo products |x|*|probe| (the batch of 2 times the output map).
    terms = (numpy_conv_grads(x64, np.abs(k64), np.abs(p64), stride, padding)[0],
             numpy_conv_grads(np.abs(x64), k64, np.abs(p64), stride, padding)[1])
    counts = (k * k * cout, 2 * out_shape[1] * out_shape[2])
    convs = [lambda a, b: kernels.matmul_conv(a, b, (stride, stride), padding), xla_conv]
    convs += [functools.partial(kernels.conv, strides=(stride, stride), padding=padding, parts=parts)
              for parts in itertools.product(kernels.FORMS, repeat=3)]  # each part in either form
    with float32_products():
        for conv in convs:
            for g, ref, t, n in zip(grads(conv, jnp.asarray(x), jnp.asarray(kern), jnp.asarray(probe)),
                                    exact, terms, counts):
                bound = (gamma(n) + gamma(n, U64)) * t  # Higham eq. 3.5, as above
                assert np.all(np.abs(np.asarray(g, "float64") - ref) <= bound), \
                    np.max(np.abs(np.asarray(g, "float64") - ref) / bound)


def test_the_gradient_keeps_the_input_not_the_patches():
    """A k x k convolution's gradient rebuilds its patches from the input (`kernels.im2col_matmul`):
    each more 3x3 layer of a chain adds to the compiled gradient's temporary memory less than the
    k*k times larger patches of that layer (XLA's own buffer assignment, no timing)."""
    import jax
    import jax.numpy as jnp

    x = jnp.zeros((8, 16, 16, 32))
    patch_bytes = 8 * 16 * 16 * 32 * 9 * 4  # one layer's float32 patches

    def temp_bytes(layers):
        def loss(x, ws):
            for w in ws:
                x = jax.nn.relu(kernels.matmul_conv(x, w, (1, 1), "same"))
            return jnp.sum(x)
        ws = [jnp.zeros((3, 3, 32, 32))] * layers
        grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
        return grad.lower(x, ws).compile().memory_analysis().temp_size_in_bytes

    assert (temp_bytes(6) - temp_bytes(2)) / 4 < patch_bytes


def test_patch_matmul_gradients_in_bfloat16():
    """Under mixed_bfloat16 the matmul form's operands are bfloat16: its own gradient (written out,
    `kernels.patch_matmul`) has the operands' dtypes, as JAX's gradient of the matmul has, and is
    within the bfloat16 bound of the exact (float64) gradient: each element a sum of n products,
    within gamma(n, 2**-8) * sum|terms| (Higham eq. 3.5 with bfloat16's unit roundoff) plus the
    rounding of its inputs and of the result to bfloat16 (2**-8 relative each)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(5)
    p = rng.normal(size=(2, 3, 5, 12))
    w = rng.normal(size=(12, 7))
    g = rng.normal(size=(2, 3, 5, 7))
    pb, wb, gb = (jnp.asarray(v, "bfloat16") for v in (p, w, g))
    p64, w64, g64 = (np.asarray(v, "float64") for v in (pb, wb, gb))  # the inputs as rounded

    def loss(matmul):
        return lambda a, b: jnp.sum((matmul(a, b) * gb).astype("float32"))

    ours = jax.grad(loss(kernels.patch_matmul), argnums=(0, 1))(pb, wb)
    jaxs = jax.grad(loss(jnp.matmul), argnums=(0, 1))(pb, wb)
    exact = (g64 @ w64.T, np.einsum("bhwk,bhwn->kn", p64, g64))
    terms = (np.abs(g64) @ np.abs(w64).T, np.einsum("bhwk,bhwn->kn", np.abs(p64), np.abs(g64)))
    counts = (7, 2 * 3 * 5)
    ub = 2.0 ** -8
    for got, ref, t, n, theirs in zip(ours, exact, terms, counts, jaxs):
        assert got.dtype == theirs.dtype == jnp.bfloat16 and got.shape == ref.shape
        bound = gamma(n, ub) * t + ub * np.abs(ref)
        err = np.abs(np.asarray(got, "float64") - ref)
        assert np.all(err <= bound), np.max(err / bound)


def _logits(net, weights, x, training, head=None):
    """The model's logits from `weights` (reset first: a training-mode call moves BatchNorm's
    moving statistics). With `head` = (features model, W, b): the head computed in numpy float64."""
    net.set_weights(weights)
    if head is None:
        return np.asarray(net(x, training=training), "float64")
    feats, wh, bh = head
    return np.asarray(feats(x, training=training), "float64") @ wh + bh


@pytest.mark.parametrize("arch", ["tiny", "resnet50"])
def test_whole_model_computes_the_same_function_with_either_kernel(arch, monkeypatch):
    """Both kernels against a float64 run of the same model, weights and input.

    Float64 (every layer, BatchNormalization included: tests/fpbounds.float64_keras): the two
    kernels compute the same function, to float64 rounding (the check that a wrong tap, stride or
    padding fails by O(1)). Float32: each kernel is within B of the float64
    logits. B is a float32 error bound propagated through this very network in float64: every
    convolution output and every head logit is moved by its float32 dot-product error bound
    sqrt(K) * u * sum|x * w| (Higham & Mary, SIAM J. Sci. Comput. 41(5), 2019: the probabilistic
    bound, lambda = 1), with random signs, and B is the largest change of any logit over three such
    draws. The network's own amplification is in B: in training mode BatchNorm normalizes ResNet50's
    last stage over 4 values per channel (1x1 maps, batch 4) and magnifies every earlier rounding
    error, which is why float32 logits there are ~1e-3 (relative) from float64 (measured on an
    AVX-512 CPU: 0.0068 at |logit| <= 6.7, against B = 0.25; the kernels differ by 6e-12 in
    float64, against B * 2**-29 = 4.7e-10). The
    elementwise layers (BatchNorm, ReLU, add, pooling) round to about u per operand, sqrt(K) >= 5
    times below a convolution's sqrt(K) u; real float32 dots err far below sqrt(K) u sum|x*w|.
    """
    import keras
    from keras import ops

    cfg = IMPROVED.replace(arch=arch, weights="none", seed=3, conv="xla")
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    modes = (False, True)
    with float32_products():
        net = model_lib.build(10, cfg)
        assert len(kernel_choice.conv2d_layers(net)) == (3 if arch == "tiny" else 53)
        w32 = net.get_weights()
        xla32 = {t: _logits(net, w32, x, t) for t in modes}
        kernel_choice.use_matmul_convs(net)
        assert kernel_choice.conv_plan(net) == ("matmul 3/3" if arch == "tiny" else "matmul 53/53")
        mm32 = {t: _logits(net, w32, x, t) for t in modes}

    w64 = [np.asarray(w, "float64") for w in w32]
    wh, bh = w64[-2], w64[-1]  # the head (Dense, float32 even under a float64 policy): in numpy
    rng = np.random.default_rng(7)
    noise = {"on": False}

    def noisy_conv(self, a, k):
        y = kernels.matmul_conv(a, k, self.strides, self.padding)
        if noise["on"]:
            kh, kw, cin, _ = k.shape
            size = np.sqrt(kh * kw * cin) * U32 * kernels.matmul_conv(
                ops.abs(a), ops.abs(k), self.strides, self.padding)
            y = y + size * rng.choice([-1.0, 1.0], size=tuple(y.shape))
        return y

    with float64_keras():
        with monkeypatch.context() as m:  # its weights are replaced below: skip compiling JAX's
            m.setattr(keras.src.backend.random, "uniform",  # float64 RNG for each shape (~10 s)
                      lambda shape, minval=0.0, maxval=1.0, dtype=None, seed=None: np.zeros(shape, dtype))
            net64 = model_lib.build(10, cfg)
        assert net64.get_layer("avg_pool").compute_dtype == "float64"
        head = (keras.Model(net64.input, net64.get_layer("avg_pool").output), wh, bh)
        x64 = x.astype("float64")
        xla64 = _logits(net64, w64, x64, True, head)  # training mode: BatchNorm amplifies most
        kernel_choice.use_matmul_convs(net64)
        mm64 = {t: _logits(net64, w64, x64, t, head) for t in modes}
        for layer in kernel_choice.conv2d_layers(net64):
            layer.convolution_op = types.MethodType(noisy_conv, layer)
        bound = {}
        for t in modes:
            changes = []
            for _ in range(3):
                noise["on"] = True
                net64.set_weights(w64)
                f = np.asarray(head[0](x64, training=t))
                noise["on"] = False
                head_size = np.sqrt(wh.shape[0] + 1) * U32 * (np.abs(f) @ np.abs(wh) + np.abs(bh))
                changes.append(f @ wh + bh + head_size * rng.choice([-1.0, 1.0], head_size.shape)
                               - mm64[t])
            bound[t] = np.abs(changes).max()

    # The same bound for float64's unit roundoff (u = 2**-53): the first-order propagation is
    # linear in u. The kernels are the same in both modes, so one mode shows they agree.
    assert np.abs(mm64[True] - xla64).max() <= bound[True] * U64 / U32, bound
    for t in modes:
        assert np.abs(mm64[t]).max() > 1e-3  # a real signal, not two zero outputs
        for name, got in (("xla", xla32[t]), ("matmul", mm32[t])):
            assert np.abs(got - mm64[t]).max() <= bound[t], (name, t, np.abs(got - mm64[t]).max(),
                                                              bound[t])


def test_auto_is_matmul_on_cpu_and_xla_on_gpu(monkeypatch):
    """ResNet50 has 53 convolutions: 36 1x1 (2 per block x 16 + 4 shortcuts), 16 3x3, the 7x7 stem.

    `auto` follows `jax.default_backend()`, set here to each platform in turn, so the test holds on
    a CPU and on a GPU host alike. On a CPU it is the plan timed on the host (tests/net/test_conv_plan.py);
    TLRES_CONV_AUTO=matmul, set here as for every test, replaces the timing by the matmul form.
    """
    import jax

    monkeypatch.setenv("TLRES_CONV_AUTO", "matmul")
    cfg = IMPROVED.replace(weights="none")
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert kernel_choice.conv_plan(model_lib.build(10, cfg)) == "matmul 53/53"
    assert kernel_choice.conv_plan(model_lib.build(10, cfg.replace(conv="xla"))) == "matmul 0/53"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert kernel_choice.conv_plan(model_lib.build(10, cfg)) == "matmul 0/53"
    assert kernel_choice.conv_plan(model_lib.build(10, cfg.replace(conv="matmul"))) == "matmul 53/53"
