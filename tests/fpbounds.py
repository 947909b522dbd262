"""Floating-point error bounds that the numerical tests take their tolerances from.

A tolerance in this suite comes from one of these, or from a float64 reference, never from the
difference one machine happened to show: summation order, FMA use and vector width differ between
CPUs (AVX2, AVX-512) and between XLA versions, and each gives a different, equally valid, float32
result.

u is the unit roundoff: 2**-24 for float32, 2**-53 for float64. A sum or dot product of K terms,
computed in floating point in any order, with or without fused multiply-adds, differs from the exact
value by at most gamma(K) * sum(|terms|), gamma(K) = K u / (1 - K u) (Higham, "Accuracy and
Stability of Numerical Algorithms", 2nd ed., 2002, section 3.1, eq. 3.5). Elementwise operations
(exp, log, division, cos) are correct to a few u each in IEEE arithmetic and in XLA's and numpy's
implementations. On a GPU, JAX computes float32 matmuls and convolutions in TF32 by default
(u = 2**-11); the tests that hold float32 products to these bounds run under
`jax.default_matmul_precision("float32")`, which asks for true float32 there and changes nothing on
a CPU.
"""

import contextlib

U32 = 2.0 ** -24
U64 = 2.0 ** -53


def gamma(k, u=U32):
    """Higham's gamma_k: the worst-case relative error bound of a k-term float sum (k u < 1)."""
    assert k * u < 1, k
    return k * u / (1 - k * u)


@contextlib.contextmanager
def float64_keras():
    """Inside: JAX allows float64 and Keras builds and computes float64 layers (restored afterwards).

    Used to compute float64 references of whole Keras models with the same weights. Keras' type
    promotion on JAX maps float64 to float32 (`BIT64_TO_BIT32_DTYPE` in
    keras/src/backend/common/dtypes.py, "to be aligned with JAX's default"), and BatchNormalization
    picks its compute dtype through it, so a float64 model would still normalize in float32; inside
    this context float64 promotes to float64.
    """
    import jax
    import keras
    from keras.src.backend.common import dtypes

    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    narrowed = dtypes.BIT64_TO_BIT32_DTYPE["float64"]
    with jax.enable_x64(True):
        keras.config.set_floatx("float64")
        keras.config.set_dtype_policy("float64")
        dtypes.BIT64_TO_BIT32_DTYPE["float64"] = "float64"
        try:
            yield
        finally:
            dtypes.BIT64_TO_BIT32_DTYPE["float64"] = narrowed
            keras.config.set_floatx(floatx)
            keras.config.set_dtype_policy(policy)


def log_softmax_error(logits, u=U32):
    """Per-entry bound on |fl(log_softmax(z)) - log_softmax(z)| for rows z of `logits` (first order).

    log_softmax(z)_c = a_c - log(sum_j exp(a_j)), a = z - max(z), R = max(z) - min(z): each a_j is
    off by <= uR; exp of it then by a relative (R + 2)u (argument error, and exp itself to 2u); the
    C positive terms, the largest exp(0) = 1, sum with gamma(C); log adds <= 2u log C; the final
    subtraction rounds once more (u |result|).
    """
    import numpy as np

    z = np.asarray(logits, np.float64)
    m = z.max(axis=-1, keepdims=True)
    lsm = z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))
    c = z.shape[-1]
    r = m - z.min(axis=-1, keepdims=True)
    return (2 * r + 4 + 2 * np.log(c) + np.abs(lsm)) * u + gamma(c, u), lsm


def cross_entropy_error(logits, targets, u=U32):
    """(bound per example, exact per-example loss) for -sum_c q_c log_softmax(z)_c in float32.

    The targets q (non-negative, summing to 1) are rounded themselves (<= 2u each: a product and a
    sum); the C-term weighted sum adds gamma(C). Both in float64, from the exact q and z given.
    """
    import numpy as np

    e, lsm = log_softmax_error(logits, u)
    q = np.asarray(targets, np.float64)
    c = q.shape[-1]
    bound = (q * e).sum(axis=-1) + (gamma(c, u) + 2 * u) * (q * np.abs(lsm)).sum(axis=-1)
    return bound, -(q * lsm).sum(axis=-1)


def mean_error(per_example_bound, values, u=U32):
    """Bound on a float mean of n values each known to within its own bound: gamma(n) + 1 division."""
    import numpy as np

    n = len(values)
    return float(np.mean(per_example_bound) + (gamma(n, u) + u) * np.mean(np.abs(values)))


def eq11_targets(labels, c, eps):
    """The paper's eq. 11 in float64: 1 - eps on the true class, eps / (C - 1) on each other."""
    import numpy as np

    q = np.full((len(labels), c), eps / (c - 1))
    q[np.arange(len(labels)), labels] = 1 - eps
    return q


def keras_smoothing_targets(labels, c, eps):
    """Keras' / PyTorch's label smoothing in float64: eps / C on every class, plus 1 - eps on the true one."""
    import numpy as np

    q = np.full((len(labels), c), eps / c)
    q[np.arange(len(labels)), labels] += 1 - eps
    return q
