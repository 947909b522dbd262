"""Every bad input on the command line, one table: how the input is made, the `tlres` argv, a
fragment of the one line it must print, and the exit status. Each row is also checked for
exactly one line on stderr, no traceback and no run directory left (`refused`).

Rows run `tlres.__main__.main` in this process (a subprocess adds its imports to each row).
Cases that check more than the line sit after the table, with the same contract; two run a
real process. Hostile files fed to a loader directly: tests/data/test_hostile_files.py.
"""

import dataclasses
import io
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
from conftest import write_cifar_batches, write_image_folder
from helpers import ROOT, npy_declaring, small_result

from tlres.__main__ import main as tlres_main
from tlres.core import config
from tlres.core.errors import TlresError
from tlres.run import rundir

TRAIN = ["train", "--preset", "quick", "--arch", "tiny", "--epochs", "1", "--batch-size", "8"]
RECORDED_RUN = os.path.join(ROOT, "experiments", "results", "digits", "runs", "improved", "seed0")


def refused(capsys, argv, out, status=2):
    """`tlres ARGV` in this process: exit `status`, one stderr line, no traceback, no `out`."""
    try:
        code = tlres_main(argv)
    except SystemExit as e:  # argparse errors exit from inside main
        code = e.code
    captured = capsys.readouterr()
    assert code == status, captured
    assert len(captured.err.splitlines()) == 1 and captured.err.strip(), captured.err
    assert "Traceback" not in captured.err
    assert not os.path.exists(out), os.listdir(out)  # nothing that looks like a result
    return captured.err.strip()


# -- builders: each makes one input in the test's folder `p` and returns its path ------------------

def npz(path, n_train=16, n_test=8, classes=3, **override):
    rng = np.random.default_rng(0)
    arrays = dict(x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
                  y_train=np.arange(n_train) % classes,
                  x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
                  y_test=np.arange(n_test) % classes)
    arrays.update(override)
    np.savez(path, **arrays)
    return str(path)


def ok_npz(p):
    return npz(p / "ok.npz")


def npz_with(**override):
    return lambda p: npz(p / "bad.npz", **override)


