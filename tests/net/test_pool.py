"""Max pooling as a running maximum over strided views (`kernels.slice_max_pool`, used on a CPU
with the matmul convolutions) against a numpy float64 definition: the same values, and the
gradient of each window to its first maximum in row-major order (XLA's select-and-scatter rule),
ties included. Tolerances: forward exact (a maximum rounds nothing); gradient within the float32
bound of summing the at most four overlapping windows' terms (tests/fpbounds.gamma)."""

import numpy as np
import pytest

from fpbounds import gamma
from tlres.net import model as model_lib
from tlres.net.cpu import kernel_choice
from tlres.net.cpu import kernels
from tlres.core.config import IMPROVED


def numpy_pool(x, k, s):
    """(out, d sum(out * g) / dx for the given g): out[b,i,j,c] = max over the k x k window at
    (i*s, j*s); its gradient goes to the window's first maximum, rows then columns."""
    b, h, w, c = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    out = np.empty((b, ho, wo, c))
    first = np.empty((b, ho, wo, c, 2), int)
    for i in range(ho):
        for j in range(wo):
            win = x[:, i * s:i * s + k, j * s:j * s + k, :].reshape(b, k * k, c)
            n = np.argmax(win, axis=1)  # numpy: the first occurrence of the maximum
            out[:, i, j, :] = np.take_along_axis(win, n[:, None, :], 1)[:, 0, :]
            first[:, i, j, :, 0], first[:, i, j, :, 1] = i * s + n // k, j * s + n % k

    def grad(g):
        gx = np.zeros(x.shape)
        for bi in range(b):
            for i in range(ho):
                for j in range(wo):
                    for ci in range(c):
                        r, q = first[bi, i, j, ci]
                        gx[bi, r, q, ci] += g[bi, i, j, ci]
        return gx

    return out, grad


@pytest.mark.parametrize("shape,k,s", [((2, 18, 18, 3), 3, 2),   # ResNet50's stem pool at 32 px
                                       ((2, 9, 7, 2), 3, 2),     # odd sizes: a row left over
                                       ((1, 6, 6, 2), 2, 2)])    # windows that do not overlap
def test_slice_max_pool_equals_the_definition_ties_included(shape, k, s):
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    # after ReLU and a zero pad most windows tie (at 0); rounding to 0.5 makes ties among positives too
    x = np.maximum(np.round(rng.normal(size=shape) * 2) / 2, 0).astype("float32")
    x[:, 0, :, :] = 0
    assert np.mean(x == 0) > 0.3
    want, want_grad = numpy_pool(x.astype("float64"), k, s)
    got = np.asarray(kernels.slice_max_pool(jnp.asarray(x), (k, k), (s, s)))
    assert got.shape == want.shape
    assert np.array_equal(got, want)
    g = rng.normal(size=want.shape).astype("float32")
    got_grad = np.asarray(jax.grad(lambda a: jnp.sum(kernels.slice_max_pool(a, (k, k), (s, s)) * g))(x))
    ref = want_grad(g.astype("float64"))
    bound = gamma(4) * want_grad(np.abs(g).astype("float64"))  # at most 4 windows share an input
    assert np.all(np.abs(got_grad - ref) <= bound), np.abs(got_grad - ref).max()
    assert np.count_nonzero(ref) > 0.1 * ref.size  # a real gradient, not zeros on both sides
    # and XLA's own max pooling agrees: values exactly, gradient within the same bound
    from keras import ops

    assert np.array_equal(np.asarray(ops.max_pool(jnp.asarray(x), k, s, "valid")), want)
    xla_grad = np.asarray(jax.grad(lambda a: jnp.sum(ops.max_pool(a, k, s, "valid") * g))(x))
    assert np.all(np.abs(xla_grad - ref) <= bound)


def test_the_cpu_kernels_use_it_and_xla_keeps_its_own(monkeypatch):
    import jax
    import keras

    monkeypatch.setenv("TLRES_CONV_AUTO", "matmul")
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    cfg = IMPROVED.replace(weights="none")

    def pools(net):
        return [("call" in vars(l)) for l in kernel_choice.all_layers(net)
                if type(l) is keras.layers.MaxPooling2D]

    for conv, want in (("auto", [True]), ("matmul", [True]), ("xla", [False])):
        net = model_lib.build(10, cfg.replace(conv=conv))
        assert pools(net) == want, conv
        assert kernel_choice.conv_plan_record(net)["slice_max_pools"] == sum(want)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert pools(model_lib.build(10, cfg)) == [False]
