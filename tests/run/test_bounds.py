"""Sizes with bounds: checkpoints, --image-size, the resume record, the memory pre-flight and
.keras files from elsewhere each give one line, fast, with real files built here."""

import dataclasses
import json
import os
import resource
import struct
import tempfile
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from fuzzing import check_cli

from tlres.core import config, memory
from tlres.run import checkpoint, rundir
from tlres.net import model as model_lib
from tlres.net import modelfile
from tlres.commands import train as train_cmd
from tlres.core.errors import TlresError

TINY = config.QUICK.replace(arch="tiny", image_size=8, batch_size=8, epochs=1)


def one_line(exc_info):
    text = str(exc_info.value)
    assert text and "\n" not in text
    return text


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


def declaring(shape, payload_bytes):
    """An .npy whose header declares float32 `shape` and which holds `payload_bytes` of data."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %r, }" % (shape,)
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * payload_bytes


def test_checkpoint_declaring_3_gib_is_refused_fast_and_small(tmp_path):
    """A 3 MB checkpoint whose array declares 3 GiB: one line in seconds, tens of MB at most."""
    write_checkpoint(str(tmp_path), raw_w0=declaring((3 * 2 ** 28,), 3 * 2 ** 20))  # 3 GiB of float32
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


# -- --image-size, the resume record, the memory pre-flight ---------------------------------------

def test_image_size_1000000_is_one_line_in_under_a_second(tmp_path):
    out = str(tmp_path / "big")
    t0 = time.perf_counter()
    status, err = check_cli(train_cmd.main, ["--preset", "quick", "--arch", "tiny", "--epochs", "1",
                                             "--image-size", "1000000", "--out", out], out)
    assert time.perf_counter() - t0 < 1
    assert status == 2 and "--image-size: must be 8..1024 pixels, got 1000000" in err


def test_config_validates_every_field_type_choice_and_range():
    for change, words in [({"epochs": "3"}, "--epochs must be an integer, got '3'"),
                          ({"seed": [1]}, "--seed must be an integer, got [1]"),
                          ({"arch": "vgg"}, "--arch must be one of resnet50, resnet50_v1_5, tiny"),
                          ({"image_size": 12000}, "--image-size must be 8..1024 pixels, got 12000"),
                          ({"image_size": True}, "--image-size must be an integer, got True"),
                          ({"lr": float("nan")}, "--lr must be a finite number"),
                          ({"augment": 1}, "--augment must be true or false, got 1"),
                          ({"data": None}, "--data must be a string, got None")]:
        with pytest.raises(TlresError) as e:
            TINY.replace(**change).validate()
        assert one_line(e) == words or one_line(e).startswith(words), (change, str(e.value))
    for preset in config.PRESETS.values():
        assert preset.validate() is preset


def a_run(folder, change=None, drop=(), status=None):
    """A run directory as `tlres train` leaves it when killed, its config.json edited."""
    os.makedirs(folder)
    saved = {**dataclasses.asdict(TINY.replace(out=str(folder))), **(change or {})}
    record = {"config": saved, "dataset": {"num_train": 100, "num_test": 20, "num_classes": 10},
              "device": {"processes": 1}}
    for key in drop:
        record.pop(key, None) if key in record else saved.pop(key)
    (folder / "config.json").write_text(json.dumps(record))
    (folder / "status.json").write_text(json.dumps(status or {"state": "failed", "error": "x"}))


@pytest.mark.parametrize("change,drop,status,words", [
    ({"epochs": "3"}, (), None, "config.json: epochs must be an integer, got '3'"),
    ({"seed": [1]}, (), None, "config.json: seed must be an integer, got [1]"),
    ({"arch": "vgg"}, (), None, "config.json: arch must be one of resnet50, resnet50_v1_5, tiny, got 'vgg'"),
    ({"image_size": 12000}, (), None, "config.json: image_size must be 8..1024 pixels, got 12000"),
    (None, ("dataset",), None, "config.json: dataset.num_train must be an integer >= 1, got None"),
    (None, ("data",), None, 'config.json has no "config" record'),
    (None, (), {"state": "running", "pid": 2 ** 70, "host": "h"}, "status.json's pid and host"),
    (None, (), {"state": 3}, "status.json's state must be one of"),
])
def test_a_tampered_resume_record_is_one_line(tmp_path, change, drop, status, words):
    run = tmp_path / "run"
    a_run(run, change, drop, status)
    code, err = check_cli(train_cmd.main, ["--resume", str(run)])
    assert code == 2 and words in err, err


def test_a_valid_resume_record_passes():
    """The record `a_run` writes untouched is accepted (the tests above change one thing each)."""
    with tempfile.TemporaryDirectory() as tmp:
        from pathlib import Path
        a_run(Path(tmp) / "run")
        assert rundir.resumed_config(os.path.join(tmp, "run")).arch == "tiny"


def test_memory_estimate_is_the_documented_formula():
    cfg = config.QUICK.replace(image_size=64, batch_size=16)
    assert memory.estimate(cfg) == 1.9e9 + 3500 * 64 * 64 * 16
    memory.check_fits(cfg, have=2e9)  # 2.1 GB is not over 2 x 2 GB: it runs
    with pytest.raises(TlresError) as e:
        memory.check_fits(cfg.replace(batch_size=256), have=2e9)  # 5.6 GB > 4 GB
    assert one_line(e) == ("--image-size 64 with --batch-size 256 needs about 5.6 GB of memory to train "
                           "--arch resnet50, and 2.0 GB is available; lower --batch-size or --image-size")


def test_a_run_that_cannot_fit_is_refused_before_anything(tmp_path):
    out = str(tmp_path / "huge")
    t0 = time.perf_counter()
    status, err = check_cli(train_cmd.main, ["--preset", "quick", "--image-size", "1024", "--batch-size",
                                             "65536", "--epochs", "1", "--out", out], out)
    assert status == 2 and "needs about 240.5 TB of memory to train --arch resnet50" in err, err
    assert "is available; lower --batch-size or --image-size" in err
    assert time.perf_counter() - t0 < 5


# -- .keras files ----------------------------------------------------------------------------------

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
