"""Fuzzing every reader of untrusted files (tests/fuzzing.py has the property and the budget).

Each target starts from a valid small file and mutates it: bytes (truncations, bit
flips, extreme integers over length fields, wrong magic numbers and headers) and
structure (wrong dtypes and shapes, NaN/inf images, huge declared sizes, wrong
kinds of JSON values, broken CSV cells). Loaders: the .npz, the CIFAR-10 archive
(folder, .tar, .tar.gz), `tlres.analysis.results` and `compare` (results JSON, run
directories with their CSV files, `results convert`'s CSV inputs),
MNIST-format idx folders, image folders and their images (PNG, JPEG, GIF), and
`tlres predict`'s inputs (a .keras file's tlres.json, an .npz).
"""

import csv
import dataclasses
import gzip
import io
import json
import os
import pickle
import pickletools
import shutil
import tarfile
import zipfile

import numpy as np
import pytest
from conftest import write_cifar_batches
from fuzzing import SETTINGS, check, check_cli, fuzz, hot_offsets, mutations, refusing
from hypothesis import given
from hypothesis import strategies as st

import py2_pickle
from tlres.analysis import results
from tlres.data import imagefolder, loaders as data
from tlres.commands import compare as compare_cmd, results as results_cmd
from tlres.commands import train as train_cmd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORDED_RUN = os.path.join(ROOT, "experiments", "results", "digits", "runs", "improved", "seed0")
TINY = ["--preset", "quick", "--arch", "tiny", "--epochs", "1", "--batch-size", "4"]
FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module", autouse=True)
def imported():
    """What the readers import lazily (jax, scipy for Welch intervals, Pillow),
    imported first: an import under tracemalloc on a loaded CPU took 48 s, and the time limit
    is for the reader."""
    import jax.numpy  # noqa: F401
    import PIL.Image  # noqa: F401
    import scipy.stats  # noqa: F401


@pytest.fixture
def small_images(monkeypatch):
    """A 4,096-pixel limit, so that every image the fuzzer can make is bounded like other
    inputs (the real limit, 100 million pixels, bounds a decode by pixels, not by file size)."""
    import PIL.Image

    monkeypatch.setattr(imagefolder, "MAX_PIXELS", 4096)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", PIL.Image.MAX_IMAGE_PIXELS)  # restored after


def load_data(path):
    data.load(path, image_size=32)


def data_cli(tmp):
    """The training command on a refused --data: exit 2, one line, no run directory."""
    out = str(tmp / "run")
    return lambda path: check_cli(lambda argv: train_cmd.main(argv, "prog"),
                                  TINY + ["--data", path, "--out", out], out)


# -- .npz --------------------------------------------------------------------------------------

def npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


RNG = np.random.default_rng(0)
NPZ = npz_bytes(x_train=RNG.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), y_train=np.arange(8) % 3,
                x_test=RNG.random((4, 32, 32, 3)).astype(np.float32), y_test=np.arange(4) % 3,
                class_names=np.array(["a", "b", "c"]))


def test_fuzz_npz_bytes(tmp):
    hot = hot_offsets(NPZ, [b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"\x93NUMPY", b"'shape'", b"'descr'"])
    fuzz(NPZ, load_data, ".npz", hot=hot, cli=data_cli(tmp))


DESCRS = ["|u1", "<f4", ">f8", "<f2", "|b1", "<i8", ">i2", "<u8", "<c8", "|O", "<U3", "|S2", "|V4",
          "<M8[s]", [("a", "<u1")], "|u1", "<f4"]
LABEL_DESCRS = ["<i8", "|u1", ">i4", "<u8", "<f8", "|b1", "<U1"]
PIXELS = [0.0, 0.5, 1.0, -0.25, 1.5, float("nan"), float("inf"), -float("inf")]


def npy_bytes(descr, shape, payload, version=1):
    """A .npy file: magic, header (as numpy writes it), then `payload` as is."""
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    size_len = 2 if version == 1 else 4
    header += b" " * (63 - (8 + size_len + len(header)) % 64) + b"\n"
    return (b"\x93NUMPY" + bytes([version, 0]) + len(header).to_bytes(size_len, "little") + header + payload)


