"""Datasets as uint8 NHWC numpy arrays, validated on load: `load(spec)` is the one entry point.

`spec`: ``cifar10`` (tensorflow-datasets, ``data_dir`` passed on); the official
``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py/`` (no network); ``digits``
(scikit-learn's 1,797 8x8 digits, a fixed seeded stratified 80/20 split: the offline data); a
``.npz`` with ``x_train, y_train, x_test, y_test`` [``class_names``] (uint8 or float 0-1, HxW or
HxWxC, any size and class count); ``fashion-mnist`` (Debian's ``dataset-fashion-mnist``) or a
folder of the four MNIST-format idx files; any other folder: images, one subfolder per class
(`tlres.data.imagefolder`). Every dataset comes back at ``image_size`` (`tlres.data.resample`)
with 3 channels, uint8 pixels and int32 labels in ``[0, num_classes)``; each problem found is
one `TlresError` line naming the source and what is wrong.
"""

import math
import os
import posixpath
import stat
import tarfile

import numpy as np
from numpy.lib import format as npy

from tlres.data.dataset import Dataset

from tlres.data import imagefolder, online, resample, safe_pickle
from tlres.core.errors import TlresError, brief, human, quote

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
DIGITS_SPLIT_SEED = 0  # fixed: the digits split never depends on --seed
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MAX_INFERRED_CLASSES = 1000  # labels without class names: a stray 4e9 must not make 4e9 classes


def load(spec, data_dir=None, image_size=32, test_split=0.2, skip_bad_images=False):
    if spec == "cifar10":
        return _cifar10_tfds(data_dir, image_size)
    if spec == "digits":
        return _digits(image_size)
    if spec == "fashion-mnist":
        if not os.path.isdir(FASHION_MNIST_DIR):
            raise TlresError(
                f"--data fashion-mnist: {FASHION_MNIST_DIR} not found; install Debian's package "
                "(apt-get update && apt-get install dataset-fashion-mnist), or pass --data with a "
                "folder holding the four Fashion-MNIST idx files")
        return _idx_folder(FASHION_MNIST_DIR, image_size, "fashion-mnist", FASHION_MNIST_CLASSES)
    if not os.path.exists(spec):
        raise TlresError(
            f"--data {spec}: no such file or folder (expected cifar10, digits, fashion-mnist, "
            "a cifar-10-python.tar.gz / cifar-10-batches-py path, a folder of images, or a .npz file)"
        )
    if spec.endswith(".npz"):
        return _npz(spec, image_size)
    if os.path.isdir(spec) and _idx_path(spec, IDX_FILES[0]):
        return _idx_folder(spec, image_size, os.path.basename(os.path.normpath(spec)), None)
    if os.path.isdir(spec) and not is_cifar_folder(spec):
        return imagefolder.load(spec, image_size, test_split, skip_bad_images)
    if os.path.isdir(spec) or spec.endswith((".tar.gz", ".tgz", ".tar")):
        return _cifar10_archive(spec, image_size)
    raise TlresError(f"--data {spec}: unknown format (expected a .npz file or a CIFAR-10 python archive)")


CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")


def is_cifar_folder(path):
    """An extracted CIFAR-10 python folder (or its parent): any of its files, or cifar-10-batches-py/."""
    return os.path.isdir(os.path.join(path, "cifar-10-batches-py")) or any(
        os.path.isfile(os.path.join(path, f)) for f in CIFAR_FILES)


