"""Throughput benchmark: tlres training and inference, the input pipeline, PyTorch.

    tlres bench [--arch tiny|resnet50|...] [--batch-sizes 64,256] [--torch] [--repeats N] [--json PATH]
    tlres bench --image-sizes 32:64,128:32,224:16 --torch --json sweep.json   # one process per framework

On synthetic data and random-init weights: `model.fit` as the runner does, the bare jitted step,
the forward pass, inference, the input pipeline, each convolution's kernels (--conv-layers), and
torchvision's model in PyTorch (--torch). Each rate is the median (min-max) of --repeats windows;
the JSON names the host's CPU, vector extensions, allocator, date and versions. What each figure
means, and the recorded results: docs/speed.md ("The benchmark"). Bad flags print one line, exit 2.
"""

import dataclasses
import json
import math
import os
import resource
import statistics
import sys
import subprocess
import tempfile
import time

import numpy as np

from tlres.data import augment, pipeline
from tlres.net import backend, model
from tlres.net.cpu import kernel_choice
from tlres.net.cpu import kernels
from tlres.run import records, train
from tlres.analysis import report as report_lib
from tlres.core.config import IMPROVED
from tlres.core.errors import TlresError, brief, human
from tlres.reference import torch as ref

PROG = "tlres bench"
NUM_CLASSES = 10


CONFIG_FLAGS = ("arch", "image_size", "pipeline", "precision", "conv", "data_on_device")
"""The runner's settings bench takes, from `Config` as the runner's are (its command's flags: help,
checks, choices); their defaults are the improved preset's. --precision also sets torch's autocast (bf16)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """What `run` measures and how: the CONFIG_FLAGS fields, then bench's own (its flags, one each)."""

    arch: str = IMPROVED.arch
    image_size: int = IMPROVED.image_size
    pipeline: str = IMPROVED.pipeline
    precision: str = IMPROVED.precision
    conv: str = IMPROVED.conv
    data_on_device: bool = IMPROVED.data_on_device
    batch_sizes: tuple = (64, 256)
    steps: int = 20
    warmup: int = 3
    steps_per_execution: int = 1
    pipeline_only: bool = False
    conv_layers: bool = False
    torch: bool = False
    torch_compile: bool = True
    repeats: int = 3
    image_sizes: tuple | None = None  # ((size, batch or None), ...): the sweep, one process per framework and point
    profile: str | None = None  # a folder: JAX profiler traces of a few training steps
    json_path: str | None = None  # also every figure as JSON here


def _config(a, batch_size):
    return IMPROVED.replace(arch=a.arch, weights="none", image_size=a.image_size,
                            batch_size=batch_size, precision=a.precision, pipeline=a.pipeline, conv=a.conv,
                            data_on_device=a.data_on_device,
                            data_parallel=False, compile_cache=False, preset="bench")


def synthetic(n, image_size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)
    y = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    return x, y


def peak_memory():
    """(bytes, kind): the device's peak where JAX reports it, else this process' peak RSS."""
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        stats = None
    if stats and stats.get("peak_bytes_in_use"):
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS (host)"


