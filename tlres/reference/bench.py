"""Throughput benchmark: tlres training and inference, the input pipeline, PyTorch.

    tlres bench [--arch resnet50|resnet50_v1_5|tiny] [--batch-sizes 64,256] [--steps 20] [--warmup 3]
                [--torch] [--pipeline-only] [--precision float32|mixed_bfloat16]
                [--steps-per-execution K] [--conv auto|xla|matmul] [--conv-layers]
                [--repeats N] [--profile DIR] [--json PATH]
)` here)

A benchmark, not a test: figures depend on the machine (and on whatever else
runs on it); the table's first line and the JSON name the host's CPU model, its
vector extensions (avx2, avx512f, amx_*, ...), the date and the convolution kernel plan
(which kernel each convolution uses; under --conv auto on a CPU, timed on this host or read
from its cache, see `tlres.net.cpu.convplan`). Every rate is measured --repeats times (default 3)
in a row, and the table shows the median and the spread (min-max); the JSON holds the
median (`img_per_s`), `_min`, `_max` and each repeat. Per batch size it measures, on
synthetic data (random uint8 images normalized as the runner does, random labels;
random-init weights):

* train: the model the runner builds (`tlres.net.model.build`), compiled by the
  runner's `tlres.run.train.compile_model` (its loss, optimizer, schedule, metric),
  trained with `model.fit` as the runner does, on one device-resident batch
  fed again and again. The first execution (tracing + XLA compile + one step)
  is reported as compile s; img/s is timed over `--steps` steps after
  `--warmup` steps, each execution synced on its loss (--repeats windows of
  `--steps` in one fit).
  With --data-on-device (and --pipeline jax), fit takes its batches from the
  device path instead (`tlres.data.pipeline.device_batches`, the whole synthetic
  split on the device, augmentation as the preset's): what a run's fit does.
* jit step: the same compiled Keras train step called directly in a loop,
  without fit's per-step Python work (callbacks, logs): the ceiling for fit.
* forward: the training-mode forward pass alone, jitted, no gradient: where a
  step's time goes (and, with --torch, how the forward alone compares).
* infer: the jitted forward function evaluate and predict use (`tlres.net.model.forward`),
  each batch read back to the host; first call reported as compile s.
* peak memory: the device's peak_bytes_in_use where JAX reports it (GPU), else
  the process' peak RSS so far (CPU; includes everything before it, torch too).
* pipeline: `tlres.data.pipeline.train_data` (the runner's pipeline, augmentation
  on) alone, in img/s, and its ratio to what training consumes (target >= 5x).
* --conv-layers (alone): each distinct Conv2D of the model timed with both
  kernels, XLA's and tlres' im2col + matmul, forward and forward + gradients:
  what `--conv auto` times per shape on a CPU (tlres.net.cpu.convplan), shown in full.
* --torch: torchvision's resnet50 (fc -> Linear(2048, 10)) in PyTorch on the
  same device class and batch, NCHW, SGD momentum 0.9, cross-entropy: eager,
  and torch.compile (its one-line error is recorded if it fails).
* --profile DIR: a JAX profiler trace (`jax.profiler.trace`, TensorBoard's
  profile plugin or Perfetto read it) of a few training steps per batch size,
  in DIR/batchB, taken after the timed ones.

Bad flags print one line and exit 2. The persistent compile cache is not used,
so compile s is a cold compile.
"""

import dataclasses
import json
import math
import os
import resource
import sys
import time

import numpy as np

from tlres.data import augment, pipeline
from tlres.net import backend, model
from tlres.net.cpu import kernels
from tlres.run import records, train
from tlres.core.config import IMPROVED
from tlres.core.errors import TlresError
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


def time_train(net, x, y, warmup, steps, k, repeats=1, feed=None):
    """model.fit on one device-resident batch: (compile s, [img/s of each repeat], timed steps
    per repeat); the repeats are consecutive windows of one fit.

    `feed(n_steps)`: fit takes its batches from that iterator instead (--data-on-device)."""
    import keras

    bs = len(x)
    warm_exec = max(1, math.ceil(warmup / k)) if warmup else 0
    timed_exec = math.ceil(steps / k)
    total = (1 + warm_exec + repeats * timed_exec) * k
    stamps = []

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            stamps.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # sync: the step has finished on the device
            stamps.append(time.perf_counter())

    def batches():
        while True:
            yield x, y

    net.fit(feed(total) if feed else batches(), epochs=1, steps_per_epoch=total, callbacks=[Clock()], verbose=0, shuffle=False)
    assert len(stamps) == 2 + warm_exec + repeats * timed_exec, len(stamps)
    compile_s = stamps[1] - stamps[0]
    starts = [1 + warm_exec + i * timed_exec for i in range(repeats)]
    rates = [timed_exec * k * bs / (stamps[i + timed_exec] - stamps[i]) for i in starts]
    return compile_s, rates, timed_exec * k


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