def truncated(p):
    folder = p / "cifar-10-batches-py"
    write_cifar_batches(str(folder))
    tgz = p / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    data = tgz.read_bytes()
    tgz.write_bytes(data[:len(data) // 2])
    return str(tgz)


def archive(p, files, extra=None):
    """A tar.gz of `files` ({name: bytes}) under cifar-10-batches-py/, plus `extra(tar)`."""
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
    write_cifar_batches(str(p / "b"))
    return {n: blob if blob is not None else (p / "b" / n).read_bytes() for n in sorted(os.listdir(p / "b"))}


class Payload:
    """Unpickling this calls `fn(*args)`: what a crafted archive does."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def crafted(p):
    return archive(p, batches(p, pickle.dumps({b"data": Payload(os.system, "echo should never run")})))


def pickled_ints(p):
    return archive(p, batches(p, pickle.dumps(7)))


def symlink(p):
    files = batches(p)
    del files["data_batch_3"]
    info = tarfile.TarInfo("cifar-10-batches-py/data_batch_3")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return archive(p, files, lambda tar: tar.addfile(info))


def duplicate(p):
    files = batches(p)
    info = tarfile.TarInfo("elsewhere/test_batch")
    info.size = len(files["test_batch"])
    return archive(p, files, lambda tar: tar.addfile(info, io.BytesIO(files["test_batch"])))


def huge_npz(p):
    import zipfile

    npy = npy_declaring((3072, 1024, 1024, 1024), bytes(64))
    with zipfile.ZipFile(p / "h.npz", "w") as z:
        for k in ("x_train", "y_train", "x_test", "y_test"):
            z.writestr(k + ".npy", npy)
    return str(p / "h.npz")


def corrupt_npz(p):
    (p / "c.npz").write_bytes(b"PK\x03\x04" + os.urandom(2000))
    return str(p / "c.npz")


def folder(p, split=True, **kw):
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


def a_file_in_the_way(p):
    (p / "afile").write_text("x")
    return str(p / "afile" / "run")


TINY_RUN = config.QUICK.replace(arch="tiny", image_size=8, batch_size=8, epochs=1)


def a_run(folder, change=None, drop=(), status=None):
    """A run directory as `tlres train` leaves it when killed, its config.json edited."""
    os.makedirs(folder)
    saved = {**dataclasses.asdict(TINY_RUN.replace(out=str(folder))), **(change or {})}
    record = {"config": saved, "dataset": {"num_train": 100, "num_test": 20, "num_classes": 10},
              "device": {"processes": 1}}
    for key in drop:
        record.pop(key, None) if key in record else saved.pop(key)
    (folder / "config.json").write_text(json.dumps(record))
    (folder / "status.json").write_text(json.dumps(status or {"state": "failed", "error": "x"}))
    return str(folder)


def tampered_run(change=None, drop=(), status=None):
    return lambda p: a_run(p / "old", change, drop, status)


DROP = object()


def edited(**changes):
    r = small_result()
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = r
        for key in parents:
            node = node[key]
        if value is DROP:
            del node[last]
        else:
            node[last] = value
    return r


def results_file(obj):
    """A valid results file (good.json) and `obj` as bad.json, whose path is returned."""
    def make(p):
        (p / "good.json").write_text(json.dumps(small_result()))
        (p / "bad.json").write_text(json.dumps(obj))
        return str(p / "bad.json")
    return make


def deep_json(p):
    (p / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    return str(p / "deep.json")


def recorded_run_with(name, text):
    """The recorded digits run, copied, with its file `name` replaced by `text`."""
    def make(p):
        run = p / "recorded"
        shutil.copytree(RECORDED_RUN, run)
        (run / name).write_bytes(text.encode("latin-1"))
        return str(run)
    return make


def converter_csvs(history, predictions):
    """h.csv and p.csv for `tlres results convert`; returns the folder."""
    def make(p):
        (p / "h.csv").write_text(history)
        (p / "p.csv").write_text(predictions)
        return str(p)
    return make


# -- the table -------------------------------------------------------------------------------------

DATA = [*TRAIN, "--data", "{input}", "--out", "{out}"]  # a bad --data; or a good one, a bad flag after it
COMPARE_BAD = ["compare", "{tmp}/good.json", "{input}"]
CONVERT = ["results", "convert", "--history", "{input}/h.csv", "--predictions", "{input}/p.csv",
           "--framework", "x", "--out", "{out}"]
RESUME = ["train", "--resume", "{input}"]

BAD_RESULTS = {
    "a number, not an object": (3, "a result must be a JSON object; found a number"),
    "a list of strings": (["x"], "a result must be a JSON object; found a string"),
    "no name": (edited(name=None), "name must be a non-empty string"),
    "unhashable seed": (edited(config__seed=[1]), "config.seed must be a number or a string"),
    "framework a string": (edited(framework="jax"), "framework must be an object"),
    "NaN accuracy": (edited(metrics__accuracy=float("nan")), "metrics.accuracy must be a number in [0, 1]"),
    "accuracy a string": (edited(metrics__accuracy="0.9"), "metrics.accuracy must be a number in [0, 1]"),
    "num_test 0": (edited(metrics__num_test=0), "metrics.num_test must be a positive integer"),
    "num_test beyond floats": (edited(metrics__num_test=10 ** 400), "metrics.num_test must be a positive integer"),
    "more correct than tested": (edited(metrics__correct=7), "metrics.correct must be an integer in [0, num_test]"),
    "loss infinite": (edited(metrics__loss=float("inf")), "metrics.loss must be a finite number >= 0"),
    "history of strings": (edited(history=["x"]), "history must be a list of objects of numbers"),
    "epoch NaN": (edited(history=[{"epoch": float("nan")}]), "history must be a list of objects of numbers"),
    "label beyond num_classes": (edited(predictions__label=[0, 1, 2, 0, 1, 3]), "labels and predictions in 0..2"),
    "num_classes 10^9": (edited(dataset__num_classes=10 ** 9), "dataset.num_classes must be an integer from 1 to 1000"),
    "ragged predictions": (edited(predictions__index=[0, 1]), "index, label and prediction lists of one non-zero length"),
    "schema with a newline": (edited(schema="tlres.results/\n2"), "schema 'tlres.results/\\n2' is not supported"),
}

DAMAGED_RUN = [
    ("metrics.json a list", "metrics.json", "[1, 2]", "expected a JSON object; found a list"),
    ("metrics.json without num_test", "metrics.json", '{"accuracy": 0.9}',
     "metrics need at least accuracy and num_test"),
    ("config.json's config a list", "config.json", '{"config": [1]}', "config must be an object, its preset a string"),
    ("config.json a list", "config.json", "[]", "expected a JSON object; found a list"),
    ("predictions.csv empty cell", "predictions.csv", "index,label,prediction\n0,1,\n",
     "line 2: prediction must be an integer; found ''"),
    ("predictions.csv short row", "predictions.csv", "index,label,prediction\n0,1\n",
     "line 2: prediction must be an integer"),
    ("predictions.csv long row", "predictions.csv", "index,label,prediction\n0,1,1,7\n",
     "line 2 has 4 cells; the header has 3"),
    ("history.csv not UTF-8", "history.csv", "epoch,loss\n1,\xff\n", "cannot read it as CSV (UnicodeDecodeError"),
]

CONVERTER = [
    ("no epoch column", '"3\n4",loss\n1,0.5\n', "index,label,prediction\n0,1,1\n",
     "a history needs an epoch column; it has '3\\n4, loss'"),
    ("epoch not a number", "epoch,loss\nx,0.5\n", "index,label,prediction\n0,1,1\n", "line 2: epoch must be a number"),
    ("last val_loss NaN", "epoch,val_loss\n1,nan\n", "index,label,prediction\n0,1,1\n", "the last val_loss is nan"),
    ("prediction empty", "epoch\n1\n", "index,label,prediction\n0,1,\n", "line 2: prediction must be an integer"),
    ("class 99999", "epoch\n1\n", "index,label,prediction\n0,1,99999\n",
     "class 99999 would make 100000 classes; at most 1000"),
]

TABLE = [  # (id, builder of {input} or None, argv, fragment of the one line, exit status)
    ("images: corrupt image", corrupt_image, DATA, "broken.png: not a readable image", 2),
    ("images: empty class folder", empty_class, DATA, "class folder train/fox/ has no images", 2),
    ("images: class missing in test", class_missing_in_test, DATA, "class 'eel' is in train/ but not in test/", 2),
    ("images: no images", no_images, DATA, "no images found", 2),
    ("images: one image in a class", one_image_class, DATA, "class 'dog' has 1 image", 2),
    ("images: one class", lambda p: str(folder(p, split=False, classes=("cat",))), DATA, "need at least 2 classes", 2),
    ("images: decompression bomb", bomb, DATA, "huge.png: more than 100,000,000 pixels", 2),
    ("missing", lambda p: str(p / "nowhere.npz"), DATA, "no such file", 2),
    ("truncated archive", truncated, DATA, "corrupt or truncated", 2),
    ("corrupt npz", corrupt_npz, DATA, "not a readable .npz", 2),
    ("archive naming a callable", crafted, DATA, "refuses to load: data_batch_1 references posix.system; "
     "the official CIFAR-10 files hold only arrays, lists and strings", 2),
    ("archive of pickled integers", pickled_ints, DATA, "data_batch_1 holds an int, not a CIFAR-10 batch "
     "(a dict with data and labels)", 2),
    ("archive member a symlink", symlink, DATA, "cifar-10-batches-py/data_batch_3 is a symbolic link in the "
     "archive; tlres reads regular files only", 2),
    ("archive member twice", duplicate, DATA, "the archive holds test_batch twice", 2),
    ("npz declaring 3 TiB", huge_npz, DATA, "x_train declares a uint8 array of shape (3072, 1024, 1024, 1024) "
     "(3.3 TB) but holds 64 bytes", 2),  # 3072 * 1024**3 bytes, powers of 1000
    ("wrong shape", npz_with(x_train=np.zeros((16, 32), np.uint8)), DATA, "has shape", 2),
    ("wrong image dtype", npz_with(x_train=np.zeros((16, 32, 32, 3), np.int32)), DATA, "has dtype int32", 2),
    ("float labels", npz_with(y_train=np.zeros(16) + 0.5), DATA, "integer class labels", 2),
    ("labels out of range", npz_with(y_test=np.arange(8) - 1), DATA, "labels in [-1", 2),
    ("single class", npz_with(y_train=np.zeros(16, int)), DATA, "single class", 2),
    ("fewer than a batch", npz_with(n_train=6), DATA, "fewer than one batch of 8", 2),
    *[(f"flag {' '.join(flags)}", ok_npz, DATA + flags, needle, 2) for flags, needle in [
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
        (["--test-split", "1.5"], "--test-split: must be between 0 and 1")]],
    # the improved preset's defaults, no --data: the flag is refused before any input is looked for
    *[(f"default preset, flag {' '.join(flags)}", None, ["train", *flags, "--out", "{out}"], needle, 2)
      for flags, needle in [(["--epochs", "-1"], "--epochs"), (["--epochs", "abc"], "--epochs"),
                            (["--lr", "0"], "--lr"), (["--batch-size", "0"], "--batch-size"),
                            (["--schedule", "linear"], "--schedule"), (["--preset", "nope"], "--preset"),
                            (["--no-such-flag"], "unrecognized")]],
    ("missing --weights file", ok_npz, [*DATA, "--weights", "{tmp}/no.weights.h5"], "no such file", 2),
    ("resume of a missing run", None, ["train", "--resume", "{tmp}/nope"], "no such run directory", 2),
    *[(f"resume record: {words}", tampered_run(change, drop, status), RESUME, words, 2)
      for change, drop, status, words in [
        ({"epochs": "3"}, (), None, "config.json: epochs must be an integer, got '3'"),
        ({"seed": [1]}, (), None, "config.json: seed must be an integer, got [1]"),
        ({"arch": "vgg"}, (), None, "config.json: arch must be one of resnet50, resnet50_v1_5, tiny, got 'vgg'"),
        ({"image_size": 12000}, (), None, "config.json: image_size must be 8..1024 pixels, got 12000"),
        (None, ("dataset",), None, "config.json: dataset.num_train must be an integer >= 1, got None"),
        (None, ("data",), None, 'config.json has no "config" record'),
        (None, (), {"state": "running", "pid": 2 ** 70, "host": "h"}, "status.json's pid and host"),
        (None, (), {"state": 3}, "status.json's state must be one of")]],
    *[(f"compare: {name}", results_file(obj), COMPARE_BAD, needle, 2) for name, (obj, needle) in BAD_RESULTS.items()],
    ("compare: JSON nested too deeply", deep_json, ["compare", "{input}"], "JSON nested too deeply", 2),
    *[(f"compare run: {name}", recorded_run_with(file, text), ["compare", "{input}"], needle, 2)
      for name, file, text, needle in DAMAGED_RUN],
    *[(f"convert: {name}", converter_csvs(h, pr), CONVERT, needle, 2) for name, h, pr, needle in CONVERTER],
]


@pytest.mark.parametrize("make,argv,fragment,status", [pytest.param(*row[1:], id=row[0]) for row in TABLE])
def test_bad_input(make, argv, fragment, status, tmp_path, capsys):
    made = make(tmp_path) if make else None
    out = tmp_path / "run"
    line = refused(capsys, [a.format(input=made, tmp=tmp_path, out=out) for a in argv], out, status)
    assert fragment in line, line


def test_the_table_ids_are_unique():
    ids = [row[0] for row in TABLE]
    assert len(ids) == len(set(ids))


# -- cases that check more than the line ----------------------------------------------------------

def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(TlresError, match="single class"):
        tlres_main(TRAIN + ["--data", npz(tmp_path / "one.npz", y_train=np.zeros(16, int)),
                            "--out", str(tmp_path / "run"), "--debug"])
    assert not os.path.exists(tmp_path / "run")


def test_unwritable_out_says_choose_another_path(tmp_path, capsys):
    out = a_file_in_the_way(tmp_path)
    line = refused(capsys, TRAIN + ["--data", ok_npz(tmp_path), "--out", out], out)
    assert "is a file, not a directory" in line and "choose another path" in line


def test_existing_out_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "status.json").write_text('{"state": "finished"}')
    data = ok_npz(tmp_path)
    try:
        code = tlres_main(TRAIN + ["--data", data, "--out", str(out)])
    except SystemExit as e:
        code = e.code
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and "exists and is not empty" in lines[0]
    assert "--overwrite" in lines[0]
    assert os.listdir(out) == ["status.json"] and (out / "status.json").read_text() == '{"state": "finished"}'
    # --overwrite deletes only what tlres wrote: a folder of other files is refused
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_text("meow")
    code = tlres_main(TRAIN + ["--data", data, "--out", str(other), "--overwrite"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1 and "holds cat.jpg and no .tlres-run.json" in lines[0]
    assert os.listdir(other) == ["cat.jpg"]


def test_crafted_archive_is_refused_and_its_payload_never_runs(tmp_path, capsys):
    """The crafted-archive attack as a user would run it: the exact line, and no file made."""
    marker, out = tmp_path / "PWNED", tmp_path / "run"
    path = archive(tmp_path, batches(tmp_path, pickle.dumps({b"data": Payload(os.system, f"touch {marker}"),
                                                             b"labels": [0]})))
    line = refused(capsys, ["train", "--data", path, "--weights", "none", "--out", str(out)], out)
    assert line == (f"tlres train: error: {path}: refuses to load: data_batch_1 references posix.system; "
                    "the official CIFAR-10 files hold only arrays, lists and strings")
    assert not marker.exists()


def test_weights_of_another_architecture_name_the_arch(tmp_path, capsys):
    import keras

    other = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="dense")])
    path = str(tmp_path / "other.weights.h5")
    other.save_weights(path)
    out = str(tmp_path / "run")
    line = refused(capsys, TRAIN + ["--data", ok_npz(tmp_path), "--weights", path, "--out", out], out)
    assert "does not fit" in line and "tiny" in line


def test_torch_state_dict_of_another_network(tmp_path, capsys):
    """A safetensors state dict that is not torchvision's ResNet50 (two resnet18-shaped tensors)."""
    from safetensors.numpy import save_file

    path = str(tmp_path / "r18.safetensors")
    save_file({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32),
               "layer1.0.conv1.weight": np.zeros((64, 64, 3, 3), np.float32)}, path)
    out = str(tmp_path / "run")
    data = ["--data", ok_npz(tmp_path), "--weights", path, "--out", out]
    v15 = ["train", "--preset", "quick", "--arch", "resnet50_v1_5", "--epochs", "1", "--batch-size", "8"]
    line = refused(capsys, v15 + data, out)
    assert "does not fit --arch resnet50_v1_5" in line
    assert "missing" in line and "layer1.0.conv1.weight (64, 64, 3, 3), not (64, 64, 1, 1)" in line
    assert "does not fit --arch tiny (the PyTorch reference's tiny" in refused(capsys, TRAIN + data, out)
    line = refused(capsys, ["train", "--preset", "quick", "--batch-size", "8"] + data, out)
    assert "fits --arch resnet50_v1_5, not --arch resnet50" in line


def test_image_size_1000000_is_one_line_in_under_a_second(tmp_path, capsys):
    out = str(tmp_path / "big")
    t0 = time.perf_counter()
    line = refused(capsys, ["train", "--preset", "quick", "--arch", "tiny", "--epochs", "1",
                            "--image-size", "1000000", "--out", out], out)
    assert time.perf_counter() - t0 < 1
    assert "--image-size: must be 8..1024 pixels, got 1000000" in line


def test_a_run_that_cannot_fit_is_refused_before_anything(tmp_path, capsys):
    out = str(tmp_path / "huge")
    t0 = time.perf_counter()
    line = refused(capsys, ["train", "--preset", "quick", "--image-size", "1024", "--batch-size", "65536",
                            "--epochs", "1", "--out", out], out)
    assert "needs about 240.5 TB of memory to train --arch resnet50" in line, line
    assert "is available; lower --batch-size or --image-size" in line
    assert time.perf_counter() - t0 < 5


def test_a_valid_resume_record_passes(tmp_path):
    """The record `a_run` writes untouched is accepted (the table's rows change one thing each)."""
    assert rundir.resumed_config(a_run(tmp_path / "run")).arch == "tiny"


# -- offline: the paper preset names every missing input (CIFAR-10, ImageNet weights) at once ------
# Isolated from this machine's caches and network, as tests/net/test_model.py is: Keras' cache is a
# temporary KERAS_HOME, tensorflow-datasets' a temporary --data-dir, and the reachability probe says
# "offline", so these hold online and with the real files cached too.

@pytest.fixture
def offline(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    from keras.src.backend import config as keras_config

    from tlres.data import online

    monkeypatch.setattr(keras_config, "keras_home", lambda: str(tmp_path / "keras"))
    probed = []
    monkeypatch.setattr(online, "reachable", lambda host, *a, **k: probed.append(host) or False)
    return probed


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def offline_run(capsys, tmp_path, *argv):
    """(the one line, seconds, absl's log messages) of `tlres train ARGV --out RUN`."""
    out = tmp_path / "run"
    records = _Records()
    absl = logging.getLogger("absl")
    absl.addHandler(records)
    try:
        start = time.monotonic()
        line = refused(capsys, ["train", *argv, "--out", str(out)], out)
        seconds = time.monotonic() - start
    finally:
        absl.removeHandler(records)
    return line, seconds, records.messages


def test_paper_preset_offline_names_cifar10_and_imagenet_weights_at_once(offline, tmp_path, capsys):
    from tlres.data import loaders as data
    from tlres.net import weights as weights_lib

    msg, seconds, logged = offline_run(capsys, tmp_path, "--data-dir", str(tmp_path / "tfds"))
    assert msg.startswith("tlres train: error: 2 inputs are missing or unusable: (1) CIFAR-10"), msg
    # each with its fix: where to get CIFAR-10 and the flag that reads it; where the weights go
    assert data.CIFAR10_URL in msg and "--data /path/to/cifar-10-python.tar.gz" in msg
    assert str(tmp_path / "tfds") in msg
    assert "(2) ImageNet weights" in msg and weights_lib.IMAGENET_URL in msg
    assert str(tmp_path / "keras" / "models" / weights_lib.IMAGENET_NOTOP) in msg and "--weights none" in msg
    assert set(offline) == {"www.cs.toronto.edu", "storage.googleapis.com"}
    assert seconds < 10
    assert not [m for m in logged if "dataset_info.json" in m], logged  # tfds' cache warning is dropped


def test_weights_in_keras_cache_leave_only_cifar10(offline, tmp_path, capsys):
    from tlres.net import weights as weights_lib

    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / weights_lib.IMAGENET_NOTOP).write_bytes(b"")  # present: not probed
    msg, _, _ = offline_run(capsys, tmp_path, "--data-dir", str(tmp_path / "tfds"))
    assert "CIFAR-10 is not in the tensorflow-datasets cache" in msg
    assert "ImageNet" not in msg and "inputs are missing" not in msg
    assert offline == ["www.cs.toronto.edu"]


def test_supplied_data_leaves_only_the_weights(offline, tmp_path, capsys):
    msg, _, _ = offline_run(capsys, tmp_path, "--data", "digits")
    assert msg.startswith("tlres train: error: ImageNet weights for ResNet50 are not in Keras' cache"), msg
    assert "CIFAR-10" not in msg


def test_a_bad_data_path_and_a_missing_weights_file_are_named_together(offline, tmp_path, capsys):
    msg, _, _ = offline_run(capsys, tmp_path, "--data", str(tmp_path / "mine.npz"),
                            "--weights", str(tmp_path / "w.weights.h5"))
    assert f"(1) --data {tmp_path / 'mine.npz'}: no such file or folder" in msg
    assert f"(2) --weights {tmp_path / 'w.weights.h5'}: no such file" in msg
    assert offline == []  # neither needs the network


# -- in a real process: what only a fresh interpreter shows --------------------------------------

def run_cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "tlres.experiments.improved", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_missing_data_is_one_line_exit_2_in_a_real_process(tmp_path):
    """Nothing the imports print (JAX, TensorFlow, absl) reaches stderr beside the line."""
    r = run_cli("--preset", "quick", "--data", str(tmp_path / "none.npz"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].count("no such file") == 1


def test_other_keras_backend_is_a_clear_error(tmp_path):
    r = run_cli("--preset", "quick", "--out", str(tmp_path / "o"), env={"KERAS_BACKEND": "torch"})
    assert r.returncode == 2 and "KERAS_BACKEND='torch'" in r.stderr and "Traceback" not in r.stderr
