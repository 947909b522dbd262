import os
import pickle
import tarfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# --conv auto on a CPU times each convolution shape once per host (tlres.net.cpu.convplan): tests use the
# fixed matmul kernel instead, so none times ResNet50 or writes into ~/.cache (test_conv_plan.py
# tests the measured plan with its own timings and cache folder)
os.environ.setdefault("TLRES_CONV_AUTO", "matmul")


def write_cifar_batches(folder, n_train_per_batch=4, n_test=6, seed=0, dumps=pickle.dumps):
    """Write the official CIFAR-10 python format (pickled dicts, CHW rows) with known data.

    `dumps` pickles each file's dict (e.g. a protocol, or tests/py2_pickle.py's Python 2 writer)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    truth = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_train_per_batch
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # NHWC truth
        labels = [int(v) for v in rng.integers(0, 10, n)]
        blob = {b"batch_label": name.encode(), b"labels": labels,
                b"data": images.transpose(0, 3, 1, 2).reshape(n, 3072),
                b"filenames": [f"img{i}.png".encode() for i in range(n)]}
        with open(os.path.join(folder, name), "wb") as f:
            f.write(dumps(blob))
        truth[name] = (images, np.array(labels))
    meta = {b"num_cases_per_batch": n_train_per_batch, b"num_vis": 3072,
            b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                             b"dog", b"frog", b"horse", b"ship", b"truck"]}
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        f.write(dumps(meta))
    x_train = np.concatenate([truth[n][0] for n in names[:5]])
    y_train = np.concatenate([truth[n][1] for n in names[:5]])
    return x_train, y_train, truth["test_batch"][0], truth["test_batch"][1]


@pytest.fixture
def cifar_archive(tmp_path):
    """(tar.gz path, extracted folder path, arrays) in the official layout."""
    folder = tmp_path / "cifar-10-batches-py"
    arrays = write_cifar_batches(str(folder))
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return str(tgz), str(folder), arrays


# -- folders of images (tlres.data.imagefolder) -----------------------------------------------------
# (format, Pillow mode, size): every kind --data DIR reads, at the model's 32 px, larger, smaller
# and not square; 32x32 lossless ones decode to known pixels exactly.
IMAGE_KINDS = (("png", "RGB", (32, 32)), ("png", "L", (40, 25)), ("png", "RGBA", (32, 32)),
               ("png", "P", (20, 20)), ("bmp", "RGB", (75, 60)), ("gif", "P", (32, 32)),
               ("jpg", "RGB", (50, 90)), ("jpeg", "L", (33, 31)))


def image_pixels(rng, size, mode):
    """Random content for one image: (the PIL image, its expected RGB pixels before resizing)."""
    from PIL import Image

    w, h = size
    if mode == "P":  # a palette image: expected RGB = palette[index]
        palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
        idx = rng.integers(0, 16, (h, w), dtype=np.uint8)
        img = Image.fromarray(idx, "P")
        img.putpalette(palette.flatten().tolist())
        return img, palette[idx]
    if mode == "L":
        a = rng.integers(0, 256, (h, w), dtype=np.uint8)
        return Image.fromarray(a, "L"), np.repeat(a[..., None], 3, axis=-1)
    if mode == "RGBA":
        a = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        return Image.fromarray(a, "RGBA"), a[..., :3]  # alpha dropped, as Keras and torchvision do
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(a, "RGB"), a


def smooth_pixels(rng, size, mode):
    """A smooth random gradient (JPEG keeps it within a few levels; noise it does not)."""
    from PIL import Image

    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    a = np.stack([rng.uniform(20, 60) + rng.uniform(-1, 1) * 80 * xx + rng.uniform(-1, 1) * 80 * yy + 60
                  for _ in range(3)], -1).clip(0, 255).round().astype(np.uint8)
    if mode == "L":
        return Image.fromarray(a[..., 0], "L"), np.repeat(a[..., :1], 3, axis=-1)
    return Image.fromarray(a, "RGB"), a


def write_image(path, rng, kind):
    ext, mode, size = kind
    img, pixels = (smooth_pixels if ext in ("jpg", "jpeg") else image_pixels)(rng, size, mode)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, **({"quality": 95} if ext in ("jpg", "jpeg") else {}))
    return pixels


def write_image_folder(root, classes=("cat", "dog", "eel"), per_class=6, split=None, seed=0):
    """root/[split/]<class>/<i>.<ext>, cycling through IMAGE_KINDS; returns {relative path: pixels}."""
    rng = np.random.default_rng(seed)
    written = {}
    for c, name in enumerate(classes):
        for i in range(per_class):
            kind = IMAGE_KINDS[(i + 3 * c) % len(IMAGE_KINDS)]
            rel = "/".join(p for p in (split, name, f"img{i:02d}.{kind[0]}") if p)
            written[rel] = write_image(os.path.join(root, *rel.split("/")), rng, kind)
    return written
