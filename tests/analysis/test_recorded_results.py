"""The recorded digits comparison (experiments/results/digits): README generated from it, and its claims.

These runs are the real ResNet50 grid (`tlres ablation ... --data digits`, see README
"Results on digits") and the PyTorch reference runs of its improved cell; retraining them takes
over an hour on a 2-core CPU, so CI checks the recorded run files instead:

* each run's files agree with each other and with the data: the labels in predictions.csv are
  digits' test split index by index, and accuracy and confusion matrix recompute from them;
* each README section between markers is, whole, what the command named in it makes of these
  files (the date aside), and so are the recorded summary and comparison files;
* every number README states about them outside the markers recomputes from the files, and each
  claim holds on its Welch interval (a difference called a gain or a loss excludes 0; one whose
  interval includes 0 is said to).
"""

import csv
import glob
import json
import os
import shutil

import numpy as np
import pytest

from generated import block as _block, command as _command, undated as _undated
from tlres.analysis import report
from tlres.core import stats
from tlres.run import rundir
from tlres.commands import report as report_cmd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIGITS = os.path.join(ROOT, "experiments", "results", "digits")
RUNS = os.path.join(DIGITS, "runs")
CROSS = os.path.join(DIGITS, "crosscheck")

pytestmark = pytest.mark.skipif(not os.path.isdir(RUNS), reason="no recorded digits grid")


def _readme():
    """docs/results.md, where the digits grid's section and the cross-framework prose are."""
    with open(os.path.join(ROOT, "docs", "results.md")) as f:
        return f.read()


def _acc(cell):
    return np.array([json.load(open(p))["accuracy"]
                     for p in sorted(glob.glob(os.path.join(RUNS, cell, "seed*", "metrics.json")))])


def _pts(v):
    """A difference in points as README writes it: sign always, U+2212 for minus."""
    return f"{v * 100:+.2f}".replace("-", "\u2212")


def _welch(a, b):
    from scipy import stats

    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    return a.mean() - b.mean(), ci.low, ci.high


def _run_dirs():
    dirs = sorted(glob.glob(os.path.join(RUNS, "*", "seed*")))
    if os.path.isdir(CROSS):
        dirs += sorted(glob.glob(os.path.join(CROSS, "pytorch", "improved", "seed*")))
    return dirs


def test_every_recorded_run_recomputes_from_its_predictions_on_digits_test_split():
    from tlres.data import loaders as data

    y_test = data.load("digits").y_test
    dirs = _run_dirs()
    assert len(dirs) == 24 + 3 * os.path.isdir(CROSS)
    for d in dirs:
        m = json.load(open(os.path.join(d, "metrics.json")))
        rows = list(csv.DictReader(open(os.path.join(d, "predictions.csv"))))
        index = [int(r["index"]) for r in rows]
        labels = np.array([int(r["label"]) for r in rows])
        preds = np.array([int(r["prediction"]) for r in rows])
        assert index == list(range(360)), d
        np.testing.assert_array_equal(labels, y_test, err_msg=d)  # tlres' split, index by index
        cm = np.zeros((10, 10), int)
        np.add.at(cm, (labels, preds), 1)
        assert cm.tolist() == m["confusion_matrix"], d
        assert m["num_test"] == 360 and m["correct"] == int((labels == preds).sum()), d
        assert m["accuracy"] == m["correct"] / 360, d  # the same float64 division
        per_class = cm.diagonal() / cm.sum(1)  # float64 ratios and their mean: a few ulps apart
        assert m["per_class_accuracy"] == pytest.approx(per_class.tolist(), rel=1e-12), d
        assert m["mean_class_accuracy"] == pytest.approx(per_class.mean(), rel=1e-12), d
        cfg = json.load(open(os.path.join(d, "config.json")))
        assert cfg["config"]["data"] == "digits" and cfg["dataset"]["num_test"] == 360, d


def _layout(tmp_path):
    """README.md and the recorded files where the commands in README expect them, under tmp_path:
    the runs are linked (only read), README and the comparison's directory are copies (written)."""
    (tmp_path / "experiments" / "results" / "digits").mkdir(parents=True)
    os.symlink(RUNS, tmp_path / "experiments" / "results" / "digits" / "runs")
    if os.path.isdir(CROSS):
        shutil.copytree(CROSS, tmp_path / "experiments" / "results" / "digits" / "crosscheck")
    (tmp_path / "docs").mkdir()
    shutil.copy(os.path.join(ROOT, "docs", "results.md"), tmp_path / "docs" / "results.md")
    shutil.copy(os.path.join(ROOT, "docs", "pytorch.md"), tmp_path / "docs" / "pytorch.md")
    return tmp_path


def test_readme_report_section_is_what_its_command_makes_of_the_recorded_runs(tmp_path, monkeypatch):
    block = _block(_readme(), report.BEGIN, report.END)
    argv = _command(block, "report")
    assert argv[0] == "experiments/results/digits/runs" and argv[argv.index("--readme") + 1] == "docs/results.md"
    monkeypatch.chdir(_layout(tmp_path))
    assert report_cmd.main(argv) == 0
    made = _block((tmp_path / "docs" / "results.md").read_text(), report.BEGIN, report.END)
    assert _undated(made) == _undated(block)  # the whole section: every line, not just the table
    out = tmp_path / argv[argv.index("--out") + 1]
    for name in ("summary.md", "summary.csv"):  # and the recorded files are that same output
        with open(os.path.join(DIGITS, name)) as f:
            assert _undated(f.read()) == _undated((out / name).read_text()), name
    assert "Data: **digits (1437 train / 360 test images)**" in block