@st.composite
def npy_member(draw, kind, n, wild):
    """A member of `n` images or labels. Tame: the valid file's kind of array. Wild: a drawn
    dtype, a shape near the valid one (or huge), a payload exact, short or long."""
    if not wild:
        if kind == "x":
            return npy_bytes("|u1", (n, 32, 32, 3), bytes(n * 3072))
        return npy_bytes("<i8", (n,), (np.arange(n) % 3).astype("<i8").tobytes())
    if draw(st.integers(0, 4)) == 0:
        n = draw(st.integers(0, 6))
    if kind == "x":
        descr = draw(st.sampled_from(DESCRS))
        shape = draw(st.sampled_from([(n, 32, 32, 3), (n, 32, 32, 3), (n, 32, 32), (n, 8, 8, 1), (n, 32, 32, 2),
                                      (n, 32), (n, 0, 32), (n, 32, 32, 3, 1)]))
    else:
        descr = draw(st.sampled_from(LABEL_DESCRS))
        shape = draw(st.sampled_from([(n,), (n,), (n, 1), ()]))
    if draw(st.integers(0, 9)) == 0:  # a declared size far beyond the data
        shape = tuple(draw(st.sampled_from([2 ** 31, 2 ** 40, 2 ** 62, 10 ** 5])) for _ in shape) or (2 ** 40,)
    dtype = np.dtype(descr)
    count = int(np.prod(shape, dtype=object)) if all(d < 2 ** 20 for d in shape) else 0
    payload_kind = draw(st.sampled_from(["exact", "exact", "exact", "short", "long", "empty"]))
    if payload_kind == "exact" and count * dtype.itemsize < 2 ** 20 and not dtype.hasobject:
        if dtype.kind == "f":
            values = np.array(draw(st.lists(st.sampled_from(PIXELS), min_size=1, max_size=4)), np.float64)
            arr = np.resize(values, count).astype(dtype)
        elif dtype.kind in "iu":
            values = np.array(draw(st.lists(st.one_of(st.integers(0, 2), st.integers(-3, 300)),
                                            min_size=2, max_size=4)))
            arr = np.resize(values, count).astype(dtype)  # wraps for unsigned: fine, it is fuzz
        else:
            arr = np.zeros(count, dtype)
        payload = arr.tobytes()
    else:
        payload = {"short": b"\0" * 7, "long": b"\0" * 300, "empty": b""}.get(payload_kind, b"\0" * 11)
    return npy_bytes(descr, shape, payload, version=draw(st.sampled_from([1, 2])))


@st.composite
def npz_files(draw):
    """The four arrays (and maybe class_names, or a member missing); one or two of them wild."""
    keys = ["x_train", "y_train", "x_test", "y_test"]
    names = keys + draw(st.sampled_from([[], [], ["class_names"]])) if draw(st.integers(0, 4)) else draw(
        st.lists(st.sampled_from(keys + ["class_names"]), min_size=3, max_size=5, unique=True))
    wild = set(draw(st.lists(st.sampled_from(names), min_size=1, max_size=2)))
    sizes = {"train": draw(st.integers(2, 6)), "test": draw(st.integers(1, 6))}
    buf = io.BytesIO()
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name in names:
            kind = "x" if name.startswith("x_") else "y"
            if name == "class_names":
                member = npy_bytes("<U1", (3,), "abc".encode("utf-32-le")) if name not in wild else draw(
                    npy_member("y", 3, True))
            else:
                member = draw(npy_member(kind, sizes[name.split("_")[1]], name in wild))
            z.writestr(name + ".npy", member)
    return buf.getvalue()


def test_fuzz_npz_headers_dtypes_and_nan(tmp):
    """Wrong dtypes (object, datetime, structured, complex, strings), shapes, NaN/inf pixels,
    declared sizes up to 2^62 per dimension, payloads short or long."""
    fuzz(NPZ, load_data, ".npz", strategy=npz_files(), cli=data_cli(tmp))


