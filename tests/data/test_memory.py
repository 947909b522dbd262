"""Issue #7, item 6: loading a CIFAR-10-sized npz keeps no needless copies."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROBE = r"""
import json, sys
def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
import numpy as np
from tlres.data import loaders as data
before = kib("VmRSS:")
ds = data.load(sys.argv[1])
arrays = sum(a.nbytes for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
print(json.dumps({"before": before * 1024, "peak": kib("VmHWM:") * 1024, "arrays": arrays,
                  "shape": list(ds.x_train.shape)}))
"""


@pytest.mark.slow  # writes and loads 176 MiB of CIFAR-10-sized arrays in a fresh process
def test_loader_peak_rss_on_cifar_sized_npz_is_under_3x_the_arrays(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cifar_sized.npz"
    np.savez(path, x_train=rng.integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8),
             y_train=rng.integers(0, 10, 50000), x_test=rng.integers(0, 256, (10000, 32, 32, 3),
                                                                   dtype=np.uint8),
             y_test=rng.integers(0, 10, 10000))
    r = subprocess.run([sys.executable, "-c", PROBE, str(path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["shape"] == [50000, 32, 32, 3]
    ratio = m["peak"] / m["arrays"]  # the whole process: interpreter and numpy included
    growth = (m["peak"] - m["before"]) / m["arrays"]
    print(f"peak RSS {m['peak'] / 2**20:.0f} MiB for {m['arrays'] / 2**20:.0f} MiB of arrays: "
          f"{ratio:.2f}x (loader's own growth {growth:.2f}x)")
    assert ratio < 3.0
    assert growth < 1.5  # one copy of the data, plus small change


IMAGES_PROBE = r"""
import json, sys
def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
import numpy as np, PIL.Image, tqdm
from tlres.data import imagefolder, loaders as data
before = kib("VmRSS:")
ds = data.load(sys.argv[1], image_size=int(sys.argv[2]))
arrays = sum(a.nbytes for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
print(json.dumps({"before": before * 1024, "peak": kib("VmHWM:") * 1024, "arrays": arrays,
                  "n": len(ds.x_train) + len(ds.x_test), "jax": "jax" in sys.modules}))
"""


def test_image_folder_loads_into_one_copy(tmp_path):
    """5,000 PNGs (28x28 gray) upsampled to 64 px: arrays of 61 MB, written once, row by row."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
    for c in range(10):
        (tmp_path / "img" / f"c{c}").mkdir(parents=True)
    for i in range(5000):
        Image.fromarray(pixels[i % 100]).save(tmp_path / "img" / f"c{i % 10}" / f"{i:05d}.png",
                                              compress_level=1)
    r = subprocess.run([sys.executable, "-c", IMAGES_PROBE, str(tmp_path / "img"), "64"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["n"] == 5000 and m["arrays"] == 5000 * (64 * 64 * 3 + 4)
    growth = (m["peak"] - m["before"]) / m["arrays"]  # after imports: the loader's own memory
    print(f"peak RSS {m['peak'] / 2**20:.0f} MiB for {m['arrays'] / 2**20:.0f} MiB of arrays: "
          f"{m['peak'] / m['arrays']:.2f}x (loader's own growth {growth:.2f}x)")
    assert m["peak"] / m["arrays"] < 3.0
    assert growth < 1.5  # one copy of the data, plus file names and one image at a time
    assert not m["jax"]  # decoding and resizing are numpy: no JAX compile per image size
