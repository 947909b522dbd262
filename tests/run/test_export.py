"""`tlres export`: the exported files run in the real runtimes and give the run's labels.

One tiny run (8 px images from an .npz written here, one epoch) is trained and exported to all three
formats once for the module. Each runtime runs in its own process that never imports tlres (the
child asserts it) and reads the run's test images straight from the .npz: the graph must hold the
normalization. The same children check that `model.keras` loads in Keras' JAX, TensorFlow and
PyTorch backends, normalized there by the documented formula, (x/255 - 0.5)/0.5.

Near-ties: two float32 evaluations of the network (XLA's in the run, another runtime's here) may
order two logits differently only where their gap is below the sum of their errors. The tiny net's
logits come from 5 dot-product layers of at most K = 3*3*16 = 144 terms (conv2); each is within
gamma(144) = 8.6e-6 of exact relative to the sum of |terms| (tests/fpbounds.py), which we take as at
most 10x the layer's largest output. So a label may differ only where the top-2 logit gap is below
TIE = 2 runtimes * 5 layers * 10 * gamma(144) * max|logit| = 8.6e-4 * max|logit| of that image.
"""

import csv
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from fpbounds import gamma

from tlres import __main__ as tlres_main
from tlres.run import export

TRAIN = ["train", "--preset", "quick", "--arch", "tiny", "--image-size", "8", "--epochs", "1",
         "--batch-size", "16"]
NOT_TLRES = "\nassert 'tlres' not in sys.modules, 'the runtime check imported tlres'\n"
RUNTIMES = {  # format -> child script: argv = npz, exported file, logits .npy out
    "onnx": "import sys, numpy as np, onnxruntime as ort\n"
            "x = np.load(sys.argv[1])['x_test']\n"
            "s = ort.InferenceSession(sys.argv[2], providers=['CPUExecutionProvider'])\n"
            "z = s.run(None, {'images': x})[0]\n",
    "savedmodel": "import sys, numpy as np, tensorflow as tf\n"
                  "x = np.load(sys.argv[1])['x_test']\n"
                  "m = tf.saved_model.load(sys.argv[2])\n"
                  "z = m.signatures['serving_default'](images=tf.constant(x))\n"
                  "z = next(iter(z.values())).numpy()\n",
    "litert": "import sys, numpy as np\nfrom ai_edge_litert.interpreter import Interpreter\n"
              "x = np.load(sys.argv[1])['x_test']\n"
              "it = Interpreter(model_path=sys.argv[2]); d = it.get_input_details()[0]\n"
              "it.resize_tensor_input(d['index'], x.shape); it.allocate_tensors()\n"
              "it.set_tensor(d['index'], x); it.invoke()\n"
              "z = it.get_tensor(it.get_output_details()[0]['index'])\n",
}
KERAS_CHILD = ("import sys, numpy as np, keras\n"
               "x = np.load(sys.argv[1])['x_test'].astype('float32')\n"
               "m = keras.saving.load_model(sys.argv[2], compile=False)\n"
               "z = keras.ops.convert_to_numpy(m((x / 255.0 - 0.5) / 0.5, training=False))\n"
               "assert keras.backend.backend() == sys.argv[4], keras.backend.backend()\n")


def write_npz(path, seed=0):
    """3 learnable classes of 8 px noise (one colour channel raised, or none): 96 train, 40 test."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 150, (n, 8, 8, 3))
        for i, c in enumerate(y):
            if c < 2:
                x[i, :, :, c] += 100
        return x.astype(np.uint8), y.astype(np.int64)

    (xtr, ytr), (xte, yte) = split(96), split(40)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return str(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(npz, run directory, {format: path}): one tiny run, exported to every format."""
    base = tmp_path_factory.mktemp("export")
    npz, run = write_npz(base / "toy.npz"), str(base / "run")
    assert tlres_main.main([*TRAIN, "--data", npz, "--out", run]) == 0
    paths = {}
    for fmt in export.FORMATS:
        assert tlres_main.main(["export", run, "--format", fmt]) == 0
        paths[fmt] = os.path.join(run, "export", export.FORMATS[fmt][0])
    return npz, run, paths


def child_logits(script, argv, env=None):
    """Run `script` in a fresh Python that must not import tlres; it leaves `z` (logits)."""
    out = argv[2]
    code = script + NOT_TLRES + "np.save(sys.argv[3], np.asarray(z, 'float32'))\n"
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                       env=dict(os.environ, **(env or {})), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return np.load(out)


def recorded_labels(run):
    with open(os.path.join(run, "predictions.csv"), newline="") as f:
        return np.array([int(r["prediction"]) for r in csv.DictReader(f)])


