"""Trajectory parity, recorded: `tlres parity --steps 100 --seeds 3 --out DIR`.

One network (`--arch resnet50_v1_5` or tiny), one set of initial weights (tlres', converted),
one stream of batches (tlres' `--pipeline jax`): per step the training loss in Keras float32,
PyTorch float32 and PyTorch float64 (the reference), and a float32-derived bound
(`trajectories`). `record` writes DIR/seed<k>.csv, parity.png and summary.md (the generated
section). Why the bound is built so, what differs by design, the files and the defaults:
docs/pytorch.md#trajectory-parity.
"""

import csv
import io
import os
import time

import numpy as np

from tlres.analysis import report
from tlres.core import plots
from tlres.core.errors import TlresError
from tlres.data import loaders as data, pipeline
from tlres.net import convert, model as model_lib
from tlres.reference import torch as ref
from tlres.run import train, writes

U = 2.0 ** -24  # float32's unit roundoff
PROBE_SIZE = 100 * U  # ~ sqrt(longest sum) * u: a batch-32 gradient at 16x16 sums 8,192 terms
PROBES = 2
BOUND_FACTOR = 10
BOUND_FLOOR = 1e-6  # relative to the loss: ~4 float32 ulps of a loss near 2.3
COLUMNS = ("keras", "torch32", "torch64", "probe_gap", "bound")  # per-step lists `trajectories` returns


def trajectories(cfg, x, y, num_classes, steps):
    """{"keras", "torch32", "torch64", "bound": per-step lists for the first `steps` steps;
    "batches": those steps' (NHWC images, labels), "state": the shared initial weights (torch names)}."""
    import torch  # noqa: F401  first: torch imported after JAX has run can crash (triton)
    import torchvision  # noqa: F401
    import jax

    steps_per_epoch = len(x) // cfg.batch_size
    epochs = -(-steps // steps_per_epoch)
    batches = []
    for xb, yb in pipeline.jax_batches(x, y, cfg, 0, epochs):
        batches.append((np.array(xb), np.asarray(yb, np.int32)))
        if len(batches) == steps:
            break
    train.setup_engine(cfg)
    net = model_lib.build(num_classes, cfg)
    state = convert.model_to_torch(net)
    callbacks = train.compile_model(net, cfg, num_classes, steps_per_epoch)
    keras_losses = []
    with jax.default_matmul_precision("float32"):  # true float32 on a GPU too, not TF32
        for i, (xb, yb) in enumerate(batches):
            if i % steps_per_epoch == 0:  # what fit does at an epoch's start: the per-epoch cosine rate
                for cb in callbacks:
                    cb.set_model(net)
                    cb.on_epoch_begin(i // steps_per_epoch)
            keras_losses.append(float(net.train_on_batch(xb, yb, return_dict=True)["loss"]))
    out = {"keras": keras_losses}
    for name, dtype in (("torch32", torch.float32), ("torch64", torch.float64)):
        out[name] = torch_losses(cfg, state, batches, num_classes, steps_per_epoch, dtype)
    exact = np.asarray(out["torch64"])
    gap = np.zeros_like(exact)
    for seed in range(PROBES):
        probe = torch_losses(cfg, perturbed(state, PROBE_SIZE, seed), batches, num_classes,
                             steps_per_epoch, torch.float64)
        gap = np.maximum(gap, np.maximum.accumulate(np.abs(np.asarray(probe) - exact)))
    out["probe_gap"] = gap.tolist()
    out["bound"] = np.maximum(BOUND_FACTOR * gap, BOUND_FLOOR * np.abs(exact)).tolist()
    out.update(batches=batches, state=state)
    return out


def perturbed(state, size, seed):
    """Every float tensor times (1 +- size), random signs; counters untouched."""
    rng = np.random.default_rng(seed)
    return {k: (v * (1.0 + size * rng.choice([-1.0, 1.0], v.shape))).astype(v.dtype)
            if v.dtype.kind == "f" else v for k, v in state.items()}


def torch_losses(cfg, state, batches, num_classes, steps_per_epoch, dtype):
    """The reference's per-step training losses from `state` on `batches` (NHWC numpy)."""
    import torch

    torch.manual_seed(cfg.seed)
    model = ref.build(cfg.replace(weights="none"), num_classes)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})  # strict: all of it
    model.to(dtype).train()
    loss_of = ref.criterion(cfg, num_classes)
    opt, decay = ref.make_optimizer(cfg, model.parameters())
    clock = ref.make_scheduler(cfg, opt, steps_per_epoch)
    losses = []
    for i, (xb, yb) in enumerate(batches):
        xt = torch.from_numpy(xb).permute(0, 3, 1, 2).to(dtype)
        loss, _ = ref.train_step(model, opt, decay, loss_of, xt, torch.from_numpy(yb.astype("int64")))
        losses.append(loss.item())
        clock.after_step()
        if (i + 1) % steps_per_epoch == 0:
            clock.after_epoch()
    return losses


