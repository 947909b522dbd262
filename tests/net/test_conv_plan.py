"""`--conv auto` on a CPU (tlres.net.cpu.convplan, tlres.net.cpu.kernel_choice.apply_conv): each part of each
distinct convolution (forward, input gradient, weight gradient) gets the kernel with the smaller median
time, as timed on the host, once; the plan is cached per host key.

The choice and the cache are tested against hand-made timings (`time_fn`), never by timing
ResNet50; one test times the real kernels on one small shape.
"""

import json

import numpy as np
import pytest

from tlres.net.cpu import convplan, kernels
from tlres.net import model as model_lib
from tlres.net.cpu import kernel_choice
from tlres.core.config import IMPROVED

KEY = {"cpu": "Test CPU", "vector_extensions": ["avx", "avx2", "fma"], "cores": 2, "usable_cores": 2,
       "versions": {"jax": "1", "jaxlib": "1", "keras": "3"}, "xla_flags": "", "kernels": 2}


def shape(batch=64, h=8, c=16, kernel=3, filters=32, stride=1, padding="same", dtype="float32"):
    return {"batch": batch, "input": [h, h, c], "kernel": [kernel, kernel], "filters": filters,
            "strides": [stride, stride], "padding": padding, "dtype": dtype}


class Timings:
    """A `time_fn` with given seconds per (shape key, kernel), recording each call."""

    def __init__(self, table, default=None):
        self.table, self.default, self.calls = table, default, []

    def __call__(self, s, kernel, repeats):
        self.calls.append((convplan.shape_key(s), kernel, repeats))
        times = self.table.get((convplan.shape_key(s), kernel), self.default)
        assert times is not None, (convplan.shape_key(s), kernel)
        return times if isinstance(times, dict) else {p: times for p in kernels.PARTS}


@pytest.mark.parametrize("xla, matmul, expected", [
    ([1.0, 9.0, 9.0], [5.0, 5.0, 5.0], "matmul"),   # the minimum would pick xla
    ([1.0, 1.0, 100.0], [5.0, 5.0, 5.0], "xla"),    # the mean would pick matmul
    ([2.0, 2.0, 2.0], [2.0, 2.0, 2.0], "xla"),      # a tie keeps XLA's own kernel
    ([3.0, 3.1, 2.9], [2.0, 3.0, 2.95], "matmul"),
])
def test_the_kernel_with_the_smaller_median_is_kept(xla, matmul, expected):
    assert convplan.choose({"xla": xla, "matmul": matmul}) == expected


def test_each_shape_is_timed_once_then_read_from_the_cache(tmp_path):
    a, b = shape(h=8), shape(h=2, c=256, filters=256)
    fn = Timings({(convplan.shape_key(a), "xla"): [0.001] * 3, (convplan.shape_key(a), "matmul"): [0.002] * 3,
                  (convplan.shape_key(b), "xla"): [0.050] * 3, (convplan.shape_key(b), "matmul"): [0.004] * 3})
    notes = []
    p = convplan.plan([a, b, a], fn, str(tmp_path), key=KEY, note=notes.append)  # a twice: timed once
    assert p["kernels"] == {convplan.shape_key(a): ("xla",) * 3, convplan.shape_key(b): ("matmul",) * 3}
    assert p["source"] == "measured" and p["measured_now"] == [convplan.shape_key(a), convplan.shape_key(b)]
    assert sorted(fn.calls) == sorted((convplan.shape_key(s), k, convplan.REPEATS)
                                      for s in (a, b) for k in ("xla", "matmul"))
    assert notes == [f"tlres: timing 2 convolution shapes on this CPU (once; cached in {p['cache_file']})"]
    assert p["cache_file"].startswith(str(tmp_path))
    entry = p["shapes"][convplan.shape_key(b)]
    assert entry["xla_ms"] == 150.0 and entry["matmul_ms"] == 12.0 and entry["kernel"] == "matmul"  # 3 parts

    again = Timings({})  # any timing would fail the test
    notes.clear()
    q = convplan.plan([b, a], again, str(tmp_path), key=KEY, note=notes.append)
    assert again.calls == [] and notes == []
    assert q["source"] == "cache" and q["measured_now"] == [] and q["kernels"] == p["kernels"]