def current_rss():
    """This process' resident memory now, in bytes (Linux: /proc/self/statm), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def time_train(net, x, y, warmup, steps, k, repeats=1, feed=None):
    """model.fit on one device-resident batch: (compile s, [img/s of each repeat], timed steps
    per repeat, [resident bytes at the end of each repeat]); the repeats are consecutive windows
    of one fit. The resident memory shows whether the heap still grows while it is timed.

    `feed(n_steps)`: fit takes its batches from that iterator instead (--data-on-device)."""
    import keras

    bs = len(x)
    warm_exec = max(1, math.ceil(warmup / k)) if warmup else 0
    timed_exec = math.ceil(steps / k)
    total = (1 + warm_exec + repeats * timed_exec) * k
    stamps, rss = [], []

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            stamps.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # sync: the step has finished on the device
            stamps.append(time.perf_counter())
            rss.append(current_rss())

    def batches():
        while True:
            yield x, y

    net.fit(feed(total) if feed else batches(), epochs=1, steps_per_epoch=total, callbacks=[Clock()], verbose=0, shuffle=False)
    assert len(stamps) == 2 + warm_exec + repeats * timed_exec, len(stamps)
    compile_s = stamps[1] - stamps[0]
    starts = [1 + warm_exec + i * timed_exec for i in range(repeats)]
    rates = [timed_exec * k * bs / (stamps[i + timed_exec] - stamps[i]) for i in starts]
    return compile_s, rates, timed_exec * k, [rss[i + timed_exec - 1] for i in starts]


def time_jit_step(net, x, y, warmup, steps, repeats=1):
    """The compiled Keras train step called directly, state kept on the device: [img/s per repeat].

    Uses Keras' JAX trainer internals (`_get_jax_state`, `train_function`); the
    state is donated, so the model's variables are stale afterwards: call last.
    """
    import jax

    state = net._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                               optimizer_variables=True, metrics_variables=True,
                               purge_model_variables=False)
    for _ in range(warmup):
        logs, state = net.train_function(state, iter([(x, y)]))
    rates = []
    for _ in range(repeats):
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        for _ in range(steps):
            logs, state = net.train_function(state, iter([(x, y)]))
        jax.block_until_ready((logs, state))
        rates.append(steps * len(x) / (time.perf_counter() - t0))
    return rates


def time_forward(net, x, warmup, steps, repeats=1):
    """The training-mode forward pass alone (BatchNorm on batch statistics), jitted: [img/s per repeat].

    With the train step's rate it splits the time into forward and backward + update.
    """
    import jax

    tv = [v.value for v in net.trainable_variables]
    ntv = [v.value for v in net.non_trainable_variables]
    fwd = jax.jit(lambda tv, ntv, x: net.stateless_call(tv, ntv, x, training=True)[0])
    return [len(x) / s for s in _seconds_per_call(lambda: fwd(tv, ntv, x), warmup, steps, repeats)]


def _seconds_per_call(call, warmup, steps, repeats=1):
    """[Mean seconds of `call()` (a JAX computation, synced each time) over `steps` calls] for
    each of `repeats` windows, after one untimed first (compile) call and `warmup` untimed ones."""
    import jax

    for _ in range(1 + warmup):
        jax.block_until_ready(call())
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            jax.block_until_ready(call())
        out.append((time.perf_counter() - t0) / steps)
    return out


def time_infer(net, x, warmup, steps, repeats=1):
    """The model's jitted forward function (`tlres.net.model.forward`, what evaluate and predict run),
    each call read back to the host as a numpy array: (first call s, [img/s per repeat])."""
    fwd = model.forward(net)
    t0 = time.perf_counter()
    np.asarray(fwd(x))  # synced
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        np.asarray(fwd(x))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            np.asarray(fwd(x))
        rates.append(steps * len(x) / (time.perf_counter() - t0))
    return compile_s, rates


def spread(name, values):
    """{name: median, name_min, name_max, name_repeats}: one figure over its repeats."""
    import statistics

    return {name: statistics.median(values), f"{name}_min": min(values), f"{name}_max": max(values),
            f"{name}_repeats": list(values)}


def profile_steps(net, x, y, path, steps=3):
    """A JAX profiler trace of `steps` training steps (the runner's compiled step) into `path`."""
    import jax

    os.makedirs(path, exist_ok=True)
    net.train_on_batch(x, y)  # compiled already; outside the trace
    with jax.profiler.trace(path):
        for _ in range(steps):
            net.train_on_batch(x, y)  # returns numpy logs: synced
    return path


def time_pipeline(cfg, warmup, steps):
    """`pipeline.train_data` alone, augmentation on: (name, img/s)."""
    import jax

    n_batches = 1 + warmup + max(steps, 10)
    x, y = synthetic(n_batches * cfg.batch_size, cfg.image_size, seed=1)
    c = cfg.replace(augment=True, flip=True, crop_padding=4)
    it = iter(pipeline.train_data(x, y, c))

    def take():
        bx, by = next(it)
        if isinstance(bx, jax.Array):
            jax.block_until_ready(bx)
        else:
            np.asarray(bx), np.asarray(by)

    for _ in range(1 + warmup):
        take()
    timed = n_batches - 1 - warmup
    t0 = time.perf_counter()
    for _ in range(timed):
        take()
    return pipeline.resolve(c.pipeline), timed * cfg.batch_size / (time.perf_counter() - t0)


def conv_layers(cfg, steps):
    """Each distinct Conv2D of the runner's model with both kernels, each part of its work timed
    alone as `--conv auto` times it (`kernel_choice.time_conv`, `steps` calls): one row per shape,
    medians in ms ("xla_forward_ms", ...)."""
    import collections

    net = model.build(NUM_CLASSES, cfg.replace(conv="xla"))
    shapes = collections.Counter(json.dumps(kernel_choice.conv_shape(layer, cfg.batch_size))
                                 for layer in kernel_choice.conv2d_layers(net))
    rows = []
    for key, count in shapes.items():
        s = json.loads(key)
        row = {"input": s["input"], "kernel": s["kernel"], "filters": s["filters"],
               "stride": s["strides"][0], "padding": s["padding"], "count": count}
        for name in kernels.FORMS:
            for part, times in kernel_choice.time_conv(s, name, steps).items():
                row[f"{name}_{part}_ms"] = statistics.median(times) * 1e3
        rows.append(row)
    return rows


CONV_PARTS_COLUMNS = tuple(f"{name}_{part}_ms" for part in kernels.PARTS for name in kernels.FORMS)


def conv_table(report):
    lines = [f"tlres.reference.bench --conv-layers: {report['arch']} {report['image_size']}px, float32, "
             f"ms per call (median of {report['steps']} timed calls, each part jitted alone); device "
             f"{report['device']['kind']}; {_host(report)}"]
    for r in report["results"]:
        cols = ["input hxwxc", "kernel", "stride", "count",
                *(c[:-3].replace("_", " ") for c in CONV_PARTS_COLUMNS)]
        rows = [[f"{'x'.join(map(str, l['input']))}", f"{l['kernel'][0]}x{l['kernel'][1]}->{l['filters']}",
                 str(l["stride"]), str(l["count"]), *(_fmt(l[k], 2) for k in CONV_PARTS_COLUMNS)]
                for l in r["conv_layers"]]
        total = {k: sum(l["count"] * l[k] for l in r["conv_layers"]) for k in CONV_PARTS_COLUMNS}
        rows.append(["all (x count)", "", "", str(sum(l["count"] for l in r["conv_layers"])),
                     *(_fmt(v, 1) for v in total.values())])
        widths = [max(len(x[i]) for x in [cols] + rows) for i in range(len(cols))]
        lines.append(f"batch {r['batch_size']}:")
        lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in [cols] + rows]
    return "\n".join(lines)