def first_exceeding(losses, reference, bound):
    """The first step (0-based) where |losses - reference| > bound, or None."""
    for i, (a, b, c) in enumerate(zip(losses, reference, bound)):
        if abs(a - b) > c:
            return i
    return None


# ---------------------------------------------------------------- recording

PROG = "tlres parity"
EARLY = 5  # the "first steps" column: before flipped ReLUs compound (ResNet50 fine-tuning: ~5 steps)


def record(cfg, out, steps, seeds, readme=None, command=PROG):
    """`steps` training steps of `cfg` for seeds cfg.seed, cfg.seed + 1, ... (`seeds` of them) in both
    frameworks: OUT/seed<k>.csv, parity.png, summary.md (and with `readme`, the section there);
    `command` is what the summary says made it. Returns 0."""
    import torch  # noqa: F401  before JAX runs: torch/torchvision imported after it can crash (triton)
    import torchvision  # noqa: F401

    ds = data.load(cfg.data, cfg.data_dir, cfg.image_size, cfg.test_split, cfg.skip_bad_images)
    if len(ds.x_train) < cfg.batch_size:
        raise TlresError(f"--data {cfg.data}: fewer training images than one batch of {cfg.batch_size}")
    writes.claim(out, [f"seed{k}.csv" for k in range(seeds)] + ["parity.png", "summary.md"])
    rows = {}
    for k in range(seeds):
        seed = cfg.seed + k
        t0 = time.perf_counter()
        run = trajectories(cfg.replace(seed=seed), ds.x_train, ds.y_train, ds.num_classes, steps)
        rows[seed] = [{"step": i + 1, **{key: run[key][i] for key in COLUMNS}}
                      for i in range(steps)]
        write_csv(os.path.join(out, f"seed{k}.csv"), rows[seed])
        print(f"{PROG}: seed {seed}: {steps} steps in {time.perf_counter() - t0:.0f} s -> "
              f"{os.path.join(out, f'seed{k}.csv')}", flush=True)
    plot(rows, os.path.join(out, "parity.png"))
    text = summary(cfg, rows, command)
    writes.atomic_text(os.path.join(out, "summary.md"), text)
    print(text, end="")
    if readme:
        rel = os.path.relpath(out, os.path.dirname(os.path.abspath(readme)))
        section = text + f"\n![per-step loss differences]({rel}/parity.png)\n"
        report.update_readme(readme, section, *report.markers("parity"))
        print(f"{PROG}: section in {readme}", flush=True)
    return 0


def write_csv(path, rows):
    """One seed's per-step rows as CSV (floats as repr, exact), written atomically."""
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(float(v)) if k != "step" else v) for k, v in r.items()})
    writes.atomic_text(path, f.getvalue())


