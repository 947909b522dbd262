"""Issue #7, item 5: every bad input is one line, exit 2, no traceback, no run directory left.

The checks run the command line's `main` in this process (a subprocess costs
~30 s of imports here); tests/test_cli.py covers the same path in real
processes for bad flags and a missing data path.
"""

import os
import tarfile

import numpy as np
import pytest

from tlres import cli
from tlres.errors import TlresError

TINY = ["--preset", "quick", "--arch", "tiny", "--epochs", "1", "--batch-size", "8"]


def npz(path, n_train=16, n_test=8, classes=3, **override):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
                  y_train=np.arange(n_train) % classes,
                  x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
                  y_test=np.arange(n_test) % classes)
    arrays.update(override)
    np.savez(path, **arrays)
    return str(path)


def run_main(capsys, argv):
    try:
        code = cli.main("improved", argv, "prog")
    except SystemExit as e:  # argparse errors exit from inside main
        code = e.code
    captured = capsys.readouterr()
    lines = [l for l in captured.err.splitlines() if l.strip()]
    return code, lines, captured


def expect_one_line(capsys, argv, needle, out):
    code, lines, captured = run_main(capsys, argv)
    assert code == 2, captured
    assert len(lines) == 1 and needle in lines[0], lines
    assert "Traceback" not in captured.err
    assert not os.path.exists(out), os.listdir(out)  # nothing that looks like a result
    return lines[0]


def bad_data(tmp_path):
    """name -> (how to make the --data path, the words the message must contain)."""
    def truncated(p):
        folder = p / "cifar-10-batches-py"
        from conftest import write_cifar_batches

        write_cifar_batches(str(folder))
        tgz = p / "cifar-10-python.tar.gz"
        with tarfile.open(tgz, "w:gz") as tar:
            tar.add(folder, arcname="cifar-10-batches-py")
        data = tgz.read_bytes()
        tgz.write_bytes(data[:len(data) // 2])
        return str(tgz)

    def corrupt_npz(p):
        (p / "c.npz").write_bytes(b"PK\x03\x04" + os.urandom(2000))
        return str(p / "c.npz")

    return {
        "missing": (lambda p: str(p / "nowhere.npz"), "no such file"),
        "truncated archive": (truncated, "corrupt or truncated"),
        "corrupt npz": (corrupt_npz, "not a readable .npz"),
        "wrong shape": (lambda p: npz(p / "s.npz", x_train=np.zeros((16, 32), np.uint8)), "has shape"),
        "wrong image dtype": (lambda p: npz(p / "t.npz", x_train=np.zeros((16, 32, 32, 3), np.int32)),
                              "has dtype int32"),
        "float labels": (lambda p: npz(p / "f.npz", y_train=np.zeros(16) + 0.5), "integer class labels"),
        "labels out of range": (lambda p: npz(p / "r.npz", y_test=np.arange(8) - 1), "labels in [-1"),
        "single class": (lambda p: npz(p / "one.npz", y_train=np.zeros(16, int)), "single class"),
        "fewer than a batch": (lambda p: npz(p / "few.npz", n_train=6), "fewer than one batch of 8"),
    }


@pytest.mark.parametrize("case", list(bad_data(None)))
def test_bad_data(case, tmp_path, capsys):
    make, needle = bad_data(tmp_path)[case]
    out = str(tmp_path / "run")
    expect_one_line(capsys, TINY + ["--data", make(tmp_path), "--out", out], needle, out)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(TlresError, match="single class"):
        cli.main("improved", TINY + ["--data", npz(tmp_path / "one.npz", y_train=np.zeros(16, int)),
                                     "--out", str(tmp_path / "run"), "--debug"], "prog")
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("flags,needle", [
    (["--epochs", "0"], "--epochs: must be positive"),
    (["--epochs", "-3"], "--epochs: must be positive"),
    (["--batch-size", "0"], "--batch-size: must be positive"),
    (["--batch-size", "-8"], "--batch-size: must be positive"),
    (["--lr", "0"], "--lr: must be positive"),
    (["--lr", "-0.1"], "--lr: must be positive"),
    (["--preset", "paper"], "invalid choice: 'paper'"),
    (["--epoch", "3"], "unrecognized arguments: --epoch"),
    (["--resume"], "--resume: expected one argument"),
])
def test_bad_flags(flags, needle, tmp_path, capsys):
    out = str(tmp_path / "run")
    data = npz(tmp_path / "ok.npz")
    expect_one_line(capsys, TINY + ["--data", data, "--out", out] + flags, needle, out)


def test_unwritable_out(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    out = str(tmp_path / "afile" / "run")
    line = expect_one_line(capsys, TINY + ["--data", npz(tmp_path / "ok.npz"), "--out", out],
                           "is a file, not a directory", out)
    assert "choose another path" in line


def test_existing_out_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "status.json").write_text('{"state": "finished"}')
    data = npz(tmp_path / "ok.npz")
    code, lines, _ = run_main(capsys, TINY + ["--data", data, "--out", str(out)])
    assert code == 2 and len(lines) == 1 and "exists and is not empty" in lines[0]
    assert "--overwrite" in lines[0]
    assert os.listdir(out) == ["status.json"] and (out / "status.json").read_text() == '{"state": "finished"}'
    # --overwrite deletes only what tlres wrote: a folder of other files is refused
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_text("meow")
    code, lines, _ = run_main(capsys, TINY + ["--data", data, "--out", str(other), "--overwrite"])
    assert code == 2 and "not a tlres run directory" in lines[0]
    assert os.listdir(other) == ["cat.jpg"]


def test_weights_of_another_architecture(tmp_path, capsys):
    import keras

    other = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="dense")])
    path = str(tmp_path / "other.weights.h5")
    other.save_weights(path)
    out = str(tmp_path / "run")
    line = expect_one_line(capsys, TINY + ["--data", npz(tmp_path / "ok.npz"), "--weights", path,
                                           "--out", out], "does not fit", out)
    assert "tiny" in line


def test_missing_weights_file(tmp_path, capsys):
    out = str(tmp_path / "run")
    expect_one_line(capsys, TINY + ["--data", npz(tmp_path / "ok.npz"), "--weights",
                                    str(tmp_path / "no.weights.h5"), "--out", out], "no such file", out)


def test_resume_of_a_missing_run(tmp_path, capsys):
    code, lines, _ = run_main(capsys, ["--resume", str(tmp_path / "nope")])
    assert code == 2 and len(lines) == 1 and "no such run directory" in lines[0]


def test_torch_state_dict_of_another_network(tmp_path, capsys):
    """A safetensors state dict that is not torchvision's ResNet50 (two resnet18-shaped tensors)."""
    from safetensors.numpy import save_file

    path = str(tmp_path / "r18.safetensors")
    save_file({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32),
               "layer1.0.conv1.weight": np.zeros((64, 64, 3, 3), np.float32)}, path)
    out = str(tmp_path / "run")
    data = ["--data", npz(tmp_path / "ok.npz"), "--weights", path, "--out", out]
    v15 = ["--preset", "quick", "--arch", "resnet50_v1_5", "--epochs", "1", "--batch-size", "8"]
    line = expect_one_line(capsys, v15 + data,
                           "does not fit --arch resnet50_v1_5", out)
    assert "missing" in line and "layer1.0.conv1.weight (64, 64, 3, 3), not (64, 64, 1, 1)" in line
    expect_one_line(capsys, TINY + data, "does not fit --arch tiny (the PyTorch reference's tiny", out)
    expect_one_line(capsys, ["--preset", "quick", "--batch-size", "8"] + data,
                    "fits --arch resnet50_v1_5, not --arch resnet50", out)
