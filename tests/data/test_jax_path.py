"""The TensorFlow-free path (issue 6): device augmentation, TF-blocked run, data-parallel errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tlres.data import augment as aug
from tlres.data import pipeline
from tlres.core.config import QUICK

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_device_transform_matches_numpy_reference():
    import jax

    cfg = QUICK.replace(augment=True, flip=True, crop_padding=4)
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    key = jax.random.PRNGKey(3)
    got = np.asarray(pipeline.device_transform(cfg)(x, key))
    flip, dy, dx = (np.asarray(a) for a in aug.draw_jax(8, 4, key))
    # independent reference: per-image numpy pad, slice, flip
    ref = []
    for i in range(8):
        img = x[i][:, ::-1] if flip[i] else x[i]
        p = np.pad(img, ((4, 4), (4, 4), (0, 0)))
        if flip[i]:  # flip-then-crop == crop the flipped padded image
            p = np.pad(x[i], ((4, 4), (4, 4), (0, 0)))[:, ::-1]
        ref.append(p[dy[i]:dy[i] + 32, dx[i]:dx[i] + 32])
    ref = (np.stack(ref).astype(np.float64) / 255.0 - 0.5) / 0.5
    # float32 normalization (XLA may fuse /255 into a product with a rounded 1/255): at most 3
    # roundings, each <= u of a value <= 1, then an exact /0.5: <= 6u from the float64 value
    assert np.abs(got - ref).max() <= 6 * 2.0 ** -24
    np.testing.assert_array_equal(np.rint((got + 1) * 127.5), np.rint((ref + 1) * 127.5))  # pixels


def test_indivisible_batch_is_a_clear_error():
    """With 2 forced CPU devices, a global batch of 17 cannot be split: one clear error.

    JAX_PLATFORMS=cpu: on a GPU host JAX would otherwise use the one GPU, which 17 divides.
    """
    code = ("from tlres.run import train; from tlres.core.config import QUICK\n"
            "from tlres.core.errors import TlresError\n"
            "try:\n    train.setup_engine(QUICK.replace(data_parallel=True, batch_size=17))\n"
            "except TlresError as e:\n    print('ERR', e)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu",
                                         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ERR --data-parallel: --batch-size 17 does not divide evenly across 2 devices" in r.stdout


@pytest.mark.slow  # trains the tiny net for 2 epochs in a fresh process
def test_quick_preset_runs_with_tensorflow_blocked(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "_block_tf.py"), "--preset", "quick",
                        "--arch", "tiny", "--epochs", "2", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pipeline"] == "jax"
    assert json.loads((out / "status.json").read_text())["state"] == "finished"
