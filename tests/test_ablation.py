"""Ablation grid cells: each cell is baseline/improved with exactly one switch flipped."""

import dataclasses

import pytest

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


@pytest.mark.slow  # 5 tiny-arch runs: ~230 s on this shared 2-core machine (JAX compile per run)
def test_grid_runs_and_reuses_finished_cells(tmp_path):
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    npz = tmp_path / "d.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8),
             y_train=np.arange(32) % 2, x_test=rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8),
             y_test=np.arange(8) % 2)
    kw = dict(data=str(npz), arch="tiny", image_size=8, weights="none", epochs=1, batch_size=8)
    out = tmp_path / "grid"
    dirs, trained = ablation.run_grid(str(out), seeds=2, names=["baseline", "improved"], **kw)
    assert len(trained) == 4 and sorted(dirs) == ["baseline", "improved"]
    for d in trained:
        assert json.loads(open(f"{d}/status.json").read())["state"] == "finished"
    assert json.loads(open(f"{out}/improved/seed1/config.json").read())["config"]["seed"] == 1
    stamp = (out / "baseline" / "seed0" / "metrics.json").stat().st_mtime_ns
    # a failed run is cleared and rerun; finished ones are reused
    (out / "improved" / "seed1" / "status.json").write_text('{"state": "failed"}')
    _, trained2 = ablation.run_grid(str(out), seeds=2, names=["baseline", "improved"], **kw)
    assert trained2 == [str(out / "improved" / "seed1")]
    assert (out / "baseline" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