# -- the CIFAR-10 archive ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cifar(tmp):
    folder = tmp / "valid" / "cifar-10-batches-py"
    write_cifar_batches(str(folder), n_train_per_batch=2, n_test=3)
    return {n: (folder / n).read_bytes() for n in FILES}


def op_offsets(blob):
    return {pos for _, _, pos in pickletools.genops(blob)}


def test_fuzz_cifar_folder_pickles(tmp, cifar):
    """One of the seven pickles mutated, opcode positions favoured."""
    folder = tmp / "folder" / "cifar-10-batches-py"
    run_cli = data_cli(tmp)

    @SETTINGS
    @given(st.sampled_from(FILES).flatmap(
        lambda n: st.tuples(st.just(n), mutations(cifar[n], hot=op_offsets(cifar[n])))))
    def run(case):
        name, blob = case
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for n in FILES:
            (folder / n).write_bytes(blob if n == name else cifar[n])
        if check(load_data, str(folder), sum(map(len, cifar.values())) + len(blob)) != "loaded":
            run_cli(str(folder))

    run()


LABEL_VALUES = st.one_of(st.integers(-2, 11), st.sampled_from([2 ** 63, -2 ** 63 - 1, 2 ** 100, True, 1.0,
                                                               float("nan"), None, "3", b"3"]))
DATA_VALUES = st.sampled_from([
    ("u1", (2, 3072)), ("u1", (2, 1024)), ("u1", (2, 32, 32, 3)), ("f8", (2, 3072)), ("f4", (2, 3072)),
    ("u2", (2, 3072)), ("i1", (2, 3072)), ("u1", (0, 3072)), ("u1", (3072,)), ("b1", (2, 3072)),
    ("list", None), ("bytes", None), ("none", None)])


@st.composite
def cifar_objects(draw):
    """A batch or meta dict with one field of the wrong kind, pickled at a drawn protocol
    (or Python 2's writer)."""
    name = draw(st.sampled_from(FILES))
    str_keys = draw(st.integers(0, 5)) == 0  # a Python 3 re-creation with str keys
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    if name == "batches.meta":
        names = draw(st.lists(st.one_of(st.binary(min_size=1, max_size=12), st.text(min_size=1, max_size=12),
                                        st.binary(max_size=2), st.integers()), min_size=8, max_size=11))
        obj = {key("label_names"): names} if draw(st.booleans()) else {key("label_names"): tuple(names)}
    else:
        dtype, shape = draw(DATA_VALUES)
        if dtype == "list":
            x = [[0] * 3072] * 2
        elif dtype in ("bytes", "none"):
            x = b"\0" * 6144 if dtype == "bytes" else None
        else:
            fill = draw(st.sampled_from([0, 1, 255, float("nan"), float("inf")])) if dtype[0] == "f" else 7
            x = np.full(shape, fill, dtype)
        rows = shape[0] if shape and len(shape) == 2 else 2
        labels = draw(st.one_of(st.lists(st.integers(0, 9), min_size=rows, max_size=rows),
                                st.lists(LABEL_VALUES, min_size=0, max_size=3)))
        if draw(st.booleans()):
            labels = np.array([v for v in labels if isinstance(v, int) and -128 <= v < 128], np.int8)
        obj = {key("data"): x, key("labels"): labels}
        for k in draw(st.lists(st.sampled_from(["data", "labels"]), max_size=1)):
            obj.pop(key(k))
    if draw(st.integers(0, 9)) == 0:
        obj = draw(st.sampled_from([7, [obj], None, "data", (obj,)]))
    writer = draw(st.sampled_from(["py2", 0, 1, 2, 3, 4, 5]))
    try:
        blob = py2_pickle.dumps(obj) if writer == "py2" else pickle.dumps(obj, protocol=writer)
    except (TypeError, UnicodeEncodeError):  # the py2 writer knows only what the official files hold
        blob = pickle.dumps(obj, protocol=2)
    return name, blob


