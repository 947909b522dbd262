"""Data sources round-trip exactly; every bad input is one clear line."""

import os
import time

import numpy as np
import pytest

from tlres.data import loaders as data, online
from tlres.core.errors import TlresError


@pytest.mark.parametrize("which", ["tgz", "folder", "parent"])
def test_cifar_archive_round_trips_exactly(cifar_archive, which):
    tgz, folder, (x_train, y_train, x_test, y_test) = cifar_archive
    path = {"tgz": tgz, "folder": folder, "parent": os.path.dirname(folder)}[which]
    ds = data.load(path)
    np.testing.assert_array_equal(ds.x_train, x_train)
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.x_test, x_test)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.class_names[0] == "airplane" and ds.num_classes == 10
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32


def test_truncated_archive_is_one_line(cifar_archive, tmp_path):
    tgz = cifar_archive[0]
    bad = tmp_path / "cut.tar.gz"
    bad.write_bytes(open(tgz, "rb").read()[:3000])
    with pytest.raises(TlresError, match="corrupt or truncated") as e:
        data.load(str(bad))
    assert "\n" not in str(e.value)


def test_archive_missing_a_batch(cifar_archive):
    folder = cifar_archive[1]
    os.remove(os.path.join(folder, "data_batch_3"))
    with pytest.raises(TlresError, match="missing data_batch_3"):
        data.load(folder)


def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_gray_any_size_any_classes(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (12, 20, 20), dtype=np.uint8)
    x_test = rng.integers(0, 256, (5, 20, 20), dtype=np.uint8)
    y_train, y_test = np.arange(12) % 3, np.arange(5) % 3
    ds = data.load(save_npz(tmp_path / "d.npz", x_train=x_train, y_train=y_train,
                            x_test=x_test, y_test=y_test), image_size=32)
    assert ds.x_train.shape == (12, 32, 32, 3) and ds.num_classes == 3
    # gray -> RGB copies the channel; a constant image stays constant through the resize
    np.testing.assert_array_equal(ds.x_train[..., 0], ds.x_train[..., 2])
    const = np.full((2, 20, 20), 77, np.uint8)
    ds2 = data.load(save_npz(tmp_path / "c.npz", x_train=const, y_train=np.array([0, 1]),
                             x_test=const, y_test=np.array([1, 0])), image_size=32)
    assert (ds2.x_test == 77).all()


def test_npz_same_size_uint8_round_trips_and_float_scales(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    ds = data.load(save_npz(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x, y_test=y))
    np.testing.assert_array_equal(ds.x_train, x)
    dsf = data.load(save_npz(tmp_path / "f.npz", x_train=x / 255.0, y_train=y,
                             x_test=x / 255.0, y_test=y))
    np.testing.assert_array_equal(dsf.x_train, x)


GOOD = dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array([0, 1, 0, 1]),
            x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.array([0, 1]))


