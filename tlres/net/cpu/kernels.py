"""The CPU kernels: functions that compute what Keras' layers compute, in forms XLA:CPU runs faster.

Each computes the same function as the Keras layer it stands in for, forward and gradients, up to
float rounding (tests/net/test_conv.py, tests/net/test_pool.py hold them to float64 references); which
layers use them is decided in `tlres.net.model` (`apply_conv`), and the figures are in docs/speed.md.

- `matmul_conv`: a 2-D convolution as im2col + one matmul, with its own gradient
  (`patch_matmul`, `im2col_matmul`).
- `conv`: a 2-D convolution whose forward pass, input gradient and weight gradient each run
  XLA's kernel or the matmul form, as `--conv auto`'s plan chose per part.
- `slice_max_pool`: max pooling as a running maximum over strided views.
"""

import functools

# What `--conv auto` timed (tlres.net.cpu.convplan keys its cache on it): raised whenever a kernel here
# computes differently, so that a plan timed for an older form is timed again.
# 4: each part of a convolution (forward, input gradient, weight gradient) timed and chosen alone;
# 3: a k x k convolution's gradient rebuilds its patches from x (2: patch_matmul's own gradient;
# 1: JAX's gradient of the matmul).
VERSION = 4

PARTS = ("forward", "input_grad", "weight_grad")
"""The parts of a convolution's work that `conv` runs each with its own kernel."""
FORMS = ("xla", "matmul")


def every_part(form):
    """`form` ("xla" or "matmul") for each of `PARTS`: a whole convolution in one kernel."""
    return (form,) * len(PARTS)


def conv(x, kernel, strides, padding, parts=every_part("matmul")):
    """A 2-D convolution (NHWC, HWIO, Keras' padding) whose forward pass, input gradient and weight
    gradient (`PARTS`, in order) each run the kernel `parts` names: "xla" (XLA's own) or "matmul"
    (`matmul_conv`). Every combination computes the same function and gradients up to float
    rounding; which part is faster in which form differs by shape (docs/speed.md)."""
    strides, parts = tuple(strides), tuple(parts)
    if parts == every_part("matmul"):
        return matmul_conv(x, kernel, strides, padding)
    if parts == every_part("xla"):
        return xla_conv(x, kernel, strides, padding)
    from keras import ops

    # a Keras variable is not a JAX type: custom_vjp takes arrays
    return _conv_by_parts(strides, padding, parts)(ops.convert_to_tensor(x), ops.convert_to_tensor(kernel))


def xla_conv(x, kernel, strides, padding):
    """XLA's own convolution, as Keras' Conv2D calls it."""
    from keras import ops

    return ops.conv(x, kernel, tuple(strides), padding)


@functools.cache
def _conv_by_parts(strides, padding, parts):
    import jax

    form = {"xla": xla_conv, "matmul": matmul_conv}
    forward_form, input_form, weight_form = (form[p] for p in parts)

    @jax.custom_vjp
    def convolve(x, kernel):
        return forward_form(x, kernel, strides, padding)

    def forward(x, kernel):
        return forward_form(x, kernel, strides, padding), (x, kernel)

    def backward(saved, g):
        # each form's own gradient, of one argument: XLA drops the other and the unused forward
        x, kernel = saved
        d_x = jax.vjp(lambda x: input_form(x, kernel, strides, padding), x)[1](g)[0]
        d_kernel = jax.vjp(lambda k: weight_form(x, k, strides, padding), kernel)[1](g)[0]
        return d_x, d_kernel

    convolve.defvjp(forward, backward)
    return convolve


def matmul_conv(x, kernel, strides=(1, 1), padding="valid"):
    """A 2-D convolution (NHWC input, HWIO kernel) as im2col + one matmul.

    Same result as `keras.ops.conv(x, kernel, strides, padding)` up to float
    rounding, with Keras' (TensorFlow's) "same" padding convention: the odd
    pixel, if any, goes at the bottom/right. A 1x1 stride-1 convolution is
    `patch_matmul` on `x` itself; any other is `im2col_matmul`, which keeps `x`, not the
    k*k times larger patches, for the gradients.
    """
    from keras import ops

    kh, kw, cin, cout = kernel.shape
    weights = ops.reshape(kernel, (kh * kw * cin, cout))
    if (kh, kw) == (1, 1):  # the patches are x or a strided slice of it: no larger than x
        return patch_matmul(im2col(x, (1, 1), tuple(strides), padding), weights)
    return im2col_matmul(x, weights, (kh, kw), tuple(strides), padding)


