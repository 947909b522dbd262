"""End-to-end plumbing of the PyTorch reference runner on a few dozen digits images."""

import csv
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")


def test_tiny_reference_run_writes_tlres_files(tmp_path):
    from tlres import data
    from tlres.reference.torch import main

    out = main(["--data", "digits", "--arch", "tiny", "--weights", "none", "--epochs", "2",
                "--limit-train", "64", "--limit-test", "30", "--device", "cpu", "--out", str(tmp_path)])
    m = json.loads((tmp_path / "metrics.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    hist = list(csv.DictReader(open(tmp_path / "history.csv")))
    labels = data.load("digits", None, 32).y_test[:30]
    assert out == str(tmp_path) and m["num_test"] == 30 and len(rows) == 30
    # same test split as tlres: labels in predictions.csv are tlres.data's, index by index
    np.testing.assert_array_equal([int(r["label"]) for r in rows], labels)
    assert m["correct"] == sum(r["label"] == r["prediction"] for r in rows)
    # CosineAnnealingLR(T_max=2) stepped per epoch: 0.01 then 0.005
    assert [float(h["lr"]) for h in hist] == pytest.approx([0.01, 0.005])