# ----------------------------------------------------------------- validation
def _validate(source, x_train, y_train, x_test, y_test, class_names, image_size):
    """Check and convert arrays to the canonical form; one line per problem."""
    splits = {}
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
            raise TlresError(f"{source}: x_{split} has shape {x.shape}; expected (N, H, W) or (N, H, W, 1 or 3)")
        if len(x) == 0:
            raise TlresError(f"{source}: the {split} split is empty")
        if min(x.shape[1:3]) == 0:
            raise TlresError(f"{source}: x_{split} has shape {x.shape}; images need at least one pixel")
        if y.ndim != 1 or len(y) != len(x):
            raise TlresError(f"{source}: y_{split} has shape {y.shape}; expected ({len(x)},), one label per image")
        if not np.issubdtype(y.dtype, np.integer):
            raise TlresError(f"{source}: y_{split} has dtype {y.dtype}; expected integer class labels")
        splits[split] = (as_uint8(source, f"x_{split}", x), y)
    num_classes = len(class_names) if class_names is not None else int(
        max(splits["train"][1].max(), splits["test"][1].max())) + 1
    if class_names is None and num_classes > MAX_INFERRED_CLASSES:
        raise TlresError(f"{source}: the labels go up to {num_classes - 1}; without class_names at most "
                         f"{MAX_INFERRED_CLASSES} classes (labels 0..{MAX_INFERRED_CLASSES - 1}) are "
                         "inferred (store a class_names array to have more)")
    for split, (x, y) in splits.items():
        if y.min() < 0 or y.max() >= num_classes:
            raise TlresError(f"{source}: y_{split} has labels in [{y.min()}, {y.max()}]; "
                             f"expected 0..{num_classes - 1}")
    if num_classes < 2 or len(np.unique(splits["train"][1])) < 2:
        raise TlresError(f"{source}: the training split has a single class; need at least 2")
    if class_names is None:
        class_names = tuple(str(i) for i in range(num_classes))
    (xtr, ytr), (xte, yte) = splits["train"], splits["test"]
    return (to_rgb(xtr, image_size), ytr.astype(np.int32),
            to_rgb(xte, image_size), yte.astype(np.int32), tuple(class_names))


def as_uint8(source, name, x):
    """Image array `name` of `source` as uint8: uint8 kept, float in [0, 1] scaled by 255 and rounded."""
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise TlresError(f"{source}: {name} has shape {x.shape}; expected (N, H, W) or (N, H, W, 1 or 3)")
    if np.issubdtype(x.dtype, np.floating):
        lo, hi = (float(np.min(x)), float(np.max(x))) if x.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
            raise TlresError(f"{source}: float {name} must lie in [0, 1]; found [{lo:g}, {hi:g}] "
                             "(store 0-255 images as uint8)")
        out = np.empty(x.shape, np.uint8)  # in chunks: no full-size float temporaries
        for i in range(0, len(x), 4096):
            out[i:i + 4096] = np.round(x[i:i + 4096] * 255)
        return out
    if x.dtype != np.uint8:
        raise TlresError(f"{source}: {name} has dtype {x.dtype}; expected uint8 (0-255) or float (0-1)")
    return x


def to_rgb(x, size):
    """uint8 (N,H,W[,C]) -> uint8 (N,size,size,3): gray to RGB, bilinear resize."""
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[1:3] != (size, size):
        x = resample.resize(x, size)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(x)


# ----------------------------------------------------------------- sources
def _digits(image_size):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.2, stratify=digits.target, random_state=DIGITS_SPLIT_SEED)
    return Dataset("digits", *_validate("digits", x_train, y_train, x_test, y_test,
                                        tuple(str(i) for i in range(10)), image_size))


def _npz(path, image_size):
    try:
        check_npz_sizes(path)
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
            if missing:
                raise TlresError(f"{path}: missing array(s) {', '.join(missing)}; "
                                 "expected x_train, y_train, x_test, y_test")
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            names = f["class_names"] if "class_names" in f.files else None
    except TlresError:
        raise
    except Exception as e:  # zipfile / pickle / format errors
        raise TlresError(f"{path}: not a readable .npz file ({brief(e)})") from e
    if names is not None:
        if names.ndim != 1:
            raise TlresError(f"{path}: class_names has shape {names.shape}; expected one name per class")
        names = tuple(str(n) for n in names)
    return Dataset(os.path.basename(path), *_validate(path, *arrays.values(), names, image_size))


def check_npz_sizes(path):
    """Refuse an array whose header declares more data than its member holds.

    numpy allocates the declared size before it reads an array from a zip
    member, so a 100-byte header could otherwise ask for terabytes (refused by
    the allocator) or tens of gigabytes (granted, then filled page by page).
    """
    import zipfile

    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as f:
                version = npy.read_magic(f)
                read_header = {(1, 0): npy.read_array_header_1_0,
                               (2, 0): npy.read_array_header_2_0}.get(version)
                if read_header is None:  # version 3.0 (utf-8 field names): numpy checks the rest
                    continue
                shape, _, dtype = read_header(f)
                need, have = math.prod(shape) * dtype.itemsize, info.file_size - f.tell()
            if not dtype.hasobject and need > have:
                raise TlresError(f"{path}: {quote(info.filename[:-4])} declares a {dtype} array of shape "
                                 f"{shape} ({human(need)}) but holds {human(have)}")


