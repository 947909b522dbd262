"""Trajectory parity, recorded: `python -m tlres.experiments.parity --steps 100 --seeds 3 --out DIR`.

One network (torchvision's ResNet50 in both frameworks: `--arch resnet50_v1_5`),
one set of initial weights (tlres' model for the seed, head included, converted),
one stream of batches (tlres' `--pipeline jax` draws), and per step the training
loss in Keras (tlres' compiled step, float32), PyTorch float32 and PyTorch float64
(the reference trajectory), with a float32-derived bound per step
(`tlres.parity.trajectories` says how it is derived). Writes, in DIR:

* ``seed<k>.csv``: step, keras, torch32, torch64, probe_gap, bound;
* ``parity.png``: per seed, |loss - float64 loss| / float64 loss of Keras and of
  PyTorch float32, and the bound, over the steps;
* ``summary.md``: the table below; with ``--readme FILE`` it also goes into FILE
  between ``<!-- tlres.parity:begin -->`` and ``<!-- tlres.parity:end -->``.

Defaults (any tlres flag overrides them): digits, random initial weights,
``--arch resnet50_v1_5``, the improved preset's SGD (momentum 0.9, decoupled
weight decay 5e-4, rate 0.01) at a constant rate, batch 32, flip and pad-4 crop,
the paper's label smoothing. A constant rate, because under a changing rate
Keras' SGD velocity holds past rates and torch's buffer does not; SGD, because
Adam places its epsilon differently in the two (both are differences of
definition, not of rounding: see `tlres.parity`).
"""

import csv
import os
import sys
import time

from tlres import cli, data, parity, plots, report
from tlres.errors import TlresError

PROG = "python -m tlres.experiments.parity"
DEFAULTS = dict(data="digits", weights="none", arch="resnet50_v1_5", schedule="constant",
                batch_size=32)
EARLY = 5  # the "first steps" column: before flipped ReLUs compound (ResNet50 fine-tuning: ~5 steps)


def parse(argv, prog=PROG):
    p = cli.Parser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=cli.positive(int),
                   default=100, help="training steps per seed (default: 100)")
    p.add_argument("--seeds", type=cli.positive(int), default=3,
                   help="seeds --seed, --seed+1, ... (default: 3)")
    p.add_argument("--out", required=True, help="directory: seed<k>.csv, parity.png, summary.md")
    p.add_argument("--readme", metavar="FILE",
                   help="also write the summary into FILE between its tlres.parity markers")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    args, rest = p.parse_known_args(argv)
    given = {a.split("=")[0] for a in rest if a.startswith("--")}
    bad = sorted(given & {"--preset", "--resume", "--overwrite", "--out"})
    if bad:
        p.error(f"{', '.join(bad)}: not taken here")
    cfg, _ = cli.parse_all(rest, "improved", prog)
    overrides = cli.given_fields(cfg, rest)
    cfg = cfg.replace(**{**DEFAULTS, **overrides})
    if cfg.arch == "resnet50":
        p.error("--arch resnet50 is Keras' ResNet v1, which has no PyTorch twin: use resnet50_v1_5 or tiny")
    return args, cfg, overrides


def main(argv=None, prog=PROG):
    argv = sys.argv[1:] if argv is None else argv
    args, cfg, _ = parse(argv, prog)
    return cli.guarded(prog, args.debug, lambda: record(cfg, args, argv))


def record(cfg, args, argv):
    import torch  # noqa: F401  before JAX runs: torch/torchvision imported after it can crash (triton)
    import torchvision  # noqa: F401

    ds = data.load(cfg.data, cfg.data_dir, cfg.image_size, cfg.test_split, cfg.skip_bad_images)
    if len(ds.x_train) < cfg.batch_size:
        raise TlresError(f"--data {cfg.data}: fewer training images than one batch of {cfg.batch_size}")
    os.makedirs(args.out, exist_ok=True)
    seeds = [cfg.seed + k for k in range(args.seeds)]
    rows = {}
    for k, seed in enumerate(seeds):
        t0 = time.perf_counter()
        run = parity.trajectories(cfg.replace(seed=seed), ds.x_train, ds.y_train, ds.num_classes,
                                  args.steps)
        rows[seed] = [{"step": i + 1, **{key: run[key][i] for key in parity.COLUMNS}}
                      for i in range(args.steps)]
        write_csv(os.path.join(args.out, f"seed{k}.csv"), rows[seed])
        print(f"{PROG}: seed {seed}: {args.steps} steps in {time.perf_counter() - t0:.0f} s -> "
              f"{os.path.join(args.out, f'seed{k}.csv')}", flush=True)
    plot(rows, os.path.join(args.out, "parity.png"))
    text = summary(cfg, rows, f"{PROG} {' '.join(argv)}")
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text)
    print(text, end="")
    if args.readme:
        rel = os.path.relpath(args.out, os.path.dirname(os.path.abspath(args.readme)))
        section = text + f"\n![per-step loss differences]({rel}/parity.png)\n"
        report.update_readme(args.readme, section, *report.markers("parity"))
        print(f"{PROG}: section in {args.readme}", flush=True)
    return 0


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (repr(float(v)) if k != "step" else v) for k, v in r.items()})


def read_csv(path):
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]


def relative(rows, key):
    """|rows[key] - torch64| / torch64, per step."""
    return [abs(r[key] - r["torch64"]) / abs(r["torch64"]) for r in rows]


def within(rows, key):
    """'all N' or 'steps 1-(s-1)' where step s is the first beyond the bound."""
    first = parity.first_exceeding([r[key] for r in rows], [r["torch64"] for r in rows],
                                   [r["bound"] for r in rows])
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
    loss, and the bound (`tlres.plots.parity_steps`)."""
    plots.parity_steps({seed: {"steps": [x["step"] for x in r], "keras": relative(r, "keras"),
                               "torch32": relative(r, "torch32"),
                               "bound": [x["bound"] / abs(x["torch64"]) for x in r]}
                        for seed, r in rows.items()}, path)


if __name__ == "__main__":
    sys.exit(main())
