"""The MNIST-format idx loader (`--data fashion-mnist`, `--data FOLDER`) on idx files written here.

The files are written from the format's definition (LeCun's MNIST page: 0x0000, type byte
0x08, number of dimensions, big-endian int32 sizes, then the bytes), not with tlres' reader,
so a reader that swapped byte order or dimensions fails. Debian's package is not needed.
"""

import gzip
import os

import numpy as np
import pytest

from tlres.data import loaders as data, resample
from tlres.core.errors import TlresError


def idx_bytes(array, type_byte=0x08, magic=b"\x00\x00"):
    header = magic + bytes([type_byte, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_folder(folder, n_train=12, n_test=6, size=28, gz=True, labels_max=9, seed=0, **raw):
    """The four files, gzipped (as distributed) or plain; `raw` replaces a file's bytes."""
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
              "train-labels-idx1-ubyte": np.arange(n_train) % (labels_max + 1),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": np.arange(n_test) % (labels_max + 1)}
    os.makedirs(folder, exist_ok=True)
    for name, a in arrays.items():
        blob = raw.get(name.split("-idx")[0].replace("-", "_"), idx_bytes(a))
        if gz:
            with gzip.open(os.path.join(folder, name + ".gz"), "wb") as f:
                f.write(blob)
        else:
            with open(os.path.join(folder, name), "wb") as f:
                f.write(blob)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads_exactly_the_written_pixels_and_labels(tmp_path, gz):
    arrays = write_idx_folder(str(tmp_path / "mnistlike"), gz=gz)
    ds = data.load(str(tmp_path / "mnistlike"), image_size=28)  # no resize: pixels compare exactly
    assert ds.x_train.shape == (12, 28, 28, 3) and ds.x_test.shape == (6, 28, 28, 3)
    for c in range(3):  # grayscale -> the same value in R, G and B
        np.testing.assert_array_equal(ds.x_train[..., c], arrays["train-images-idx3-ubyte"])
        np.testing.assert_array_equal(ds.x_test[..., c], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.class_names == tuple(str(i) for i in range(10)) and ds.name == "mnistlike"


def test_idx_folder_is_resized_like_the_other_loaders(tmp_path):
    arrays = write_idx_folder(str(tmp_path / "m"))
    ds = data.load(str(tmp_path / "m"), image_size=32)
    expected = resample.resize(arrays["train-images-idx3-ubyte"][..., None], 32)[..., 0]
    np.testing.assert_array_equal(ds.x_train[..., 0], expected)


def test_fashion_mnist_reads_the_debian_folder_with_its_class_names(tmp_path, monkeypatch):
    write_idx_folder(str(tmp_path / "fm"))
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(tmp_path / "fm"))
    ds = data.load("fashion-mnist", image_size=28)
    assert ds.name == "fashion-mnist" and ds.class_names[0] == "T-shirt/top" and ds.num_classes == 10


def test_fashion_mnist_missing_names_the_apt_command(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(TlresError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion-mnist")


def _bad(tmp_path, **kw):
    folder = str(tmp_path / "bad")
    write_idx_folder(folder, **kw)
    with pytest.raises(TlresError) as e:
        data.load(folder, image_size=28)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_bad_magic_number(tmp_path):
    img = np.zeros((12, 28, 28), np.uint8)
    assert "bad magic" in _bad(tmp_path, train_images=idx_bytes(img, magic=b"\x01\x00"))


def test_wrong_data_type(tmp_path):
    img = np.zeros((12, 28, 28), np.uint8)
    assert "0x0d" in _bad(tmp_path, train_images=idx_bytes(img, type_byte=0x0D))


def test_wrong_number_of_dimensions(tmp_path):
    assert "dimension" in _bad(tmp_path, train_labels=idx_bytes(np.zeros((12, 1), np.uint8)))


def test_header_declaring_more_data_than_the_file_holds(tmp_path):
    blob = idx_bytes(np.zeros((12, 28, 28), np.uint8))
    huge = blob[:4] + (2**31 - 1).to_bytes(4, "big") + blob[8:]  # 2^31 images declared
    assert "declares shape" in _bad(tmp_path, train_images=huge)


def test_truncated_data(tmp_path):
    blob = idx_bytes(np.zeros((12, 28, 28), np.uint8))
    assert "declares shape" in _bad(tmp_path, t10k_images=blob[:-100])


def test_image_and_label_counts_differ(tmp_path):
    assert "11 train labels" in _bad(tmp_path, train_labels=idx_bytes(np.zeros(11, np.uint8)))


def test_label_out_of_range_for_fashion_mnist(tmp_path, monkeypatch):
    write_idx_folder(str(tmp_path / "fm"), labels_max=10)
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", str(tmp_path / "fm"))
    with pytest.raises(TlresError, match=r"labels in \[0, 10\]; expected 0..9"):
        data.load("fashion-mnist", image_size=28)


def test_missing_file_is_named(tmp_path):
    folder = tmp_path / "m"
    write_idx_folder(str(folder))
    os.remove(folder / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(TlresError, match="t10k-labels-idx1-ubyte"):
        data.load(str(folder))


def test_corrupt_gzip_is_one_line(tmp_path):
    folder = tmp_path / "m"
    write_idx_folder(str(folder))
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(TlresError, match="unreadable idx file"):
        data.load(str(folder))