MAX_BATCH_BYTES = 256 * 2 ** 20  # an official batch is 31 MB; a member this big is no CIFAR-10 batch
MAX_ARCHIVE_MEMBERS = 10_000     # the official archive has 8


def _kind(obj):
    """What a pickled value is, in a few words (never its contents)."""
    if isinstance(obj, np.ndarray):
        return f"a {obj.dtype} array of shape {obj.shape}"
    if obj is None:
        return "None"
    name = type(obj).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _cifar10_archive(path, image_size):
    """Read the official CIFAR-10 python version (tar.gz or extracted folder).

    The batches are pickles, read with `tlres.data.safe_pickle` (arrays and
    containers only: a file that names any other callable is refused before
    anything runs), then checked one by one against the official layout.
    """
    try:
        blobs = _cifar_folder_files(path) if os.path.isdir(path) else _cifar_tar_files(path)
    except TlresError:
        raise
    except Exception as e:  # truncated gzip, broken tar header, unreadable file
        raise TlresError(f"{path}: corrupt or truncated CIFAR-10 archive ({brief(e)})") from e
    batches = {}
    for name in CIFAR_FILES:  # one at a time, dropping each file's bytes once read
        batches[name] = _cifar_unpickle(path, name, blobs.pop(name))
    meta = batches.pop("batches.meta")
    parts = {name: _cifar_batch(path, name, batch, len(CIFAR10_CLASSES)) for name, batch in batches.items()}
    del batches
    names = _cifar_label_names(path, meta)

    def arrays(files):
        x = np.concatenate([parts[n][0] for n in files])
        y = np.concatenate([parts[n][1] for n in files])
        return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y  # CHW rows -> NHWC

    x_train, y_train = arrays(CIFAR_FILES[:5])
    x_test, y_test = arrays(["test_batch"])
    return Dataset("cifar10", *_validate(path, x_train, y_train, x_test, y_test, names, image_size))


def _cifar_folder_files(path):
    """{file name: bytes} of the extracted cifar-10-batches-py/ folder (or its parent)."""
    inner = os.path.join(path, "cifar-10-batches-py")
    base = inner if os.path.isdir(inner) else path
    blobs = {}
    for name in CIFAR_FILES:
        p = os.path.join(base, name)
        if not os.path.exists(p):
            raise TlresError(f"{path}: missing {name} (expected the extracted cifar-10-batches-py/ folder)")
        st = os.stat(p)
        if not stat.S_ISREG(st.st_mode):
            raise TlresError(f"{path}: {name} is not a regular file; tlres reads regular files only")
        if st.st_size > MAX_BATCH_BYTES:
            raise TlresError(f"{path}: {name} is {st.st_size / 2 ** 20:.0f} MiB; an official CIFAR-10 "
                             f"batch is 31 MB (limit {MAX_BATCH_BYTES // 2 ** 20} MiB)")
        with open(p, "rb") as f:
            blobs[name] = f.read(st.st_size + 1)  # read(n) allocates n bytes up front
    return blobs


_TAR_KINDS = ((tarfile.TarInfo.issym, "a symbolic link"), (tarfile.TarInfo.islnk, "a hard link"),
              (tarfile.TarInfo.isdir, "a directory"), (tarfile.TarInfo.ischr, "a character device"),
              (tarfile.TarInfo.isblk, "a block device"), (tarfile.TarInfo.isfifo, "a FIFO"))


def _cifar_tar_files(path):
    """{file name: bytes} of the archive's batch files: regular members only, each once."""
    blobs, where = {}, {}
    with tarfile.open(path, "r:*") as tar:
        for count, m in enumerate(tar, 1):  # one pass: a gzip stream is read once, in order
            if count > MAX_ARCHIVE_MEMBERS:
                raise TlresError(f"{path}: more than {MAX_ARCHIVE_MEMBERS} members; the official "
                                 "cifar-10-python.tar.gz has 8")
            name = posixpath.basename(m.name.rstrip("/"))
            if name not in CIFAR_FILES:
                continue
            if not m.isreg():
                kind = next((k for test, k in _TAR_KINDS if test(m)), "not a regular file")
                raise TlresError(f"{path}: {quote(m.name)} is {kind} in the archive; tlres reads "
                                 "regular files only")
            if name in blobs:
                raise TlresError(f"{path}: the archive holds {name} twice ({quote(where[name])} and "
                                 f"{quote(m.name)}); expected the official cifar-10-python.tar.gz")
            if m.size > MAX_BATCH_BYTES:
                raise TlresError(f"{path}: {quote(m.name)} is {m.size / 2 ** 20:.0f} MiB; an official "
                                 f"CIFAR-10 batch is 31 MB (limit {MAX_BATCH_BYTES // 2 ** 20} MiB)")
            blobs[name], where[name] = tar.extractfile(m).read(), m.name
    missing = [n for n in CIFAR_FILES if n not in blobs]
    if missing:
        raise TlresError(f"{path}: archive lacks {', '.join(missing)}; "
                         "expected the official cifar-10-python.tar.gz")
    return blobs