def test_a_new_shape_is_timed_and_added(tmp_path):
    a, a256 = shape(batch=64), shape(batch=256)
    convplan.plan([a], Timings({}, default=[0.001] * 3), str(tmp_path), key=KEY, note=lambda _: None)
    fn = Timings({}, default=[0.001] * 3)
    p = convplan.plan([a, a256], fn, str(tmp_path), key=KEY, note=lambda _: None)
    assert {c[0] for c in fn.calls} == {convplan.shape_key(a256)}  # the batch is part of the shape
    assert p["source"] == "measured+cache"
    bf16 = shape(dtype="bfloat16")
    fn = Timings({}, default=[0.001] * 3)
    convplan.plan([bf16], fn, str(tmp_path), key=KEY, note=lambda _: None)
    assert {c[0] for c in fn.calls} == {convplan.shape_key(bf16)}  # so is the dtype
    doc = json.loads(open(p["cache_file"]).read())
    assert len(doc["shapes"]) == 3 and doc["host"] == KEY


@pytest.mark.parametrize("field, value", [
    ("cpu", "Other CPU"), ("vector_extensions", ["avx", "avx2", "fma", "avx512f"]), ("cores", 4),
    ("usable_cores", 1), ("versions", {"jax": "2", "jaxlib": "1", "keras": "3"}),
    ("versions", {"jax": "1", "jaxlib": "1", "keras": "3.1"}), ("xla_flags", "--xla_cpu_use_thunk_runtime=false"),
    ("kernels", 3),
])
def test_a_changed_host_key_times_again(tmp_path, field, value):
    a = shape()
    convplan.plan([a], Timings({}, default=[0.001] * 3), str(tmp_path), key=KEY, note=lambda _: None)
    fn = Timings({}, default=[0.001] * 3)
    p = convplan.plan([a], fn, str(tmp_path), key={**KEY, field: value}, note=lambda _: None)
    assert len(fn.calls) == 2 and p["source"] == "measured"
    assert p["cache_file"] != convplan.cache_file(str(tmp_path), KEY)


def test_the_host_key_names_cpu_extensions_cores_and_stack(monkeypatch):
    from tlres.net import backend

    monkeypatch.setattr(backend, "cpu_features", lambda path="/proc/cpuinfo": ["avx2", "avx512f"])
    monkeypatch.setattr(backend, "cpu_name", lambda: "Some EPYC")
    key = convplan.host_key(xla_flags="--b --a")
    assert key["cpu"] == "Some EPYC" and key["vector_extensions"] == ["avx2", "avx512f"]
    assert key["cores"] >= 1 and 1 <= key["usable_cores"] <= key["cores"]
    assert set(key["versions"]) == {"jax", "jaxlib", "keras"} and key["versions"]["keras"]
    assert key["xla_flags"] == "--a --b"  # order does not matter
    assert key["kernels"] == kernels.VERSION
    other = {**key, "vector_extensions": ["avx2"]}
    assert convplan.cache_file("/c", key) != convplan.cache_file("/c", other)
    assert convplan.cache_file("/c", key) == convplan.cache_file("/c", dict(reversed(list(key.items()))))


@pytest.mark.parametrize("content", [
    "{not json", "", "[]", '{"format": 1}', '{"format": 99, "host": {}, "shapes": {}}',
    json.dumps({"format": 1, "host": {**KEY, "cpu": "another"}, "shapes": {}}),
    json.dumps({"format": 1, "host": KEY, "shapes": {"b64 x": {"kernel": "cudnn"}}}),
    json.dumps({"format": 1, "host": KEY, "shapes": ["b64 x"]}),
    "[" * 100000,
])
def test_a_corrupt_cache_file_is_a_note_and_timed_again(tmp_path, content):
    path = convplan.cache_file(str(tmp_path), KEY)
    with open(path, "w") as f:
        f.write(content)
    notes, fn = [], Timings({}, default=[0.001] * 3)
    p = convplan.plan([shape()], fn, str(tmp_path), key=KEY, note=notes.append)
    assert len(fn.calls) == 2 and p["source"] == "measured"
    assert notes[0].startswith(f"tlres: note: ignoring the convolution plan cache {path} (")
    assert len(notes) == 2 and "\n" not in notes[0]
    assert json.loads(open(path).read())["host"] == KEY  # replaced by a good one


