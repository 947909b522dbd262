import os
import pickle
import tarfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_cifar_batches(folder, n_train_per_batch=4, n_test=6, seed=0):
    """Write the official CIFAR-10 python format (pickled dicts, CHW rows) with known data."""
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
            pickle.dump(blob, f)
        truth[name] = (images, np.array(labels))
    meta = {b"num_cases_per_batch": n_train_per_batch, b"num_vis": 3072,
            b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer",
                             b"dog", b"frog", b"horse", b"ship", b"truck"]}
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump(meta, f)
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