def measure_tlres(cfg, a):
    import jax.numpy as jnp

    train.setup_engine(cfg)
    net = model.build(NUM_CLASSES, cfg)
    train.compile_model(net, cfg, NUM_CLASSES, steps_per_epoch=1000,
                        steps_per_execution=a.steps_per_execution)
    xu, y = synthetic(cfg.batch_size, cfg.image_size)
    x = jnp.asarray(augment.normalize(np, xu, cfg.input_norm))
    y = jnp.asarray(y)
    plan = kernel_choice.conv_plan_record(net)
    out = {"conv_plan": plan["summary"], "conv_kernels": plan}
    n_rep = a.repeats
    feed = None
    if cfg.data_on_device:  # a synthetic split of exactly the steps fit takes, held on the device
        def feed(n_steps):
            return pipeline.train_data(*synthetic(n_steps * cfg.batch_size, cfg.image_size, seed=2), cfg)
    c, ips, n, rss = time_train(net, x, y, a.warmup, a.steps, a.steps_per_execution, n_rep, feed)
    out["train"] = {"compile_s": c, **spread("img_per_s", ips), "timed_steps": n, "rss_bytes_repeats": rss}
    if a.profile:
        out["profile"] = profile_steps(net, x, y, os.path.join(a.profile, f"batch{cfg.batch_size}"))
    c, ips = time_infer(net, x, a.warmup, a.steps, n_rep)
    out["infer"] = {"compile_s": c, **spread("img_per_s", ips), "timed_steps": a.steps}
    out["forward"] = {**spread("img_per_s", time_forward(net, x, a.warmup, a.steps, n_rep)),
                      "timed_steps": a.steps}
    # the peak of what a run holds (fit, inference), before the bare jit step: that diagnostic
    # holds a second copy of the training state and its buffers, which no run does
    out["peak_memory_bytes"], out["memory_kind"] = peak_memory()
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["jit_step"] = {**spread("img_per_s", time_jit_step(net, x, y, a.warmup, a.steps, n_rep)),
                       "timed_steps": a.steps}
    return out


