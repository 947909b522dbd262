"""`tlres bench` (issue 6): the CI smoke run on the tiny net, and its flag errors."""

import json
import os
import re
import statistics
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bench(*args, timeout=900):  # generous: the CI machine may be shared
    return subprocess.run([sys.executable, "-m", "tlres", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": ROOT})


def _positive(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


@pytest.mark.slow
def test_smoke_run_prints_a_table_and_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    r = bench("--arch", "tiny", "--batch-sizes", "8", "--steps", "2", "--warmup", "1", "--json", str(path))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["batch"])
    assert "train img/s" in lines[header] and "pipe/train" in lines[header]
    assert "median (min-max) of 3 repeats" in lines[0], lines[0]  # --repeats 3, the default
    row = lines[header + 1]
    spreads = re.findall(r"\(([0-9.]+)-([0-9.]+)\)", row)  # train, jit step, fwd, infer: median (min-max)
    assert len(spreads) == 4 and all(0 < float(lo) <= float(hi) for lo, hi in spreads), row
    row = re.sub(r" \([0-9.]+-[0-9.]+\)", "", row).split()
    assert row[0] == "8"
    figures = [float(c.rstrip("x")) for c in row[1:]]
    assert len(figures) == 9 and all(f > 0 for f in figures), row

    rep = json.loads(path.read_text())
    assert rep["device"]["count"] >= 1 and rep["device"]["kind"] and rep["device"]["platform"]
    assert {"keras", "jax", "jaxlib", "numpy"} <= set(rep["versions"])
    assert rep["arch"] == "tiny" and rep["data"].startswith("synthetic")
    assert rep["memory_kind"] in ("device peak_bytes_in_use", "process peak RSS (host)")
    (res,) = rep["results"]
    assert res["batch_size"] == 8
    for part in ("train", "infer"):
        assert _positive(res[part]["img_per_s"]) and _positive(res[part]["compile_s"]), res[part]
    assert res["train"]["timed_steps"] == 2
    for v in (res["jit_step"]["img_per_s"], res["forward"]["img_per_s"], res["peak_memory_bytes"],
              res["pipeline"]["img_per_s"],
              res["pipeline_over_train"]):
        assert _positive(v), res
    assert res["pipeline"]["name"] in ("tf", "jax")
    assert rep["repeats"] == 3
    for part in ("train", "infer", "forward", "jit_step"):
        _holds_a_spread(res[part], "img_per_s", 3)
    plan = res["conv_kernels"]  # the kernel plan: every convolution named once, with its source
    assert res["conv_plan"] == plan["summary"] and plan["conv"] == "auto" and plan["source"]
    assert sorted(plan["matmul_layers"] + plan["xla_layers"]) == ["conv0", "conv1", "conv2"]


def _holds_a_spread(d, key, n):
    values = d[f"{key}_repeats"]
    assert len(values) == n and all(_positive(v) for v in values), d
    assert (d[key], d[f"{key}_min"], d[f"{key}_max"]) == (statistics.median(values), min(values), max(values))


@pytest.mark.slow
def test_steps_per_execution_times_whole_executions(tmp_path):
    """K=2 with 3 requested steps times 2 executions (4 steps), on the tensorflow-free pipeline."""
    path = tmp_path / "bench.json"
    r = bench("--arch", "tiny", "--batch-sizes", "4", "--steps", "3", "--warmup", "0",
              "--steps-per-execution", "2", "--pipeline", "jax", "--json", str(path))
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(path.read_text())
    assert rep["steps_per_execution"] == 2 and rep["pipeline"] == "jax"
    assert rep["results"][0]["train"]["timed_steps"] == 4
    assert _positive(rep["results"][0]["train"]["img_per_s"])


@pytest.mark.parametrize("args, message", [
    (["--batch-sizes", "64,0"], "--batch-sizes: expected comma-separated positive integers"),
    (["--steps", "0"], "--steps: must be positive"),
    (["--precision", "fp8"], "--precision: invalid choice"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--conv", "cudnn"], "--conv: invalid choice"),
    (["--conv-layers", "--torch"], "--conv-layers times float32 convolutions alone"),
    (["--repeats", "0"], "--repeats: must be positive"),
    (["--profile", "/tmp", "--pipeline-only"], "--profile traces training steps"),
])
def test_bad_flag_is_one_line_and_exit_2(args, message):
    r = bench(*args, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert r.stdout == ""


def test_unwritable_json_path_is_one_line_and_exit_2(tmp_path):
    r = bench("--arch", "tiny", "--json", str(tmp_path / "missing" / "b.json"), timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tlres bench: error: --json"), err


@pytest.mark.slow
def test_torch_side_by_side_gives_ratios(tmp_path):
    """--torch on the tiny net (eager only): the torch figures and the ratios are the table's own."""
    pytest.importorskip("torch")
    path = tmp_path / "bench.json"
    r = bench("--arch", "tiny", "--batch-sizes", "8", "--steps", "2", "--warmup", "1", "--torch",
              "--no-torch-compile", "--repeats", "2", "--json", str(path))
    assert r.returncode == 0, r.stderr[-3000:]
    (res,) = json.loads(path.read_text())["results"]
    eager = res["torch"]["eager"]
    assert _positive(eager["train_img_per_s"]) and _positive(eager["infer_img_per_s"]), eager
    assert res["torch"]["compile"] == {"error": "skipped (--no-torch-compile)"}
    # each ratio is the float64 quotient of the two figures the JSON holds: equal to a few ulps
    assert res["ratios"]["train_vs_torch_eager"] == pytest.approx(
        res["train"]["img_per_s"] / eager["train_img_per_s"])
    assert res["ratios"]["infer_vs_torch_eager"] == pytest.approx(
        res["infer"]["img_per_s"] / eager["infer_img_per_s"])
    assert res["ratios"]["forward_vs_torch_eager"] == pytest.approx(
        res["forward"]["img_per_s"] / eager["forward_img_per_s"])
    assert res["ratios"]["train_vs_torch_compile"] is None
    for key in ("train_img_per_s", "infer_img_per_s", "forward_img_per_s"):
        _holds_a_spread(eager, key, 2)
    assert "tlres/eager" in r.stdout


@pytest.mark.slow
def test_conv_layers_times_each_distinct_convolution_with_both_kernels(tmp_path):
    path = tmp_path / "conv.json"
    r = bench("--conv-layers", "--arch", "tiny", "--batch-sizes", "8", "--steps", "2", "--warmup", "1",
              "--json", str(path))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "matmul weight grad" in r.stdout and "all (x count)" in r.stdout
    (res,) = json.loads(path.read_text())["results"]
    rows = res["conv_layers"]
    # the tiny net: three 3x3 stride-2 convolutions on 32x32x3, 16x16x8, 8x8x16 inputs
    assert [(l["input"], l["kernel"], l["stride"], l["count"]) for l in rows] == [
        ([32, 32, 3], [3, 3], 2, 1), ([16, 16, 8], [3, 3], 2, 1), ([8, 8, 16], [3, 3], 2, 1)]
    for l in rows:
        assert all(_positive(l[f"{k}_{p}_ms"]) for k in ("xla", "matmul")
                   for p in ("forward", "input_grad", "weight_grad")), l


@pytest.mark.slow
def test_profile_writes_a_jax_trace_of_training_steps(tmp_path):
    path, trace = tmp_path / "bench.json", tmp_path / "trace"
    r = bench("--arch", "tiny", "--batch-sizes", "4", "--steps", "1", "--warmup", "0", "--repeats", "1",
              "--pipeline", "jax", "--profile", str(trace), "--json", str(path))
    assert r.returncode == 0, r.stderr[-3000:]
    (res,) = json.loads(path.read_text())["results"]
    assert res["profile"] == str(trace / "batch4") and f"JAX profiler trace -> {trace / 'batch4'}" in r.stdout
    found = [f for _, _, files in os.walk(trace / "batch4") for f in files]
    assert any(f.endswith(".xplane.pb") for f in found), found
    assert "repeats" not in r.stdout.splitlines()[0]  # one repeat: no spread to show
    assert res["train"]["img_per_s_repeats"] == [res["train"]["img_per_s"]]


def test_table_shows_each_median_with_its_spread_and_the_plan():
    from tlres.reference import bench

    def fig(*v):
        return bench.spread("img_per_s", list(v))

    rep = {"arch": "resnet50", "image_size": 32, "precision": "float32", "conv": "auto",
           "steps_per_execution": 1, "steps": 10, "warmup": 2, "repeats": 3, "pipeline_only": False,
           "torch": False, "pipeline": "jax", "memory_kind": "process peak RSS (host)",
           "device": {"kind": "cpu", "platform": "cpu", "count": 1, "host": "Test CPU, 2 cores, avx2"},
           "results": [{"batch_size": 64, "conv_plan": "matmul 40/53",
                        "conv_kernels": {"summary": "matmul 40/53", "source": "cache"},
                        "train": {"compile_s": 12.0, **fig(110.0, 90.0, 100.0)},
                        "jit_step": fig(1.0, 2.0, 3.0), "forward": fig(4.0, 4.0, 4.0),
                        "infer": {"compile_s": 3.0, **fig(9.0, 7.0, 8.0)}, "peak_memory_bytes": 2 ** 30,
                        "pipeline": {"img_per_s": 5000.0}, "pipeline_over_train": 50.0}]}
    head, cols, row, *_ = bench.table(rep).splitlines()
    assert "conv auto (batch 64: matmul 40/53 convolutions, plan timed on this host, from its cache)" in head
    assert "median (min-max) of 3 repeats" in head
    assert "100.0 (90.0-110.0)" in row and "2.0 (1.0-3.0)" in row and "8.0 (7.0-9.0)" in row
    assert "4.0 (4.0-4.0)" in row  # the spread is shown even when it is nil


def test_cpu_features_are_read_from_cpuinfo(tmp_path):
    from tlres.net.backend import cpu_features

    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse4_2 avx2 fma avx avx512f "
                   "avx512_bf16 amx_bf16 amx_tile avx512vnni_typo\n\nprocessor\t: 1\n")
    assert cpu_features(str(x86)) == ["avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve bf16 i8mm\n")
    assert cpu_features(str(arm)) == ["asimd", "sve", "bf16", "i8mm"]
    plain = tmp_path / "plain"
    plain.write_text("flags\t\t: fpu sse sse2\n")
    assert cpu_features(str(plain)) == []  # read, and none there: not the same as unknown
    assert cpu_features(str(tmp_path / "absent")) is None  # no /proc/cpuinfo (not Linux): unknown


def test_header_and_device_record_name_the_hosts_vector_extensions():
    """The bench's first line, and the device record it and config.json share, carry the CPU's
    extensions as /proc/cpuinfo lists them (read here independently), and the date."""
    import time

    from tlres.reference import bench
    from tlres.run import records

    dev = records.device()
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        pytest.skip("no x86 /proc/cpuinfo on this host")
    for ext in ("avx2", "avx512f", "avx512_bf16", "amx_tile"):
        assert (ext in dev["vector_extensions"]) == (ext in flags), (ext, dev)
    rep = {"arch": "tiny", "image_size": 32, "precision": "float32", "conv": "auto",
           "steps_per_execution": 1, "steps": 2, "warmup": 1, "pipeline_only": True, "torch": False,
           "pipeline": "jax", "device": dev, "date": time.strftime("%Y-%m-%d"),
           "results": [{"batch_size": 8, "pipeline": {"img_per_s": 1.0}}]}
    head = bench.table(rep).splitlines()[0]
    assert dev["cpu"] in head and time.strftime("%Y-%m-%d") in head
    for ext in ("avx2", "avx512f", "avx512_bf16", "amx_tile"):
        assert (f" {ext}" in head) == (ext in flags), (ext, head)


def test_every_bench_flag_has_help_and_names_no_issue():
    from tlres.commands import bench as bench_cmd

    p = bench_cmd.parser()
    missing = [a.option_strings for a in p._actions if not a.help]
    assert not missing
    text = p.format_help()
    assert "issue" not in text.lower()
    assert text.count("(default: 64,256") == 1 and "(default: [64" not in text


# ---------------------------------------------------------------- --image-sizes: the sweep


def test_image_sizes_flag_reads_size_and_batch_pairs():
    from tlres.commands import bench as bench_cmd
    from tlres.reference import bench

    assert bench_cmd.image_sizes("32:64, 128,224:16") == ((32, 64), (128, None), (224, 16))
    a = bench.Settings(batch_sizes=(64, 256), image_sizes=((32, 64), (128, None), (224, 16)))
    assert bench.sweep_points(a) == [(32, 64), (128, 64), (128, 256), (224, 16)]  # a bare size: each batch


@pytest.mark.parametrize("args, message", [
    (["--image-sizes", "32:0"], "--image-sizes: expected comma-separated SIZE or SIZE:BATCH"),
    (["--image-sizes", "4:8"], "--image-sizes: expected comma-separated SIZE or SIZE:BATCH (size must be 8.."),
    (["--image-sizes", "32x64"], "--image-sizes: expected comma-separated SIZE or SIZE:BATCH"),
    (["--image-sizes", "32:64", "--conv-layers"], "--image-sizes times training and inference per size"),
    (["--arch", "resnet50", "--image-sizes", "64:8,16:8"], "--image-size 16: ResNet50 needs at least 32"),
])
def test_bad_image_sizes_is_one_line_and_exit_2(args, message):
    r = bench(*args, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def _sweep_report():
    """A sweep record by hand: one point, PyTorch eager and torch.compile, every figure chosen."""
    from tlres.reference import bench

    fig = bench.spread
    r = {"image_size": 128, "batch_size": 32, "train": fig("img_per_s", [10.0, 12.0, 11.0]),
         "infer": fig("img_per_s", [40.0, 40.0, 40.0]), "forward": fig("img_per_s", [50.0, 50.0, 50.0]),
         "peak_rss_bytes": {"tlres": 3_000_000_000, "torch_eager": 2_000_000_000, "torch_compile": 2_500_000_000},
         "torch": {"eager": {**fig("train_img_per_s", [8.0, 8.0, 8.0]), **fig("infer_img_per_s", [50.0, 50.0, 50.0]),
                             **fig("forward_img_per_s", [40.0, 40.0, 40.0])},
                   "compile": fig("train_img_per_s", [22.0, 22.0, 22.0])}}
    r["ratios"] = {**bench.ratios(r, r["torch"]), "peak_rss_vs_torch_eager": 1.5}
    return {"arch": "resnet50", "precision": "float32", "steps": 20, "warmup": 3, "repeats": 3,
            "date": "2026-12-07", "cpu_flags": ["avx", "avx2", "fma"],
            "versions": {"jax": "0.10.2", "keras": "3.15.1", "torch": "2.14.1"},
            "device": {"platform": "cpu", "kind": "cpu", "cpu": "Test CPU", "allocator": "tcmalloc"},
            "results": [r]}


def test_sweep_table_rows_are_the_figures_and_their_ratios():
    from tlres.reference import bench

    caption, blank, head, rule, row = bench.sweep_table(_sweep_report()).splitlines()
    for part in ("Test CPU", "CPU flags avx avx2 fma", "allocator tcmalloc", "2026-12-07", "torch 2.14.1",
                 "median (min-max) of 3 repeats", "its own process"):
        assert part in caption, (part, caption)
    assert head.startswith("| size | batch | tlres train img/s |") and rule.count("---") == 14
    # 11.0 / 8.0 = 1.375, 11.0 / 22.0 = 0.5, 40 / 50 = 0.8; bytes in powers of 1000
    assert row == ("| 128 | 32 | 11.0 (10.0-12.0) | 8.0 (8.0-8.0) | 1.38x | 22.0 (22.0-22.0) | 0.50x | "
                   "40.0 (40.0-40.0) | 50.0 (50.0-50.0) | 0.80x | 3.0 GB | 2.0 GB | 2.5 GB | 1.50x |")


def test_speed_doc_section_is_generated_between_its_markers(tmp_path):
    from tlres.reference import bench

    folder = tmp_path / "speed"
    folder.mkdir()
    (folder / "sweep-a.json").write_text(json.dumps(_sweep_report()))
    (folder / "bench-other.json").write_text("{}")  # not a sweep file: not read
    doc = tmp_path / "speed.md"
    doc.write_text("# Speed\n\nbefore\n<!-- tlres.bench:begin -->\nold\n<!-- tlres.bench:end -->\nafter\n")
    assert bench.update_speed_doc(str(doc), str(folder)) == [str(folder / "sweep-a.json")]
    text = doc.read_text()
    assert text.startswith("# Speed\n\nbefore\n<!-- tlres.bench:begin -->\n`sweep-a.json`: resnet50, float32")
    assert text.endswith("| 2.5 GB | 1.50x |\n<!-- tlres.bench:end -->\nafter\n") and "old" not in text


def test_docs_speed_section_is_the_recorded_sweeps():
    """docs/speed.md's generated section is exactly what the recorded sweep files give."""
    import glob

    from tlres.reference import bench

    paths = sorted(glob.glob(os.path.join(ROOT, "experiments", "results", "speed", bench.SWEEPS)))
    with open(os.path.join(ROOT, "docs", "speed.md")) as f:
        doc = f.read()
    section = doc.split("<!-- tlres.bench:begin -->\n")[1].split("<!-- tlres.bench:end -->")[0]
    assert section == bench.speed_section(paths)


def test_bench_functions_and_docstrings_are_short():
    """At most 60 lines a function and 12 a docstring, in both bench modules."""
    import ast

    for rel in ("tlres/reference/bench.py", "tlres/commands/bench.py"):
        with open(os.path.join(ROOT, rel)) as f:
            tree = ast.parse(f.read())
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert n.end_lineno - n.lineno + 1 <= 60, (rel, n.name)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
                d = ast.get_docstring(n, clean=False)
                assert not d or d.count("\n") + 1 <= 12, (rel, getattr(n, "name", "module"))


@pytest.mark.slow
def test_sweep_measures_each_framework_in_its_own_process(tmp_path):
    """Two sizes of the tiny net, tlres and PyTorch eager: each point's figures, each process' own peak
    RSS and imports, the ratios as quotients, the host's CPU flags as /proc/cpuinfo lists them."""
    pytest.importorskip("torch")
    path = tmp_path / "sweep.json"
    r = bench("--arch", "tiny", "--image-sizes", "8:4,16:2", "--steps", "1", "--warmup", "0", "--repeats", "1",
              "--pipeline", "jax", "--torch", "--no-torch-compile", "--json", str(path))
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(path.read_text())
    assert rep["points"] == [[8, 4], [16, 2]] and rep["image_size"] is None
    assert {"jax", "keras", "torch", "torchvision"} <= set(rep["versions"])
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
        assert ("avx2" in rep["cpu_flags"]) == ("avx2" in flags)
        assert ("avx512f" in rep["cpu_flags"]) == ("avx512f" in flags)
    except (OSError, StopIteration):
        pass
    for res, (size, batch) in zip(rep["results"], [(8, 4), (16, 2)]):
        assert (res["image_size"], res["batch_size"]) == (size, batch)
        assert set(res["peak_rss_bytes"]) == {"tlres", "torch_eager"}
        assert all(_positive(v) for v in res["peak_rss_bytes"].values())
        loaded = res["frameworks_loaded"]
        assert "torch" not in loaded["tlres"] and "jax" in loaded["tlres"]
        assert loaded["torch_eager"] == ["torch"]  # no JAX, no Keras in PyTorch's process
        eager = res["torch"]["eager"]
        assert res["ratios"]["train_vs_torch_eager"] == pytest.approx(res["train"]["img_per_s"] / eager["train_img_per_s"])
        assert res["ratios"]["peak_rss_vs_torch_eager"] == pytest.approx(
            res["peak_rss_bytes"]["tlres"] / res["peak_rss_bytes"]["torch_eager"])
        assert res["torch"]["compile"] == {"error": "skipped (--no-torch-compile)"}
        assert _positive(res["infer"]["img_per_s"]) and res["train"]["timed_steps"] == 1
    assert "| 8 | 4 |" in r.stdout and "| 16 | 2 |" in r.stdout
