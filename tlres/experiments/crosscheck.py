"""Cross-framework check: the same Config and seeds in tlres (Keras/JAX) and the PyTorch reference.

    python -m tlres.experiments.crosscheck --seeds 3 --out runs/crosscheck [tlres flags...]

Defaults to the offline digits comparison: the improved preset with
`tlres.ablation.DIGITS` overrides (any tlres flag given overrides those), on
torchvision's network in both frameworks (`--arch resnet50_v1_5`), each seed's
PyTorch run starting from the very weights tlres' run of that seed starts from
(`--init tlres`: tlres' model for the seed, head included, converted to
OUT/init/seed<k>.safetensors) and training on tlres' batches (`--draws tlres`).
What is left to differ is the frameworks: their kernels and float rounding,
Adam's epsilon placement and BatchNorm's running variance (tlres.parity).
`--init own --draws torch` gives each framework its own initialisation and
augmentation draws instead (needed for `--arch resnet50`, Keras' v1, which has no
PyTorch twin).
tlres side: `ablation.run_grid(<--tlres-grid, default OUT/keras-jax>, seeds=N,
names=["improved"], **overrides)`, which reuses finished runs of the same
config. PyTorch side: `tlres.reference.torch` on the identical Config, seed
base+k, in OUT/pytorch/improved/seed<k> (finished runs of the same config are
reused). Then `tlres.compare` of the two sides -> OUT/compare.md, OUT/compare.png.

`--no-train-tlres` trains nothing on the tlres side: it compares against the
finished seed runs of the same config already in --tlres-grid (safe while
another process is still filling that grid). `--torch-only` stops after the
PyTorch side.
"""

import os
import shutil
import sys
import time

from tlres import ablation, cli, compare, convert, data, model, results, rundir, train
from tlres import report as report_lib
from tlres.reference import torch as ref
from tlres.errors import TlresError

PROG = "python -m tlres.experiments.crosscheck"
BEGIN, END = "<!-- tlres.crosscheck:begin -->", "<!-- tlres.crosscheck:end -->"  # unnamed section


def parse(argv, prog=PROG):
    p = cli.Parser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=cli.positive(int), default=3,
                   help="runs per framework, seeds --seed, --seed+1, ... (default: 3)")
    p.add_argument("--out", required=True, help="directory: pytorch/, compare.md, compare.png")
    p.add_argument("--tlres-grid", help="the tlres grid directory (default OUT/keras-jax)")
    p.add_argument("--device", default=None, help="torch device for the PyTorch side")
    p.add_argument("--no-train-tlres", action="store_true",
                   help="compare against finished tlres runs only; train none")
    p.add_argument("--torch-only", action="store_true", help="run the PyTorch side only")
    p.add_argument("--readme", metavar="FILE", help="also write the comparison (without the "
                   f"confusion differences) into FILE between {BEGIN} and {END}")
    p.add_argument("--torch-weights", metavar="WEIGHTS", help="what the PyTorch side loads when "
                   "--weights names a run or file (Keras' ResNet50 is v1, torchvision's v1.5: each "
                   "side needs its own pretraining): a finished PyTorch reference run or a .pt/.pth")
    p.add_argument("--section", metavar="NAME", help="with --readme: write between "
                   "<!-- tlres.crosscheck:NAME:begin --> and its end marker instead")
    p.add_argument("--init", choices=("tlres", "own"), default="tlres",
                   help="tlres: per seed, the PyTorch run starts from tlres' initial weights for "
                        "that seed, head included; own: each framework initialises its own model "
                        "(default: tlres)")
    p.add_argument("--draws", choices=("tlres", "torch"), default="tlres",
                   help="the PyTorch side's augmentation draws: tlres' batches, draw for draw, or "
                        "torchvision's transforms (default: tlres)")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    args, rest = p.parse_known_args(argv)
    given = {a.split("=")[0] for a in rest if a.startswith("--")}
    bad = sorted(given & {"--preset", "--resume", "--overwrite"})
    if bad:
        p.error(f"{', '.join(bad)}: not taken here (the improved cell with the digits overrides)")
    cfg, _ = cli.parse_all(rest, "improved", prog)  # validates the tlres flags, one line on error
    return args, {**ablation.DIGITS, "arch": "resnet50_v1_5", **cli.given_fields(cfg, rest)}


def torch_cell(cell, torch_weights, init="own"):
    """The PyTorch side's Config: the tlres cell, with its own pretrained weights if any."""
    if init == "tlres":
        if cell.arch == "resnet50":
            raise TlresError("--arch resnet50 (Keras' ResNet v1) has no PyTorch twin to share initial "
                             "weights with: use --arch resnet50_v1_5, or --init own")
        if torch_weights:
            raise TlresError("--torch-weights goes with --init own: with --init tlres the PyTorch "
                             "side starts from tlres' own initial weights, pretrained backbone included")
        return cell
    if cell.weights in ("imagenet", "none"):
        if torch_weights:
            raise TlresError("--torch-weights goes with --weights RUN_DIR|FILE (the tlres side's "
                             "own pretraining); here --weights is " + cell.weights)
        return cell
    if not torch_weights:
        raise TlresError(f"--weights {cell.weights}: the PyTorch side cannot load Keras' weights "
                         "(ResNet v1 vs v1.5); give --torch-weights, a PyTorch reference run "
                         "pretrained the same way")
    return cell.replace(weights=torch_weights)


