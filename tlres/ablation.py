"""The ablation grid of issue #4 (cell definitions only, so far).

Cells: baseline, improved, each of the four changes alone added to the
baseline (`baseline+<change>`) and alone removed from the improved preset
(`improved-<change>`). Overrides (e.g. --data digits --epochs 1) apply to every
cell after the switch; an override of a switch field (e.g. --weights none)
wins, and cells that then equal another cell are dropped, so with
`--weights none` the transfer cells collapse into baseline/improved.

`run_grid` runs `<out>/<cell>/seed<k>/` through `tlres.train.run` (the one
runner), seed k = base seed + k. A run dir whose status.json says finished and
whose config.json holds the same config is reused; any other existing run dir
(running, failed, other config) is cleared and rerun.

NOT YET DONE: a `python -m tlres.ablation` command line.
"""

import dataclasses
import json
import os
import shutil

from tlres.config import BASELINE, IMPROVED

DIGITS = dict(data="digits", weights="none", flip=False, optimizer="adam", lr=1e-3,
              weight_decay=0.0, epochs=4)
"""Overrides for the offline comparisons on scikit-learn's digits (README "Results").

ImageNet weights are unavailable offline (so both cells start from random
weights); digits are not mirror-symmetric, so the flip is off and
augmentation means the pad-4 crop only; Adam at 1e-3 and 4 epochs are the
quick preset's, which learn ResNet50 from scratch here where SGD at 0.01 does
not. Everything else is the presets' own.
"""

CHANGES = {
    "transfer": "weights",
    "augment": "augment",
    "smoothing": "label_smoothing",
    "cosine": "schedule",
}


def cells(**overrides):
    """Ordered {cell name: Config}; duplicates (after overrides) dropped, first name kept."""
    raw = {"baseline": BASELINE, "improved": IMPROVED}
    for name, field in CHANGES.items():
        raw[f"baseline+{name}"] = BASELINE.replace(**{field: getattr(IMPROVED, field)})
    for name, field in CHANGES.items():
        raw[f"improved-{name}"] = IMPROVED.replace(**{field: getattr(BASELINE, field)})
    out, seen = {}, []
    for name, cfg in raw.items():
        cfg = cfg.replace(**overrides)
        key = cfg.replace(preset="")
        if key in seen:
            continue
        seen.append(key)
        out[name] = cfg.replace(preset=name.split("+")[0].split("-")[0])
    return out


def _finished_with(run_dir, cfg):
    try:
        with open(os.path.join(run_dir, "status.json")) as fh:
            if json.load(fh).get("state") != "finished":
                return False
        with open(os.path.join(run_dir, "config.json")) as fh:
            return json.load(fh)["config"] == json.loads(json.dumps(dataclasses.asdict(cfg)))
    except (OSError, ValueError, KeyError):
        return False


def run_grid(out, seeds=1, names=None, verbose=0, **overrides):
    """Run (or reuse) every cell x seed; returns {cell: [run dirs]} and the list of dirs trained."""
    from tlres import train

    grid = cells(**overrides)
    if names is not None:
        grid = {n: grid[n] for n in names if n in grid}
    base_seed = overrides.get("seed", 0)
    dirs, trained = {}, []
    for name, cfg in grid.items():
        for k in range(seeds):
            run_dir = os.path.join(out, name, f"seed{k}")
            c = cfg.replace(seed=base_seed + k, out=run_dir)
            if not _finished_with(run_dir, c):
                if os.path.exists(run_dir):
                    shutil.rmtree(run_dir)
                train.run(c, verbose=verbose)
                trained.append(run_dir)
            dirs.setdefault(name, []).append(run_dir)
    return dirs, trained