def read_csv(path):
    """The rows `write_csv` wrote: step an int, the rest floats."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]


def relative(rows, key):
    """|rows[key] - torch64| / torch64, per step."""
    return [abs(r[key] - r["torch64"]) / abs(r["torch64"]) for r in rows]


def within(rows, key):
    """'all N' or 'steps 1-(s-1)' where step s is the first beyond the bound."""
    first = first_exceeding([r[key] for r in rows], [r["torch64"] for r in rows], [r["bound"] for r in rows])
    return f"all {len(rows)}" if first is None else f"1-{first} (step {first + 1} exceeds)"


def summary(cfg, rows, command):
    """The generated section: setup, one row per seed, and what it says."""
    steps = len(next(iter(rows.values())))
    early = min(EARLY, steps)
    lines = [f"_Generated by `{command}` on {time.strftime('%Y-%m-%d')}; do not edit by hand._", "",
             f"Data: {cfg.data}; `--arch {cfg.arch}` in both frameworks; per seed, both start from "
             "tlres' initial weights for that seed (head included, converted) and train on tlres' "
             f"batches (same order, flips and crops). {cfg.optimizer.upper()} (momentum {cfg.momentum}, "
             f"decoupled weight decay {cfg.weight_decay}), rate {cfg.lr} ({cfg.schedule}), batch "
             f"{cfg.batch_size}, label smoothing {cfg.label_smoothing} ({cfg.smoothing_form} form), "
             f"augment={cfg.augment}, flip={cfg.flip}, crop padding {cfg.crop_padding}. Training loss "
             "per step: Keras float32 (tlres' compiled step), PyTorch float32, and PyTorch float64 "
             "(the reference). Bound per step: 10x the largest distance from the reference of two "
             "float64 runs started from weights moved by a relative 100u (u = 2^-24), at least 1e-6 "
             "of the loss.", "",
             f"| seed | Keras within the bound, steps | PyTorch float32 within the bound, steps | "
             f"Keras: largest relative difference, steps 1-{early} | steps 1-{steps} | "
             f"PyTorch float32: steps 1-{early} | steps 1-{steps} | loss at step {steps}: Keras / "
             "PyTorch float64 |",
             "|---|---|---|---|---|---|---|---|"]
    for seed, r in rows.items():
        k, t = relative(r, "keras"), relative(r, "torch32")
        lines.append(f"| {seed} | {within(r, 'keras')} | {within(r, 'torch32')} | {max(k[:early]):.1e} "
                     f"| {max(k):.1e} | {max(t[:early]):.1e} | {max(t):.1e} | "
                     f"{r[-1]['keras']:.4f} / {r[-1]['torch64']:.4f} |")
    worst = {k: max(max(relative(r, k)[:n]) for r in rows.values())
             for k, n in (("keras", early), ("torch32", early))}
    worst_all = {k: max(max(relative(r, k)) for r in rows.values()) for k in ("keras", "torch32")}
    spread = max(x["probe_gap"] / abs(x["torch64"]) for r in rows.values() for x in r)
    inside = all(within(r, "keras").startswith("all") for r in rows.values())
    lines += ["", f"Same network, same weights, same batches: over {len(rows)} seeds the Keras "
              f"losses stay within {worst['keras']:.1e} of PyTorch's float64 losses (relative) for the "
              f"first {early} steps (PyTorch's own float32: {worst['torch32']:.1e}), and within "
              f"{worst_all['keras']:.1e} for all {steps} (PyTorch float32: {worst_all['torch32']:.1e}); "
              + ("every Keras step is inside the float32-derived bound. " if inside else
                 "Keras leaves the float32-derived bound where the table says. ")
              + f"Float64 runs started 100u apart drift up to {spread:.1e} of the loss apart within "
              f"these {steps} steps: beyond that, step-by-step agreement cannot separate the "
              "frameworks from rounding.", ""]
    return "\n".join(lines)


def plot(rows, path):
    """parity.png: per seed, Keras' and PyTorch float32's relative distance from the float64
    loss, and the bound (`tlres.core.plots.parity_steps`)."""
    curves = {seed: {"steps": [x["step"] for x in r], "keras": relative(r, "keras"),
                     "torch32": relative(r, "torch32"), "bound": [x["bound"] / abs(x["torch64"]) for x in r]}
              for seed, r in rows.items()}
    writes.staged(path, lambda p: plots.parity_steps(curves, p))

