"""--data-parallel on 2 forced CPU devices gives the single-device result (issue 6 item 5).

One subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=2 checks two things.

One SGD step (lr 0.1, no momentum, no weight decay) on one batch of 64, from the same
weights, on one device and with keras.distribution.DataParallel over both: the weight
updates, -lr * gradient, must agree to 1e-4 of the largest update. Each device computes
the gradient of its 32 images and XLA all-reduces them; BatchNorm statistics are means
over the global batch (an all-reduce too), so the math is the same and only float32
summation order differs: measured 1.7e-7 of the largest update with `--conv auto` (6.9e-7
with the first conv on XLA's kernel; 2026-11-25). A device seeing a different batch, a dropped
shard, or gradients summed instead of averaged (a 2x update) fails it.

Two epochs of the quick preset (tiny net, Adam), end to end through the runner: Adam turns
those ulps into visibly different runs, more or less by chance. Measured on the project's
2-core CPU (2026-11-25, Keras 3.15.1, JAX 0.10.2), largest per-epoch difference in training
loss / validation loss / validation accuracy: with XLA's convolutions 2.4e-7 / 0 / 0, with
the matmul ones (`--conv auto` on a CPU, tested here) 2.2e-5 / 4.4e-4 / 3 images (SGD at lr
0.05 instead of Adam: 6.7e-4 / 6.1e-3 / 2 images, so this is the tiny net's early training,
not Adam alone). Tolerance: 5e-3 on losses, 8 images on accuracies: a coarse end-to-end check
(a device fed the wrong images, an evaluation on one shard); the SGD step above is the
precise one, and Adam's update cannot see a summed-instead-of-averaged gradient anyway.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 5e-3  # losses after 2 Adam epochs; measured 4.4e-4 (module docstring)
STEP_TOL = 1e-4  # one SGD step, relative to the largest update; measured 1.7e-7

SCRIPT = r"""
import csv, json, sys
from tlres import model, train  # first: importing tlres selects the JAX backend
import jax, keras
from tlres.config import QUICK

out = sys.argv[1]
base = QUICK.replace(arch="tiny", epochs=2, compile_cache=False)
res = {"devices": len(jax.devices())}
for name, cfg in (("single", base), ("parallel", base.replace(data_parallel=True))):
    run = train.run(cfg.replace(out=f"{out}/{name}"), verbose=0)
    with open(f"{run}/history.csv") as f:
        res[name] = {"history": list(csv.DictReader(f)),
                     "metrics": json.load(open(f"{run}/metrics.json")),
                     "device": json.load(open(f"{run}/config.json"))["device"]}
# one SGD step from the same weights on the same batch, one device vs both
import numpy as np
sgd = base.replace(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant",
                   label_smoothing=0.0)
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 32, 32, 3)).astype("float32")
y = rng.integers(0, 10, 64).astype("int32")
start, deltas = None, {}
for name, cfg in (("single", sgd), ("parallel", sgd.replace(data_parallel=True))):
    train.setup_engine(cfg)
    net = model.build(10, cfg)
    train.compile_model(net, cfg, 10, steps_per_epoch=1)
    start = start or [np.asarray(w) for w in net.get_weights()]
    net.set_weights(start)
    net.train_on_batch(x, y)
    deltas[name] = [np.asarray(w) - w0 for w, w0 in zip(net.get_weights(), start)]
largest = max(float(np.abs(d).max()) for d in deltas["single"])
res["step_largest_update"] = largest
res["step_max_difference"] = max(float(np.abs(a - b).max())
                                 for a, b in zip(deltas["single"], deltas["parallel"]))
# what setup_engine sets up: the distribution, the variables' and the batch's placement
cfg = base.replace(data_parallel=True)
train.setup_engine(cfg)
dist = keras.distribution.distribution()
net = model.build(10, cfg)
res["distribution"] = type(dist).__name__
res["mesh_devices"] = int(dist.device_mesh.devices.size)
res["weight_devices"] = len(net.trainable_variables[0].value.sharding.device_set)
layout = dist.get_data_layout((64, 32, 32, 3))
res["batch_axes"] = [a for a in layout.axes]
train.setup_engine(base)
res["after_reset"] = type(keras.distribution.distribution()).__name__
print("RESULT " + json.dumps(res))
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp")
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=1200,
                       env={**os.environ, "PYTHONPATH": ROOT,
                            "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_engine_distributes_over_both_devices(runs):
    assert runs["devices"] == 2
    assert runs["parallel"]["device"]["count"] == 2
    assert runs["distribution"] == "DataParallel" and runs["mesh_devices"] == 2
    assert runs["weight_devices"] == 2  # weights replicated on both
    assert runs["batch_axes"][0] is not None  # the batch dimension is sharded
    assert runs["after_reset"] == "NoneType"  # a later single-device run is not distributed


@pytest.mark.slow
def test_one_sgd_step_on_two_devices_makes_the_single_device_update(runs):
    assert runs["step_largest_update"] > 1e-3  # the step moved the weights
    assert runs["step_max_difference"] <= STEP_TOL * runs["step_largest_update"], runs


@pytest.mark.slow
def test_two_devices_give_the_single_device_result(runs):
    single, parallel = runs["single"], runs["parallel"]
    assert len(single["history"]) == len(parallel["history"]) == 2
    for a, b in zip(single["history"], parallel["history"]):
        for key in ("loss", "val_loss", "lr"):
            assert abs(float(a[key]) - float(b[key])) <= TOL, (key, a, b)
        assert abs(float(a["val_accuracy"]) - float(b["val_accuracy"])) <= 8 / 360 + 1e-9, (a, b)
        assert abs(float(a["accuracy"]) - float(b["accuracy"])) <= 8 / 1408 + 1e-9, (a, b)
    m1, m2 = single["metrics"], parallel["metrics"]
    assert abs(m1["loss"] - m2["loss"]) <= TOL
    assert abs(m1["accuracy"] - m2["accuracy"]) <= 8 / 360 + 1e-9