def test_fuzz_cifar_batch_structure(tmp, cifar):
    folder = tmp / "objects" / "cifar-10-batches-py"
    run_cli = data_cli(tmp)

    @SETTINGS
    @given(cifar_objects())
    def run(case):
        name, blob = case
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for n in FILES:
            (folder / n).write_bytes(blob if n == name else cifar[n])
        if check(load_data, str(folder), sum(map(len, cifar.values())) + len(blob)) != "loaded":
            run_cli(str(folder))

    run()


def tar_bytes(cifar, compress=False):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w") as tar:
        for n in FILES:
            ti = tarfile.TarInfo(f"cifar-10-batches-py/{n}")
            ti.size = len(cifar[n])
            tar.addfile(ti, io.BytesIO(cifar[n]))
    return buf.getvalue()


def tar_header_offsets(blob):
    """Each member header's start and its size, type, link name and checksum fields."""
    out = set()
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for m in tar:
            out |= {m.offset + f for f in (0, 100, 124, 148, 156, 157, 257, 345)}
    return out


def test_fuzz_tar_headers(tmp, cifar):
    """The tar (uncompressed, or gzipped after the mutation so the headers' damage survives)."""
    valid = tar_bytes(cifar)
    run_cli = data_cli(tmp)

    @SETTINGS
    @given(mutations(valid, hot=tar_header_offsets(valid)), st.booleans())
    def run(blob, compress):
        path = tmp / ("m.tar.gz" if compress else "m.tar")
        if compress:
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:
                g.write(blob)
            path.write_bytes(buf.getvalue())
        else:
            path.write_bytes(blob)
        if check(load_data, str(path), max(len(blob), len(valid))) != "loaded":
            run_cli(str(path))

    run()


def test_fuzz_tar_gz_bytes(tmp, cifar):
    valid = tar_bytes(cifar, compress=True)
    fuzz(valid, load_data, ".tar.gz", hot={0, 3, 4, 9, len(valid) - 8, len(valid) - 4}, cli=data_cli(tmp))


# -- MNIST-format idx folders -------------------------------------------------------------------

IDX = {"train-images-idx3-ubyte": RNG.integers(0, 256, (6, 32, 32), dtype=np.uint8),
       "train-labels-idx1-ubyte": np.arange(6, dtype=np.uint8) % 3,
       "t10k-images-idx3-ubyte.gz": RNG.integers(0, 256, (3, 32, 32), dtype=np.uint8),
       "t10k-labels-idx1-ubyte.gz": np.arange(3, dtype=np.uint8) % 3}


def idx_bytes(a):
    return b"\0\0\x08" + bytes([a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape) + a.tobytes()


def test_fuzz_idx_folder(tmp):
    """One of the four idx files damaged: its header (magic, type, dimensions, sizes) favoured;
    a gzipped file is damaged inside (then recompressed) or in its gzip bytes."""
    plain = {n: idx_bytes(a) for n, a in IDX.items()}
    folder = tmp / "idx"
    run_cli = data_cli(tmp)

    @SETTINGS
    @given(st.sampled_from(sorted(IDX)).flatmap(lambda n: st.tuples(
        st.just(n), mutations(plain[n], hot={0, 2, 3, 4, 8, 12}), st.booleans())))
    def run(case):
        name, blob, raw_gz = case
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for n, b in plain.items():
            b = blob if n == name else b
            if n.endswith(".gz"):
                b = gzip.compress(b, mtime=0)
                if n == name and raw_gz:
                    b = b[:len(b) // 2] + bytes([b[len(b) // 2] ^ 0x10]) + b[len(b) // 2 + 1:]
            (folder / n).write_bytes(b)
        if check(load_data, str(folder), sum(map(len, plain.values())) + len(blob)) != "loaded":
            run_cli(str(folder))

    run()


# -- results and compare ---------------------------------------------------------------------------

JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(), st.text(max_size=12),
    st.sampled_from([10 ** 400, 2 ** 63, -1, 0, 1, 1000, 10 ** 6, "tlres.results/1", "a\nb", "", 0.5]))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=8)