def test_an_unwritable_cache_is_a_note_and_the_plan_still_holds(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    notes = []
    p = convplan.plan([shape()], Timings({}, default=[0.001] * 3), str(blocker / "sub"), key=KEY,
                      note=notes.append)
    assert p["kernels"] == {convplan.shape_key(shape()): ("xla",) * 3}
    assert notes[-1].startswith("tlres: note: could not write the convolution plan cache")


def test_the_env_rule_is_read_strictly():
    assert convplan.env_rule({}) is None
    assert convplan.env_rule({"TLRES_CONV_AUTO": "matmul"}) == "matmul"
    assert convplan.env_rule({"TLRES_CONV_AUTO": " XLA "}) == "xla"
    assert convplan.env_rule({"TLRES_CONV_AUTO": "measure"}) is None
    assert convplan.env_rule({"TLRES_CONV_AUTO": "cudnn"}) is None


# -- the plan applied to a model (the tiny net: three 3x3 stride-2 convolutions) -----------------

TINY = IMPROVED.replace(arch="tiny", weights="none", batch_size=8, conv="xla")


@pytest.fixture
def measuring(monkeypatch, tmp_path):
    """--conv auto measures (no TLRES_CONV_AUTO), on the CPU, with its cache under tmp_path."""
    import jax

    monkeypatch.delenv("TLRES_CONV_AUTO", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    return tmp_path


def tiny_timings(matmul_faster_on):
    """matmul faster on the convolutions whose input has these channel counts, XLA on the rest."""
    def fn(s, kernel, repeats):
        fast = (s["input"][2] in matmul_faster_on) == (kernel == "matmul")
        return {p: [0.001 if fast else 0.003] * repeats for p in kernels.PARTS}
    return fn


def test_apply_conv_gives_each_layer_its_measured_kernel(measuring):
    net = model_lib.build(10, TINY)
    x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype("float32")
    ref = np.asarray(net(x, training=False))
    rec = kernel_choice.apply_conv(net, "auto", 8, time_fn=tiny_timings({8}))
    assert rec["summary"] == "matmul 1/3" and rec["matmul_layers"] == ["conv1"]
    assert rec["xla_layers"] == ["conv0", "conv2"]
    assert rec["conv"] == "auto" and rec["resolved"] == "measure" and rec["source"] == "measured"
    assert rec["cache_file"].startswith(str(measuring / "cache" / "tlres" / "jax"))
    assert {e["kernel"] for e in rec["shapes"].values()} == {"xla", "matmul"}
    assert [e["layers"] for e in rec["shapes"].values()] == [["conv0"], ["conv1"], ["conv2"]]
    assert kernel_choice.conv_plan_record(net)["source"] == "measured"
    # the same function: only float rounding differs
    np.testing.assert_allclose(np.asarray(net(x, training=False)), ref, rtol=1e-4, atol=1e-5)

    rec = kernel_choice.apply_conv(net, "auto", 8, time_fn=tiny_timings({3, 8, 16}))  # cached: not timed
    assert rec["source"] == "cache" and rec["matmul_layers"] == ["conv1"]
    rec = kernel_choice.apply_conv(net, "auto", 16, time_fn=tiny_timings({3, 8, 16}))  # another batch
    assert rec["source"] == "measured" and rec["summary"] == "matmul 3/3"
    rec = kernel_choice.apply_conv(net, "auto", 16, time_fn=tiny_timings(set()))
    assert rec["summary"] == "matmul 3/3", "read from the cache, not timed again"


def test_build_measures_under_auto_only(measuring, monkeypatch):
    calls = []

    def fake(s, kernel, repeats):
        calls.append(kernel)
        return tiny_timings({3, 16})(s, kernel, repeats)

    monkeypatch.setattr(kernel_choice, "time_conv", fake)
    assert kernel_choice.conv_plan(model_lib.build(10, TINY.replace(conv="matmul"))) == "matmul 3/3"
    assert kernel_choice.conv_plan(model_lib.build(10, TINY)) == "matmul 0/3"
    assert calls == []
    net = model_lib.build(10, TINY.replace(conv="auto"))
    assert kernel_choice.conv_plan_record(net)["matmul_layers"] == ["conv0", "conv2"] and len(calls) == 6
    assert kernel_choice.conv_plan_record(model_lib.build(10, TINY.replace(conv="xla")))["source"] == "--conv xla"


def test_auto_is_xla_off_the_cpu_and_the_env_rule_skips_timing(measuring, monkeypatch):
    import jax

    def never(*args):
        raise AssertionError("timed")

    monkeypatch.setattr(kernel_choice, "time_conv", never)
    monkeypatch.setenv("TLRES_CONV_AUTO", "matmul")
    rec = kernel_choice.conv_plan_record(model_lib.build(10, TINY.replace(conv="auto")))
    assert rec["summary"] == "matmul 3/3" and rec["source"] == "TLRES_CONV_AUTO=matmul"
    monkeypatch.delenv("TLRES_CONV_AUTO")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    rec = kernel_choice.conv_plan_record(model_lib.build(10, TINY.replace(conv="auto")))
    assert rec["summary"] == "matmul 0/3" and rec["source"] == "XLA's kernel on gpu"


def test_time_conv_times_forward_and_gradients_of_either_kernel():
    s = shape(batch=2, h=4, c=3, filters=4, stride=2)
    for kernel in ("xla", "matmul"):
        times = kernel_choice.time_conv(s, kernel, 3)
        assert set(times) == set(kernels.PARTS)
        assert all(len(t) == 3 and all(isinstance(v, float) and v > 0 for v in t) for t in times.values())


def test_a_resumed_run_keeps_the_recorded_plan(measuring):
    net = model_lib.build(10, TINY)
    rec = kernel_choice.apply_conv(net, "auto", 8, time_fn=tiny_timings({8}))
    recorded = json.loads(json.dumps(rec))  # as config.json holds it
    other = model_lib.build(10, TINY.replace(conv="matmul"))
    got = kernel_choice.apply_recorded_plan(other, recorded)
    assert got["matmul_layers"] == ["conv1"] and got["summary"] == "matmul 1/3"
    assert got["source"] == "recorded (the run's config.json)"
    forced = model_lib.build(10, TINY.replace(conv="matmul"))  # a forced kernel: the record is --conv's
    assert kernel_choice.apply_recorded_plan(forced, kernel_choice.conv_plan_record(
        model_lib.build(10, TINY))) is None and kernel_choice.conv_plan(forced) == "matmul 3/3"
    for bad in (None, [], {"resolved": "measure", "matmul_layers": ["no_such_layer"]}):
        assert kernel_choice.apply_recorded_plan(forced, bad) is None
    assert kernel_choice.conv_plan(forced) == "matmul 3/3"


def test_each_part_gets_its_own_faster_kernel(tmp_path):
    a = shape(h=16, c=64, filters=64)
    k = convplan.shape_key(a)
    fn = Timings({(k, "xla"): {"forward": [1.0] * 3, "input_grad": [2.0] * 3, "weight_grad": [9.0] * 3},
                  (k, "matmul"): {"forward": [3.0] * 3, "input_grad": [2.0] * 3, "weight_grad": [4.0] * 3}})
    p = convplan.plan([a], fn, str(tmp_path), key=KEY, note=lambda line: None)
    assert p["kernels"] == {k: ("xla", "xla", "matmul")}  # a tie keeps XLA's own
    e = p["shapes"][k]
    assert e["kernel"] == convplan.MIXED and e["parts"] == {"forward": "xla", "input_grad": "xla",
                                                            "weight_grad": "matmul"}
    assert e["xla_ms"] == 12000.0 and e["matmul_forward_ms"] == 3000.0
    again = convplan.plan([a], Timings({}), str(tmp_path), key=KEY, note=lambda line: None)
    assert again["source"] == "cache" and again["kernels"] == p["kernels"]


def test_a_plan_of_the_former_format_is_timed_again(tmp_path):
    a = shape()
    path = convplan.cache_file(str(tmp_path), KEY)
    with open(path, "w") as f:  # format 1: one kernel for the whole convolution
        json.dump({"format": 1, "host": KEY, "shapes": {convplan.shape_key(a): {"kernel": "matmul"}}}, f)
    notes = []
    p = convplan.plan([a], Timings({}, default=[0.001] * 3), str(tmp_path), key=KEY, note=notes.append)
    assert p["source"] == "measured" and "ignoring the convolution plan cache" in notes[0]


def test_a_mixed_plan_is_applied_recorded_and_resumed(measuring):
    """Layers whose parts differ run `kernels.conv` with those parts, compute the same function,
    and a resumed run gets the same parts from config.json's record."""
    def fn(s, kernel, repeats):  # conv1 (8 input channels): forward in XLA, gradients in matmul
        mixed = s["input"][2] == 8
        return {p: [0.001 if (kernel == "xla") == (mixed and p == "forward") else 0.003] * repeats
                for p in kernels.PARTS}

    net = model_lib.build(10, TINY)
    x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype("float32")
    ref = np.asarray(net(x, training=False))
    rec = kernel_choice.apply_conv(net, "auto", 8, time_fn=fn)
    assert rec["summary"] == "matmul 2/3, mixed 1/3" and rec["matmul_layers"] == ["conv0", "conv2"]
    assert rec["mixed_layers"] == {"conv1": ["xla", "matmul", "matmul"]} and rec["xla_layers"] == []
    assert kernel_choice.layer_parts(net.get_layer("tiny").get_layer("conv1")) == ("xla", "matmul", "matmul")
    np.testing.assert_allclose(np.asarray(net(x, training=False)), ref, rtol=1e-4, atol=1e-5)
    other = model_lib.build(10, TINY)
    got = kernel_choice.apply_recorded_plan(other, json.loads(json.dumps(rec)))
    assert got["mixed_layers"] == rec["mixed_layers"] and got["summary"] == rec["summary"]
    bad = {**json.loads(json.dumps(rec)), "mixed_layers": {"conv1": ["xla", "cudnn", "xla"]}}
    assert kernel_choice.apply_recorded_plan(other, bad) is None
