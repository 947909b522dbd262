"""model.keras: written by every finished run, loadable by plain Keras, and a source for --weights.

Tiny-net runs on digits (seconds each): the file format, the checkpoint rule and the backbone
transfer do not depend on the architecture; tests/run/test_quick_run.py trains ResNet50.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tlres.core import config
from tlres.data import loaders as data
from tlres.net import model
from tlres.run import train
from tlres.core.errors import TlresError

TINY = config.QUICK.replace(arch="tiny", epochs=1)

PLAIN_KERAS = r"""
import sys
sys.modules["tlres"] = None  # this process must never import tlres
import json, os
os.environ["KERAS_BACKEND"] = "jax"
import keras, numpy as np
run, x_path = sys.argv[1], sys.argv[2]
pre = json.load(open(os.path.join(run, "config.json")))["preprocessing"]
assert pre["input_norm"] == "paper"
x = np.load(x_path).astype("float32")
logits = keras.saving.load_model(os.path.join(run, "model.keras")).predict((x / 255 - 0.5) / 0.5, verbose=0)
np.save(os.path.join(run, "plain_logits.npy"), logits)
print(sorted({type(l).__name__ for l in keras.saving.load_model(os.path.join(run, "model.keras"))._flatten_layers()}))
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "tiny")
    train.run(TINY.replace(out=out), verbose=0)
    return out


def test_finished_run_keeps_model_keras_and_no_checkpoint(finished_run):
    files = set(os.listdir(finished_run))
    assert "model.keras" in files and "ckpt" not in files
    with open(os.path.join(finished_run, "config.json")) as f:
        pre = json.load(f)["preprocessing"]
    assert pre["image_size"] == 32 and pre["class_names"] == [str(i) for i in range(10)]
    assert "(x / 255 - 0.5) / 0.5" in pre["input"]


def test_plain_keras_loads_it_without_tlres_and_reproduces_predictions(finished_run, tmp_path):
    x_test = data.load("digits").x_test
    np.save(tmp_path / "x.npy", x_test)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", PLAIN_KERAS, finished_run, str(tmp_path / "x.npy")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Conv2D" in proc.stdout  # Keras' own layers: no tlres class in the file
    logits = np.load(os.path.join(finished_run, "plain_logits.npy"))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    with open(os.path.join(finished_run, "predictions.csv")) as f:
        rows = list(csv.DictReader(f))
    recorded = np.array([int(r["prediction"]) for r in rows])
    conf = np.array([float(r["confidence"]) for r in rows])
    # The run evaluated with the matmul convolution, plain Keras with XLA's: float32 rounding of
    # two summation orders, ~1e-6 relative on a 3-conv net; 1e-4 on a probability is far above
    # that and far below any real difference. Labels agree except on ties within that bound.
    top2 = np.sort(probs, 1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > 1e-4
    np.testing.assert_array_equal(probs.argmax(1)[decided], recorded[decided])
    np.testing.assert_allclose(probs.max(1), conf, atol=1e-4)
    assert decided.mean() > 0.9


def test_keep_checkpoint_keeps_ckpt(tmp_path):
    out = str(tmp_path / "kept")
    train.run(TINY.replace(out=out, keep_checkpoint=True), verbose=0)
    assert os.path.exists(os.path.join(out, "ckpt", "checkpoint.npz"))


def test_weights_run_dir_takes_the_backbone_with_a_new_head(finished_run):
    import keras

    source = keras.saving.load_model(os.path.join(finished_run, "model.keras"))
    for classes in (10, 4):  # same class count or not: the head is always new
        net = model.build(classes, TINY.replace(weights=finished_run, seed=1))
        got = [l for l in net.layers if isinstance(l, keras.Model)][0].get_weights()
        want = [l for l in source.layers if isinstance(l, keras.Model)][0].get_weights()
        assert len(got) == len(want) == 15  # 3 x (conv kernel + BN gamma, beta, mean, var)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        assert net.output_shape == (None, classes)
        head = net.get_layer("head").get_weights()[0]
        assert head.shape[1] != 10 or not np.array_equal(head, source.get_layer("head").get_weights()[0])


def test_weights_that_do_not_fit_are_one_line(finished_run, tmp_path):
    with pytest.raises(TlresError, match="does not fit --arch resnet50") as e:
        model.build(10, config.QUICK.replace(weights=finished_run))
    assert "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TlresError, match="no model.keras in that folder"):
        model.build(10, TINY.replace(weights=str(tmp_path / "empty")))
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(TlresError, match="not a readable Keras model"):
        model.build(10, TINY.replace(weights=str(tmp_path / "junk.keras")))
