"""The recorded digits comparison (experiments/results/digits): README generated from it, and its claim.

These runs are the real ResNet50 grid (`python -m tlres.ablation ... --data digits`, see README
"Results on digits"); retraining them takes over an hour on a 2-core CPU, so CI checks the
recorded run files instead: that the README section is what the report command makes of them
(never typed by hand), and that the issue's claim holds on them.
"""

import os

import numpy as np
import pytest

from tlres import report, results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(ROOT, "experiments", "results", "digits", "runs")

pytestmark = pytest.mark.skipif(not os.path.isdir(RUNS), reason="no recorded digits grid")


def _table(text):
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_readme_section_is_the_report_of_the_recorded_runs():
    groups = results.group(results.load(RUNS))
    rows = report.summarize(groups) + report.summarize(results.group(results.paper()))
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    section = readme.split(report.BEGIN)[1].split(report.END)[0]
    assert _table(section) == _table(report.markdown_table(rows))
    assert "Data: **digits (1437 train / 360 test images)**" in section


def test_recorded_finding_improved_without_transfer_is_worse_than_baseline():
    """What README says of the recorded grid, checked against its files with scipy's Welch test.

    Issue 4 expected the improved recipe without ImageNet weights to be "not worse than the
    baseline by more than the seed spread" on digits. Measured over 3 seeds it is worse, by
    more than the spread, and Welch's 95% interval excludes 0; README reports that instead.
    """
    from scipy import stats

    groups = results.group(results.load(RUNS))
    base = np.array([r["metrics"]["accuracy"] for r in groups["baseline"]])
    imp = np.array([r["metrics"]["accuracy"] for r in groups["improved"]])
    assert len(base) == len(imp) == 3
    for g in ("baseline", "improved"):  # same data, same length, one seed per run
        cfgs = [r["config"] for r in groups[g]]
        assert {c["data"] for c in cfgs} == {"digits"} and len({c["seed"] for c in cfgs}) == len(cfgs)
        assert {c["arch"] for c in cfgs} == {"resnet50"} and {c["weights"] for c in cfgs} == {"none"}
        assert {c["epochs"] for c in cfgs} == {4}
    spread = max(base.std(ddof=1), imp.std(ddof=1))
    assert imp.mean() < base.mean() - spread, (imp, base)
    ci = stats.ttest_ind(imp, base, equal_var=False).confidence_interval(0.95)
    assert ci.high < 0, ci


def test_recorded_finding_removing_augmentation_or_smoothing_from_improved_helps():
    """README's ablation bullets: improved-augment and improved-smoothing beat improved (Welch)."""
    from scipy import stats

    groups = results.group(results.load(RUNS))
    acc = {g: np.array([r["metrics"]["accuracy"] for r in runs]) for g, runs in groups.items()}
    assert all(len(v) == 3 for v in acc.values()) and len(acc) == 8, {g: len(v) for g, v in acc.items()}
    for cell in ("improved-augment", "improved-smoothing"):
        ci = stats.ttest_ind(acc[cell], acc["improved"], equal_var=False).confidence_interval(0.95)
        assert ci.low > 0, (cell, ci)
    ci = stats.ttest_ind(acc["baseline+smoothing"], acc["baseline"], equal_var=False).confidence_interval(0.95)
    assert ci.low < 0 < ci.high, ci  # smoothing alone: neutral


CROSS = os.path.join(ROOT, "experiments", "results", "digits", "crosscheck")


@pytest.mark.skipif(not os.path.isdir(CROSS), reason="no recorded cross-framework runs")
def test_readme_crosscheck_section_is_the_comparison_of_the_recorded_runs():
    from tlres import compare
    from tlres.experiments import crosscheck

    keras_side = results.load(os.path.join(RUNS, "improved"))
    torch_side = results.load(os.path.join(CROSS, "pytorch", "improved"))
    assert len(keras_side) == len(torch_side) == 3
    assert {r["framework"]["name"] for r in torch_side} == {"pytorch"}
    assert {r["framework"]["name"] for r in keras_side} == {"keras-jax"}
    for k, t in zip(sorted(keras_side, key=lambda r: r["config"]["seed"]),
                    sorted(torch_side, key=lambda r: r["config"]["seed"])):  # one Config, both sides
        assert {**k["config"], "out": None} == {**t["config"], "out": None}
        assert k["predictions"]["label"] == t["predictions"]["label"]  # the same test split
    report = compare.compare([("improved [keras-jax]", keras_side), ("improved [pytorch]", torch_side)])
    with open(os.path.join(ROOT, "README.md")) as f:
        section = f.read().split(crosscheck.BEGIN)[1].split(crosscheck.END)[0]
    want = compare.markdown(report, confusion=False)
    assert [l for l in want.splitlines() if l.startswith(("| ", "* "))] == \
        [l for l in section.splitlines() if l.startswith(("| ", "* "))]
