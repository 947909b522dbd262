"""Pre-flight memory checks: refuse a run or an allocation that cannot fit, in one line.

A run's training memory is estimated from its settings alone (`estimate`), before any data
is read or model built; `check_fits` refuses a run only when the estimate is over
`MARGIN` times the memory there is, so an estimate off by a factor of two never stops a
run that would have fitted. `require` does the same for one exact allocation (resizing a
dataset's images). The constants and how they were measured: docs/bad-input.md.
"""

import os

from tlres.core.errors import TlresError, human

MARGIN = 2  # refuse only runs whose estimate is over twice the memory available

FIXED_BYTES = {"resnet50": 1.9e9, "resnet50_v1_5": 1.9e9, "tiny": 0.6e9}
PER_PIXEL_BYTES = {"resnet50": 3500, "resnet50_v1_5": 3500, "tiny": 200}
"""Peak resident memory of a training process = FIXED + PER_PIXEL x image_size^2 x batch_size.

ResNet50: a line fitted to the peak RSS of training steps at sizes 32, 64 and 96, batch 8
(matmul kernels, float32, Adam; docs/bad-input.md has the measurements). FIXED is the interpreter,
JAX, Keras, the weights and the optimizer's state; PER_PIXEL the activations kept for the
backward pass, per input pixel. resnet50_v1_5 is the same network. tiny: three convolutions
of stride 2 keep about 3.5 floats per input pixel per tensor; 200 covers a dozen such tensors.
"""


def available():
    """Bytes of memory this process could still get: the host's MemAvailable (Linux), else
    the physical pages free (os.sysconf); None when neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def estimate(cfg):
    """Bytes a training run of `cfg` needs at its peak, by the formula of `PER_PIXEL_BYTES`."""
    arch = cfg.arch if cfg.arch in FIXED_BYTES else "resnet50"
    return FIXED_BYTES[arch] + PER_PIXEL_BYTES[arch] * cfg.image_size ** 2 * cfg.batch_size


def check_fits(cfg, have=None):
    """Refuse `cfg` when its `estimate` is over `MARGIN` x the memory available (`have`,
    default `available()`); one line with both figures and the fix."""
    have = available() if have is None else have
    need = estimate(cfg)
    if have is not None and need > MARGIN * have:
        raise TlresError(f"--image-size {cfg.image_size} with --batch-size {cfg.batch_size} needs about "
                         f"{human(need)} of memory to train --arch {cfg.arch}, and {human(have)} is "
                         "available; lower --batch-size or --image-size")


def require(nbytes, what, fix, have=None):
    """Refuse an allocation of `nbytes` (for `what`) larger than the memory available."""
    have = available() if have is None else have
    if have is not None and nbytes > have:
        raise TlresError(f"{what} needs {human(nbytes)} of memory and {human(have)} is available; {fix}")
