"""--precision mixed_bfloat16 (issue 6 item 2): float32 head and loss, and the same accuracy bar as float32."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tlres.core.config import QUICK

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPOCHS = 3
# The quick preset on the tiny net, 3 epochs, seeds 0-5, both precisions, recorded 2026-11-25 on a
# 2-core AMD EPYC (avx512f), --conv auto, Keras 3.15.1 / JAX 0.10.2: test accuracy per seed.
RECORDED = {"float32": [0.58611, 0.58056, 0.57222, 0.68056, 0.57500, 0.55556],
            "mixed_bfloat16": [0.60000, 0.59444, 0.58056, 0.67778, 0.58333, 0.56111]}
Q = 0.995  # each bar fails a run that behaves like the recorded ones with probability 0.5%


def prediction_bound(values, q=Q):
    """The one-sided q normal prediction bound for one new value: mean - t(q, n-1) sd sqrt(1 + 1/n)."""
    from scipy import stats

    v = np.asarray(values)
    n = len(v)
    return v.mean() - stats.t.ppf(q, n - 1) * v.std(ddof=1) * np.sqrt(1 + 1 / n)


# float32 on a new host or seed: 59.2% - 4.03 * 4.5 * 1.08 = 39.7% (4x chance); bf16 minus float32
# for the same seed: +0.79 - 4.03 * 0.62 * 1.08 = -1.9 points
BAR = prediction_bound(RECORDED["float32"])
GAP = prediction_bound(np.subtract(RECORDED["mixed_bfloat16"], RECORDED["float32"]))


def test_bf16_policy_keeps_logits_and_loss_float32():
    import keras

    from tlres.net import model
    from tlres.run import losses, train

    cfg = QUICK.replace(arch="tiny", precision="mixed_bfloat16")
    try:
        train.setup_engine(cfg)
        net = model.build(10, cfg)
        conv = net.get_layer("tiny").get_layer("conv0")
        assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == "float32"
        x = np.zeros((2, 32, 32, 3), np.float32)
        logits = net(x)
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
        loss = losses.SmoothedCrossEntropy(10, 0.1)(np.array([1, 2]), keras.ops.cast(logits, "bfloat16"))
        assert keras.backend.standardize_dtype(loss.dtype) == "float32"  # even from bf16 logits
    finally:
        train.setup_engine(QUICK)  # back to float32 for the rest of the session
    assert keras.mixed_precision.dtype_policy().name == "float32"


SCRIPT = r"""
import json, sys
from tlres.run import train
from tlres.core.config import QUICK

out, epochs = sys.argv[1], int(sys.argv[2])
res = {}
for precision in ("float32", "mixed_bfloat16"):
    cfg = QUICK.replace(arch="tiny", epochs=epochs, precision=precision, compile_cache=False,
                        out=f"{out}/{precision}")
    run = train.run(cfg, verbose=0)
    res[precision] = json.load(open(f"{run}/metrics.json"))["accuracy"]
print("RESULT " + json.dumps(res))
"""


@pytest.mark.slow
def test_bf16_reaches_the_float32_bar(tmp_path):
    """Same seed, data and schedule (the quick preset on the tiny net, 3 epochs), trained for real.

    Both bars are predictions from the recorded seeds above (Q = 99.5%, Student's t since the sd
    comes from 6 values): float32 reaches BAR = 39.7% (a broken path, NaNs or no learning, stays
    near 10%), and bf16 is at least float32 + GAP = -1.9 points for the same seed (a degraded bf16
    path loses more). On another CPU both precisions round differently, which acts like another
    seed: the spread the bounds are made of.
    """
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(EPOCHS)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr[-3000:]
    acc = json.loads(next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert acc["float32"] >= BAR and acc["mixed_bfloat16"] >= BAR, (acc, BAR)
    assert acc["mixed_bfloat16"] - acc["float32"] >= GAP, (acc, GAP)


def test_the_bars_are_what_the_docstrings_state():
    assert round(BAR, 3) == 0.397 and round(GAP, 3) == -0.019