@pytest.mark.skipif(not os.path.isdir(CROSS), reason="no recorded cross-framework runs")
def test_crosscheck_section_is_what_its_command_makes_of_the_recorded_runs(tmp_path, monkeypatch):
    from tlres.commands import crosscheck as crosscheck_cmd
    from tlres.reference import crosscheck

    markers = report.markers("crosscheck", "v1")  # Keras' v1 against torchvision's v1.5
    with open(os.path.join(ROOT, "docs", "pytorch.md")) as f:
        block = _block(f.read(), *markers)
    argv = _command(block, "crosscheck")
    assert argv[argv.index("--readme") + 1] == "docs/pytorch.md"
    assert "--no-train-tlres" in argv  # compares the recorded runs, trains none

    def recorded_torch_side(out, cell, seeds, base_seed, device, draws, inits):  # reuse, never train
        assert inits is None  # Keras' v1 against torchvision's v1.5: each initialises its own
        dirs = [os.path.join(out, "pytorch", "improved", f"seed{k}") for k in range(seeds)]
        for k, d in enumerate(dirs):
            assert rundir.finished_with(d, cell.replace(seed=base_seed + k, out=d), reference={"draws": draws}), d
        return dirs

    monkeypatch.setattr(crosscheck, "torch_side", recorded_torch_side)
    monkeypatch.chdir(_layout(tmp_path))
    assert crosscheck_cmd.main(argv) == 0
    made = _block((tmp_path / "docs" / "pytorch.md").read_text(), *markers)
    assert _undated(made) == _undated(block)
    out = tmp_path / argv[argv.index("--out") + 1]
    with open(os.path.join(CROSS, "compare.md")) as f:
        assert _undated(f.read()) == _undated((out / "compare.md").read_text())


def test_smoothing_interaction_recomputes_by_hand_from_the_recorded_runs():
    """(improved - improved-smoothing) - (baseline+smoothing - baseline) over the recorded seeds,
    with its Welch-Satterthwaite interval written out here, is the generated bullet's."""
    from scipy import stats as sps

    cells = ("improved", "improved-smoothing", "baseline+smoothing", "baseline")
    acc = [_acc(c) for c in cells]
    assert all(len(a) == 3 for a in acc)
    est = (acc[0].mean() - acc[1].mean()) - (acc[2].mean() - acc[3].mean())
    v = [a.var(ddof=1) / 3 for a in acc]
    df = sum(v) ** 2 / sum(x ** 2 / 2 for x in v)
    half = sps.t.ppf(0.975, df) * np.sqrt(sum(v))
    assert f"{est * 100:+.2f} [{(est - half) * 100:+.2f}, {(est + half) * 100:+.2f}]" == "-4.72 [-7.40, -2.05]"
    line = next(x for x in _readme().splitlines() if x.startswith("* Label smoothing, interaction"))
    assert f"{est * 100:+.2f} points, 95% [{(est - half) * 100:+.2f}, {(est + half) * 100:+.2f}]" in line


@pytest.mark.skipif(not os.path.isdir(CROSS), reason="no recorded cross-framework runs")
def test_the_stated_crosscheck_numbers_recompute():
    from tlres.analysis import results

    keras_side = sorted(results.load(os.path.join(RUNS, "improved")), key=lambda r: r["config"]["seed"])
    torch_side = sorted(results.load(os.path.join(CROSS, "pytorch", "improved")),
                        key=lambda r: r["config"]["seed"])
    assert [r["config"]["seed"] for r in keras_side] == [r["config"]["seed"] for r in torch_side] == [0, 1, 2]
    for k, t in zip(keras_side, torch_side):  # one Config, both sides, the same test split
        assert {**k["config"], "out": None} == {**t["config"], "out": None}
        assert k["predictions"]["label"] == t["predictions"]["label"]
    ka = np.array([r["metrics"]["accuracy"] for r in keras_side])
    ta = np.array([r["metrics"]["accuracy"] for r in torch_side])
    text = " ".join(_readme().split())
    assert f"has the higher mean ({ta.mean() * 100:.1f}% vs {ka.mean() * 100:.1f}%)" in text
    _, lo, hi = _welch(ta, ka)
    assert lo < 0 < hi and "but the Welch interval over seeds includes 0" in text
    p = []
    for k, t in zip(keras_side, torch_side):
        labels = np.array(t["predictions"]["label"])
        only_torch, only_keras, pv = stats.mcnemar_exact(
            np.array(t["predictions"]["prediction"]) == labels, np.array(k["predictions"]["prediction"]) == labels)
        p.append((only_torch > only_keras, pv))
    assert "gives p = 1 for seed 0 and p ≈ 0.03 for seeds 1 and 2, each unadjusted" in text
    assert all(better and pv < 0.05 and round(pv, 2) == 0.03 for better, pv in p[1:]), p
    assert p[0][1] == 1.0, p
    ranked = sorted(pv for _, pv in p)  # Holm: the i-th smallest times (m - i), running maximum
    holm = [min(1.0, max((len(ranked) - j) * ranked[j] for j in range(i + 1))) for i in range(len(ranked))]
    assert min(holm) >= 0.05 and "Holm's adjustment leaves none below 0.05" in text, holm


def test_recorded_grid_is_the_digits_config_one_seed_per_run():
    from tlres.analysis import results

    groups = results.group(results.load(RUNS))
    assert len(groups) == 8 and all(len(v) == 3 for v in groups.values()), {g: len(v) for g, v in groups.items()}
    for runs in groups.values():  # same data, same length, one seed per run
        cfgs = [r["config"] for r in runs]
        assert {c["data"] for c in cfgs} == {"digits"} and sorted(c["seed"] for c in cfgs) == [0, 1, 2]
        assert {c["arch"] for c in cfgs} == {"resnet50"} and {c["weights"] for c in cfgs} == {"none"}
        assert {c["epochs"] for c in cfgs} == {4}