def conv_layers(cfg, warmup, steps):
    """Each distinct Conv2D of the runner's model with both kernels: one row per shape, in ms."""
    import collections

    import jax
    import jax.numpy as jnp
    from keras import ops

    net = model.build(NUM_CLASSES, cfg.replace(conv="xla"))
    shapes = collections.Counter()
    for layer in model.conv2d_layers(net):
        _, h, w, c = layer.input.shape
        shapes[(h, w, c, *layer.kernel_size, layer.filters, layer.strides[0], layer.padding)] += 1
    rng = np.random.default_rng(0)
    rows = []
    for (h, w, c, kh, kw, filters, stride, padding), count in shapes.items():
        x = jnp.asarray(rng.normal(size=(cfg.batch_size, h, w, c)), "float32")
        kernel = jnp.asarray(rng.normal(size=(kh, kw, c, filters)) * 0.05, "float32")
        row = {"input": [h, w, c], "kernel": [kh, kw], "filters": filters, "stride": stride,
               "padding": padding, "count": count}
        forms = {"xla": lambda x, k, s=stride, p=padding: ops.conv(x, k, s, p),
                 "matmul": lambda x, k, s=stride, p=padding: kernels.matmul_conv(x, k, (s, s), p)}
        for name, conv in forms.items():
            fns = {"fwd": jax.jit(conv),
                   "grad": jax.jit(jax.grad(lambda x, k, f=conv: jnp.sum(f(x, k) ** 2), argnums=(0, 1)))}
            for part, fn in fns.items():
                row[f"{name}_{part}_ms"] = _seconds_per_call(lambda: fn(x, kernel), warmup, steps)[0] * 1e3
        rows.append(row)
    return rows


def conv_table(report):
    lines = [f"tlres.reference.bench --conv-layers: {report['arch']} {report['image_size']}px, float32, "
             f"ms per call, {report['steps']} timed calls after {report['warmup']} warm-up; device "
             f"{report['device']['kind']}; {_host(report)}"]
    for r in report["results"]:
        cols = ["input hxwxc", "kernel", "stride", "count", "xla fwd", "matmul fwd",
                "xla fwd+grad", "matmul fwd+grad"]
        rows = [[f"{'x'.join(map(str, l['input']))}", f"{l['kernel'][0]}x{l['kernel'][1]}->{l['filters']}",
                 str(l["stride"]), str(l["count"]), *(_fmt(l[k], 2) for k in (
                     "xla_fwd_ms", "matmul_fwd_ms", "xla_grad_ms", "matmul_grad_ms"))]
                for l in r["conv_layers"]]
        total = {k: sum(l["count"] * l[k] for l in r["conv_layers"]) for k in (
            "xla_fwd_ms", "matmul_fwd_ms", "xla_grad_ms", "matmul_grad_ms")}
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
    plan = model.conv_plan_record(net)
    out = {"conv_plan": plan["summary"], "conv_kernels": plan}
    n_rep = a.repeats
    feed = None
    if cfg.data_on_device:  # a synthetic split of exactly the steps fit takes, held on the device
        def feed(n_steps):
            return pipeline.train_data(*synthetic(n_steps * cfg.batch_size, cfg.image_size, seed=2), cfg)
    c, ips, n = time_train(net, x, y, a.warmup, a.steps, a.steps_per_execution, n_rep, feed)
    out["train"] = {"compile_s": c, **spread("img_per_s", ips), "timed_steps": n}
    if a.profile:
        out["profile"] = profile_steps(net, x, y, os.path.join(a.profile, f"batch{cfg.batch_size}"))
    c, ips = time_infer(net, x, a.warmup, a.steps, n_rep)
    out["infer"] = {"compile_s": c, **spread("img_per_s", ips), "timed_steps": a.steps}
    out["forward"] = {**spread("img_per_s", time_forward(net, x, a.warmup, a.steps, n_rep)),
                      "timed_steps": a.steps}
    out["jit_step"] = {**spread("img_per_s", time_jit_step(net, x, y, a.warmup, a.steps, n_rep)),
                       "timed_steps": a.steps}
    return out


