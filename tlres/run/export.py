"""Export a run's model for serving: ``tlres export RUN --format onnx|savedmodel|litert``.

RUN is a finished run's directory (or its ``model.keras``). The exported graph
takes the images themselves, uint8 RGB pixels (N, S, S, 3) at the run's image
size, and returns logits: the run's input normalization is inside it, so a
server needs no tlres. Beside it, ``NAME.json`` records the input, the
normalization and the class names. Written through Keras' ``model.export``:
ONNX with jax2onnx, a TensorFlow SavedModel with jax2tf, and LiteRT (``.tflite``)
with TensorFlow's converter in a second process running Keras' TensorFlow
backend (Keras exports LiteRT from that backend only). The default place is
``RUN/export/``; an existing export is replaced only with ``--overwrite``.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

from tlres.data import augment
from tlres.net import backend
from tlres.run import predict, writes
from tlres.net import modelfile
from tlres.core.errors import TlresError

PROG = "tlres export"
# format -> (default name, Keras' name for it, modules it needs to export)
FORMATS = {"onnx": ("model.onnx", "onnx", ("jax2onnx", "onnx")),
           "savedmodel": ("savedmodel", "tf_saved_model", ("tensorflow",)),
           "litert": ("model.tflite", "litert", ("tensorflow",))}
EXTRA = 'pip install "tlres[export]"'
INPUT_NAME = "images"
LITERT_CHILD = "import sys; from tlres.run.export import litert_child; litert_child(*sys.argv[1:])"


def wrap(net, input_norm):
    """`net` behind the run's normalization: a Keras model from uint8 NHWC images to logits.

    The same operations, in the same order and float32, as `tlres.data.augment.normalize`,
    in Keras ops only, so any Keras backend builds it.
    """
    import keras

    images = keras.Input(net.input_shape[1:], dtype="uint8", name=INPUT_NAME)
    x = keras.ops.cast(images, "float32")
    if input_norm == "paper":
        x = (x / 255.0 - augment.PAPER_MEAN) / augment.PAPER_STD
    elif input_norm == "caffe":
        x = keras.ops.flip(x, axis=-1) - np.asarray(augment.CAFFE_BGR_MEAN, "float32")
    else:
        raise TlresError(f"input normalization {input_norm!r}: tlres exports paper or caffe only")
    model = keras.Model(images, net(x), name="tlres_export")
    model(np.zeros((1, *net.input_shape[1:]), "uint8"))  # Keras exports called models only
    return model


def check_format(fmt):
    if fmt not in FORMATS:
        raise TlresError(f"--format {fmt}: unknown export format; choose one of {', '.join(FORMATS)}")
    missing = [m for m in FORMATS[fmt][2] if importlib.util.find_spec(m) is None]
    if missing:
        raise TlresError(f"--format {fmt} needs {', '.join(missing)}, which is not installed: {EXTRA}")


def target(model_file, fmt, out, overwrite):
    """Where the export goes (`out`, else RUN/export/NAME), checked: no symlinks, no silent overwrite."""
    path = out or os.path.join(os.path.dirname(os.path.abspath(model_file)), "export", FORMATS[fmt][0])
    if fmt == "litert" and not path.endswith(".tflite"):
        raise TlresError(f"--out {path}: a LiteRT file's name ends in .tflite")
    parent = os.path.dirname(os.path.abspath(path))
    for p in (path, path + ".json", parent):
        if os.path.islink(p):
            raise TlresError(f"{p}: is a symbolic link; tlres does not write through links: choose another --out")
    if os.path.lexists(path) and not overwrite:
        raise TlresError(f"{path}: exists; choose another --out or pass --overwrite")
    if fmt != "savedmodel" and os.path.isdir(path) or fmt == "savedmodel" and os.path.isfile(path):
        raise TlresError(f"{path}: exists as a {'folder' if os.path.isdir(path) else 'file'}; "
                         f"a {fmt} export is {'a folder' if fmt == 'savedmodel' else 'a file'}: choose another --out")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise TlresError(f"{path}: is a folder that holds no SavedModel; tlres replaces only its own exports")
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise TlresError(f"{parent}: is not a folder")
    return path


def _save_in_process(model_file, input_norm, kformat, inner):
    backend.require_jax()
    net = modelfile.load_keras(model_file, model_file)  # read as untrusted, as predict reads it
    wrap(net, input_norm).export(inner, format=kformat, verbose=False)


def litert_child(model_file, input_norm, inner):
    """In a process whose Keras runs on TensorFlow: write the LiteRT file (LITERT_CHILD)."""
    net = modelfile.load_keras(model_file, model_file)
    wrap(net, input_norm).export(inner, format="litert", verbose=False)


def _save_litert(model_file, input_norm, inner):
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    r = subprocess.run([sys.executable, "-c", LITERT_CHILD, model_file, input_norm, inner],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0 or not os.path.isfile(inner):
        last = (r.stderr.strip().splitlines() or ["no message"])[-1][:300]
        raise TlresError(f"LiteRT conversion failed in its TensorFlow-backend process: {last}")


def _install(staged, path):
    """Move the finished export `staged` to `path`, replacing an old one last."""
    old = path + ".old"
    writes.remove_path(old)
    if os.path.isdir(path):
        os.replace(path, old)
    os.replace(staged, path)
    writes.remove_path(old)


def sidecar(meta, fmt, path, image_size):
    """What the exported graph takes and gives (`NAME.json`): a server's only other need is the names."""
    pre = meta["preprocessing"]
    return {"format": fmt, "file": os.path.basename(path),
            "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": [None, image_size, image_size, 3],
                      "layout": "NHWC", "channels": "RGB"},
            "resize": f"to {image_size}x{image_size} before the graph (tlres: bilinear, antialiased when shrinking)",
            "preprocessing": "inside the graph: " + augment.NORM_FORMULAS[pre["input_norm"]],
            "input_norm": pre["input_norm"], "outputs": "logits (softmax for probabilities)",
            "class_names": pre.get("class_names")}


def export(run, fmt, out=None, overwrite=False):
    """Export RUN's model.keras as `fmt`; returns (path, seconds, bytes). See the module docstring."""
    check_format(fmt)
    model_file = os.path.abspath(predict.model_path(run))
    meta = modelfile.read_metadata(model_file)
    if not meta or not (meta.get("preprocessing") or {}).get("input_norm"):
        raise TlresError(f"{run}: its model has no tlres preprocessing record (not written by tlres "
                         "train); nothing to put in front of it")
    path = target(model_file, fmt, out, overwrite)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    folder = path + writes.TMP
    writes.remove_path(folder)
    os.makedirs(folder)
    inner = os.path.join(folder, os.path.basename(path))
    start = time.perf_counter()
    try:
        norm = meta["preprocessing"]["input_norm"]
        if fmt == "litert":
            _save_litert(model_file, norm, inner)
        else:
            _save_in_process(model_file, norm, FORMATS[fmt][1], inner)
        size = writes.tree_size(folder)
        _install(inner, path)
    finally:
        writes.remove_path(folder)
    seconds = time.perf_counter() - start
    record = sidecar(meta, fmt, path, meta["preprocessing"].get("image_size"))
    writes.atomic_text(path + ".json", json.dumps(record, indent=2) + "\n")
    return path, seconds, size
