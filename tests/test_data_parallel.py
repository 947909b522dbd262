"""--data-parallel on 2 forced CPU devices gives the single-device result (issue 6 item 5).

One subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=2 trains the
tiny net on digits twice from the same seed and data (the quick preset, 2 epochs):
once on one device, once with keras.distribution.DataParallel over both. The
global batch (64) is the same, each device computes the gradient of 32 images
and XLA all-reduces them, so only the float32 summation order differs.
BatchNorm statistics are means over the batch axis, which XLA computes over the
global batch (an all-reduce), so the math is the same; only float32 rounding of
the split sums differs (~1e-7 relative per step), amplified by 44 Adam steps.
Measured on the project's 2-core CPU (2026-11-25, Keras 3.15.1, JAX 0.10.2): the
two runs differ by at most 2.4e-7 in the epoch-2 training loss and not at all in
validation loss, accuracies or learning rates. Tolerance: 1e-5 absolute on losses
and learning rates (40x the measured drift, room for other XLA versions'
reduction orders), 1 image on accuracies; a real bug (a device seeing a
different batch, gradients summed instead of averaged, a shard dropped) changes
them at the percent level.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5  # measured 2.4e-7 (module docstring)

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
def test_two_devices_give_the_single_device_result(runs):
    single, parallel = runs["single"], runs["parallel"]
    assert len(single["history"]) == len(parallel["history"]) == 2
    for a, b in zip(single["history"], parallel["history"]):
        for key in ("loss", "val_loss", "lr"):
            assert abs(float(a[key]) - float(b[key])) <= TOL, (key, a, b)
        assert abs(float(a["val_accuracy"]) - float(b["val_accuracy"])) <= 1 / 360 + 1e-9, (a, b)
        assert abs(float(a["accuracy"]) - float(b["accuracy"])) <= 1 / 1408 + 1e-9, (a, b)
    m1, m2 = single["metrics"], parallel["metrics"]
    assert abs(m1["loss"] - m2["loss"]) <= TOL
    assert abs(m1["accuracy"] - m2["accuracy"]) <= 1 / 360 + 1e-9
