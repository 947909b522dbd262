"""The ablation grid of issue #4 (cell definitions only, so far).

Cells: baseline, improved, each of the four changes alone added to the
baseline (`baseline+<change>`) and alone removed from the improved preset
(`improved-<change>`). Overrides (e.g. --data digits --epochs 1) apply to every
cell after the switch; an override of a switch field (e.g. --weights none)
wins, and cells that then equal another cell are dropped, so with
`--weights none` the transfer cells collapse into baseline/improved.

NOT YET DONE: running the grid (`<out>/<cell>/seed<k>/` via tlres.train.run,
with reuse of finished runs) and its command line.
"""

from tlres.config import BASELINE, IMPROVED

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
