"""--tensorboard in both frameworks: a Keras run and a PyTorch reference run of one config write their
curves into one shared DIR, side by side (DIR/<run name>/<framework>), with the same tags; the PyTorch
run's events hold its history.csv (float32, the format's precision: compared exactly after that
rounding), and in both the step-level loss at the cadence, the epoch's loss at its last step, read by protobuf's own parser (tests/helpers.py)."""

import os

import numpy as np
import pytest

from helpers import history, scalars, write_npz
from tlres.run import curves

pytest.importorskip("torch")
EVERY = 5  # 10 steps an epoch: points at 5, 10, 15, 20


@pytest.mark.slow  # trains the tiny net in both frameworks (seconds each)
def test_keras_and_pytorch_curves_open_together_with_the_same_tags(tmp_path):
    from tlres.commands import cli
    from tlres.reference import torch as ref
    from tlres.run import train

    data = write_npz(tmp_path / "toy.npz", n_train=160, n_test=32)
    logs = str(tmp_path / "logs")
    flags = ["--preset", "quick", "--arch", "tiny", "--image-size", "8", "--batch-size", "16",
             "--epochs", "2", "--data", data, "--tensorboard", logs, "--tensorboard-every", str(EVERY)]
    cfg, _ = cli.parse(flags + ["--pipeline", "jax"], "quick", "p")
    ref.run(cfg.replace(out=str(tmp_path / "torch-run")), verbose=False)
    train.run(cfg.replace(out=str(tmp_path / "keras-run")), verbose=0)
    assert sorted(os.listdir(logs)) == ["keras-run", "torch-run"]
    keras_curves = scalars(os.path.join(logs, "keras-run", "keras-jax"))
    torch_curves = scalars(os.path.join(logs, "torch-run", "pytorch"))
    assert sorted(keras_curves) == sorted(torch_curves) == sorted(curves.TAGS)
    rows = history(str(tmp_path / "torch-run"))
    for tag in curves.EPOCH_TAGS:
        field = tag.split("/")[1]
        assert torch_curves[tag] == [(int(r["epoch"]), np.float32(float(r[field]))) for r in rows], tag
    for run, got in (("torch-run", torch_curves), ("keras-run", keras_curves)):
        assert [s for s, _ in got["step/loss"]] == list(range(EVERY, 21, EVERY))
        for r in history(str(tmp_path / run)):  # one meaning in both: the epoch's mean loss so far
            assert dict(got["step/loss"])[10 * int(r["epoch"])] == np.float32(float(r["loss"]))
    for name in ("keras-run", "torch-run"):  # nothing outside the run directories and DIR
        assert not os.path.exists(tmp_path / name / "tb")
