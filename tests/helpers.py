"""What several test files share: the toy data, the command line, the run directory's readers, the
float64 runner script and the distributed tests' environment. No test imports another test file."""

import csv
import io
import json
import os
import socket
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = "python -m tlres.experiments.improved"  # the command line's prog, which prefixes its one line


def write_npz(path, n_train=640, n_test=96, seed=0):
    """Learnable toy data: noise with one colour channel raised (classes 0-2) or none (3)."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, 4, n)
        x = rng.integers(0, 140, (n, 32, 32, 3))
        for i, c in enumerate(y):
            if c < 3:
                x[i, :, :, c] += 80
        return x.astype(np.uint8), y.astype(np.int64)

    (xtr, ytr), (xte, yte) = split(n_train), split(n_test)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return str(path)


def npy_declaring(shape, payload, descr="|u1"):
    """An .npy file (format 1.0) whose header declares `descr` x `shape`, followed by `payload`
    (bytes): a size declared far beyond the data, as a hostile .npz or checkpoint holds."""
    header = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + payload


def small_result():
    """A valid results file's object: 3 classes, 6 test images, 4 right."""
    from tlres.analysis import results

    labels, preds = [0, 1, 2, 0, 1, 2], [0, 1, 1, 0, 2, 2]
    return {"schema": results.SCHEMA, "name": "r", "framework": {"name": "keras-jax", "versions": {}},
            "config": {"seed": 0}, "dataset": {"name": "t", "num_classes": 3},
            "history": [{"epoch": 1, "loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.6}],
            "metrics": {"accuracy": 4 / 6, "correct": 4, "num_test": 6, "loss": 0.4, "mean_class_accuracy": 4 / 6},
            "predictions": {"index": list(range(6)), "label": labels, "prediction": preds}}


def cli(*args):
    return [sys.executable, "-m", "tlres.experiments.improved", *args]


def read(run, name):
    with open(os.path.join(run, name)) as f:
        return json.load(f)


def history(run):
    with open(os.path.join(run, "history.csv")) as f:
        return list(csv.DictReader(f))


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def in_process_main(argv):
    """(exit status, stdout, stderr) of the command line's `main` in this process."""
    from tlres.commands import train as train_cmd

    mp = pytest.MonkeyPatch()
    out, err = io.StringIO(), io.StringIO()
    mp.setattr(sys, "stdout", out)
    mp.setattr(sys, "stderr", err)
    try:
        code = train_cmd.main(argv, PROG)
    finally:
        mp.undo()
    return code, out.getvalue(), err.getvalue()


LOSS_TOL = 1e-9  # float64 runs: 1.1e-16 amplified at most ~1e7 over two epochs (docstring)
STEP64_TOL = 1e-12  # one float64 SGD step, relative to the largest update (docstring)
STEP32_FACTOR = 4  # float32: parallel within 4x the single-device distance from float64 (docstring)

FLOAT64 = r"""
import csv, json, sys
import jax
jax.config.update("jax_enable_x64", True)  # for the float64 runs; float32 ones set their policy
from tlres.net import model  # first: importing tlres selects the JAX backend
from tlres.net import modelfile
from tlres.run import losses, train
import keras
from keras import ops
import numpy as np
from keras.src.backend.common import dtypes
from tlres.core.config import QUICK
from tlres.core.config import Config

_validate = Config.validate  # float64 is these runs' own dtype policy, no flag's: the rest is checked
Config.validate = lambda self, where=None: _validate(self.replace(precision="float32"), where) and self

out = sys.argv[1]
_Dense, _call = keras.layers.Dense, losses.SmoothedCrossEntropy.call


class Dense(_Dense):  # model.build asks for a float32 head; in float64 runs it follows the policy
    def __init__(self, *a, dtype=None, **k):
        super().__init__(*a, **k)


def call(self, y_true, y_pred):  # the loss without its float32 cast, for float64 logits
    if keras.backend.standardize_dtype(y_pred.dtype) != "float64":
        return _call(self, y_true, y_pred)
    labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    if self.form == "keras":
        return self._keras(ops.one_hot(labels, self.num_classes, dtype="float64"), y_pred)
    targets = ops.cast(losses.paper_targets(labels, self.num_classes, self.epsilon), "float64")
    return -ops.sum(targets * ops.log_softmax(y_pred, axis=-1), axis=-1)


losses.SmoothedCrossEntropy.call = call
# The stand-in Dense above is this script's own class, which Keras cannot deserialize: these runs
# test numerics, not the model file (tests/net/test_model_file.py does), so it is written empty.
modelfile.save = lambda net, path, *a, **k: open(path, "wb").close()


def float64(on):
    keras.layers.Dense = Dense if on else _Dense
    keras.config.set_floatx("float64" if on else "float32")
    # Keras on JAX narrows float64 to float32 in its type promotion, which BatchNormalization uses
    dtypes.BIT64_TO_BIT32_DTYPE["float64"] = "float64" if on else "float32"
"""  # float64 runs of tlres' runner (tests/run/test_data_parallel.py, tests/run/test_distributed.py)


ENV = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
CLUSTER_VARS = ("KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID",
                "KERAS_DISTRIBUTION_JOB_ADDRESSES", "JAX_COORDINATOR_ADDRESS", "JAX_COORDINATOR_PORT",
                "KUBERNETES_SERVICE_HOST")
for _k in [*CLUSTER_VARS, "XLA_FLAGS", *(k for k in ENV if k.startswith(("SLURM_", "OMPI_")))]:
    ENV.pop(_k, None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(text, n=2000):
    return text[-n:]


# -- TensorBoard event files (tlres.run.curves), read without tlres' code ---------------------------

def crc32c_bitwise(data):
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: its definition."""
    c = 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 * (c & 1))
    return c ^ 0xFFFFFFFF


def event_class():
    """The `Event` message of TensorFlow's event.proto (the fields TensorBoard's scalars use:
    wall_time 1, step 2, file_version 3, summary 5 with Summary.Value tag 1 and simple_value 2,
    session_log 7 with status 1), built for protobuf's own parser."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="tlres_tests_event.proto", package="t", syntax="proto3")
    for name, fields in (("Value", [("tag", 1, F.TYPE_STRING), ("simple_value", 2, F.TYPE_FLOAT)]),
                         ("Summary", [("value", 1, F.TYPE_MESSAGE, ".t.Value")]),
                         ("SessionLog", [("status", 1, F.TYPE_INT32)]),
                         ("Event", [("wall_time", 1, F.TYPE_DOUBLE), ("step", 2, F.TYPE_INT64),
                                    ("file_version", 3, F.TYPE_STRING), ("summary", 5, F.TYPE_MESSAGE, ".t.Summary"),
                                    ("session_log", 7, F.TYPE_MESSAGE, ".t.SessionLog")])):
        m = f.message_type.add(name=name)
        for fname, number, kind, *type_name in fields:
            m.field.add(name=fname, number=number, type=kind, type_name=type_name[0] if type_name else None,
                        label=F.LABEL_REPEATED if fname == "value" else F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Event"))


def event_files(folder):
    """The event files TensorBoard reads in `folder` ("tfevents" in the name), in its (sorted) order."""
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if "tfevents" in n)


def events(path):
    """The `Event`s of one TFRecord file, every length and payload checksum checked (masked CRC-32C)."""
    def masked(data):
        c = crc32c_bitwise(data)
        return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    Event, out = event_class(), []
    with open(path, "rb") as f:
        data = f.read()
    i = 0
    while i < len(data):
        n = int.from_bytes(data[i:i + 8], "little")
        assert int.from_bytes(data[i + 8:i + 12], "little") == masked(data[i:i + 8])
        payload = data[i + 12:i + 12 + n]
        assert int.from_bytes(data[i + 12 + n:i + 16 + n], "little") == masked(payload)
        out.append(Event.FromString(payload))
        i += 16 + n
    return out


def scalars(folder, purge=True):
    """{tag: [(step, value)]} of `folder`'s event files as TensorBoard's EventAccumulator reads them:
    with `purge`, a SessionLog START (status 1) at step s drops every point read before at step >= s."""
    out = {}
    for path in event_files(folder):
        for e in events(path):
            if purge and e.HasField("session_log") and e.session_log.status == 1:
                out = {t: [(s, v) for s, v in pts if s < e.step] for t, pts in out.items()}
            for v in e.summary.value:
                out.setdefault(v.tag, []).append((e.step, v.simple_value))
    return out
