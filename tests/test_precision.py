"""--precision mixed_bfloat16 (issue 6 item 2): float32 head and loss, and the same accuracy bar as float32."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tlres.config import QUICK

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 3
BAR = 0.40  # see test_bf16_reaches_the_float32_bar


def test_bf16_policy_keeps_logits_and_loss_float32():
    import keras

    from tlres import losses, model, train

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
from tlres import train
from tlres.config import QUICK

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

    BAR: the tiny net in float32 on digits after 3 epochs (Adam 1e-3, no augmentation,
    constant rate, seeds 0-2) measured 62.5-69.7% (/work/runs/tiny-grid-e3); the quick
    preset's cosine rate trains slower, so 0.40 (4x chance) is a bar float32 clears with
    margin and a broken bf16 path (NaNs, no learning) does not. The second check, bf16
    within 10 points of float32 (the seed-to-seed spread above is 7 points), catches a
    degraded one. Measured (2026-11-25, 2-core AMD EPYC, this very script): float32 58.9%,
    mixed_bfloat16 59.7%.
    """
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(EPOCHS)], cwd=ROOT,
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr[-3000:]
    acc = json.loads(next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert acc["float32"] >= BAR and acc["mixed_bfloat16"] >= BAR, acc
    assert acc["mixed_bfloat16"] >= acc["float32"] - 0.10, acc