@st.composite
def json_edit(draw, obj):
    """`obj` with one value replaced, one key dropped, or a list entry added, at a drawn path."""
    obj = json.loads(json.dumps(obj))
    parent, key, node = None, None, obj
    while isinstance(node, (dict, list)) and node and draw(st.integers(0, 3)) > 0:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, draw(st.sampled_from(keys))
        node = node[key]
    action = draw(st.sampled_from(["replace", "replace", "drop", "append"]))
    if parent is None:
        return draw(JSON_VALUES) if action == "replace" else [obj, obj]
    if action == "drop" and isinstance(parent, dict):
        del parent[key]
    elif action == "append" and isinstance(node, list):
        node.append(draw(JSON_VALUES))
    else:
        parent[key] = draw(JSON_VALUES)
    return obj


def json_text(obj):
    return json.dumps(obj).encode()  # NaN and Infinity as Python writes them


def a_result():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 21)
    preds = np.where(rng.random(21) < 0.7, labels, (labels + 1) % 3)
    correct = int((labels == preds).sum())
    return {"schema": results.SCHEMA, "name": "fuzz", "framework": {"name": "keras-jax", "versions": {}},
            "device": "cpu", "config": {"seed": 0}, "dataset": {"name": "t", "num_classes": 3},
            "history": [{"epoch": 1, "loss": 1.0, "val_loss": 0.9, "val_accuracy": 0.5},
                        {"epoch": 2, "loss": 0.8, "val_loss": 0.7, "val_accuracy": 0.6}],
            "metrics": {"accuracy": correct / 21, "correct": correct, "num_test": 21, "loss": 0.7,
                        "mean_class_accuracy": correct / 21, "confusion_matrix": [[1, 0, 0]] * 3},
            "predictions": {"index": list(range(21)), "label": labels.tolist(), "prediction": preds.tolist()}}


def compare_with(valid_source, tmp):
    md = str(tmp / "c.md")
    return lambda path: refusing(compare_cmd.main, [valid_source, path, "--markdown", md])


def test_fuzz_results_json(tmp):
    valid = a_result()
    valid_path = tmp / "valid.json"
    valid_path.write_bytes(json_text(valid))
    blob = json_text(valid)
    deep = st.just(b"[" * 100_000 + b"]" * 100_000)
    strategy = st.one_of(json_edit(valid).map(json_text), json_edit(valid).map(lambda o: json_text([o, o])),
                         mutations(blob, hot=hot_offsets(blob, [b'"metrics"', b'"predictions"', b'"schema"'])),
                         deep)
    fuzz(blob, compare_with(str(valid_path), tmp), ".json", strategy=strategy)


CSV_CELLS = st.one_of(st.sampled_from(["", "nan", "inf", "-inf", "1e999", "-1", "0", "1.5", "9" * 30, "9" * 5000,
                                       "x", "\x00", "é", '"', "1,2", "3\n4", " 7"]), st.text(max_size=8))


@st.composite
def csv_edit(draw, text):
    """A CSV with one cell replaced, or a cell added or dropped, or a row dropped, or a
    header name changed; written back quoted, or raw (broken quoting allowed)."""
    rows = list(csv.reader(io.StringIO(text)))
    i = draw(st.integers(0, len(rows) - 1))
    action = draw(st.sampled_from(["cell", "cell", "cell", "add", "drop", "row"]))
    if action == "row":
        del rows[i]
    elif rows[i]:
        j = draw(st.integers(0, len(rows[i]) - 1))
        if action == "cell":
            rows[i][j] = draw(CSV_CELLS)
        elif action == "add":
            rows[i].insert(j, draw(CSV_CELLS))
        else:
            del rows[i][j]
    if draw(st.booleans()):
        out = io.StringIO()
        csv.writer(out).writerows(rows)
        return out.getvalue().encode()
    return "\n".join(",".join(r) for r in rows).encode("utf-8", "surrogatepass")


