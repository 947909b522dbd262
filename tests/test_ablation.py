"""Ablation grid cells: each cell is baseline/improved with exactly one switch flipped."""

import dataclasses

from tlres import ablation
from tlres.config import BASELINE, IMPROVED


def _diff(a, b):
    return {f.name for f in dataclasses.fields(a)
            if f.name != "preset" and getattr(a, f.name) != getattr(b, f.name)}


def test_grid_has_ten_cells_each_one_switch_from_its_parent():
    c = ablation.cells()
    assert len(c) == 10
    assert _diff(c["baseline"], BASELINE) == set() and _diff(c["improved"], IMPROVED) == set()
    assert _diff(c["baseline+augment"], BASELINE) == {"augment"} and c["baseline+augment"].augment
    assert _diff(c["improved-cosine"], IMPROVED) == {"schedule"}
    assert c["improved-cosine"].schedule == "constant"
    assert _diff(c["baseline+transfer"], BASELINE) == {"weights"}


def test_weights_none_override_collapses_transfer_cells():
    c = ablation.cells(weights="none", epochs=1)
    assert "baseline+transfer" not in c and "improved-transfer" not in c
    assert len(c) == 8 and all(cfg.epochs == 1 and cfg.weights == "none" for cfg in c.values())