def initial_weights(out, cell, seeds, base_seed):
    """Per seed, tlres' initial model for `cell` (as its runner builds it: `tlres.model.build` with
    that seed), head included, as a PyTorch state dict in OUT/init/seed<k>.safetensors."""
    import torch  # noqa: F401  before JAX runs: torch/torchvision imported after it can crash (triton)
    import torchvision  # noqa: F401

    ds = data.load(cell.data, cell.data_dir, cell.image_size, cell.test_split, cell.skip_bad_images)
    os.makedirs(os.path.join(out, "init"), exist_ok=True)
    paths = []
    for k in range(seeds):
        c = cell.replace(seed=base_seed + k)
        train.setup_engine(c)
        path = os.path.join(out, "init", f"seed{k}.safetensors")
        convert.save_state_dict(convert.model_to_torch(model.build(ds.num_classes, c)), path)
        paths.append(path)
    return paths


def torch_side(out, cell, seeds, base_seed, device, draws="torch", inits=None):
    dirs = []
    for k in range(seeds):
        run_dir = os.path.join(out, "pytorch", "improved", f"seed{k}")
        c = cell.replace(seed=base_seed + k, out=run_dir)
        init = inits[k] if inits else None
        sha = convert.file_sha256(init) if init else None
        if not rundir.finished_with(run_dir, c, reference={"draws": draws, "init_sha256": sha}):
            if os.path.exists(run_dir):
                shutil.rmtree(run_dir)
            print(f"{PROG}: PyTorch seed {base_seed + k} -> {run_dir}", flush=True)
            ref.run(c, device=device, draws=draws, init=init)
        else:
            print(f"{PROG}: reusing finished PyTorch run {run_dir}", flush=True)
        dirs.append(run_dir)
    return dirs


def main(argv=None, prog=PROG):
    argv = sys.argv[1:] if argv is None else argv
    args, overrides = parse(argv, prog)
    return cli.guarded(prog, args.debug, lambda: _main(args, overrides, argv))


def _main(args, overrides, argv):
    cells = ablation.cells(**overrides)
    if "improved" not in cells:
        raise TlresError("these overrides make the improved cell equal the baseline; nothing to check")
    cell = cells["improved"]
    base_seed = overrides.get("seed", 0)
    grid = args.tlres_grid or os.path.join(args.out, "keras-jax")
    os.makedirs(args.out, exist_ok=True)
    tcell = torch_cell(cell, args.torch_weights, args.init)
    inits = initial_weights(args.out, cell, args.seeds, base_seed) if args.init == "tlres" else None
    torch_dirs = torch_side(args.out, tcell, args.seeds, base_seed, args.device, args.draws, inits)
    if args.torch_only:
        return 0
    if args.no_train_tlres:
        tlres_dirs = [d for k in range(args.seeds)
                      for d in [os.path.join(grid, "improved", f"seed{k}")]
                      if rundir.finished_with(d, cell.replace(seed=base_seed + k, out=d))]
        if not tlres_dirs:
            raise TlresError(f"--tlres-grid {grid}: no finished improved run of this config yet")
    else:
        tlres_dirs = ablation.run_grid(grid, seeds=args.seeds, names=["improved"], **overrides)[0]["improved"]
    sides = [("improved [keras-jax]", [results.from_run_dir(d) for d in tlres_dirs]),
             ("improved [pytorch]", [results.from_run_dir(d) for d in torch_dirs])]
    report = compare.compare(sides)
    print(compare.text(report), end="")
    devices = "; ".join(f"{label}: {_device(runs[0])}" for label, runs in sides)
    setup = (f"Data: {cell.data}; config: the improved preset with "
             + ", ".join(f"{k}={v}" for k, v in overrides.items())
             + (f"; PyTorch side weights={args.torch_weights}" if args.torch_weights else "")
             + ("; both frameworks start each seed from the same weights (tlres' initial model, "
                "converted)" if args.init == "tlres" else "; each framework initialises its own model")
             + ("; both train on tlres' batches (same order, flips and crops)" if args.draws == "tlres"
                else "; each framework draws its own augmentation")
             + f"; seeds {base_seed}..{base_seed + args.seeds - 1}. Devices: {devices}.")
    head = [f"# Cross-framework check ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
            f"`{PROG} {' '.join(argv)}`", "", setup, ""]
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write("\n".join(head) + "\n" + compare.markdown(report))
    compare.plot(sides, os.path.join(args.out, "compare.png"))
    print(f"{PROG}: wrote {os.path.join(args.out, 'compare.md')} and compare.png", flush=True)
    if args.readme:
        rel = os.path.relpath(args.out, os.path.dirname(os.path.abspath(args.readme)))
        section = "\n".join([
            f"_Generated by `{PROG} {' '.join(argv)}` on {time.strftime('%Y-%m-%d')}; "
            "do not edit by hand._", "", setup, "", compare.markdown(report, confusion=False),
            f"Per-seed confusion-matrix differences: [{rel}/compare.md]({rel}/compare.md).", "",
            f"![accuracy and loss curves, both frameworks]({rel}/compare.png)", ""])
        report_lib.update_readme(args.readme, section, *report_lib.markers("crosscheck", args.section))
        print(f"{PROG}: README section in {args.readme}", flush=True)
    return 0


def _device(result):
    d = result.get("device")
    if isinstance(d, dict):
        kind = d.get("kind") if d.get("kind") != d.get("platform") else d.get("host")
        return " ".join(str(v) for v in (d.get("platform"), kind) if v)
    return str(d)


if __name__ == "__main__":
    sys.exit(main())