def test_fuzz_run_directory(tmp):
    """A recorded run directory with one of its files damaged, compared with the intact one."""
    valid = tmp / "valid-run"
    shutil.copytree(RECORDED_RUN, valid)
    files = {n: (valid / n).read_bytes() for n in ("metrics.json", "config.json", "history.csv", "predictions.csv")}

    def strategy_for(name):
        blob = files[name]
        if name.endswith(".json"):
            return st.one_of(json_edit(json.loads(blob)).map(json_text), mutations(blob))
        return st.one_of(csv_edit(blob.decode()), mutations(blob))

    damaged = tmp / "damaged-run"
    load = compare_with(str(valid), tmp)

    @SETTINGS
    @given(st.sampled_from(sorted(files)).flatmap(lambda n: st.tuples(st.just(n), strategy_for(n))))
    def run(case):
        name, blob = case
        shutil.rmtree(damaged, ignore_errors=True)
        shutil.copytree(valid, damaged)
        (damaged / name).write_bytes(blob)
        check(load, str(damaged), sum(map(len, files.values())) + len(blob))

    run()


def test_fuzz_convert_csv(tmp):
    """`tlres results convert` on a damaged history or predictions CSV."""
    inputs = {n: open(os.path.join(RECORDED_RUN, n), "rb").read() for n in ("history.csv", "predictions.csv")}
    out = str(tmp / "converted.json")

    def convert(paths):
        return lambda _path: refusing(results_cmd.main, [
            "convert", "--history", paths["history.csv"], "--predictions", paths["predictions.csv"],
            "--framework", "x", "--out", out], out)

    @SETTINGS
    @given(st.sampled_from(sorted(inputs)).flatmap(
        lambda n: st.tuples(st.just(n), st.one_of(csv_edit(inputs[n].decode()), mutations(inputs[n])))))
    def run(case):
        name, blob = case
        paths = {}
        for n, valid in inputs.items():
            paths[n] = str(tmp / f"in-{n}")
            with open(paths[n], "wb") as f:
                f.write(blob if n == name else valid)
        if os.path.exists(out):
            os.remove(out)
        check(convert(paths), paths[name], sum(map(len, inputs.values())) + len(blob))

    run()


# -- a run's checkpoint and resume record -----------------------------------------------------------

CKPT_META = {"epochs_done": 1, "step": 2, "steps_per_epoch": 5, "history": [{"epoch": 1, "loss": 1.0}],
             "num_weights": 2, "optimizer_variables": ["adam/iteration", "adam/m"],
             "metrics_variables": ["loss/total"], "epoch": {"lr": 0.001, "seconds": 1.5}}


def checkpoint_bytes(meta):
    """A checkpoint as `checkpoint.save` writes it: weights w*, optimizer o*, metrics m*, the record."""
    return npz_bytes(w0=RNG.random((3, 3)).astype(np.float32), w1=np.zeros(3, np.float32),
                     o0=np.zeros((), np.int64), o1=np.zeros((3, 3), np.float32), m0=np.zeros((), np.float32),
                     meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))


def test_fuzz_checkpoint(tmp):
    """`checkpoint.load`: the checkpoint file, damaged as bytes or its record edited as JSON."""
    from tlres.run import checkpoint

    run = tmp / "ckpt-run"
    (run / "ckpt").mkdir(parents=True)

    def load(path):
        shutil.copyfile(path, checkpoint.path(str(run)))
        checkpoint.load(str(run), epochs=4)

    valid = checkpoint_bytes(CKPT_META)
    hot = hot_offsets(valid, [b"PK\x03\x04", b"PK\x01\x02", b"\x93NUMPY", b"'shape'", b'"epochs_done"'])
    strategy = st.one_of(mutations(valid, hot), json_edit(CKPT_META).map(checkpoint_bytes))
    fuzz(valid, load, ".npz", strategy=strategy)