def _cifar_unpickle(path, name, blob):
    try:
        return safe_pickle.loads(blob, encoding="bytes")  # Python 2 pickles: strings as bytes
    except safe_pickle.ForbiddenGlobal as e:
        raise TlresError(f"{path}: refuses to load: {name} references {e.qualname}; the official "
                         "CIFAR-10 files hold only arrays, lists and strings") from None
    except safe_pickle.UnsafePickle as e:
        raise TlresError(f"{path}: refuses to load: {name} is not a plain pickle of arrays and "
                         f"lists ({brief(e)})") from None
    except Exception as e:  # not a pickle, cut short, ...
        raise TlresError(f"{path}: {name} is corrupt or truncated ({brief(e)})") from None


def _entry(d, key):
    """d[b"key"] (Python 2 pickles) or d["key"]; None when absent."""
    return d[key.encode()] if key.encode() in d else d.get(key)


def _cifar_label_names(path, meta):
    if not isinstance(meta, dict):
        raise TlresError(f"{path}: batches.meta holds {_kind(meta)}, not a dict with label_names")
    names = _entry(meta, "label_names")
    if not (isinstance(names, (list, tuple)) and len(names) == 10
            and all(isinstance(n, (bytes, str)) and 0 < len(n) <= 100 for n in names)):
        found = f"{len(names)} entries" if isinstance(names, (list, tuple)) else _kind(names)
        raise TlresError(f"{path}: batches.meta: label_names must be 10 class names; found {found}")
    try:
        return tuple(n.decode() if isinstance(n, bytes) else n for n in names)
    except UnicodeDecodeError:
        raise TlresError(f"{path}: batches.meta: label_names are not UTF-8 text") from None


def _cifar_batch(path, name, batch, num_classes):
    """(uint8 N x 3072 rows, int64 labels) of one batch, checked; one line naming the file if not."""
    if not isinstance(batch, dict):
        raise TlresError(f"{path}: {name} holds {_kind(batch)}, not a CIFAR-10 batch "
                         "(a dict with data and labels)")
    x, y = _entry(batch, "data"), _entry(batch, "labels")
    for key, value in (("data", x), ("labels", y)):
        if value is None:
            raise TlresError(f"{path}: {name} has no {key}; a CIFAR-10 batch holds data and labels")
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2 and x.shape[1] == 3072):
        raise TlresError(f"{path}: {name}: data is {_kind(x)}; expected an N x 3072 uint8 array "
                         "(one 32x32 RGB image per row)")
    if isinstance(y, np.ndarray) and y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        labels = y
    elif isinstance(y, (list, tuple)) and all(type(v) is int for v in y):
        labels = y
    else:
        raise TlresError(f"{path}: {name}: labels is {_kind(y)}; expected a list of integers")
    if len(labels) != len(x):
        raise TlresError(f"{path}: {name}: {len(labels)} labels for {len(x)} images")
    if len(labels) and (min(labels) < 0 or max(labels) >= num_classes):
        bad = next(int(v) for v in labels if not 0 <= v < num_classes)
        raise TlresError(f"{path}: {name}: labels must lie in 0..{num_classes - 1}; found {bad}")
    return np.asarray(x), np.asarray(labels, np.int64)


def _idx_path(folder, name):
    """`folder/name` or `folder/name.gz`, whichever exists (None if neither)."""
    for p in (os.path.join(folder, name), os.path.join(folder, name + ".gz")):
        if os.path.isfile(p):
            return p
    return None


