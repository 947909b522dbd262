"""The README's first command, for real: ResNet50 on digits reaches its recorded level and writes every file.

The accuracy bar comes from the recorded runs of the same configuration: the digits grid's
`improved-augment` cell (experiments/results/digits/runs) is the quick preset's config, field for
field, except the preset's name and how it ran (`EXECUTION_FIELDS`: out, compile cache, the
convolution kernels, which compute the same function). A new run of it, on another CPU (whose
rounding acts like another seed) or with another seed, is predicted to reach at least
mean - t(0.995, n - 1) * sd * sqrt(1 + 1/n) of those n = 3 seeds with probability 99.5% (the
one-sided normal prediction bound, with Student's t since sd is estimated from 3 values):
94.72% - 9.92 * 0.48 * 1.155 = 89.2% for accuracy, 89.3% for mean per-class accuracy.
"""

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tlres.core.config import EXECUTION_FIELDS, QUICK
from tlres.run.rundir import recorded

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORDED = os.path.join(ROOT, "experiments", "results", "digits", "runs", "improved-augment")


def recorded_bar(key, q=0.995):
    """The one-sided q prediction bound for one new run, from the recorded runs of this config."""
    from scipy import stats

    runs = sorted(os.listdir(RECORDED))
    for seed_dir in runs:
        with open(os.path.join(RECORDED, seed_dir, "config.json")) as f:
            cfg = recorded(json.load(f)["config"])  # fields added since: their defaults
        same = {k: v for k, v in dataclasses.asdict(QUICK).items() if k not in EXECUTION_FIELDS + ("preset", "seed")}
        assert {k: cfg.get(k) for k in same} == same, seed_dir  # the quick preset's settings
    v = np.array([json.load(open(os.path.join(RECORDED, d, "metrics.json")))[key] for d in runs])
    n = len(v)
    return v.mean() - stats.t.ppf(q, n - 1) * v.std(ddof=1) * np.sqrt(1 + 1 / n)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick") / "run"
    r = subprocess.run([sys.executable, "-m", "tlres.experiments.improved", "--preset", "quick",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_the_bars_derive_from_the_recorded_runs_of_this_config():
    """What the docstring and docs/presets.md state, from the files: 89.2% and 89.3% (seeds 0-2 of the cell)."""
    assert round(recorded_bar("accuracy"), 3) == 0.892
    assert round(recorded_bar("mean_class_accuracy"), 3) == 0.893
    accs = [json.load(open(os.path.join(RECORDED, d, "metrics.json")))["accuracy"]
            for d in sorted(os.listdir(RECORDED))]
    with open(os.path.join(ROOT, "docs", "presets.md")) as f:  # "The quick preset"
        readme = " ".join(f.read().split())
    assert f"same function: {', '.join(f'{a * 100:.2f}%' for a in accs)})" in readme
    assert (f"at least {recorded_bar('accuracy') * 100:.1f}% test accuracy and "
            f"{recorded_bar('mean_class_accuracy') * 100:.1f}% mean per-class accuracy") in readme


@pytest.mark.slow
def test_quick_preset_reaches_its_recorded_level(quick_run):
    out, _ = quick_run
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_test"] == 360
    assert m["accuracy"] >= recorded_bar("accuracy"), m["accuracy"]
    assert m["mean_class_accuracy"] >= recorded_bar("mean_class_accuracy"), m["mean_class_accuracy"]


@pytest.mark.slow
def test_every_result_file_exists_and_parses(quick_run):
    out, r = quick_run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["preset"] == "quick" and cfg["config"]["data"] == "digits"
    import jax

    assert {"keras", "jax", "numpy"} <= set(cfg["versions"])
    assert cfg["device"]["platform"] == jax.devices()[0].platform  # cpu, or gpu on a GPU host
    assert json.loads((out / "status.json").read_text())["state"] == "finished"
    m = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "mean_class_accuracy", "per_class_accuracy", "loss", "confusion_matrix",
                "accuracy_ci95", "num_test"):
        assert key in m
    for png in ("accuracy.png", "loss.png", "confusion.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "test accuracy" in r.stdout


@pytest.mark.slow
def test_metrics_agree_with_predictions_and_history(quick_run):
    out, _ = quick_run
    m = json.loads((out / "metrics.json").read_text())
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    labels = np.array([int(r["label"]) for r in rows])
    preds = np.array([int(r["prediction"]) for r in rows])
    assert len(rows) == m["num_test"]
    # float64 ratios of the same counts, on both sides: pytest.approx's default (1e-6) is ulps-safe
    assert m["accuracy"] == pytest.approx(np.mean(labels == preds))
    cm = np.zeros((10, 10), int)
    np.add.at(cm, (labels, preds), 1)
    assert cm.tolist() == m["confusion_matrix"]
    per_class = [np.mean(preds[labels == c] == c) for c in range(10)]
    assert m["mean_class_accuracy"] == pytest.approx(np.mean(per_class))

    hist = list(csv.DictReader(open(out / "history.csv")))
    assert [int(h["epoch"]) for h in hist] == list(range(1, QUICK.epochs + 1))
    for t, h in enumerate(hist):  # eq. 14 per epoch, PyTorch's CosineAnnealingLR
        want = QUICK.lr_min + (QUICK.lr - QUICK.lr_min) * (1 + math.cos(math.pi * t / QUICK.epochs)) / 2
        # the rate is stored in the optimizer's float32 variable (<= 2**-24 relative) and
        # written with at least 6 significant digits (<= 5e-6): 1e-5 covers both
        assert float(h["lr"]) == pytest.approx(want, rel=1e-5)
    assert float(hist[-1]["val_accuracy"]) == pytest.approx(m["accuracy"])