def im2col(x, window, strides, padding, fill=0):
    """The patches of `x` (NHWC) a convolution with `window` and `strides` reads: [N, Ho, Wo,
    kh*kw*C], each position's window row-major, channels last; "same" pads as TensorFlow does."""
    import jax.numpy as jnp

    (kh, kw), (sh, sw) = window, strides
    _, h, w, _ = x.shape
    if padding == "same":
        ph = max((-(-h // sh) - 1) * sh + kh - h, 0)
        pw = max((-(-w // sw) - 1) * sw + kw - w, 0)
        x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)),
                    constant_values=fill)
    views = window_views(x, window, strides)
    return views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)


def im2col_matmul(x, weights, window, strides, padding):
    """`im2col(x, ...) @ weights` with the gradients written out from `x`, not the patches: the
    backward pass builds the patches again (one copy of `x`'s elements per tap) instead of
    keeping them from the forward pass, so a 3x3 convolution holds its input, not 9 times it,
    until its gradient; the products are `patch_matmul`'s."""
    return _im2col_matmul(tuple(window), tuple(strides), padding)(x, weights)


def window_views(x, window, strides):
    """The kh*kw strided views of `x` (NHWC, no padding) that a `window` sliding by `strides` reads:
    view (i, j), row-major, holds each window's element (i, j), one per output position."""
    kh, kw = window
    sh, sw = strides
    _, h, w, _ = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    return [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]
            for i in range(kh) for j in range(kw)]


def patch_matmul(patches, weights):
    """`patches @ weights` (patches [..., K], weights [K, N]) with the gradients written out:
    d patches = g @ weights^T, d weights = the sum over every leading position of patches^T g,
    each as one product that reads its operands in the layout they were computed in.

    The same values as JAX's own gradient of the matmul, up to float rounding. JAX's form leaves
    XLA:CPU a transposed copy of g (the gradient of the convolution's output) for the weight
    gradient, which XLA fuses into the elementwise BatchNorm gradient that computes g; a
    transposing elementwise loop is slower than the loop plus a plain transpose (the bench files
    before and after: docs/speed.md). Here both products read g as it is.
    """
    return _patch_matmul()(patches, weights)


@functools.cache
def _patch_matmul():
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def product(patches, weights):
        return jnp.matmul(patches, weights)

    def forward(patches, weights):
        return jnp.matmul(patches, weights), (patches, weights)

    def backward(saved, g):
        return _product_grads(*saved, g)

    product.defvjp(forward, backward)
    return product


def _product_grads(patches, weights, g):
    """(d patches, d weights) of `patches @ weights` for the output's gradient `g`, each one
    product that reads its operands as they are (`patch_matmul`)."""
    import jax

    k, n = weights.shape
    rows = patches.reshape(-1, k)  # the leading dims are contiguous: a bitcast, no copy
    d_patches = jax.lax.dot_general(g, weights, (((g.ndim - 1,), (1,)), ((), ())),
                                    preferred_element_type=patches.dtype)
    d_weights = jax.lax.dot_general(rows, g.reshape(-1, n), (((0,), (0,)), ((), ())),
                                    preferred_element_type=weights.dtype)
    return d_patches, d_weights


@functools.cache
def _im2col_matmul(window, strides, padding):
    import jax
    import jax.numpy as jnp

    def patches_of(x, fill=0):
        return im2col(x, window, strides, padding, fill)

    @jax.custom_vjp
    def conv(x, weights):
        return jnp.matmul(patches_of(x), weights)

    def forward(x, weights):
        return conv(x, weights), (x, weights)

    def backward(saved, g):
        x, weights = saved
        # zero computed from g (0 * one element of it): the same patches, which XLA cannot merge
        # with the forward pass' (that would keep those alive until here, as saving them would);
        # the padding's value where there is padding, else added to x
        zero = (g.reshape(-1)[0] * 0).astype(x.dtype)
        if padding == "same":
            patches, unfold = jax.vjp(lambda x: patches_of(x, zero), x)
        else:
            patches, unfold = jax.vjp(patches_of, x + zero)
        d_patches, d_weights = _product_grads(patches, weights, g)
        return unfold(d_patches)[0], d_weights

    conv.defvjp(forward, backward)
    return conv


def slice_max_pool(x, pool_size, strides):
    """Max pooling ("valid" padding, NHWC) as a running maximum over the k*k strided views.

    The same forward values as `keras.ops.max_pool`, and the same gradient: each window's
    gradient goes to its first maximum in row-major order (XLA's select-and-scatter rule, ties
    included), summed where windows overlap (float rounding only). XLA:CPU's own gradient of
    max pooling builds full-size index tensors (about 20 ms a step for ResNet50's stem pool at
    32 px, batch 64); this one is elementwise selects and pads (about 2 ms).
    """
    import jax
    import jax.numpy as jnp

    views = window_views(x, pool_size, strides)
    best, first = views[0], jnp.zeros(views[0].shape, "int8")
    for n, view in enumerate(views[1:], 1):
        later = view > best  # strictly greater: a tie keeps the earlier view
        first = jnp.where(later, jnp.int8(n), first)
        best = jnp.where(later, view, best)
    # the value is `best`; the gradient flows to the first maximum of each window only
    return jax.lax.stop_gradient(best) + sum(
        jnp.where(first == n, view - jax.lax.stop_gradient(view), 0) for n, view in enumerate(views))