def test_fuzz_resume_record(tmp):
    """`rundir.resumed_config` (what `tlres train --resume` reads first): config.json and
    status.json of a killed run, one of them edited as JSON or damaged as bytes."""
    from tlres.core import config as config_lib
    from tlres.run import rundir

    record = {"config": dataclasses.asdict(config_lib.QUICK.replace(arch="tiny", out="r")),
              "dataset": {"num_train": 100, "num_test": 20, "num_classes": 10}, "device": {"processes": 1}}
    status = {"state": "failed", "error": "x", "epochs_done": 1, "step": 0}
    run = tmp / "resume-run"
    run.mkdir()
    files = {"config.json": record, "status.json": status}

    def strategy_for(name):
        blob = json_text(files[name])
        return st.one_of(json_edit(files[name]).map(json_text), mutations(blob))

    @SETTINGS
    @given(st.sampled_from(sorted(files)).flatmap(lambda n: st.tuples(st.just(n), strategy_for(n))))
    def run_case(case):
        name, blob = case
        for other, obj in files.items():
            (run / other).write_bytes(json_text(obj))
        (run / name).write_bytes(blob)
        check(lambda p: rundir.resumed_config(p), str(run), len(blob) + 4096)

    for name, obj in files.items():
        (run / name).write_bytes(json_text(obj))
    assert check(rundir.resumed_config, str(run), 4096) == "loaded"
    run_case()


# -- tlres predict: a model file's tlres.json, an .npz of images -----------------------------------

RECORD = {"preprocessing": {"image_size": 32, "channels": "RGB", "input_norm": "paper", "class_names": ["a", "b"]},
          "evaluation": {"batch_size": 64, "conv": "auto"}}


def zipped(name, blob):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, blob)
    return buf.getvalue()


def test_fuzz_keras_file_metadata():
    """`model.read_metadata`: the tlres.json member of a .keras zip, damaged as JSON or as bytes."""
    from tlres.net import modelfile

    text = json_text(RECORD)
    valid = zipped("tlres.json", text)
    strategy = st.one_of(json_edit(RECORD).map(lambda o: zipped("tlres.json", json_text(o))),
                         mutations(text).map(lambda b: zipped("tlres.json", b)), mutations(valid))
    fuzz(valid, modelfile.read_metadata, ".keras", strategy=strategy)


def test_fuzz_predict_npz():
    """`predict.npz_images`: the .npz that `tlres predict` takes."""
    from tlres.run import predict

    valid = npz_bytes(x=RNG.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    fuzz(valid, lambda p: predict.npz_images(p, 32), ".npz",
         hot=hot_offsets(valid, [b"PK\x03\x04", b"PK\x01\x02", b"\x93NUMPY", b"'shape'", b"'descr'"]))


# -- images ----------------------------------------------------------------------------------------

def image_bytes(fmt):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (12, 9, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,markers", [
    ("PNG", [b"IHDR", b"IDAT", b"IEND"]),
    ("JPEG", [b"\xff\xc0", b"\xff\xc4", b"\xff\xda", b"\xff\xdb"]),
    ("GIF", [b"GIF8", b",", b";"]),
])
def test_fuzz_open_image(fmt, markers, small_images):
    """`imagefolder.open_image` (--data DIR, tlres predict), under a small pixel limit."""
    valid = image_bytes(fmt)
    fuzz(valid, imagefolder.open_image, "." + fmt.lower(), hot=hot_offsets(valid, markers) | {0, 16})


def test_fuzz_image_folder(tmp, small_images):
    """A DIR/<class>/ folder (2 classes x 3 images, PNG and JPEG) with one image damaged."""
    images = {f"{c}/{i}.{fmt.lower()}": image_bytes(fmt) for c in ("cat", "dog")
              for i, fmt in enumerate(["PNG", "JPEG", "PNG"])}
    folder = tmp / "images"
    run_cli = data_cli(tmp)

    @SETTINGS
    @given(st.sampled_from(sorted(images)).flatmap(lambda n: st.tuples(st.just(n), mutations(images[n]))))
    def run(case):
        name, blob = case
        shutil.rmtree(folder, ignore_errors=True)
        for n, b in images.items():
            (folder / n).parent.mkdir(parents=True, exist_ok=True)
            (folder / n).write_bytes(blob if n == name else b)
        if check(load_data, str(folder), sum(map(len, images.values())) + len(blob)) != "loaded":
            run_cli(str(folder))

    run()
