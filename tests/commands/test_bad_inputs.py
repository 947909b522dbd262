"""Issue #7, item 5: every bad input is one line, exit 2, no traceback, no run directory left.

The checks run the command line's `main` in this process (a subprocess costs
~30 s of imports here); tests/commands/test_cli.py covers the same path in real
processes for bad flags and a missing data path.
"""

import os
import tarfile

import numpy as np
import pytest

from tlres.commands import train as train_cmd
from tlres.core.errors import TlresError

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
        code = train_cmd.main(argv, "prog")
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

    def archive(p, files, extra=None):
        """A tar.gz of `files` ({name: bytes}) under cifar-10-batches-py/, plus `extra(tar)`."""
        import io

        tgz = p / "a.tar.gz"
        with tarfile.open(tgz, "w:gz") as tar:
            for name, blob in files.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
            if extra:
                extra(tar)
        return str(tgz)

    def batches(p, blob=None):
        from conftest import write_cifar_batches

        write_cifar_batches(str(p / "b"))
        return {n: blob if blob is not None else (p / "b" / n).read_bytes() for n in sorted(os.listdir(p / "b"))}

    class Payload:
        def __reduce__(self):
            return os.system, ("echo should never run",)

    def crafted(p):
        import pickle

        return archive(p, batches(p, pickle.dumps({b"data": Payload()})))

    def pickled_ints(p):
        import pickle

        return archive(p, batches(p, pickle.dumps(7)))

    def symlink(p):
        files = batches(p)
        del files["data_batch_3"]
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_3")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        return archive(p, files, lambda tar: tar.addfile(info))

    def duplicate(p):
        import io

        files = batches(p)
        info = tarfile.TarInfo("elsewhere/test_batch")
        info.size = len(files["test_batch"])
        return archive(p, files, lambda tar: tar.addfile(info, io.BytesIO(files["test_batch"])))

    def huge_npz(p):
        import zipfile

        header = repr({"descr": "|u1", "fortran_order": False, "shape": (3072, 1024, 1024, 1024)}).encode()
        header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
        npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(64)
        with zipfile.ZipFile(p / "h.npz", "w") as z:
            for k in ("x_train", "y_train", "x_test", "y_test"):
                z.writestr(k + ".npy", npy)
        return str(p / "h.npz")

    def corrupt_npz(p):
        (p / "c.npz").write_bytes(b"PK\x03\x04" + os.urandom(2000))
        return str(p / "c.npz")

    def folder(p, split=True, **kw):
        from conftest import write_image_folder

        root = p / "images"
        if split:
            write_image_folder(str(root), per_class=4, split="train", **kw)
            write_image_folder(str(root), per_class=2, split="test", **kw)
        else:
            write_image_folder(str(root), per_class=5, **kw)
        return root

    def corrupt_image(p):
        root = folder(p)
        (root / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
        return str(root)

    def empty_class(p):
        root = folder(p)
        (root / "train" / "fox").mkdir()
        (root / "train" / "fox" / "readme.txt").write_text("no images here")
        return str(root)

    def one_image_class(p):
        root = folder(p, split=False)
        for f in sorted((root / "dog").iterdir())[1:]:
            f.unlink()
        return str(root)

    def class_missing_in_test(p):
        root = folder(p)
        import shutil

        shutil.rmtree(root / "test" / "eel")
        return str(root)

    def no_images(p):
        (p / "empty").mkdir()
        (p / "empty" / "notes.txt").write_text("x")
        return str(p / "empty")

    def bomb(p):
        from PIL import Image

        root = folder(p, split=False)
        Image.new("L", (12000, 9000)).save(root / "cat" / "huge.png")  # 108 Mpx, a 150 kB file
        return str(root)

    return {
        "images: corrupt image": (corrupt_image, "broken.png: not a readable image"),
        "images: empty class folder": (empty_class, "class folder train/fox/ has no images"),
        "images: class missing in test": (class_missing_in_test, "class 'eel' is in train/ but not in test/"),
        "images: no images": (no_images, "no images found"),
        "images: one image in a class": (one_image_class, "class 'dog' has 1 image"),
        "images: one class": (lambda p: str(folder(p, split=False, classes=("cat",))), "need at least 2 classes"),
        "images: decompression bomb": (bomb, "huge.png: more than 100,000,000 pixels"),
        "missing": (lambda p: str(p / "nowhere.npz"), "no such file"),
        "truncated archive": (truncated, "corrupt or truncated"),
        "corrupt npz": (corrupt_npz, "not a readable .npz"),
        "archive naming a callable": (crafted, "refuses to load: data_batch_1 references posix.system; "
                                      "the official CIFAR-10 files hold only arrays, lists and strings"),
        "archive of pickled integers": (pickled_ints, "data_batch_1 holds an int, not a CIFAR-10 batch "
                                        "(a dict with data and labels)"),
        "archive member a symlink": (symlink, "cifar-10-batches-py/data_batch_3 is a symbolic link in the "
                                     "archive; tlres reads regular files only"),
        "archive member twice": (duplicate, "the archive holds test_batch twice"),
        "npz declaring 3 TiB": (huge_npz, "x_train declares a uint8 array of shape (3072, 1024, 1024, 1024) "
                                "(3.3 TB) but holds 64 bytes"),  # 3072 * 1024**3 bytes, powers of 1000
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
        train_cmd.main(TINY + ["--data", npz(tmp_path / "one.npz", y_train=np.zeros(16, int)),
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
    (["--test-split", "0"], "--test-split: must be between 0 and 1"),
    (["--test-split", "1.5"], "--test-split: must be between 0 and 1"),
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
    assert code == 2 and "holds cat.jpg and no .tlres-run.json" in lines[0]
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
