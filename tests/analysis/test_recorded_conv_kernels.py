"""The recorded measurements behind the two halves of the settings (experiments/results/
conv-kernels: XLA's convolution against the matmul form; experiments/results/precision: float32
against mixed bfloat16) and what docs/reproducibility.md says of them: each summary is what
`tlres compare` makes of the runs, and every figure the docs quote is recomputed here from the
runs' own files with numpy and scipy."""

import csv
import itertools
import json
import os
import statistics

import numpy as np
import pytest

from tlres.analysis import compare
from tlres.core.config import COMPUTES, EXECUTION, halves

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
RESULTS = os.path.join(ROOT, "experiments", "results")
DOC = os.path.join(ROOT, "docs", "reproducibility.md")
SEEDS = range(5)
# record: (its folder, the two groups (first, second), the setting that differs, its half, values)
RECORDS = {
    "conv-kernels": (("matmul", "xla"), "conv", EXECUTION, ("matmul", "xla")),
    "precision": (("float32", "mixed_bfloat16"), "precision", COMPUTES, ("float32", "mixed_bfloat16")),
}


def _run(record, group, seed):
    return os.path.join(RESULTS, record, "runs", group, f"seed{seed}")


def _predictions(record, group, seed):
    with open(os.path.join(_run(record, group, seed), "predictions.csv")) as f:
        rows = list(csv.DictReader(f))
    return np.array([int(r["label"]) for r in rows]), np.array([int(r["prediction"]) for r in rows])


def _doc():
    with open(DOC) as f:
        return " ".join(f.read().split())


@pytest.mark.parametrize("record", RECORDS)
def test_the_runs_differ_in_one_setting_and_the_seed_only(record):
    groups, name, half, values = RECORDS[record]
    split = {(g, s): halves(json.load(open(os.path.join(_run(record, g, s), "config.json")))["config"])
             for g in groups for s in SEEDS}
    first = split[groups[0], 0]
    for (g, s), h in split.items():
        assert h[half][name] == values[groups.index(g)]
        assert h[COMPUTES]["seed"] == s and h[COMPUTES]["preset"] == "quick"
        for part in (COMPUTES, EXECUTION):
            assert {**h[part], "seed": 0, name: 0, "out": 0} == {**first[part], "seed": 0, name: 0, "out": 0}


@pytest.mark.parametrize("record", RECORDS)
def test_the_summary_is_what_compare_makes_of_the_runs(record):
    groups = RECORDS[record][0]
    sides = [s for g in groups for s in compare.sides_of(os.path.join(RESULTS, record, "runs", g))]
    with open(os.path.join(RESULTS, record, "summary.md")) as f:
        assert compare.markdown(compare.compare(sides)) == f.read()


@pytest.mark.parametrize("record", RECORDS)
def test_the_figures_the_docs_quote(record):
    from scipy import stats as sps

    doc = _doc()
    first, second = RECORDS[record][0]
    acc = {g: [float(np.mean(np.equal(*_predictions(record, g, s)))) for s in SEEDS] for g in (first, second)}
    for g in acc:  # predictions.csv against metrics.json: the same accuracy
        assert acc[g] == [json.load(open(os.path.join(_run(record, g, s), "metrics.json")))["accuracy"]
                          for s in SEEDS]
        assert f"{100 * statistics.mean(acc[g]):.2f}% ± {100 * statistics.stdev(acc[g]):.2f}%" in doc
    a, b = np.array(acc[second]), np.array(acc[first])  # Welch's interval, from its definition
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    d, half = a.mean() - b.mean(), sps.t.ppf(0.975, df) * np.sqrt(va + vb)
    assert f"{100 * d:+.2f} points [{100 * (d - half):+.2f}, {100 * (d + half):+.2f}]" in doc
    assert d - half < 0 < d + half  # "no difference ... was found"
    same_seed = [np.mean(_predictions(record, first, s)[1] == _predictions(record, second, s)[1]) for s in SEEDS]
    groups = (first, second) if record == "conv-kernels" else (second,)
    two_seeds = [np.mean(_predictions(record, g, s)[1] == _predictions(record, g, t)[1])
                 for g in groups for s, t in itertools.combinations(SEEDS, 2)]
    for vals, n in ((same_seed, 5), (two_seeds, 10 * len(groups))):
        assert len(vals) == n
        assert f"{100 * np.mean(vals):.2f}% ({100 * min(vals):.2f}-{100 * max(vals):.2f})" in doc
    if record == "conv-kernels":
        assert "95.83% with one kernel and 94.44% with the other" in doc
        assert (acc["matmul"][0], acc["xla"][0]) == (345 / 360, 340 / 360)