def torch_batch(cfg, dev):
    """One synthetic batch for PyTorch on `dev`: NCHW float32 normalized to [-1, 1], int64 labels."""
    import torch

    xu, y = synthetic(cfg.batch_size, cfg.image_size)
    x = torch.from_numpy((xu.astype(np.float32) / 255.0 - 0.5) / 0.5).permute(0, 3, 1, 2)
    return x.contiguous().to(dev), torch.from_numpy(y.astype(np.int64)).to(dev)


def _torch_sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def torch_train_rate(net, x, y, a):
    """SGD momentum 0.9 train steps of `net` on one batch: (first step s, [img/s per repeat])."""
    import torch

    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    net.train()

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=a.precision == "mixed_bfloat16"):
            loss = loss_fn(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    step().item()
    first = time.perf_counter() - t0
    for _ in range(a.warmup):
        step()
    _torch_sync(x.device)
    rates = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            loss = step()
        loss.item()
        _torch_sync(x.device)
        rates.append(a.steps * len(x) / (time.perf_counter() - t0))
    return first, rates


def torch_forward_rate(net, x, a, training):
    """[img/s per repeat] without autograd; training=True uses batch statistics (tlres' "forward"),
    False is inference."""
    import torch

    net.train(training)
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16,
                                         enabled=a.precision == "mixed_bfloat16"):
        for _ in range(1 + a.warmup):
            net(x)
        _torch_sync(x.device)
        rates = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            for _ in range(a.steps):
                out = net(x)
            out.float().cpu()
            rates.append(a.steps * len(x) / (time.perf_counter() - t0))
        return rates


def torch_eager(cfg, a, x, y):
    """The reference's own model (`tlres.reference.torch.build`), eager: train, inference, forward."""
    net = ref.build(cfg, NUM_CLASSES).to(x.device)  # the runner's BatchNorm settings, random init
    first, ips = torch_train_rate(net, x, y, a)
    return {"first_step_s": first, **spread("train_img_per_s", ips),
            **spread("infer_img_per_s", torch_forward_rate(net, x, a, training=False)),
            **spread("forward_img_per_s", torch_forward_rate(net, x, a, training=True))}


def torch_compiled(cfg, a, x, y):
    """The same model under torch.compile, train only; a failure is recorded as one line."""
    import torch

    if not a.torch_compile:
        return {"error": "skipped (--no-torch-compile)"}
    try:
        first, ips = torch_train_rate(torch.compile(ref.build(cfg, NUM_CLASSES).to(x.device)), x, y, a)
        return {"compile_s": first, **spread("train_img_per_s", ips)}
    except Exception as e:  # no C++ compiler, unsupported op, ...: record, go on
        return {"error": brief(e)}


def measure_torch(cfg, a, device):
    """torchvision's model in PyTorch, in this process: eager train/infer, torch.compile train."""
    import torch

    torch.manual_seed(0)
    dev = torch.device(device)
    x, y = torch_batch(cfg, dev)
    return {"device": str(dev), "threads": torch.get_num_threads(), "eager": torch_eager(cfg, a, x, y),
            "compile": torch_compiled(cfg, a, x, y)}


def _fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:.{digits}f}" if abs(v) < 1e5 else f"{v:.3g}"


def _rate(d, key):
    """'median (min-max)' of one figure over its repeats; the median alone for one repeat."""
    if len(d.get(f"{key}_repeats", ())) > 1:
        return f"{_fmt(d[key])} ({_fmt(d[key + '_min'])}-{_fmt(d[key + '_max'])})"
    return _fmt(d[key])


def _host(report):
    """'host <CPU model>, <cores> cores, <vector extensions>; <date>': where and when a figure was taken."""
    alloc = report["device"].get("allocator")
    alloc = f"; allocator {alloc}" if alloc else ""
    return f"host {report['device'].get('host', '?')}{alloc}; {report.get('date', 'date unknown')}"


