"""Offline, the paper preset names every missing input (CIFAR-10, ImageNet weights) in one message.

Isolated from this machine's caches and network, as tests/net/test_model.py is: Keras' cache is a
temporary KERAS_HOME, tensorflow-datasets' a temporary --data-dir, and the reachability probe
says "offline", so these hold online and with the real files cached too.
"""

import logging
import time

import pytest

from tlres.data import loaders as data, online
from tlres.net import weights as weights_lib
from tlres.commands import train as train_cmd

pytest.importorskip("tensorflow_datasets")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    from keras.src.backend import config

    monkeypatch.setattr(config, "keras_home", lambda: str(tmp_path / "keras"))
    probed = []
    monkeypatch.setattr(online, "reachable", lambda host, *a, **k: probed.append(host) or False)
    return probed


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def run(capsys, tmp_path, *argv):
    out = tmp_path / "run"
    records = _Records()
    absl = logging.getLogger("absl")
    absl.addHandler(records)
    try:
        start = time.monotonic()
        code = train_cmd.main([*argv, "--out", str(out)], "prog")
        seconds = time.monotonic() - start
    finally:
        absl.removeHandler(records)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, (code, err)
    assert not out.exists()
    return err[0], seconds, records.messages


def test_paper_preset_offline_names_cifar10_and_imagenet_weights_at_once(offline, tmp_path, capsys):
    msg, seconds, logged = run(capsys, tmp_path, "--data-dir", str(tmp_path / "tfds"))
    assert msg.startswith("prog: error: 2 inputs are missing or unusable: (1) CIFAR-10"), msg
    # each with its fix: where to get CIFAR-10 and the flag that reads it; where the weights go
    assert data.CIFAR10_URL in msg and "--data /path/to/cifar-10-python.tar.gz" in msg
    assert str(tmp_path / "tfds") in msg
    assert "(2) ImageNet weights" in msg and weights_lib.IMAGENET_URL in msg
    assert str(tmp_path / "keras" / "models" / weights_lib.IMAGENET_NOTOP) in msg and "--weights none" in msg
    assert set(offline) == {"www.cs.toronto.edu", "storage.googleapis.com"}
    assert seconds < 10
    assert not [m for m in logged if "dataset_info.json" in m], logged  # tfds' cache warning is dropped


def test_weights_in_keras_cache_leave_only_cifar10(offline, tmp_path, capsys):
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / weights_lib.IMAGENET_NOTOP).write_bytes(b"")  # present: not probed
    msg, _, _ = run(capsys, tmp_path, "--data-dir", str(tmp_path / "tfds"))
    assert "CIFAR-10 is not in the tensorflow-datasets cache" in msg
    assert "ImageNet" not in msg and "inputs are missing" not in msg
    assert offline == ["www.cs.toronto.edu"]


def test_supplied_data_leaves_only_the_weights(offline, tmp_path, capsys):
    msg, _, _ = run(capsys, tmp_path, "--data", "digits")
    assert msg.startswith("prog: error: ImageNet weights for ResNet50 are not in Keras' cache"), msg
    assert "CIFAR-10" not in msg


def test_a_bad_data_path_and_a_missing_weights_file_are_named_together(offline, tmp_path, capsys):
    msg, _, _ = run(capsys, tmp_path, "--data", str(tmp_path / "mine.npz"),
                    "--weights", str(tmp_path / "w.weights.h5"))
    assert f"(1) --data {tmp_path / 'mine.npz'}: no such file or folder" in msg
    assert f"(2) --weights {tmp_path / 'w.weights.h5'}: no such file" in msg
    assert offline == []  # neither needs the network
