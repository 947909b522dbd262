"""The recorded digits comparison (experiments/results/digits): README generated from it, and its claims.

These runs are the real ResNet50 grid (`python -m tlres.ablation ... --data digits`, see README
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
from tlres import report, rundir, stats
from tlres.commands import report as report_cmd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "experiments", "results", "digits")
RUNS = os.path.join(DIGITS, "runs")
CROSS = os.path.join(DIGITS, "crosscheck")

pytestmark = pytest.mark.skipif(not os.path.isdir(RUNS), reason="no recorded digits grid")


def _readme():
    with open(os.path.join(ROOT, "README.md")) as f:
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
    from tlres import data

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
    shutil.copy(os.path.join(ROOT, "README.md"), tmp_path / "README.md")
    (tmp_path / "docs").mkdir()
    shutil.copy(os.path.join(ROOT, "docs", "pytorch.md"), tmp_path / "docs" / "pytorch.md")
    return tmp_path


def test_readme_report_section_is_what_its_command_makes_of_the_recorded_runs(tmp_path, monkeypatch):
    block = _block(_readme(), report.BEGIN, report.END)
    argv = _command(block, "tlres.report")
    assert argv[0] == "experiments/results/digits/runs" and "--readme" in argv
    monkeypatch.chdir(_layout(tmp_path))
    assert report_cmd.main(argv) == 0
    made = _block((tmp_path / "README.md").read_text(), report.BEGIN, report.END)
    assert _undated(made) == _undated(block)  # the whole section: every line, not just the table
    out = tmp_path / argv[argv.index("--out") + 1]
    for name in ("summary.md", "summary.csv"):  # and the recorded files are that same output
        with open(os.path.join(DIGITS, name)) as f:
            assert _undated(f.read()) == _undated((out / name).read_text()), name
    assert "Data: **digits (1437 train / 360 test images)**" in block


@pytest.mark.skipif(not os.path.isdir(CROSS), reason="no recorded cross-framework runs")
def test_crosscheck_section_is_what_its_command_makes_of_the_recorded_runs(tmp_path, monkeypatch):
    from tlres.commands import crosscheck as crosscheck_cmd
    from tlres.experiments import crosscheck

    markers = report.markers("crosscheck", "v1")  # Keras' v1 against torchvision's v1.5
    with open(os.path.join(ROOT, "docs", "pytorch.md")) as f:
        block = _block(f.read(), *markers)
    argv = _command(block, "tlres.experiments.crosscheck")
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


def _bullet(text, title):
    """The README bullet that starts with **title**, as one line."""
    start = text.index(f"* **{title}**")
    end = text.find("\n* ", start + 1)
    end = text.find("\n\n", start) if end < 0 else min(end, text.find("\n\n", start))
    return " ".join(text[start:end].split())


# (bullet title, cell, reference, what the bullet says of the difference): "< 0" and "> 0" are
# claims of a loss or a gain, which the interval must bear out; "includes 0" is said in words.
CLAIMS = [
    ("The improved recipe without transfer is worse than the baseline", "improved", "baseline", "< 0"),
    ("Augmentation (pad-crop) is what costs", "improved-augment", "improved", "> 0"),
    ("Augmentation (pad-crop) is what costs", "baseline+augment", "baseline", "includes 0"),
    ("Label smoothing interacts with it", "improved-smoothing", "improved", "> 0"),
    ("Label smoothing interacts with it", "baseline+smoothing", "baseline", "includes 0"),
    ("Cosine annealing is not shown to help", "baseline+cosine", "baseline", "includes 0"),
    ("Cosine annealing is not shown to help", "improved-cosine", "improved", "includes 0"),
]


@pytest.mark.parametrize("title,cell,reference,sign", CLAIMS, ids=[c[1] for c in CLAIMS])
def test_each_stated_difference_recomputes_and_its_wording_matches_its_interval(title, cell, reference, sign):
    d, lo, hi = _welch(_acc(cell), _acc(reference))
    text = _bullet(_readme(), title)
    assert _pts(d) in text and f"[{_pts(lo)}, {_pts(hi)}]" in text, (cell, _pts(d), _pts(lo), _pts(hi), text)
    if sign == "< 0":
        assert hi < 0, (cell, lo, hi)
    elif sign == "> 0":
        assert lo > 0, (cell, lo, hi)
    else:
        assert lo < 0 < hi, (cell, lo, hi)
        assert "includes 0" in text, text


def test_the_other_stated_numbers_recompute():
    text = _readme()
    base, imp, cos = _acc("baseline"), _acc("improved"), _acc("improved-cosine")
    first = _bullet(text, CLAIMS[0][0])
    assert (f"{imp.mean() * 100:.2f}% ± {imp.std(ddof=1) * 100:.2f} vs "
            f"{base.mean() * 100:.2f}% ± {base.std(ddof=1) * 100:.2f} over 3 seeds") in first
    assert imp.mean() < base.mean() - max(base.std(ddof=1), imp.std(ddof=1))  # "by more than ... spread"
    cosine = _bullet(text, CLAIMS[-1][0])
    assert f"erratic ({cos.min() * 100:.1f}-{cos.max() * 100:.1f}%" in cosine
    assert f"against {imp.min() * 100:.1f}-{imp.max() * 100:.1f}% with it" in cosine
    assert cos.std(ddof=1) > 3 * imp.std(ddof=1)  # erratic: a far wider spread than with it
    # the grid's size and time: 8 cells x 3 seeds, "about N minutes" each, to the half minute
    status = [json.load(open(p)) for p in glob.glob(os.path.join(RUNS, "*", "seed*", "status.json"))]
    minutes = round(np.mean([s["total_seconds"] for s in status]) / 60 * 2) / 2
    assert len(status) == 24 and f"8 cells x 3 seeds, 24\nResNet50 runs of about {minutes:g} minutes" in text


@pytest.mark.skipif(not os.path.isdir(CROSS), reason="no recorded cross-framework runs")
def test_the_stated_crosscheck_numbers_recompute():
    from tlres import results

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
    assert f"reaches a higher mean ({ta.mean() * 100:.1f}% vs {ka.mean() * 100:.1f}%)" in text
    _, lo, hi = _welch(ta, ka)
    assert lo < 0 < hi and "but the Welch interval over seeds includes 0" in text
    p = []
    for k, t in zip(keras_side, torch_side):
        labels = np.array(t["predictions"]["label"])
        only_torch, only_keras, pv = stats.mcnemar_exact(
            np.array(t["predictions"]["prediction"]) == labels, np.array(k["predictions"]["prediction"]) == labels)
        p.append((only_torch > only_keras, pv))
    assert "McNemar finds the PyTorch model better for seeds 1 and 2 (p ≈ 0.03)" in text
    assert all(better and pv < 0.05 and round(pv, 2) == 0.03 for better, pv in p[1:]), p
    assert "and not for seed 0 (p = 1)" in text and p[0][1] == 1.0, p


def test_recorded_grid_is_the_digits_config_one_seed_per_run():
    from tlres import results

    groups = results.group(results.load(RUNS))
    assert len(groups) == 8 and all(len(v) == 3 for v in groups.values()), {g: len(v) for g, v in groups.items()}
    for runs in groups.values():  # same data, same length, one seed per run
        cfgs = [r["config"] for r in runs]
        assert {c["data"] for c in cfgs} == {"digits"} and sorted(c["seed"] for c in cfgs) == [0, 1, 2]
        assert {c["arch"] for c in cfgs} == {"resnet50"} and {c["weights"] for c in cfgs} == {"none"}
        assert {c["epochs"] for c in cfgs} == {4}
