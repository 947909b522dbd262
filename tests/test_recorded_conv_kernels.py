"""The recorded kernel measurement (experiments/results/conv-kernels) and what
docs/reproducibility.md says of it: the summary is what `tlres compare` makes of the runs, and
every figure the docs quote is recomputed here from the runs' own files with numpy."""

import csv
import itertools
import json
import os
import statistics

import numpy as np

from tlres import compare
from tlres.config import COMPUTES, EXECUTION, halves

ROOT = os.path.join(os.path.dirname(__file__), "..")
RECORD = os.path.join(ROOT, "experiments", "results", "conv-kernels")
DOC = os.path.join(ROOT, "docs", "reproducibility.md")
KERNELS, SEEDS = ("matmul", "xla"), range(5)


def _run(kernel, seed):
    return os.path.join(RECORD, "runs", kernel, f"seed{seed}")


def _predictions(kernel, seed):
    with open(os.path.join(_run(kernel, seed), "predictions.csv")) as f:
        rows = list(csv.DictReader(f))
    return np.array([int(r["label"]) for r in rows]), np.array([int(r["prediction"]) for r in rows])


def test_the_runs_differ_in_the_kernel_and_the_seed_only():
    split = {(k, s): halves(json.load(open(os.path.join(_run(k, s), "config.json")))["config"])
             for k in KERNELS for s in SEEDS}
    for (k, s), h in split.items():
        assert h[EXECUTION]["conv"] == k and h[COMPUTES]["seed"] == s and h[COMPUTES]["preset"] == "quick"
        assert {**h[COMPUTES], "seed": 0} == {**split["matmul", 0][COMPUTES], "seed": 0}


def test_the_summary_is_what_compare_makes_of_the_runs():
    sides = [s for k in KERNELS for s in compare.sides_of(os.path.join(RECORD, "runs", k))]
    with open(os.path.join(RECORD, "summary.md")) as f:
        assert compare.markdown(compare.compare(sides)) == f.read()


def test_the_figures_the_docs_quote():
    with open(DOC) as f:
        doc = " ".join(f.read().split())
    acc = {k: [float(np.mean(np.equal(*_predictions(k, s)))) for s in SEEDS] for k in KERNELS}
    for k in KERNELS:  # predictions.csv against metrics.json: the same accuracy
        assert acc[k] == [json.load(open(os.path.join(_run(k, s), "metrics.json")))["accuracy"] for s in SEEDS]
    for k in KERNELS:
        assert f"{100 * statistics.mean(acc[k]):.2f}% ± {100 * statistics.stdev(acc[k]):.2f}%" in doc
    # Welch's interval, from its definition (scipy's t quantile)
    from scipy import stats as sps

    a, b = np.array(acc["xla"]), np.array(acc["matmul"])
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    d, half = a.mean() - b.mean(), sps.t.ppf(0.975, df) * np.sqrt(va + vb)
    assert f"{100 * d:+.2f} points [{100 * (d - half):+.2f}, {100 * (d + half):+.2f}]" in doc
    assert d - half < 0 < d + half  # "no difference between the kernels was found"
    same_seed = [np.mean(_predictions("matmul", s)[1] == _predictions("xla", s)[1]) for s in SEEDS]
    two_seeds = [np.mean(_predictions(k, s)[1] == _predictions(k, t)[1])
                 for k in KERNELS for s, t in itertools.combinations(SEEDS, 2)]
    for vals, n in ((same_seed, 5), (two_seeds, 20)):
        assert len(vals) == n
        assert (f"{100 * np.mean(vals):.2f}% ({100 * min(vals):.2f}-{100 * max(vals):.2f})") in doc
    assert "95.83% with one kernel and 94.44% with the other" in doc
    assert (acc["matmul"][0], acc["xla"][0]) == (345 / 360, 340 / 360)
