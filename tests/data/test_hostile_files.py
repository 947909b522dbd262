"""Hostile files, fed to their loader directly: the CIFAR-10 archive reader (crafted pickles,
malformed batches, tar members that are not files), declared sizes far beyond the data (.npz,
pickle, idx, PNG chunks, checkpoints), decompression bombs in images, and .keras files that carry
code or declare huge members. Each is refused with one line, fast and small; the valid files they
are measured against load. Beside tests/data/test_fuzz.py, which mutates the same formats; the
command line's bad inputs are tests/commands/test_bad_inputs.py."""

import io
import json
import os
import pickle
import resource
import shlex
import struct
import subprocess
import tarfile
import tempfile
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from conftest import write_cifar_batches

import py2_pickle
from helpers import npy_declaring
from tlres.core import config
from tlres.core.errors import TlresError
from tlres.data import loaders as data, safe_pickle
from tlres.net import model as model_lib
from tlres.net import modelfile
from tlres.run import checkpoint

TINY = config.QUICK.replace(arch="tiny", image_size=8, batch_size=8, epochs=1)


def one_line(exc_info):
    text = str(exc_info.value)
    assert text and "\n" not in text
    return text


FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


def tgz_of(folder, path):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return str(path)


def numpy1_protocol2(obj):
    """Python 3, protocol 2, with numpy 1.x's module name (GLOBAL opcodes are text lines)."""
    return pickle.dumps(obj, protocol=2).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