@pytest.mark.parametrize("change,message", [
    (dict(x_train=None), "missing array"),
    (dict(x_train=np.zeros((4, 8), np.uint8)), "has shape"),
    (dict(x_train=np.zeros((4, 8, 8, 2), np.uint8)), "has shape"),
    (dict(x_test=np.zeros((0, 8, 8), np.uint8), y_test=np.zeros(0, int)), "test split is empty"),
    (dict(y_train=np.array([0, 1, 0])), "one label per image"),
    (dict(y_train=np.array([0.0, 1.0, 0.0, 1.0])), "integer class labels"),
    (dict(y_train=np.array([0, 1, -1, 1])), "labels in"),
    (dict(x_train=np.zeros((4, 8, 8), np.int16)), "expected uint8"),
    (dict(x_train=np.full((4, 8, 8), 3.0)), r"must lie in \[0, 1\]"),
    (dict(y_train=np.zeros(4, int), y_test=np.zeros(2, int)), "single class"),
])
def test_npz_bad_inputs_are_one_line_naming_the_file(tmp_path, change, message):
    arrays = {**GOOD, **change}
    path = save_npz(tmp_path / "bad.npz", **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(TlresError, match=message) as e:
        data.load(path)
    assert str(e.value).startswith(path) and "\n" not in str(e.value)


def test_npz_class_names_bound_the_labels(tmp_path):
    path = save_npz(tmp_path / "n.npz", **GOOD, class_names=np.array(["a"]))
    with pytest.raises(TlresError, match="labels in"):
        data.load(path)


def test_not_an_npz(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip")
    with pytest.raises(TlresError, match="not a readable .npz"):
        data.load(str(p))


def test_missing_path():
    with pytest.raises(TlresError, match="no such file"):
        data.load("/nonexistent/cifar.tar.gz")


# sha256 of the int64 indices into scikit-learn's load_digits() of the digits test split: the split
# every recorded result (experiments/results/digits) was evaluated on. A scikit-learn whose
# train_test_split drew another split would change every result; this says so.
DIGITS_TEST_SHA256 = "d9101e2e97e19974905f1336a8ef53c03166d6af2c53833be35ff03a33e7e0cd"


def _upsample4(img):
    """Bilinear x4 of an 8x8 image, from the definition: half-pixel centres, edges clamped, float64,
    rounded half to even. Every weight is a multiple of 1/8 per axis (1/64 per pixel), so the sums
    are exact in float32 and float64 alike and any correct implementation gives these very bytes."""
    n = img.shape[0]
    pos = np.clip((np.arange(4 * n) + 0.5) / 4 - 0.5, 0, n - 1)
    lo = np.floor(pos).astype(int)
    hi, w = np.minimum(lo + 1, n - 1), pos - lo
    rows = img[lo] * (1 - w)[:, None] + img[hi] * w[:, None]
    out = rows[:, lo] * (1 - w)[None, :] + rows[:, hi] * w[None, :]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def test_digits_split_is_pinned_and_its_images_are_scikit_learns_upsampled():
    import hashlib

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    ds = data.load("digits")
    assert ds.x_train.shape == (1437, 32, 32, 3) and ds.x_test.shape == (360, 32, 32, 3)
    raw = load_digits()
    train, test = train_test_split(np.arange(len(raw.images)), test_size=0.2, stratify=raw.target,
                                   random_state=data.DIGITS_SPLIT_SEED)  # the documented split
    assert hashlib.sha256(np.asarray(test, np.int64).tobytes()).hexdigest() == DIGITS_TEST_SHA256
    assert np.bincount(raw.target[test]).min() >= 35  # stratified: ~36 per class
    x = np.round(raw.images * (255.0 / 16.0))  # 0..16 -> 0..255
    for split, idx, images, labels in (("test", test, ds.x_test, ds.y_test),
                                       ("train", train, ds.x_train, ds.y_train)):
        np.testing.assert_array_equal(labels, raw.target[idx], err_msg=split)
        want = np.stack([_upsample4(x[i]) for i in idx])
        for c in range(3):  # gray in all three channels
            np.testing.assert_array_equal(images[..., c], want, err_msg=split)


def test_cifar10_offline_fails_fast_with_instructions(tmp_path, monkeypatch):
    import tensorflow_datasets  # noqa: F401  (its import is not what we time: tens of s on a loaded CPU)

    monkeypatch.setattr(online, "reachable", lambda *a, **k: False)
    start = time.monotonic()
    with pytest.raises(TlresError) as e:
        data.load("cifar10", data_dir=str(tmp_path))
    assert time.monotonic() - start < 10
    msg = str(e.value)
    assert "cifar-10-python.tar.gz" in msg and "--data" in msg and "\n" not in msg


def test_cifar10_through_tensorflow_datasets(tmp_path, monkeypatch):
    """The tfds path (download_and_prepare + as_dataset), on tfds' own mock of cifar10."""
    import tensorflow_datasets as tfds

    monkeypatch.setattr(online, "reachable", lambda *a, **k: True)
    with tfds.testing.mock_data(num_examples=6):
        ds = data.load("cifar10", data_dir=str(tmp_path))
    assert ds.x_train.shape == (6, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.num_classes == 10 and ds.y_train.dtype == np.int32  # the mock has no label names


def test_reachable_is_false_for_a_closed_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert online.reachable("127.0.0.1", port, timeout=1) is False