def _one_line(e):
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def measure_torch(cfg, a, device):
    """torchvision's model in PyTorch: eager train/infer, torch.compile train."""
    import torch

    torch.manual_seed(0)
    dev = torch.device(device)
    batch_size = cfg.batch_size
    xu, y = synthetic(batch_size, cfg.image_size)
    x = torch.from_numpy((xu.astype(np.float32) / 255.0 - 0.5) / 0.5).permute(0, 3, 1, 2)
    x = x.contiguous().to(dev)
    y = torch.from_numpy(y.astype(np.int64)).to(dev)
    bf16 = a.precision == "mixed_bfloat16"

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def train_rate(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        loss_fn = torch.nn.CrossEntropyLoss()
        model.train()

        def step():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                loss = loss_fn(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

        t0 = time.perf_counter()
        step().item()
        first = time.perf_counter() - t0
        for _ in range(a.warmup):
            step()
        sync()
        rates = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            for _ in range(a.steps):
                loss = step()
            loss.item()
            sync()
            rates.append(a.steps * batch_size / (time.perf_counter() - t0))
        return first, rates

    def forward_rate(model, training):
        """No autograd; training=True uses batch statistics (tlres' "forward"), False is inference."""
        model.train(training)
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            for _ in range(1 + a.warmup):
                model(x)
            sync()
            rates = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                for _ in range(a.steps):
                    out = model(x)
                out.float().cpu()
                rates.append(a.steps * batch_size / (time.perf_counter() - t0))
            return rates

    res = {"device": str(dev), "threads": torch.get_num_threads()}
    model = ref.build(cfg, NUM_CLASSES).to(dev)  # the runner's BatchNorm settings, random init
    first, ips = train_rate(model)
    res["eager"] = {"first_step_s": first, **spread("train_img_per_s", ips),
                    **spread("infer_img_per_s", forward_rate(model, training=False)),
                    **spread("forward_img_per_s", forward_rate(model, training=True))}
    if a.torch_compile:
        try:
            compiled = torch.compile(ref.build(cfg, NUM_CLASSES).to(dev))
            first, ips = train_rate(compiled)
            res["compile"] = {"compile_s": first, **spread("train_img_per_s", ips)}
        except Exception as e:  # no C++ compiler, unsupported op, ...: record, go on
            res["compile"] = {"error": _one_line(e)}
    else:
        res["compile"] = {"error": "skipped (--no-torch-compile)"}
    return res


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


def run(a):
    """Measure what `a` (a `Settings`) asks for; print the table (and write the JSON); returns 0."""
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
    if a.arch == "resnet50" and a.image_size < 32:
        raise TlresError(f"--image-size {a.image_size}: ResNet50 needs at least 32")
    if a.conv_layers and (a.pipeline_only or a.torch or a.precision != "float32"):
        raise TlresError("--conv-layers times float32 convolutions alone; drop --pipeline-only, "
                         "--torch and --precision")
    backend.require_jax()
    dev = records.device()
    report = {"benchmark": "tlres.reference.bench", "date": time.strftime("%Y-%m-%d"), "data": "synthetic (random uint8 images, normalized; random labels)",
              "weights": "random init", "arch": a.arch, "image_size": a.image_size,
              "precision": a.precision, "steps_per_execution": a.steps_per_execution,
              "steps": a.steps, "warmup": a.warmup, "repeats": a.repeats, "pipeline_only": a.pipeline_only,
              "conv_layers": a.conv_layers, "torch": a.torch and not a.pipeline_only, "device": dev,
              "versions": records.versions(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "results": []}
    report["pipeline"] = pipeline.resolve(a.pipeline)
    report["data_on_device"] = a.data_on_device  # train: fit fed by the device path
    pipeline.check(_config(a, a.batch_sizes[0]))
    report["conv"] = a.conv
    if report["torch"]:
        import torch
        import torchvision

        report["versions"].update(torch=torch.__version__, torchvision=torchvision.__version__)
    for bs in a.batch_sizes:
        cfg = _config(a, bs)
        r = {"batch_size": bs}
        if a.conv_layers:
            r["conv_layers"] = conv_layers(cfg, a.warmup, a.steps)
            report["results"].append(r)
            print(f"{PROG}: batch {bs} done", file=sys.stderr, flush=True)
            continue
        if not a.pipeline_only:
            r.update(measure_tlres(cfg, a))
            r["peak_memory_bytes"], report["memory_kind"] = peak_memory()
        name, ips = time_pipeline(cfg, a.warmup, a.steps)
        r["pipeline"] = {"name": name, "img_per_s": ips}
        if not a.pipeline_only:
            r["pipeline_over_train"] = ips / r["train"]["img_per_s"]
        if report["torch"]:
            device = "cuda" if dev["platform"] == "gpu" else "cpu"
            r["torch"] = t = measure_torch(cfg, a, device)
            comp = t["compile"].get("train_img_per_s")
            r["ratios"] = {"train_vs_torch_eager": r["train"]["img_per_s"] / t["eager"]["train_img_per_s"],
                           "train_vs_torch_compile": r["train"]["img_per_s"] / comp if comp else None,
                           "infer_vs_torch_eager": r["infer"]["img_per_s"] / t["eager"]["infer_img_per_s"],
                           "forward_vs_torch_eager": r["forward"]["img_per_s"] / t["eager"]["forward_img_per_s"]}
        report["results"].append(r)
        print(f"{PROG}: batch {bs} done", file=sys.stderr, flush=True)
    print(conv_table(report) if a.conv_layers else table(report), flush=True)
    if a.json_path:
        with open(a.json_path, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"JSON -> {a.json_path}")
    return 0