def read_idx(path, ndim):
    """One MNIST-format idx file (optionally gzipped) as a uint8 array of `ndim` dimensions.

    The format (LeCun's MNIST page): two zero bytes, a type byte (0x08 = unsigned
    byte), the number of dimensions, then each dimension as a big-endian int32, then
    the data. Everything is checked against the file's real length before an array
    is allocated, so a corrupt header cannot ask for more memory than the file holds.
    """
    import gzip
    import zlib

    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise TlresError(f"{path}: not an idx file (bad magic number)")
            if head[2] != 0x08:
                raise TlresError(f"{path}: idx data type 0x{head[2]:02x}; expected 0x08 (unsigned bytes)")
            if head[3] != ndim:
                raise TlresError(f"{path}: {head[3]} dimension(s); expected {ndim}")
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise TlresError(f"{path}: truncated header")
            shape = tuple(int.from_bytes(dims[4 * i: 4 + 4 * i], "big") for i in range(ndim))
            expected = math.prod(shape)  # Python ints: three int32 sizes can pass 2^64
            # no more than the header declares (+1 to see excess), in chunks: a gzip stream
            # can decompress to far more than its file, and read(n) allocates n bytes first
            chunks, have = [], 0
            while have <= expected:
                chunk = f.read(min(2 ** 20, expected + 1 - have))
                if not chunk:
                    break
                chunks.append(chunk)
                have += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise TlresError(f"{path}: unreadable idx file ({brief(e)})") from e
    if have != expected:
        holds = f"{have} bytes of data" if have < expected else "more data than that"
        raise TlresError(f"{path}: header declares shape {shape} ({expected} bytes) but the file "
                         f"holds {holds}")
    raw = b"".join(chunks)
    return np.frombuffer(raw, np.uint8).reshape(shape)


def _idx_folder(folder, image_size, name, class_names):
    """The four MNIST-format idx files of `folder` (MNIST, Fashion-MNIST, ...)."""
    paths = {f: _idx_path(folder, f) for f in IDX_FILES}
    missing = [f for f, p in paths.items() if p is None]
    if missing:
        raise TlresError(f"{folder}: missing idx file(s) {', '.join(missing)} (or .gz); expected "
                         f"{', '.join(IDX_FILES)}")
    x_train, y_train, x_test, y_test = (read_idx(paths[f], 3 if "images" in f else 1) for f in IDX_FILES)
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise TlresError(f"{folder}: {len(x)} {split} images but {len(y)} {split} labels")
    if class_names is None and max(y_train.max(), y_test.max()) < 10:
        class_names = tuple(str(i) for i in range(10))  # MNIST-style: always 10 classes
    return Dataset(name, *_validate(folder, x_train, y_train, x_test, y_test, class_names, image_size))


class _DropAbsl:
    """Drops tensorflow-datasets' "Variant folder ... has no dataset_info.json" warning: it only
    means CIFAR-10 is not in the cache, which tlres says itself, with the fix."""

    def filter(self, record):
        return "has no dataset_info.json" not in record.getMessage()


def _cifar10_tfds(data_dir, image_size):
    import logging

    import tensorflow_datasets as tfds

    absl, drop = logging.getLogger("absl"), _DropAbsl()
    absl.addFilter(drop)
    try:
        builder = tfds.builder("cifar10", data_dir=data_dir)
        prepared = builder.is_prepared()
    finally:
        absl.removeFilter(drop)
    if not prepared:
        # tensorflow-datasets alone retries for minutes when offline: look first.
        if not online.reachable("www.cs.toronto.edu"):
            raise TlresError(
                f"CIFAR-10 is not in the tensorflow-datasets cache ({builder.data_dir}) and its "
                f"download host is unreachable: get {CIFAR10_URL} on a machine with internet and "
                "run with --data /path/to/cifar-10-python.tar.gz (or the extracted cifar-10-batches-py/)")
        builder.download_and_prepare()
    def split(name):  # whole-split batch_size=-1 aborts under tfds' mock in TF 2.21: chunk it
        parts = list(tfds.as_numpy(builder.as_dataset(split=name, batch_size=8192)))
        return {k: np.concatenate([p[k] for p in parts]) for k in ("image", "label")}

    train, test = split("train"), split("test")
    names = tuple(builder.info.features["label"].names)
    return Dataset("cifar10", *_validate(
        f"tfds cifar10 ({builder.data_dir})", train["image"], train["label"],
        test["image"], test["label"], names, image_size))
