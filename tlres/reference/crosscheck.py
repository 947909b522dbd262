"""Cross-framework check: the same Config and seeds in tlres (Keras/JAX) and the PyTorch reference.

    tlres crosscheck --seeds 3 --out runs/crosscheck [tlres flags...]

The improved cell with the digits overrides (`get_config(runlocal=True, use="grid")`), by default the same network from the same start
on the same batches in both frameworks (`--arch resnet50_v1_5 --init tlres --draws tlres`);
tlres' side through the ablation grid, the PyTorch side through `tlres.reference.torch`,
finished runs reused; then OUT/compare.md and OUT/compare.png (`tlres.analysis.compare`).
What each flag does and what is left to differ: docs/pytorch.md#the-cross-framework-check.
"""

import os
import shutil
import time

from tlres.analysis import ablation, compare, results
from tlres.data import loaders as data
from tlres.net import convert, model
from tlres.run import rundir, train, writes
from tlres.analysis import report as report_lib
from tlres.reference import torch as ref
from tlres.core.errors import TlresError

PROG = "tlres crosscheck"
BEGIN, END = "<!-- tlres.crosscheck:begin -->", "<!-- tlres.crosscheck:end -->"  # unnamed section
FILES = ("compare.md", "compare.png")  # what `write` writes into OUT


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
    """Per seed, tlres' initial model for `cell` (as its runner builds it: `tlres.net.model.build` with
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


def run(out, overrides, seeds=3, tlres_grid=None, device=None, no_train_tlres=False, torch_only=False,
        readme=None, torch_weights=None, section=None, init="tlres", draws="tlres", command=PROG):
    """Train (or reuse) both sides of the improved cell under `overrides` for `seeds` seeds, compare
    them into OUT/compare.md and OUT/compare.png, and with `readme` write the section there;
    `command` is what the generated text says made it. Returns 0."""
    cells = ablation.cells(**overrides)
    if "improved" not in cells:
        raise TlresError("these overrides make the improved cell equal the baseline; nothing to check")
    cell = cells["improved"]
    base_seed = overrides.get("seed", 0)
    grid = tlres_grid or os.path.join(out, "keras-jax")
    tcell = torch_cell(cell, torch_weights, init)
    ref.check_options(tcell, draws)  # one line before anything is trained or written
    if torch_only:
        os.makedirs(out, exist_ok=True)
    else:
        writes.claim(out, FILES)  # before training: compare.md and .png are tlres' to replace
    inits = initial_weights(out, cell, seeds, base_seed) if init == "tlres" else None
    torch_dirs = torch_side(out, tcell, seeds, base_seed, device, draws, inits)
    if torch_only:
        return 0
    tlres_dirs = tlres_side(grid, cell, overrides, seeds, base_seed, no_train_tlres)
    sides = [("improved [keras-jax]", [results.from_run_dir(d) for d in tlres_dirs]),
             ("improved [pytorch]", [results.from_run_dir(d) for d in torch_dirs])]
    report = compare.compare(sides)
    print(compare.text(report), end="")
    devices = "; ".join(f"{label}: {_device(runs[0])}" for label, runs in sides)
    setup = (f"Data: {cell.data}; config: the improved preset with "
             + ", ".join(f"{k}={v}" for k, v in overrides.items())
             + (f"; PyTorch side weights={torch_weights}" if torch_weights else "")
             + ("; both frameworks start each seed from the same weights (tlres' initial model, "
                "converted)" if init == "tlres" else "; each framework initialises its own model")
             + ("; both train on tlres' batches (same order, flips and crops)" if draws == "tlres"
                else "; each framework draws its own augmentation")
             + own_definitions(cell)
             + f"; seeds {base_seed}..{base_seed + seeds - 1}. Devices: {devices}.")
    write(out, sides, report, setup, command, readme, section)
    return 0


def own_definitions(cell):
    """The setup's note on the options each library defines its own way (docs/options.md), or ""."""
    names = [n for n, on in (("RandAugment", cell.randaugment), ("MixUp", cell.mixup),
                             ("CutMix", cell.cutmix)) if on]
    if not names:
        return ""
    return (f"; {', '.join(names)}: Keras' layers on one side, torchvision's v2 transforms on the "
            "other, which differ in definition (docs/options.md)")


def tlres_side(grid, cell, overrides, seeds, base_seed, no_train_tlres):
    """The tlres side's run directories: trained (or reused) through the grid, or with
    `no_train_tlres` the finished ones of this config already in `grid`."""
    if not no_train_tlres:
        return ablation.run_grid(grid, seeds=seeds, names=["improved"], **overrides)[0]["improved"]
    dirs = [d for k in range(seeds) for d in [os.path.join(grid, "improved", f"seed{k}")]
            if rundir.finished_with(d, cell.replace(seed=base_seed + k, out=d))]
    if not dirs:
        raise TlresError(f"--tlres-grid {grid}: no finished improved run of this config yet")
    return dirs


def write(out, sides, report, setup, command, readme=None, section=None):
    """OUT/compare.md (headed by the time, `command` and `setup`), OUT/compare.png, and with
    `readme` the generated section there (between the crosscheck markers, or `section`'s)."""
    head = [f"# Cross-framework check ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
            f"`{command}`", "", setup, ""]
    writes.atomic_text(os.path.join(out, "compare.md"), "\n".join(head) + "\n" + compare.markdown(report))
    compare.plot(sides, os.path.join(out, "compare.png"))
    print(f"{PROG}: wrote {os.path.join(out, 'compare.md')} and compare.png", flush=True)
    if readme:
        rel = os.path.relpath(out, os.path.dirname(os.path.abspath(readme)))
        text = "\n".join([
            f"_Generated by `{command}` on {time.strftime('%Y-%m-%d')}; "
            "do not edit by hand._", "", setup, "", compare.markdown(report, confusion=False),
            f"Per-seed confusion-matrix differences: [{rel}/compare.md]({rel}/compare.md).", "",
            f"![accuracy and loss curves, both frameworks]({rel}/compare.png)", ""])
        report_lib.update_readme(readme, text, *report_lib.markers("crosscheck", section))
        print(f"{PROG}: README section in {readme}", flush=True)


def _device(result):
    d = result.get("device")
    if isinstance(d, dict):
        kind = d.get("kind") if d.get("kind") != d.get("platform") else d.get("host")
        return " ".join(str(v) for v in (d.get("platform"), kind) if v)
    return str(d)