_SOURCES = {"measured": "plan timed on this host now", "cache": "plan timed on this host, from its cache",
            "measured+cache": "plan timed on this host, now and from its cache"}


def table(report):
    cols = [("batch", lambda r: str(r["batch_size"]))]
    if not report["pipeline_only"]:
        cols += [("train img/s", lambda r: _rate(r["train"], "img_per_s")),
                 ("compile s", lambda r: _fmt(r["train"]["compile_s"])),
                 ("jit step img/s", lambda r: _rate(r["jit_step"], "img_per_s")),
                 ("fwd img/s", lambda r: _rate(r["forward"], "img_per_s")),
                 ("infer img/s", lambda r: _rate(r["infer"], "img_per_s")),
                 ("infer compile s", lambda r: _fmt(r["infer"]["compile_s"])),
                 ("peak mem MiB", lambda r: _fmt(r["peak_memory_bytes"] / 2**20, 0))]
    cols += [(f"pipeline({report['pipeline']}) img/s", lambda r: _fmt(r["pipeline"]["img_per_s"]))]
    if not report["pipeline_only"]:
        cols += [("pipe/train", lambda r: _fmt(r["pipeline_over_train"], 2) + "x")]
    if report["torch"]:
        def tc(r):
            c = r["torch"]["compile"]
            if "train_img_per_s" in c:
                return _rate(c, "train_img_per_s")
            return "skipped" if c["error"].startswith("skipped") else "failed"

        def ratio(key):
            return lambda r: (_fmt(r["ratios"][key], 2) + "x") if r["ratios"].get(key) else "-"

        cols += [("torch eager img/s", lambda r: _rate(r["torch"]["eager"], "train_img_per_s")),
                 ("torch compile img/s", tc),
                 ("torch infer img/s", lambda r: _rate(r["torch"]["eager"], "infer_img_per_s")),
                 ("tlres/eager", ratio("train_vs_torch_eager")),
                 ("tlres/compile", ratio("train_vs_torch_compile")),
                 ("infer tlres/eager", ratio("infer_vs_torch_eager")),
                 ("fwd tlres/eager", ratio("forward_vs_torch_eager"))]
    rows = [[name for name, _ in cols]] + [[f(r) for _, f in cols] for r in report["results"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    d = report["device"]
    plans = []
    for r in report["results"]:
        if "conv_plan" in r:
            source = (r.get("conv_kernels") or {}).get("source")
            plans.append(f"batch {r['batch_size']}: {r['conv_plan']} convolutions"
                         + (f", {_SOURCES.get(source, source)}" if source else ""))
    plan = f" ({'; '.join(plans)})" if plans else ""
    repeats = report.get("repeats", 1)
    head = (f"tlres.bench: {report['arch']} {report['image_size']}px, {report['precision']}, "
            f"conv {report['conv']}{plan}, "
            f"steps_per_execution={report['steps_per_execution']}, synthetic data"
            + (" (fit fed by --data-on-device)" if report.get("data_on_device") else "") + ", "
            f"{report['steps']} timed steps after {report['warmup']} warm-up"
            + (f", median (min-max) of {repeats} repeats" if repeats > 1 else "") + "; "
            f"device {d['kind']} ({d['platform']} x{d['count']}); {_host(report)}")
    notes = []
    if not report["pipeline_only"]:
        notes.append(f"peak mem = {report['memory_kind']}")
    for r in report["results"]:
        c = (r.get("torch") or {}).get("compile", {})
        if "error" in c:
            notes.append(f"batch {r['batch_size']}: torch.compile: {c['error']}")
        if "profile" in r:
            notes.append(f"batch {r['batch_size']}: JAX profiler trace -> {r['profile']}")
    return "\n".join([head, *lines, *notes])


def check(a):
    """Refuse, before anything is measured, flags that cannot work together: one line each."""
    if a.json_path:
        parent = os.path.dirname(os.path.abspath(a.json_path))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            raise TlresError(f"--json {a.json_path}: {parent} is not a writable directory")
    if a.profile:
        if a.pipeline_only or a.conv_layers:
            raise TlresError("--profile traces training steps; drop --pipeline-only and --conv-layers")
        try:
            os.makedirs(a.profile, exist_ok=True)
        except OSError as e:
            raise TlresError(f"--profile {a.profile}: cannot create it ({e.strerror or e})") from e
        if not os.access(a.profile, os.W_OK):
            raise TlresError(f"--profile {a.profile}: not a writable directory")
    if a.image_sizes and (a.pipeline_only or a.conv_layers or a.profile):
        raise TlresError("--image-sizes times training and inference per size; drop --pipeline-only, "
                         "--conv-layers and --profile")
    for size in [a.image_size] if not a.image_sizes else [s for s, _ in a.image_sizes]:
        if a.arch == "resnet50" and size < 32:
            raise TlresError(f"--image-size {size}: ResNet50 needs at least 32")
    if a.conv_layers and (a.pipeline_only or a.torch or a.precision != "float32"):
        raise TlresError("--conv-layers times float32 convolutions alone; drop --pipeline-only, "
                         "--torch and --precision")


def report_head(a, dev):
    """The JSON's record of what is measured, where and when (its "results" still empty)."""
    return {"benchmark": "tlres.reference.bench", "date": time.strftime("%Y-%m-%d"),
            "data": "synthetic (random uint8 images, normalized; random labels)",
            "weights": "random init", "arch": a.arch, "image_size": a.image_size,
            "precision": a.precision, "steps_per_execution": a.steps_per_execution,
            "steps": a.steps, "warmup": a.warmup, "repeats": a.repeats, "pipeline_only": a.pipeline_only,
            "conv_layers": a.conv_layers, "torch": a.torch and not a.pipeline_only, "device": dev,
            "versions": records.versions(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "results": [], "pipeline": pipeline.resolve(a.pipeline),
            "data_on_device": a.data_on_device,  # train: fit fed by the device path
            "conv": a.conv}


def ratios(r, t):
    """tlres' medians over PyTorch's (`t`, the "torch" record): train, inference, forward."""
    comp = t["compile"].get("train_img_per_s")
    return {"train_vs_torch_eager": r["train"]["img_per_s"] / t["eager"]["train_img_per_s"],
            "train_vs_torch_compile": r["train"]["img_per_s"] / comp if comp else None,
            "infer_vs_torch_eager": r["infer"]["img_per_s"] / t["eager"]["infer_img_per_s"],
            "forward_vs_torch_eager": r["forward"]["img_per_s"] / t["eager"]["forward_img_per_s"]}


def measure_batch(a, bs, report):
    """Every figure of one batch size, all in this process: the "results" entry."""
    cfg = _config(a, bs)
    r = {"batch_size": bs}
    if a.conv_layers:
        r["conv_layers"] = conv_layers(cfg, a.steps)
        return r
    if not a.pipeline_only:
        r.update(measure_tlres(cfg, a))
        report["memory_kind"] = r.pop("memory_kind")
        r.pop("peak_rss_bytes")
    name, ips = time_pipeline(cfg, a.warmup, a.steps)
    r["pipeline"] = {"name": name, "img_per_s": ips}
    if not a.pipeline_only:
        r["pipeline_over_train"] = ips / r["train"]["img_per_s"]
    if report["torch"]:
        r["torch"] = measure_torch(cfg, a, "cuda" if report["device"]["platform"] == "gpu" else "cpu")
        r["ratios"] = ratios(r, r["torch"])
    return r


def write_json(report, path):
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"JSON -> {path}")


def run(a):
    """Measure what `a` (a `Settings`) asks for; print the table (and write the JSON); returns 0."""
    check(a)
    backend.require_jax()
    report = report_head(a, records.device())
    pipeline.check(_config(a, a.batch_sizes[0]))
    if a.image_sizes:
        sweep(a, report)
        print(sweep_table(report), flush=True)
    else:
        if report["torch"]:
            import torch
            import torchvision

            report["versions"].update(torch=torch.__version__, torchvision=torchvision.__version__)
        for bs in a.batch_sizes:
            report["results"].append(measure_batch(a, bs, report))
            print(f"{PROG}: batch {bs} done", file=sys.stderr, flush=True)
        print(conv_table(report) if a.conv_layers else table(report), flush=True)
    if a.json_path:
        write_json(report, a.json_path)
    return 0


# ---------------------------------------------------------------- the sweep: one process per framework

PARTS = ("tlres", "torch_eager", "torch_compile")
"""What one sweep child measures: tlres (Keras on JAX), PyTorch eager, PyTorch under torch.compile."""
CHILD = "import sys; from tlres.reference import bench; sys.exit(bench.child_main())"
FRAMEWORKS = ("jax", "keras", "tensorflow", "torch")


def sweep_points(a):
    """[(image size, batch)]: each --image-sizes SIZE:BATCH as given, a bare SIZE at each --batch-sizes."""
    return [(size, b) for size, batch in a.image_sizes for b in ((batch,) if batch else a.batch_sizes)]


def measure_part(part, a, device):
    """One framework's figures at `a`'s image size and first batch, in this process (a sweep child),
    with this process' peak RSS and the frameworks it loaded."""
    cfg = _config(a, a.batch_sizes[0])
    if part == "tlres":
        out = measure_tlres(cfg, a)  # its peak RSS taken before the bare jit step
    else:
        import torch

        torch.manual_seed(0)
        x, y = torch_batch(cfg, torch.device(device))
        out = (torch_eager if part == "torch_eager" else torch_compiled)(cfg, a, x, y)
        out.update(device=device, threads=torch.get_num_threads(),
                   peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    out["frameworks_loaded"] = [m for m in FRAMEWORKS if m in sys.modules]
    return out


def child_main():
    """A sweep child: its spec (JSON) on stdin; writes {"figures"} or {"error"} (one line) to spec["out"]."""
    spec = json.load(sys.stdin)
    fields = {**spec["settings"], "batch_sizes": tuple(spec["settings"]["batch_sizes"]), "image_sizes": None}
    try:
        out = {"figures": measure_part(spec["part"], Settings(**fields), spec["device"])}
    except TlresError as e:
        out = {"error": str(e)}
    with open(spec["out"], "w") as f:
        json.dump(out, f)
    return 0


def run_child(part, a, size, batch, device, folder):
    """`measure_part` in a fresh Python process (this one's interpreter and environment): its figures."""
    out = os.path.join(folder, f"{part}-{size}-{batch}.json")
    settings = dataclasses.asdict(dataclasses.replace(a, image_size=size, batch_sizes=(batch,), image_sizes=None,
                                                      json_path=None, profile=None))
    spec = {"part": part, "settings": settings, "device": device, "out": out}
    p = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(spec), capture_output=True, text=True)
    try:
        with open(out) as f:
            got = json.load(f)
    except (OSError, ValueError):
        last = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1][:300]
        raise TlresError(f"--image-sizes: the {part} process at {size} px, batch {batch} failed: {last}") from None
    if "error" in got:
        raise TlresError(got["error"])
    return got["figures"]


def sweep_point(a, size, batch, device, folder, with_torch):
    """One "results" entry of the sweep: tlres' figures, PyTorch's, each process' peak RSS, the ratios."""
    parts = PARTS[:(2 + a.torch_compile) if with_torch else 1]
    got = {part: run_child(part, a, size, batch, device, folder) for part in parts}
    r = {"image_size": size, "batch_size": batch,
         "peak_rss_bytes": {part: got[part].pop("peak_rss_bytes") for part in parts},
         "frameworks_loaded": {part: got[part].pop("frameworks_loaded") for part in parts}}
    r.update(got["tlres"])
    if with_torch:
        eager = got["torch_eager"]
        r["torch"] = {"device": eager.pop("device"), "threads": eager.pop("threads"), "eager": eager,
                      "compile": got.get("torch_compile", {"error": "skipped (--no-torch-compile)"})}
        for key in ("device", "threads"):
            r["torch"]["compile"].pop(key, None)
        r["ratios"] = ratios(r, r["torch"])
        r["ratios"]["peak_rss_vs_torch_eager"] = r["peak_rss_bytes"]["tlres"] / r["peak_rss_bytes"]["torch_eager"]
    return r


def sweep(a, report):
    """Every --image-sizes point, each framework in its own process; fills `report`."""
    points = sweep_points(a)
    report.update(image_size=None, points=[list(p) for p in points], cpu_flags=report["device"]["vector_extensions"],
                  memory_kind="each process' own peak RSS (ru_maxrss)")
    if report["torch"]:
        report["versions"].update(records.versions("pytorch"))
    device = "cuda" if report["device"]["platform"] == "gpu" else "cpu"
    with tempfile.TemporaryDirectory(prefix="tlres-bench-") as folder:
        for size, batch in points:
            report["results"].append(sweep_point(a, size, batch, device, folder, report["torch"]))
            print(f"{PROG}: {size} px, batch {batch} done", file=sys.stderr, flush=True)
    return report


def _versions(report):
    v = report["versions"]
    return ", ".join(f"{k} {v[k]}" for k in ("jax", "keras", "torch") if k in v)


def sweep_caption(report):
    """The line above a sweep's table: what was run, on which host (CPU flags, allocator), when, with what."""
    d = report["device"]
    flags = " ".join(report.get("cpu_flags") or []) or "vector extensions unknown"
    return (f"{report['arch']}, {report['precision']}, synthetic data, {report['steps']} timed steps after "
            f"{report['warmup']} warm-up, median (min-max) of {report['repeats']} repeats; "
            f"{d.get('cpu', d['kind'])}, {d['platform']}, CPU flags {flags}; allocator "
            f"{d.get('allocator') or 'the system default'}; {report['date']}; {_versions(report)}; "
            "each framework in its own process, peak RSS = that process' ru_maxrss")


def _ratio(r, key):
    v = (r.get("ratios") or {}).get(key)
    return f"{v:.2f}x" if v else "-"


def _torch_rate(r, part, key):
    d = (r.get("torch") or {}).get(part) or {}
    return _rate(d, key) if key in d else "-"


def _rss(r, part):
    v = r["peak_rss_bytes"].get(part)
    return human(v) if v else "-"


SWEEP_COLUMNS = (
    ("size", lambda r: str(r["image_size"])), ("batch", lambda r: str(r["batch_size"])),
    ("tlres train img/s", lambda r: _rate(r["train"], "img_per_s")),
    ("PyTorch eager", lambda r: _torch_rate(r, "eager", "train_img_per_s")),
    ("ratio", lambda r: _ratio(r, "train_vs_torch_eager")),
    ("torch.compile", lambda r: _torch_rate(r, "compile", "train_img_per_s")),
    ("ratio", lambda r: _ratio(r, "train_vs_torch_compile")),
    ("tlres infer img/s", lambda r: _rate(r["infer"], "img_per_s")),
    ("PyTorch infer", lambda r: _torch_rate(r, "eager", "infer_img_per_s")),
    ("ratio", lambda r: _ratio(r, "infer_vs_torch_eager")),
    ("peak RSS tlres", lambda r: _rss(r, "tlres")),
    ("PyTorch eager", lambda r: _rss(r, "torch_eager")),
    ("torch.compile", lambda r: _rss(r, "torch_compile")),
    ("RSS ratio", lambda r: _ratio(r, "peak_rss_vs_torch_eager")),
)
"""The sweep table's columns: (header, cell of one "results" entry)."""


def sweep_table(report):
    """A sweep as Markdown: its caption, then one row per (size, batch)."""
    rows = [[name for name, _ in SWEEP_COLUMNS], ["---"] * len(SWEEP_COLUMNS)]
    rows += [[cell(r) for _, cell in SWEEP_COLUMNS] for r in report["results"]]
    return "\n".join([sweep_caption(report) + ":", ""] + ["| " + " | ".join(row) + " |" for row in rows])


SWEEPS = "sweep-*.json"
"""The recorded sweep files docs/speed.md's generated section shows, in a results folder."""


def speed_section(paths):
    """docs/speed.md's generated section: the table of each recorded sweep file in `paths`, in order."""
    if not paths:
        return "No sweep is recorded yet.\n"
    parts = []
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        parts.append(f"`{os.path.basename(path)}`: {sweep_table(report)}\n")
    return "\n".join(parts)


def update_speed_doc(doc, folder):
    """Write the section of `folder`'s sweep files (`SWEEPS`, by name) between the `tlres.bench`
    markers of `doc` (docs/speed.md, experiments/results/speed)."""
    import glob

    paths = sorted(glob.glob(os.path.join(folder, SWEEPS)))
    report_lib.update_readme(doc, speed_section(paths), *report_lib.markers("bench"))
    return paths