def assert_same_labels(z, run):
    """predictions.csv's labels, except near-ties within TIE (the module docstring)."""
    want = recorded_labels(run)
    assert z.shape == (len(want), 3)
    got = z.argmax(axis=1)
    tie = 2 * 5 * 10 * gamma(144) * np.abs(z).max(axis=1)
    gap = z[np.arange(len(z)), got] - z[np.arange(len(z)), want]
    bad = np.flatnonzero((got != want) & (gap > tie))
    assert bad.size == 0, (bad, z[bad], want[bad])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(export.FORMATS))
def test_the_runtime_gives_the_runs_labels(exported, fmt, tmp_path):
    if fmt == "litert":
        pytest.importorskip("ai_edge_litert", reason="ai-edge-litert has no wheel for this platform")
    npz, run, paths = exported
    z = child_logits(RUNTIMES[fmt], [npz, paths[fmt], str(tmp_path / "z.npy")])
    assert_same_labels(z, run)
    with open(paths[fmt] + ".json") as f:
        side = json.load(f)
    assert side["input"] == {"name": "images", "dtype": "uint8", "shape": [None, 8, 8, 3],
                             "layout": "NHWC", "channels": "RGB"}
    assert side["class_names"] == ["0", "1", "2"] and side["input_norm"] == "paper"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow", "torch"])
def test_model_keras_gives_the_runs_labels_in_every_keras_backend(exported, backend, tmp_path):
    npz, run, _ = exported
    argv = [npz, os.path.join(run, "model.keras"), str(tmp_path / "z.npy"), backend]
    assert_same_labels(child_logits(KERAS_CHILD, argv, {"KERAS_BACKEND": backend}), run)


@pytest.mark.slow
def test_an_existing_export_is_replaced_only_with_overwrite(exported, capsys):
    _, run, paths = exported
    before = os.path.getmtime(paths["onnx"])
    assert tlres_main.main(["export", run, "--format", "onnx"]) == 2
    assert "exists; choose another --out or pass --overwrite" in capsys.readouterr().err
    assert os.path.getmtime(paths["onnx"]) == before
    assert tlres_main.main(["export", run, "--format", "onnx", "--overwrite"]) == 0
    assert os.listdir(os.path.dirname(paths["onnx"])).count("model.onnx.tmp") == 0


def fake_run(folder):
    """A run directory whose model.keras holds only tlres' record: enough for the checks made before
    anything is loaded."""
    os.makedirs(folder)
    meta = {"preprocessing": {"input_norm": "paper", "class_names": ["a", "b"], "image_size": 8},
            "evaluation": {"batch_size": 4, "conv": "auto"}}
    with zipfile.ZipFile(os.path.join(folder, "model.keras"), "w") as z:
        z.writestr("tlres.json", json.dumps(meta))
    return str(folder)


def one_line(capsys, argv):
    code = tlres_main.main(["export", *argv])
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("tlres export: error: ")
    return err[0]


def test_bad_export_input_is_one_line(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no model.keras in that folder" in one_line(capsys, [str(empty), "--format", "onnx"])
    run = fake_run(tmp_path / "run")
    assert "unknown export format; choose one of onnx, savedmodel, litert" in one_line(
        capsys, [run, "--format", "tflite"])
    assert "ends in .tflite" in one_line(capsys, [run, "--format", "litert", "--out", str(tmp_path / "m")])
    os.makedirs(os.path.join(run, "export"))
    open(os.path.join(run, "export", "model.onnx"), "w").close()
    assert "exists; choose another --out or pass --overwrite" in one_line(capsys, [run, "--format", "onnx"])
    os.symlink(str(tmp_path), os.path.join(run, "export", "link"))
    line = one_line(capsys, [run, "--format", "onnx", "--out", os.path.join(run, "export", "link", "m.onnx")])
    assert "is a symbolic link" in line and not os.path.exists(tmp_path / "m.onnx")
    os.symlink(str(tmp_path / "elsewhere.onnx"), os.path.join(run, "export", "to.onnx"))
    line = one_line(capsys, [run, "--format", "onnx", "--out", os.path.join(run, "export", "to.onnx"),
                             "--overwrite"])
    assert "is a symbolic link" in line and not os.path.exists(tmp_path / "elsewhere.onnx")


def test_a_missing_exporter_names_the_extra(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax2onnx" else real(name, *a))
    line = one_line(capsys, [fake_run(tmp_path / "run"), "--format", "onnx"])
    assert line.endswith('--format onnx needs jax2onnx, which is not installed: pip install "tlres[export]"')