WRITERS = {
    **{f"protocol {p}": (lambda obj, p=p: pickle.dumps(obj, protocol=p)) for p in range(6)},
    "default protocol": pickle.dumps,
    "numpy 1.x names, protocol 2": numpy1_protocol2,
    "python 2 cPickle": py2_pickle.dumps,
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_real_format_archives_load_exactly(tmp_path, writer):
    folder = tmp_path / "cifar-10-batches-py"
    x_train, y_train, x_test, y_test = write_cifar_batches(str(folder), dumps=WRITERS[writer])
    for path in (str(folder), tgz_of(folder, tmp_path / "c.tar.gz")):
        ds = data.load(path)
        np.testing.assert_array_equal(ds.x_train, x_train)
        np.testing.assert_array_equal(ds.y_train, y_train)
        np.testing.assert_array_equal(ds.x_test, x_test)
        np.testing.assert_array_equal(ds.y_test, y_test)
        assert ds.class_names == data.CIFAR10_CLASSES


def test_the_python2_writer_really_writes_python2_pickles():
    """The py2 fixture uses Python 2's opcodes and numpy 1.x names, not Python 3's."""
    import pickletools

    ops = {op.name for op, _, _ in pickletools.genops(py2_pickle.dumps({b"data": np.zeros((1, 3), np.uint8)}))}
    assert {"SHORT_BINSTRING", "GLOBAL", "BUILD"} <= ops and not ops & {"BINBYTES", "SHORT_BINUNICODE"}
    assert b"numpy.core.multiarray\n_reconstruct" in py2_pickle.dumps({b"x": np.zeros(1, np.uint8)})


# -- crafted archives: the payload must never run ------------------------------------------------

class Payload:
    """Unpickling this calls `fn(*args)`: what a crafted archive does."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def payloads(marker):
    return {
        "os.system": (Payload(os.system, f"touch {shlex.quote(str(marker))}"), "posix.system"),
        "io.open": (Payload(open, str(marker), "w"), "io.open"),
        "subprocess.call": (Payload(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
        "builtins.exec": (Payload(exec, f"open({str(marker)!r}, 'w')"), "builtins.exec"),
    }


def crafted(tmp_path, payload, form="tgz"):
    """An archive whose seven files each pickle `payload` (inside a batch-like dict)."""
    folder = tmp_path / "evil" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in FILES:
        (folder / name).write_bytes(pickle.dumps({b"data": payload, b"labels": [0]}))
    return str(folder) if form == "folder" else tgz_of(folder, tmp_path / "evil.tar.gz")


@pytest.mark.parametrize("kind", ["os.system", "io.open", "subprocess.call", "builtins.exec"])
@pytest.mark.parametrize("form", ["tgz", "folder"])
def test_crafted_archive_is_refused_and_its_payload_never_runs(tmp_path, kind, form):
    marker = tmp_path / "PWNED"
    payload, qualname = payloads(marker)[kind]
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(payloads(control)[kind][0]))  # plain pickle does run it:
    assert control.exists()  # so the assertion below can fail
    path = crafted(tmp_path, payload, form)
    with pytest.raises(TlresError) as e:
        data.load(path)
    assert str(e.value) == (f"{path}: refuses to load: data_batch_1 references {qualname}; "
                            "the official CIFAR-10 files hold only arrays, lists and strings")
    assert not marker.exists()


def test_a_pickle_calling_ndarray_or_a_numpy_function_is_refused():
    for fn, args, qualname in ((np.ndarray, ((10 ** 6, 10 ** 6),), None),
                               (np.load, ("x.npy",), "numpy.load")):
        blob = pickle.dumps(Payload(fn, *args))
        with pytest.raises(safe_pickle.UnsafePickle) as e:
            safe_pickle.loads(blob)
        if qualname:
            assert isinstance(e.value, safe_pickle.ForbiddenGlobal) and e.value.qualname == qualname


# -- malformed archives: one line naming the file and what is wrong -------------------------------

def archive_with(tmp_path, change):
    """The fixture's folder with `change(name, dict) -> object` applied before pickling."""
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(str(folder))
    for name in FILES:
        obj = pickle.loads((folder / name).read_bytes())
        (folder / name).write_bytes(pickle.dumps(change(name, obj)))
    return str(folder)


def only(target, fn):
    return lambda name, obj: fn(obj) if name == target else obj


def replaced(key, value):
    return lambda obj: {**obj, key: value}


def dropped(key):
    return lambda obj: {k: v for k, v in obj.items() if k != key}


MALFORMED = {
    "pickled integers": (lambda name, obj: 7, "data_batch_1 holds an int, not a CIFAR-10 batch"),
    "float data": (only("data_batch_2", lambda o: {**o, b"data": o[b"data"] / 255.0}),
                   "data_batch_2: data is a float64 array of shape (4, 3072); expected an N x 3072 uint8"),
    "NaN data": (only("test_batch", replaced(b"data", np.full((6, 3072), np.nan))), "data is a float64 array"),
    "short rows": (only("data_batch_1", lambda o: {**o, b"data": o[b"data"][:, :1024]}),
                   "data is a uint8 array of shape (4, 1024)"),
    "data as a list": (only("data_batch_1", replaced(b"data", [1, 2, 3])), "data is a list"),
    "no data": (only("data_batch_3", dropped(b"data")), "data_batch_3 has no data"),
    "no labels": (only("test_batch", dropped(b"labels")), "test_batch has no labels"),
    "too few labels": (only("data_batch_4", replaced(b"labels", [0, 1, 2])), "data_batch_4: 3 labels for 4 images"),
    "label 10": (only("data_batch_5", replaced(b"labels", [0, 10, 1, 2])),
                 "data_batch_5: labels must lie in 0..9; found 10"),
    "label -1": (only("data_batch_5", replaced(b"labels", [0, -1, 1, 2])), "labels must lie in 0..9; found -1"),
    "float labels": (only("data_batch_1", replaced(b"labels", [0.0, 1.0, 2.0, 3.0])),
                     "labels is a list; expected a list of integers"),
    "boolean labels": (only("data_batch_1", replaced(b"labels", [True, False, True, False])),
                       "expected a list of integers"),
    "huge label": (only("data_batch_1", replaced(b"labels", [0, 2 ** 70, 1, 2])), f"found {2 ** 70}"),
    "meta not a dict": (only("batches.meta", lambda o: [o]), "batches.meta holds a list, not a dict"),
    "nine label names": (only("batches.meta", lambda o: {**o, b"label_names": o[b"label_names"][:9]}),
                         "label_names must be 10 class names; found 9 entries"),
    "no label names": (only("batches.meta", dropped(b"label_names")), "label_names must be 10 class names; found None"),
    "non-UTF-8 label names": (only("batches.meta", replaced(b"label_names", [b"\xff"] * 10)), "not UTF-8"),
    "object array": (only("data_batch_1", replaced(b"data", np.array([[1, "a"]], object))),
                     "data_batch_1 is not a plain pickle of arrays and lists"),
    "structured dtype": (only("data_batch_1", replaced(b"data", np.zeros(4, "u1,u2"))),
                         "data_batch_1 is not a plain pickle of arrays and lists"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_batches_are_one_line_naming_the_file(tmp_path, case):
    change, needle = MALFORMED[case]
    path = archive_with(tmp_path, change)
    with pytest.raises(TlresError) as e:
        data.load(path)
    msg = str(e.value)
    assert msg.startswith(path + ": ") and needle in msg and "\n" not in msg, msg


def test_not_a_pickle_and_a_truncated_pickle(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(str(folder))
    (folder / "data_batch_2").write_bytes(b"hello")
    with pytest.raises(TlresError, match="data_batch_2 is corrupt or truncated"):
        data.load(str(folder))
    write_cifar_batches(str(folder))
    blob = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(blob[:len(blob) // 2])
    with pytest.raises(TlresError, match="test_batch is corrupt or truncated"):
        data.load(str(folder))


# -- declared sizes far beyond the data ------------------------------------------------------------

def bounded(fn, max_bytes=4 * 2 ** 20, max_seconds=2.0):
    """fn() raises TlresError, quickly, having allocated at most max_bytes (tracemalloc peak)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(TlresError) as e:
            fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < max_seconds
    assert peak < max_bytes, f"peak {peak} bytes"
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("blob,needle", [
    # BINBYTES8 declaring 1 GiB: Python's unpickler would allocate it before reading
    (b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 30) + b"abc.", "corrupt or truncated"),
    # BINUNICODE8 declaring 2 GiB
    (b"\x80\x04\x8d" + struct.pack("<Q", 2 ** 31) + b"abc.", "corrupt or truncated"),
    # a memo index of 2^28: Python's unpickler grows its memo table to 2^29 entries (4 GiB)
    (b"\x80\x04Nr" + struct.pack("<I", 2 ** 28) + b".", "memo index"),
])
def test_declared_pickle_sizes_beyond_the_data_are_refused_cheaply(tmp_path, blob, needle):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(str(folder))
    (folder / "data_batch_1").write_bytes(blob)
    assert needle in bounded(lambda: data.load(str(folder)))


def test_array_state_with_more_elements_than_bytes_is_refused(tmp_path):
    """A BUILD state declaring 10^12 elements over 3 bytes (numpy itself would check, but the
    object-dtype variant of this state crashes numpy 2.4's unpickling)."""
    blob = pickle.dumps(np.zeros(3, np.uint8), protocol=2)
    blob = blob.replace(b"K\x03\x85", b"\x8a\x06" + (10 ** 12).to_bytes(6, "little") + b"\x85")
    with pytest.raises(safe_pickle.UnsafePickle, match="needs 1000000000000 bytes; the file holds 3"):
        safe_pickle.loads(blob)


def test_npz_declaring_a_huge_array_is_one_line_exit_2_and_fast(tmp_path):
    """A 3 TiB header over 64 bytes of data, and a 20 GiB one (an allocation a Linux
    allocator would grant, then numpy fills it page by page until the data runs out)."""
    import zipfile

    for shape, size in (((3072, 1024, 1024, 1024), "3.3 TB"), ((20, 1024, 1024, 1024), "21.5 GB")):
        npy = npy_declaring(shape, b"\0" * 64)
        path = tmp_path / f"big{shape[0]}.npz"
        with zipfile.ZipFile(path, "w") as z:
            for k in ("x_train", "y_train", "x_test", "y_test"):
                z.writestr(k + ".npy", npy)
        msg = bounded(lambda: data.load(str(path)))
        assert msg == (f"{path}: x_train declares a uint8 array of shape {shape} ({size}) but holds 64 bytes")


# -- tar members that are not regular files, duplicates, oversized members ------------------------

def tar_with(tmp_path, extra, skip=(), name="c.tar"):
    """The fixture's batches as a tar, `extra(tar)` adding members, `skip` leaving some out."""
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(str(folder))
    path = tmp_path / name
    with tarfile.open(path, "w:gz" if name.endswith("gz") else "w") as tar:
        for n in FILES:
            if n not in skip:
                tar.add(folder / n, arcname=f"cifar-10-batches-py/{n}")
        extra(tar)
    return str(path)


def member(name, kind, **fields):
    ti = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
    ti.type = kind
    for k, v in fields.items():
        setattr(ti, k, v)
    return ti


@pytest.mark.parametrize("kind,fields,words", [
    (tarfile.SYMTYPE, {"linkname": "/etc/passwd"}, "a symbolic link"),
    (tarfile.LNKTYPE, {"linkname": "cifar-10-batches-py/test_batch"}, "a hard link"),
    (tarfile.CHRTYPE, {"devmajor": 1, "devminor": 5}, "a character device"),
    (tarfile.BLKTYPE, {"devmajor": 8, "devminor": 0}, "a block device"),
    (tarfile.FIFOTYPE, {}, "a FIFO"),
    (tarfile.DIRTYPE, {}, "a directory"),
])
def test_tar_members_that_are_not_regular_files_are_refused(tmp_path, kind, fields, words):
    path = tar_with(tmp_path, lambda tar: tar.addfile(member("data_batch_3", kind, **fields)),
                    skip=("data_batch_3",))
    with pytest.raises(TlresError) as e:
        data.load(path)
    assert str(e.value) == (f"{path}: cifar-10-batches-py/data_batch_3 is {words} in the archive; "
                            "tlres reads regular files only")


def test_duplicated_and_missing_members(tmp_path):
    def twice(tar):
        tar.add(tmp_path / "cifar-10-batches-py" / "test_batch", arcname="other/test_batch")

    path = tar_with(tmp_path, twice, name="d.tar.gz")
    with pytest.raises(TlresError) as e:
        data.load(path)
    assert str(e.value) == (f"{path}: the archive holds test_batch twice (cifar-10-batches-py/test_batch "
                            "and other/test_batch); expected the official cifar-10-python.tar.gz")
    path = tar_with(tmp_path, lambda tar: None, skip=("data_batch_2", "batches.meta"), name="m.tar")
    with pytest.raises(TlresError, match="archive lacks data_batch_2, batches.meta; expected the official"):
        data.load(path)


def test_oversized_member_and_too_many_members(tmp_path, monkeypatch):
    path = tar_with(tmp_path, lambda tar: None)
    monkeypatch.setattr(data, "MAX_BATCH_BYTES", 1000)  # the fixture's batches are ~12 kB
    with pytest.raises(TlresError, match="data_batch_1 is 0 MiB; an official CIFAR-10 batch is 31 MB"):
        data.load(path)
    monkeypatch.undo()

    def many(tar):
        for i in range(20):
            tar.addfile(tarfile.TarInfo(f"junk/{i}"), io.BytesIO(b""))

    path = tar_with(tmp_path, many, name="many.tar")
    monkeypatch.setattr(data, "MAX_ARCHIVE_MEMBERS", 10)
    with pytest.raises(TlresError, match="more than 10 members"):
        data.load(path)


def test_folder_batches_must_be_regular_files(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(str(folder))
    real = tmp_path / "elsewhere"
    os.replace(folder / "data_batch_1", real)
    os.symlink(real, folder / "data_batch_1")  # a symlink to a regular file is fine
    assert data.load(str(folder)).x_train.shape == (20, 32, 32, 3)
    os.remove(folder / "data_batch_1")
    os.mkfifo(folder / "data_batch_1")  # reading a FIFO would block forever
    with pytest.raises(TlresError, match="data_batch_1 is not a regular file"):
        data.load(str(folder))


# -- images: Pillow's pixel limit, set explicitly, and what a header can make Pillow allocate -------

def png(width, height, idat=None, idat_length=None):
    """A PNG whose IHDR claims width x height; its IDAT holds `idat` (default: nothing) and
    declares `idat_length` bytes (default: what it holds)."""
    import zlib

    def chunk(kind, body, length=None):
        return (struct.pack(">I", len(body) if length is None else length) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    idat = zlib.compress(b"") if idat is None else idat
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat, idat_length) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [100_000, 12_000])  # 10^10 pixels: Pillow's error; 1.44e8: its warning zone
def test_open_image_refuses_a_decompression_bomb(tmp_path, side):
    from tlres.data import imagefolder

    assert imagefolder.MAX_PIXELS == 100_000_000 < side * side
    path = tmp_path / "bomb.png"
    path.write_bytes(png(side, side))  # 70 bytes claiming side x side pixels
    msg = bounded(lambda: imagefolder.open_image(str(path)))
    assert msg == f"{path}: more than 100,000,000 pixels; refused as a possible decompression bomb (shrink it first)"


def test_a_png_chunk_declaring_2_gib_allocates_nothing_like_it(tmp_path):
    """A 12 x 9 PNG whose IDAT chunk declares 2 GiB: Pillow skips the rest of a chunk with
    fp.read(declared length), and a file's read(n) allocates n bytes first."""
    from tlres.data import imagefolder

    path = tmp_path / "chunk.png"
    path.write_bytes(png(12, 9, idat=b"x\x9c", idat_length=2 ** 31 - 16))
    msg = bounded(lambda: imagefolder.open_image(str(path)), max_bytes=16 * 2 ** 20)
    assert msg.startswith(f"{path}: not a readable image (")


def test_open_image_refuses_a_fifo_and_an_oversized_file(tmp_path, monkeypatch):
    from tlres.data import imagefolder

    os.mkfifo(tmp_path / "pipe.png")  # reading it would block forever
    with pytest.raises(TlresError, match="pipe.png: not a regular file"):
        imagefolder.open_image(str(tmp_path / "pipe.png"))
    (tmp_path / "big.png").write_bytes(bytes(9000))
    monkeypatch.setattr(imagefolder, "MAX_FILE_BYTES", 8000)
    with pytest.raises(TlresError, match=r"big.png: 9,000 bytes, more than any image of at most 100,000,000 "
                                         r"pixels needs \(limit 8,000 bytes\)"):
        imagefolder.open_image(str(tmp_path / "big.png"))


# -- MNIST-format idx files ------------------------------------------------------------------------

def idx_folder(tmp_path, train_images):
    """Four idx files (the format by definition: 0, 0, 0x08, ndim, big-endian sizes, bytes),
    the training images' file replaced by `train_images` (bytes, gzipped when the name says)."""
    import gzip

    folder = tmp_path / "idx"
    folder.mkdir()
    for name, shape in (("train-labels-idx1-ubyte", (4,)), ("t10k-images-idx3-ubyte", (2, 8, 8)),
                        ("t10k-labels-idx1-ubyte", (2,))):
        blob = b"\0\0\x08" + bytes([len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)
        (folder / name).write_bytes(blob + bytes(int(np.prod(shape))))
    if isinstance(train_images, tuple):  # (name suffix, bytes)
        suffix, blob = train_images
        (folder / ("train-images-idx3-ubyte" + suffix)).write_bytes(
            gzip.compress(blob) if suffix == ".gz" else blob)
    return str(folder)


def test_idx_sizes_whose_int64_product_wraps_to_the_data_length(tmp_path):
    """2^31 x 2^31 x 4 = 2^64 images' bytes: 0 in int64 arithmetic, which matched an empty
    file and then failed in numpy's reshape with a traceback."""
    header = b"\0\0\x08\x03" + (2 ** 31).to_bytes(4, "big") * 2 + (4).to_bytes(4, "big")
    path = idx_folder(tmp_path, ("", header))
    with pytest.raises(TlresError, match=r"declares shape \(2147483648, 2147483648, 4\) \(18446744073709551616 bytes\) "
                                         "but the file holds 0 bytes"):
        data.load(path)


def test_idx_gzip_holding_far_more_than_declared_is_read_no_further(tmp_path):
    """A 64 KiB gzip of 64 MiB of zeros behind a header declaring 4 x 8 x 8: refused having
    read the declared 256 bytes (+1), not the 64 MiB."""
    blob = b"\0\0\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (4, 8, 8)) + bytes(64 * 2 ** 20)
    path = idx_folder(tmp_path, (".gz", blob))
    msg = bounded(lambda: data.load(path), max_bytes=4 * 2 ** 20)
    assert msg.endswith("declares shape (4, 8, 8) (256 bytes) but the file holds more data than that")


# -- --weights: a model.keras carrying code --------------------------------------------------------

def test_model_keras_with_a_lambda_layer_is_refused_and_its_code_never_runs(tmp_path):
    """Keras stores a Lambda layer's function as Python bytecode; safe_mode refuses to
    load it. Without safe_mode, loading the file runs it (the control below)."""
    import keras

    from tlres.net import weights as weights_lib

    marker = tmp_path / "PWNED"
    inputs = keras.Input((4,))
    run_me = f"lambda x: (open({str(marker)!r}, 'a').close(), x)[1]"
    net = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Lambda(eval(run_me))(inputs)))
    path = tmp_path / "model.keras"
    net.save(path)
    marker.unlink()  # building the model above ran the function once
    with pytest.raises(TlresError, match=f"--weights {path}: not a readable Keras model"):
        weights_lib.load_backbone(None, str(path), str(path))
    assert not marker.exists()
    keras.saving.load_model(path, safe_mode=False)  # the control: unsafe loading runs it
    assert marker.exists()


# -- tlres predict: the .keras file's tlres.json and an .npz of images ------------------------------

RECORD = {"preprocessing": {"image_size": 32, "input_norm": "paper", "class_names": ["a", "b"]},
          "evaluation": {"batch_size": 64, "conv": "auto"}}


def keras_with(tmp_path, text):
    """A zip named model.keras holding only a tlres.json of `text` (what read_metadata reads)."""
    import zipfile

    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("tlres.json", text)
    return str(path)


@pytest.mark.parametrize("text,needle", [
    ("[1, 2]", "its tlres.json is not tlres' record"),
    (json.dumps({**RECORD, "evaluation": {"batch_size": "64"}}), "is not tlres' record"),
    (json.dumps({**RECORD, "evaluation": {"batch_size": 0}}), "is not tlres' record"),
    (json.dumps({**RECORD, "preprocessing": {"input_norm": "zzz"}}), "is not tlres' record"),
    (json.dumps({**RECORD, "preprocessing": {"class_names": "ab"}}), "is not tlres' record"),
    (json.dumps({**RECORD, "preprocessing": [1]}), "is not tlres' record"),
    ("[" * 100_000 + "]" * 100_000, "not a readable .keras file (RecursionError"),
    ("{", "not a readable .keras file (JSONDecodeError"),
])
def test_a_keras_files_tlres_json_of_the_wrong_kind_is_one_line(tmp_path, text, needle):
    from tlres.net import modelfile

    path = keras_with(tmp_path, text)
    with pytest.raises(TlresError) as e:
        modelfile.read_metadata(path)
    assert str(e.value).startswith(f"{path}: ") and needle in str(e.value) and "\n" not in str(e.value)


def test_a_keras_files_tlres_json_as_tlres_writes_it_is_read(tmp_path):
    from tlres.net import modelfile

    assert modelfile.read_metadata(keras_with(tmp_path, json.dumps(RECORD))) == RECORD


def test_predict_npz_declaring_a_huge_array_is_refused_cheaply(tmp_path):
    import zipfile

    from tlres.run import predict

    path = tmp_path / "p.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", npy_declaring((20, 1024, 1024, 1024), bytes(64)))
    msg = bounded(lambda: predict.npz_images(str(path), 32))
    assert msg == f"{path}: x declares a uint8 array of shape (20, 1024, 1024, 1024) (21.5 GB) but holds 64 bytes"


def test_a_keras_file_whose_tlres_json_declares_4_gib_compressed_allocates_nothing_like_it(tmp_path):
    """zipfile's read() of a whole member asks the file for its declared compressed size in
    one read, and a file's read(n) allocates n bytes first."""
    import zipfile

    from tlres.net import modelfile

    path = keras_with(tmp_path, json.dumps(RECORD))
    blob = bytearray(open(path, "rb").read())
    info = zipfile.ZipFile(path).getinfo("tlres.json")
    huge = (2 ** 32 - 2).to_bytes(4, "little")
    blob[info.header_offset + 18:info.header_offset + 22] = huge  # the local header's compressed size
    central = blob.rindex(b"PK\x01\x02")
    blob[central + 20:central + 24] = huge  # and the central directory's
    open(path, "wb").write(bytes(blob))
    tracemalloc.start()
    try:
        meta = modelfile.read_metadata(path)  # stored data: it reads the record's bytes
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert meta == RECORD and peak < 8 * 2 ** 20, peak


# -- checkpoints -----------------------------------------------------------------------------------

META = {"epochs_done": 1, "step": 0, "steps_per_epoch": 10, "history": [{"epoch": 1}],
        "num_weights": 1, "optimizer_variables": ["adam/iteration"]}


def write_checkpoint(run, meta=META, w0=None, raw_w0=None):
    """RUN/ckpt/checkpoint.npz as `checkpoint.save` lays it out; `raw_w0`: w0.npy's bytes as given."""
    os.makedirs(os.path.join(run, "ckpt"), exist_ok=True)
    arrays = {"w0": np.zeros(3, np.float32) if w0 is None else w0, "o0": np.zeros((), np.int64),
              "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    np.savez(checkpoint.path(run), **arrays)
    if raw_w0 is not None:
        with zipfile.ZipFile(checkpoint.path(run), "w") as z:
            z.writestr("w0.npy", raw_w0)
            for k in ("o0", "meta"):
                with z.open(k + ".npy", "w") as f:
                    np.lib.format.write_array(f, arrays[k])


def test_checkpoint_declaring_3_gib_is_refused_fast_and_small(tmp_path):
    """A 3 MB checkpoint whose array declares 3 GiB: one line in seconds, tens of MB at most."""
    write_checkpoint(str(tmp_path), raw_w0=npy_declaring((3 * 2 ** 28,), bytes(3 * 2 ** 20), "<f4"))  # 3 GiB of float32
    assert os.path.getsize(checkpoint.path(str(tmp_path))) < 4 * 2 ** 20
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(TlresError) as e:
        checkpoint.load(str(tmp_path))
    seconds, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "declares a float32 array of shape (805306368,) (3.2 GB) but holds 3.1 MB" in one_line(e)
    assert seconds < 5 and peak < 64 * 2 ** 20, (seconds, peak)


@pytest.mark.parametrize("change,words", [
    ({"epochs_done": -5}, "epochs_done must be an integer 0..4, got -5"),
    ({"epochs_done": 5}, "epochs_done must be an integer 0..4, got 5"),
    ({"epochs_done": True}, "epochs_done must be an integer 0..4, got True"),
    ({"epochs_done": 1.0}, "epochs_done must be an integer 0..4, got 1.0"),
    ({"epochs_done": "1"}, "epochs_done must be an integer 0..4, got '1'"),
    ({"step": -1}, "step must be an integer 0..9"),
    ({"step": 10}, "step must be an integer 0..9"),
    ({"step": 3, "epochs_done": 4}, "0 after the last epoch, got 3"),
    ({"num_weights": 10 ** 9}, "num_weights"),
    ({"optimizer_variables": [1]}, "variable name lists"),
    ({"history": "x"}, "history is not a list"),
])
def test_impossible_checkpoint_records_are_refused(tmp_path, change, words):
    write_checkpoint(str(tmp_path), {**META, **change})
    with pytest.raises(TlresError) as e:
        checkpoint.load(str(tmp_path), epochs=4)
    assert words in one_line(e) and "start a new run with --out" in str(e.value)


def test_checkpoint_arrays_must_match_the_model_in_shape_and_dtype(tmp_path):
    net = model_lib.build(3, TINY)
    n = len(net.weights)
    shapes = [tuple(w.shape) for w in net.weights]
    good = [np.zeros(s, np.float32) for s in shapes]
    meta = {**META, "num_weights": n, "optimizer_variables": []}
    for i, wrong in ((0, np.zeros((2, 2), np.float32)), (1, np.zeros(shapes[1], np.float64))):
        arrays = list(good)
        arrays[i] = wrong
        with pytest.raises(TlresError) as e:
            checkpoint.restore(net, (meta, arrays, []))
        assert f"holds {wrong.dtype} {wrong.shape}" in one_line(e), str(e.value)
    with pytest.raises(TlresError, match="1 arrays for"):
        checkpoint.restore(net, (meta, good[:1], []))


# -- .keras model files: members and declared sizes -----------------------------------------------

@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "model.keras")
    modelfile.save(model_lib.build(3, TINY), path, {"preprocessing": {"input_norm": "paper"}})
    return path


def rewritten(src, dst, change):
    """`src` (a zip) copied to `dst` with `change(name, bytes) -> [(name, bytes, compression)]`."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for info in a.infolist():
            for name, blob, how in change(info.filename, a.read(info)):
                b.writestr(zipfile.ZipInfo(name), blob, compress_type=how)
    return dst


def patch_declared_size(path, member, size):
    """Make `member`'s local and central headers declare `size` uncompressed bytes."""
    blob = bytearray(open(path, "rb").read())
    name = member.encode()
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = blob.find(sig)
        while i >= 0:
            n = struct.unpack_from("<H", blob, i + (26 if sig == b"PK\x03\x04" else 28))[0]
            start = i + (30 if sig == b"PK\x03\x04" else 46)
            if blob[start:start + n] == name:
                struct.pack_into("<I", blob, i + off, size)
            i = blob.find(sig, i + 1)
    open(path, "wb").write(bytes(blob))


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_keras_members_are_size_checked_before_keras_reads_them(tiny_keras, tmp_path, monkeypatch):
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    bomb = str(tmp_path / "bomb.keras")  # config.json declaring 1.5 GiB
    rewritten(tiny_keras, bomb, lambda n, b: [(n, b, zipfile.ZIP_STORED)])
    patch_declared_size(bomb, "config.json", 3 * 2 ** 29)
    deflated = str(tmp_path / "deflated.keras")  # weights: 300 MiB of zeros in 0.3 MB
    zeros = np.zeros(300 * 2 ** 20, np.uint8).tobytes()
    rewritten(tiny_keras, deflated, lambda n, b: [(n, zeros if n.endswith(".h5") else b, zipfile.ZIP_DEFLATED)])
    extra = rewritten(tiny_keras, str(tmp_path / "extra.keras"),
                      lambda n, b: [(n, b, 0)] + ([("assets/x", b"1", 0)] if n == "config.json" else []))
    before = peak_rss_mib()
    cases = {bomb: "its config.json declares 1.6 GB (", deflated: "its model.weights.h5 declares 314.6 MB (",
             extra: "member assets/x is not one Keras or tlres writes"}
    for path, words in cases.items():
        t0 = time.perf_counter()
        with pytest.raises(TlresError) as e:
            modelfile.load_keras(path, path)
        assert words in one_line(e) and time.perf_counter() - t0 < 2, str(e.value)
    assert peak_rss_mib() - before < 400  # the 300 MiB of zeros built above, nothing decompressed
    assert os.listdir(private) == []


def test_keras_input_shape_20000_is_refused(tiny_keras, tmp_path):
    def change(name, blob):
        if name == "config.json":
            blob = blob.replace(b"[null, 8, 8, 3]", b"[null, 20000, 20000, 3]")
            assert b"20000" in blob
        return [(name, blob, 0)]

    path = rewritten(tiny_keras, str(tmp_path / "wide.keras"), change)
    with pytest.raises(TlresError) as e:
        modelfile.load_keras(path, "m.keras")
    assert "m.keras: its config.json gives an input of shape [None, 20000, 20000, 3]" in one_line(e)


def test_keras_loading_leaves_nothing_in_tmpdir(tiny_keras, tmp_path, monkeypatch):
    """A valid file loads; one whose tlres.json fails its CRC as Keras extracts it is one line;
    neither leaves anything in TMPDIR (Keras' own loader left a folder there)."""
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    assert modelfile.load_keras(tiny_keras, "m").input_shape == (None, 8, 8, 3)
    bad = rewritten(tiny_keras, str(tmp_path / "crc.keras"), lambda n, b: [(n, b, 0)])
    blob = bytearray(open(bad, "rb").read())
    i = blob.find(b'"input_norm"')
    blob[i + 1] ^= 0x20  # the stored bytes change, the recorded CRC does not
    open(bad, "wb").write(bytes(blob))
    with pytest.raises(TlresError) as e:
        modelfile.load_keras(bad, "m")
    assert "not a readable Keras model" in one_line(e)
    assert os.listdir(private) == []
