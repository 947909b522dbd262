"""Trajectory parity: one network, one set of initial weights, one stream of batches, two frameworks.

`trajectories(cfg, x, y, num_classes, steps)` builds tlres' model for `cfg`
(`--arch resnet50_v1_5` or tiny: the ones with a torch twin), copies its
initial weights into the PyTorch reference's model (`tlres.net.convert`, head
included), draws the first `steps` training batches once from tlres'
`--pipeline jax` (`tlres.reference.torch.tlres_batches` gives the reference the
same ones), and records each step's training loss:

* ``keras``: tlres' compiled Keras train step (`train.compile_model`, as `fit` runs it),
  through `train_on_batch` (which returns that batch's loss);
* ``torch32``: the reference's step (`reference.torch.train_step`), float32;
* ``torch64``: the same in float64, the reference trajectory;
* ``probe_gap``: the probes' running largest distance from it (below);
* ``bound``: per step, 10x the largest distance from ``torch64`` so far of two
  float64 runs whose initial weights were moved by a relative 100u (u = 2^-24,
  random signs), and at least 1e-6 of the loss (a few float32 ulps).

Why 100u, not one rounding (u): training is not smooth. A ReLU or a
near-empty BatchNorm channel that flips under a small error changes a gradient
by far more than the error, and the number of flips grows with the error's
size. float32 rounds sums of up to thousands of terms (a batch-32 gradient at
16x16 sums 8,192), whose error reaches ~sqrt(terms) x u, about 100u; perturbed
by u alone, float64 runs of the tiny net stayed ~1e-8 from the reference for 14
steps while float32 runs (torch's and Keras') had moved 1e-5 to 1e-4. At 100u
the probes flip more units than float32 does: measured (tiny net, digits, SGD
0.01, 20 steps, 2026-11-25, AMD EPYC) they stayed above both float32 runs'
distances at every step, by 2x to 1000x.

What stays different by design, and is not rounding: BatchNorm's running
variance (torch keeps the unbiased one; training losses do not use it, eval
does), Adam's epsilon (Keras adds it to sqrt(v) before bias correction, torch
after: a relative update difference of ~eps/sqrt(v), far above float32
rounding early in training, so a parity check uses SGD), and SGD momentum under a
changing rate (Keras' velocity holds past rates, torch's buffer does not; equal
within an epoch of cosine-epoch, or with a constant rate).
"""

import numpy as np

from tlres.data import pipeline
from tlres.net import convert, model as model_lib
from tlres.run import train
from tlres.reference import torch as ref

U = 2.0 ** -24  # float32's unit roundoff
PROBE_SIZE = 100 * U  # ~ sqrt(longest sum) * u: a batch-32 gradient at 16x16 sums 8,192 terms
PROBES = 2
BOUND_FACTOR = 10
BOUND_FLOOR = 1e-6  # relative to the loss: ~4 float32 ulps of a loss near 2.3
COLUMNS = ("keras", "torch32", "torch64", "probe_gap", "bound")  # per-step lists `trajectories` returns


def trajectories(cfg, x, y, num_classes, steps):
    """{"keras", "torch32", "torch64", "bound": per-step lists for the first `steps` steps;
    "batches": those steps' (NHWC images, labels), "state": the shared initial weights (torch names)}."""
    import torch  # noqa: F401  first: torch imported after JAX has run can crash (triton)
    import torchvision  # noqa: F401
    import jax

    steps_per_epoch = len(x) // cfg.batch_size
    epochs = -(-steps // steps_per_epoch)
    batches = []
    for xb, yb in pipeline.jax_batches(x, y, cfg, 0, epochs):
        batches.append((np.array(xb), np.asarray(yb, np.int32)))
        if len(batches) == steps:
            break
    train.setup_engine(cfg)
    net = model_lib.build(num_classes, cfg)
    state = convert.model_to_torch(net)
    callbacks = train.compile_model(net, cfg, num_classes, steps_per_epoch)
    keras_losses = []
    with jax.default_matmul_precision("float32"):  # true float32 on a GPU too, not TF32
        for i, (xb, yb) in enumerate(batches):
            if i % steps_per_epoch == 0:  # what fit does at an epoch's start: the per-epoch cosine rate
                for cb in callbacks:
                    cb.set_model(net)
                    cb.on_epoch_begin(i // steps_per_epoch)
            keras_losses.append(float(net.train_on_batch(xb, yb, return_dict=True)["loss"]))
    out = {"keras": keras_losses}
    for name, dtype in (("torch32", torch.float32), ("torch64", torch.float64)):
        out[name] = torch_losses(cfg, state, batches, num_classes, steps_per_epoch, dtype)
    ref = np.asarray(out["torch64"])
    gap = np.zeros_like(ref)
    for seed in range(PROBES):
        probe = torch_losses(cfg, perturbed(state, PROBE_SIZE, seed), batches, num_classes,
                             steps_per_epoch, torch.float64)
        gap = np.maximum(gap, np.maximum.accumulate(np.abs(np.asarray(probe) - ref)))
    out["probe_gap"] = gap.tolist()
    out["bound"] = np.maximum(BOUND_FACTOR * gap, BOUND_FLOOR * np.abs(ref)).tolist()
    out.update(batches=batches, state=state)
    return out


def perturbed(state, size, seed):
    """Every float tensor times (1 +- size), random signs; counters untouched."""
    rng = np.random.default_rng(seed)
    return {k: (v * (1.0 + size * rng.choice([-1.0, 1.0], v.shape))).astype(v.dtype)
            if v.dtype.kind == "f" else v for k, v in state.items()}


def torch_losses(cfg, state, batches, num_classes, steps_per_epoch, dtype):
    """The reference's per-step training losses from `state` on `batches` (NHWC numpy)."""
    import torch

    torch.manual_seed(cfg.seed)
    model = ref.build(cfg.replace(weights="none"), num_classes)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})  # strict: all of it
    model.to(dtype).train()
    loss_of = ref.criterion(cfg, num_classes)
    opt, decay = ref.make_optimizer(cfg, model.parameters())
    sched, every = ref.make_scheduler(cfg, opt, steps_per_epoch)
    losses = []
    for i, (xb, yb) in enumerate(batches):
        xt = torch.from_numpy(xb).permute(0, 3, 1, 2).to(dtype)
        loss, _ = ref.train_step(model, opt, decay, loss_of, xt, torch.from_numpy(yb.astype("int64")))
        losses.append(loss.item())
        if every == "step" or (every == "epoch" and (i + 1) % steps_per_epoch == 0):
            sched.step()
    return losses


def first_exceeding(losses, reference, bound):
    """The first step (0-based) where |losses - reference| > bound, or None."""
    for i, (a, b, c) in enumerate(zip(losses, reference, bound)):
        if abs(a - b) > c:
            return i
    return None
