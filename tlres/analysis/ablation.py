"""The ablation grid behind `tlres ablation --out DIR [--seeds N] [--cells ...] [runner flags]`.

Cells: baseline, improved, each of the four changes alone added to the baseline
(`baseline+<change>`) and alone removed from the improved preset (`improved-<change>`), and each
`--option` (`OPTIONS`) alone added to the improved preset (`improved+<option>`). Overrides (only
the flags given) apply to every cell after the switch; an override of a switch field (e.g.
--weights none) wins, and cells that then equal another are dropped. `run_grid` runs
`<out>/<cell>/seed<k>/` (seed k = base seed + k) through `tlres.run.train.run`. A finished run of
the same config is reused (`tlres.run.rundir.finished_with`); any other run dir tlres wrote is
cleared of the files its marker names and rerun, as `--overwrite` would; anything else stops the
grid before it trains (`tlres.run.rundir.check_out`). The command then reports it.
"""

import os

from tlres.net import weights as weights_lib
from tlres.run import rundir, train
from tlres.core.config import BASELINE, IMPROVED
from tlres.core.errors import TlresError

PROG = "tlres ablation"
CHANGES = {
    "transfer": "weights",
    "augment": "augment",
    "smoothing": "label_smoothing",
    "cosine": "schedule",
}

OPTIONS = {
    "warmup": ("warmup_epochs", 1),
    "ema": ("ema", 0.99),  # Keras' default ema_momentum
    "randaugment": ("randaugment", "2,9"),  # torchvision's RandAugment defaults
    "mixup": ("mixup", 0.2),  # Keras' MixUp default, torchvision's reference recipe
    "cutmix": ("cutmix", 1.0),  # Keras' CutMix default, torchvision's reference recipe
    "freeze": ("freeze_backbone_epochs", 1),
}
"""The options beyond the paper a grid can add to the improved preset: {name: (Config field,
value when `--option NAME` gives none)}."""


def cells(transfer_from=None, options=None, **overrides):
    """Ordered {cell name: Config}; duplicates (after overrides) dropped, first name kept.

    `transfer_from` is what "transfer on" loads: the improved preset's ImageNet
    weights when None, else a finished run directory, .keras or .weights.h5 file
    (a backbone pretrained offline), while "transfer off" stays random initialisation.
    `options`: {option name of `OPTIONS`: value}, each an `improved+<name>` cell.
    """
    improved = IMPROVED if transfer_from is None else IMPROVED.replace(weights=transfer_from)
    raw = {"baseline": BASELINE, "improved": improved}
    for name, field in CHANGES.items():
        raw[f"baseline+{name}"] = BASELINE.replace(**{field: getattr(improved, field)})
    for name, field in CHANGES.items():
        raw[f"improved-{name}"] = improved.replace(**{field: getattr(BASELINE, field)})
    for name, value in (options or {}).items():
        raw[f"improved+{name}"] = improved.replace(**{OPTIONS[name][0]: value})
    out, seen = {}, []
    for name, cfg in raw.items():
        cfg = cfg.replace(**overrides)
        key = cfg.replace(preset="")
        if key in seen:
            continue
        seen.append(key)
        out[name] = cfg.replace(preset=name.split("+")[0].split("-")[0])
    return out


def run_grid(out, seeds=1, names=None, verbose=0, transfer_from=None, options=None, **overrides):
    """Run (or reuse) every cell x seed; returns {cell: [run dirs]} and the list of dirs trained."""
    grid = cells(transfer_from, options, **overrides)
    if names is not None:
        grid = {n: grid[n] for n in names if n in grid}
    base_seed = overrides.get("seed", 0)
    todo = {}
    for name, cfg in grid.items():
        for k in range(seeds):
            run_dir = os.path.join(out, name, f"seed{k}")
            todo[run_dir] = (name, cfg.replace(seed=base_seed + k, out=run_dir))
    rerun = [d for d, (_, c) in todo.items() if not rundir.finished_with(d, c)]
    for run_dir in rerun:  # before training any: each is new, or holds only what tlres wrote
        rundir.check_out(run_dir, overwrite=True)
    dirs, trained = {}, []
    for run_dir, (name, c) in todo.items():
        if run_dir in rerun:
            train.run(c, verbose=verbose, overwrite=True)  # removes only what the marker names
            trained.append(run_dir)
        dirs.setdefault(name, []).append(run_dir)
    return dirs, trained


def check_weights(grid):
    """Fail before training anything when a cell needs weights that cannot be had."""
    for weights, arch in dict.fromkeys((c.weights, c.arch) for c in grid.values()):
        need = [n for n, c in grid.items() if (c.weights, c.arch) == (weights, arch)]
        problem = weights_lib.weights_unavailable(weights, arch)
        if problem:
            hint = (" (with --weights none the transfer cells collapse into the others; "
                    "--transfer-from takes a backbone you pretrained)" if weights == "imagenet" else "")
            raise TlresError(f"cells {', '.join(need)} need them: {problem}{hint}")

