"""Trajectory parity at CI scale: the tiny net, the same initial weights and the same batches in
Keras (tlres' compiled step) and PyTorch (the reference's step); per-step training losses agree.

The reference trajectory is torch in float64. Bound, per step: 10x the largest distance from it
of two float64 runs started from weights moved by a relative 100u (~ the float32 error of the
longest sums, sqrt(8,192) u), at least 1e-6 of the loss; docs/pytorch.md#trajectory-parity says why
one rounding (u) is too small a probe. torch's own float32 run stays inside it too; different batches
(torchvision's own draws) leave it at step 0.
"""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from tlres.data import loaders as data  # noqa: E402
from tlres.reference import parity
from tlres.core.config import QUICK  # noqa: E402

# SGD (momentum, decoupled weight decay), constant rate, flip + pad-4 crop on: every piece but Adam's
# epsilon and a changing rate under momentum, which differ by design (docs/pytorch.md#trajectory-parity)
CFG = QUICK.replace(arch="tiny", optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                    schedule="constant", augment=True, flip=True, crop_padding=4, batch_size=32, epochs=1)
STEPS = 20


@pytest.fixture(scope="module")
def digits():
    ds = data.load("digits", None, 32)
    return ds.x_train[:640], ds.y_train[:640]


@pytest.fixture(scope="module")
def run(digits):
    return parity.trajectories(CFG, *digits, 10, STEPS)


def test_keras_and_torch_losses_agree_step_by_step(run):
    keras_losses, ref, bound = (np.asarray(run[k]) for k in ("keras", "torch64", "bound"))
    assert len(keras_losses) == STEPS and np.all(np.isfinite(keras_losses))
    assert parity.first_exceeding(run["keras"], run["torch64"], run["bound"]) is None, \
        np.abs(keras_losses - ref) / bound
    assert parity.first_exceeding(run["torch32"], run["torch64"], run["bound"]) is None
    assert ref[0] == pytest.approx(np.log(10), abs=0.2)  # a fresh 10-way classifier
    assert bound.max() < 0.01 * ref.mean()  # the check means something: well below the loss


def test_different_batches_exceed_the_bound_at_once(run, digits):
    """The same weights and images with torchvision's own flips and crops: another trajectory."""
    from tlres.reference import torch as ref

    x, y = digits
    transform = ref.train_transform(CFG, 32)
    torch.manual_seed(CFG.seed)
    order = np.random.default_rng([CFG.seed, 0]).permutation(len(x))  # tlres' order, as the reference
    batches = []
    for b in range(STEPS):
        idx = np.sort(order[b * CFG.batch_size:(b + 1) * CFG.batch_size])
        imgs = torch.from_numpy(x[idx]).permute(0, 3, 1, 2).float() / 255.0
        imgs = (torch.stack([transform(im) for im in imgs]) - 0.5) / 0.5
        batches.append((imgs.permute(0, 2, 3, 1).numpy(), y[idx].astype(np.int32)))
    losses = parity.torch_losses(CFG, run["state"], batches, 10, len(x) // CFG.batch_size, torch.float64)
    assert parity.first_exceeding(losses, run["torch64"], run["bound"]) == 0


def test_reference_draws_tlres_gives_the_reference_tlres_batches(run, digits):
    """`--draws tlres`: the reference trains on exactly the batches Keras got (order, flips, crops)."""
    from tlres.commands import torch as torch_cmd
    from tlres.reference import torch as ref

    for (xt, yt), (xk, yk) in zip(itertools.islice(ref.tlres_batches(CFG, *digits), 3), run["batches"]):
        np.testing.assert_array_equal(xt.permute(0, 2, 3, 1).numpy(), xk)
        np.testing.assert_array_equal(yt.numpy(), yk)
    _, args = torch_cmd.parse(["--draws", "tlres"])
    assert args.draws == "tlres" and torch_cmd.parse([])[1].draws == "torch"
