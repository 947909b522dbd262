"""A run with --randaugment, --mixup and --cutmix trains: soft labels reach the loss and the
training accuracy (the target's argmax as the class), and the loss stays finite."""

import math

import pytest

from helpers import history, in_process_main, write_npz


@pytest.mark.slow
def test_tiny_run_with_randaugment_mixup_and_cutmix(tmp_path):
    data = write_npz(tmp_path / "toy.npz", n_train=64, n_test=16)
    run = str(tmp_path / "run")
    code, _, err = in_process_main(["--preset", "quick", "--arch", "tiny", "--epochs", "1", "--batch-size", "16",
                                    "--data", data, "--out", run, "--pipeline", "tf", "--randaugment", "2,9",
                                    "--mixup", "0.2", "--cutmix", "1.0"])
    assert code == 0, err
    (row,) = history(run)
    assert math.isfinite(float(row["loss"])) and 0 <= float(row["accuracy"]) <= 1
    assert math.isfinite(float(row["val_loss"]))
