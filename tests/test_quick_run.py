"""The README's first command, for real: ResNet50 on digits reaches >= 90% and writes every file."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tlres.config import QUICK

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick") / "run"
    r = subprocess.run([sys.executable, "-m", "tlres.experiments.improved", "--preset", "quick",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


@pytest.mark.slow
def test_quick_preset_reaches_90_percent(quick_run):
    out, _ = quick_run
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_test"] == 360
    assert m["accuracy"] >= 0.90, m["accuracy"]
    assert m["mean_class_accuracy"] >= 0.89


@pytest.mark.slow
def test_every_result_file_exists_and_parses(quick_run):
    out, r = quick_run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["preset"] == "quick" and cfg["config"]["data"] == "digits"
    assert {"keras", "jax", "numpy"} <= set(cfg["versions"]) and cfg["device"]["platform"] == "cpu"
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
        assert float(h["lr"]) == pytest.approx(want, rel=1e-5)
    assert float(hist[-1]["val_accuracy"]) == pytest.approx(m["accuracy"])
