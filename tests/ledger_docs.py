"""The figures docs/*.md's prose states, each with the recorded file it comes from and how
(the same form as `ledger.LEDGER`, which holds README.md's). An entry whose compute returns a
list covers a table or a run of figures from one file, row by row, in the page's order."""
import csv
import json
import os
import re

from ledger import ROOT, _json

RESULTS = os.path.join("experiments", "results")


def _metrics(*run):
    return _json(RESULTS, *run, "metrics.json")


def _accuracies(folder):
    """Test accuracies (percent) of the runs `seed*` under experiments/results/`folder`, by seed."""
    path = os.path.join(ROOT, RESULTS, folder)
    seeds = sorted(d for d in os.listdir(path) if d.startswith("seed"))
    return [_metrics(folder, d)["accuracy"] * 100 for d in seeds]


def _n_test(folder):
    """The test-set size every run `seed*` under experiments/results/`folder` shares."""
    path = os.path.join(ROOT, RESULTS, folder)
    sizes = {_metrics(folder, d)["num_test"] for d in os.listdir(path) if d.startswith("seed")}
    return f"{sizes.pop():,}" if len(sizes) == 1 else f"differing sizes {sorted(sizes)}"


def _mean_sd(values):
    from tlres import stats

    s = stats.summary(values)
    return [f"{s['mean']:.2f}%", f"{s['sd']:.2f}%"]


def _welch(a, b):
    """'+d points' and '[lo, hi]' of mean(a) - mean(b), Welch's t over seeds."""
    from tlres import stats

    d, (lo, hi), _ = stats.welch_interval(a, b)
    return [f"{d:+.2f} points", f"[{lo:+.2f}, {hi:+.2f}]"]


def _constant(path, name):
    """The value a test file gives `name` (NAME = value at the start of a line)."""
    with open(os.path.join(ROOT, path)) as f:
        return re.search(rf"^{name} = ([\d.e+-]+)", f.read(), re.M).group(1)


PRECISION = "experiments/results/precision/runs/{float32,mixed_bfloat16}/seed*/metrics.json"


def _precision():
    f32, bf16 = _accuracies("precision/runs/float32"), _accuracies("precision/runs/mixed_bfloat16")
    n = _n_test("precision/runs/float32")
    return [f"{n} images", *_mean_sd(f32), *_mean_sd(bf16), "95%", *_welch(bf16, f32), f"{n} test images"]


LEDGER = {
    "docs/precision.md": {
        "the five-seed table": (PRECISION, _precision),
        "4x": ("tests/test_data_parallel.py: STEP32_FACTOR",
               lambda: f"{_constant('tests/test_data_parallel.py', 'STEP32_FACTOR')}x"),
    },
}
