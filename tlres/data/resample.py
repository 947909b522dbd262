"""The one image resize of tlres: bilinear, antialiased when shrinking (`jax.image.resize`'s
"linear" filter with antialias=True), written in numpy and computed in float64.

Every loader uses it: arrays (digits, .npz, idx, CIFAR-10) a batch at a time, image folders
and `tlres predict` one photo at a time. Numpy, not a jitted JAX function: a jitted resize
compiles once per input shape, and a folder of photos has as many shapes as photos; float64,
so each pixel is the exact weighted sum rounded half to even.
"""

import functools

import numpy as np

from tlres.core import memory

DENSE_LIMIT = 1 << 16  # resize a dimension with one dense matrix up to in*out entries
CHUNK_VALUES = 1 << 23  # float64 values of one batch chunk's widest intermediate (64 MiB)


@functools.lru_cache(maxsize=256)
def weights(n_in, n_out):
    """(n_in, n_out) float64 resampling matrix of `jax.image.resize(..., "linear", antialias=True)`.

    Output pixel t samples the input at c = (t + 0.5) * n_in / n_out - 0.5 with the
    triangle kernel max(0, 1 - |j - c| / s), s = max(n_in / n_out, 1) (widened when
    shrinking: the antialiasing), normalized to sum 1 over the input pixels j.
    """
    inv = n_in / n_out
    sample = (np.arange(n_out) + 0.5) * inv - 0.5
    w = np.maximum(0.0, 1.0 - np.abs(sample[None, :] - np.arange(n_in)[:, None]) / max(inv, 1.0))
    total = w.sum(axis=0, keepdims=True)
    w = np.where(np.abs(total) > 1000 * np.finfo(np.float32).eps, w / np.where(total != 0, total, 1), 0)
    w[:, (sample < -0.5) | (sample > n_in - 0.5)] = 0
    w.setflags(write=False)
    return w


@functools.lru_cache(maxsize=256)
def _bands(n_in, n_out):
    """Per output pixel: (first input pixel, weights of the non-zero run)."""
    w = weights(n_in, n_out)
    out = []
    for t in range(n_out):
        nz = np.flatnonzero(w[:, t])
        lo, hi = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
        out.append((lo, w[lo:hi, t].copy()))
    return tuple(out)


def _resample(x, n_out, axis):
    """Resample `axis` of `x` to n_out pixels (float64 result)."""
    x = np.moveaxis(x, axis, 0)
    n_in = x.shape[0]
    if n_in * n_out <= DENSE_LIMIT:
        out = np.tensordot(weights(n_in, n_out), x.astype(np.float64), axes=(0, 0))
    else:  # a large image: only the taps each output pixel needs
        out = np.empty((n_out,) + x.shape[1:], np.float64)
        for t, (lo, w) in enumerate(_bands(n_in, n_out)):
            out[t] = np.tensordot(w, x[lo:lo + len(w)], axes=(0, 0))
    return np.moveaxis(out, 0, axis)


def _resize(x, size):
    """Height, then width, of uint8 (..., H, W, C) to `size`, rounded half to even."""
    h, w = x.shape[-3:-1]
    if h != size:
        x = _resample(x, size, -3)
    if w != size:
        x = _resample(x, size, -2)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def resize(x, size):
    """uint8 (H, W, C) or (N, H, W, C) -> the same at `size` x `size`: see the module docstring.

    An image already at `size` is returned as it is. A batch is resized in chunks, so the
    float64 intermediates stay near 64 MiB whatever its length.
    """
    h, w, c = x.shape[-3:]
    if (h, w) == (size, size):
        return x
    if x.ndim == 3:
        return _resize(x, size)
    memory.require(len(x) * size * size * c, f"resizing {len(x)} images to {size}x{size}",
                   "lower --image-size")
    out = np.empty((len(x), size, size, c), np.uint8)
    chunk = max(1, CHUNK_VALUES // (size * max(size, w) * c))
    for i in range(0, len(x), chunk):
        out[i:i + chunk] = _resize(x[i:i + chunk], size)
    return out
