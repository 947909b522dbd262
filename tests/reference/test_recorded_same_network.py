"""The recorded same-network comparisons, regenerated from their run files:

* trajectory parity (experiments/results/parity, docs/pytorch.md): the section is what
  `tlres parity` makes of the recorded per-step losses, and each row's bound is the one
  tlres.reference.parity defines;
* the cross-framework checks on one network from one start (digits: docs/pytorch.md; with
  transfer: docs/transfer.md): each section is what its command makes of the recorded runs,
  every PyTorch run started from recorded initial weights (sha256 in its config.json) on tlres'
  draws, and both sides are torchvision's ResNet50.

Retraining takes an hour or more on a 2-core CPU; CI checks the recorded files.
"""
import glob
import json
import os
import shutil

import pytest

from generated import block as _block, command as _command, undated
from tlres.analysis import ablation
from tlres.reference import parity
from tlres.run import rundir
from tlres.commands import crosscheck as crosscheck_cmd, parity as parity_cmd
from tlres.reference import crosscheck

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "experiments", "results")


def _doc(name):
    with open(os.path.join(ROOT, "docs", name)) as f:
        return f.read()


def _undated(text):
    return undated(text).strip()


def test_parity_section_is_what_the_command_makes_of_the_recorded_losses():
    from tlres.analysis import report

    block = _block(_doc("pytorch.md"), *report.markers("parity"))
    argv = _command(block, "parity")
    args, cfg, _ = parity_cmd.parse(argv)
    assert cfg.arch == "resnet50_v1_5" and args.steps >= 10 and args.seeds >= 3
    assert cfg.weights == "runs/pretrain-v15" and cfg.lr == 0.001  # fine-tuning the source, where training is stable longest
    out = os.path.join(ROOT, args.out)
    rows = {}
    for k in range(args.seeds):
        r = parity.read_csv(os.path.join(out, f"seed{k}.csv"))
        assert [x["step"] for x in r] == list(range(1, args.steps + 1))
        for x in r:  # the bound as tlres.reference.parity defines it, from the recorded probe gap
            assert x["bound"] == max(parity.BOUND_FACTOR * x["probe_gap"], parity.BOUND_FLOOR * abs(x["torch64"]))
        gaps = [x["probe_gap"] for x in r]
        assert gaps == sorted(gaps)  # a running maximum
        rows[cfg.seed + k] = r
    made = parity.summary(cfg, rows, f"tlres parity {' '.join(argv)}")
    assert _undated(block) == _undated(made + f"\n![per-step loss differences](../{args.out}/parity.png)")
    assert os.path.getsize(os.path.join(out, "parity.png")) > 1000
    with open(os.path.join(out, "summary.md")) as f:  # the recorded summary is that same output
        assert _undated(f.read()) == _undated(made)


SECTIONS = [("pytorch.md", "v1_5", os.path.join(RESULTS, "digits", "crosscheck-v1_5")),
            ("transfer.md", "transfer", os.path.join(RESULTS, "transfer", "crosscheck"))]


@pytest.mark.parametrize("doc,section,out", SECTIONS, ids=[s[1] for s in SECTIONS])
def test_crosscheck_section_is_what_its_command_makes_of_the_recorded_runs(doc, section, out, tmp_path,
                                                                          monkeypatch):
    from tlres.analysis import report

    text = _doc(doc)
    block = _block(text, *report.markers("crosscheck", section))
    argv = _command(block, "crosscheck")
    assert os.path.join(ROOT, argv[argv.index("--out") + 1]) == out
    assert "--arch" not in argv and "--init" not in argv and "--draws" not in argv  # the defaults
    args, overrides = crosscheck_cmd.parse(argv)
    assert overrides["arch"] == "resnet50_v1_5" and args.init == "tlres" and args.draws == "tlres"
    torch_dirs = sorted(glob.glob(os.path.join(out, "pytorch", "improved", "seed*")))
    assert len(torch_dirs) == args.seeds
    for d in torch_dirs:
        saved = json.load(open(os.path.join(d, "config.json")))
        assert saved["framework"] == "pytorch" and saved["config"]["arch"] == "resnet50_v1_5"
        assert saved["reference"]["draws"] == "tlres" and len(saved["reference"]["init_sha256"]) == 64

    def recorded_inits(out_, cell, seeds, base_seed):  # the weight files are not committed (~95 MB)
        return [os.path.join(out_, "init", f"seed{k}.safetensors") for k in range(seeds)]

    def recorded_torch_side(out_, cell, seeds, base_seed, device, draws, inits):  # reuse, never train
        dirs = [os.path.join(out_, "pytorch", "improved", f"seed{k}") for k in range(seeds)]
        for k, d in enumerate(dirs):
            sha = json.load(open(os.path.join(d, "config.json")))["reference"]["init_sha256"]
            assert rundir.finished_with(d, cell.replace(seed=base_seed + k, out=d),
                                        reference={"draws": draws, "init_sha256": sha}), d
        return dirs

    def recorded_grid(grid, seeds, names, **over):  # reuse, never train
        dirs = [os.path.join(grid, "improved", f"seed{k}") for k in range(seeds)]
        cell = ablation.cells(**over)["improved"]
        for k, d in enumerate(dirs):
            assert rundir.finished_with(d, cell.replace(seed=over.get("seed", 0) + k, out=d)), d
        return {"improved": dirs}, []

    monkeypatch.setattr(crosscheck, "initial_weights", recorded_inits)
    monkeypatch.setattr(crosscheck, "torch_side", recorded_torch_side)
    monkeypatch.setattr(ablation, "run_grid", recorded_grid)
    # the files where the command expects them, under tmp_path: the doc and the comparison's
    # directory are copies (the command writes them)
    rel = os.path.relpath(out, ROOT)
    shutil.copytree(out, tmp_path / rel)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / doc).write_text(text)
    monkeypatch.chdir(tmp_path)
    assert crosscheck_cmd.main(argv) == 0
    made = _block((tmp_path / "docs" / doc).read_text(), *report.markers("crosscheck", section))
    assert _undated(made) == _undated(block)
    with open(os.path.join(out, "compare.md")) as f:  # the recorded comparison file is that same output
        assert _undated(f.read()) == _undated((tmp_path / rel / "compare.md").read_text())


@pytest.mark.parametrize("doc,section,out", SECTIONS, ids=[s[1] for s in SECTIONS])
def test_every_run_recomputes_from_its_predictions(doc, section, out):
    """Each side's runs: metrics from predictions.csv, labels tlres' digits test split index by index."""
    import csv

    import numpy as np

    from tlres.data import loaders as data

    y_test = data.load("digits").y_test
    dirs = sorted(glob.glob(os.path.join(out, "keras-jax", "improved", "seed*")) +
                  glob.glob(os.path.join(out, "pytorch", "improved", "seed*")))
    assert len(dirs) == 6
    for d in dirs:
        m = json.load(open(os.path.join(d, "metrics.json")))
        rows = list(csv.DictReader(open(os.path.join(d, "predictions.csv"))))
        labels = np.array([int(r["label"]) for r in rows])
        preds = np.array([int(r["prediction"]) for r in rows])
        np.testing.assert_array_equal(labels, y_test, err_msg=d)
        assert m["correct"] == int((labels == preds).sum()) and m["accuracy"] == m["correct"] / 360, d
        cfg = json.load(open(os.path.join(d, "config.json")))["config"]
        assert cfg["arch"] == "resnet50_v1_5" and cfg["data"] == "digits", d


def test_from_scratch_parity_numbers_recompute():
    """The one recorded seed from random weights: docs/pytorch.md and its README quote these."""
    path = os.path.join(RESULTS, "parity-unstable", "from-scratch-seed0.csv")
    r = parity.read_csv(path)
    assert len(r) == 100
    rel = lambda x, k: abs(x[k] - x["torch64"]) / x["torch64"]  # noqa: E731
    first = (f"{rel(r[0], 'keras'):.1e}", f"{rel(r[0], 'torch32'):.1e}", f"{r[0]['bound'] / r[0]['torch64']:.1e}")
    assert first == ("6.8e-06", "4.0e-06", "2.8e-03")
    assert round(r[1]["probe_gap"] / r[1]["torch64"], 1) == 0.1  # "a tenth of the loss" at step 2
    assert max(x["probe_gap"] / x["torch64"] for x in r) > 1  # "later by more than the loss itself"
    for name in (os.path.join(ROOT, "docs", "pytorch.md"), os.path.join(RESULTS, "parity-unstable", "README.md")):
        text = " ".join(open(name).read().split())
        assert f"within {first[0]} and {first[1]} of the float64 loss" in text
        assert f"bound {first[2]}" in text


def _sides(out):
    from tlres.analysis import results

    def side(name):
        return sorted(results.load(os.path.join(out, name, "improved")), key=lambda r: r["config"]["seed"])

    return side("keras-jax"), side("pytorch")


def test_readme_states_what_the_transfer_crosscheck_shows():
    import numpy as np
    from scipy import stats as sps

    from tlres.core import stats

    keras_side, torch_side = _sides(SECTIONS[1][2])
    ka = np.array([r["metrics"]["accuracy"] for r in keras_side])
    ta = np.array([r["metrics"]["accuracy"] for r in torch_side])
    with open(os.path.join(ROOT, "docs", "results.md")) as f:
        text = " ".join(f.read().split())
    assert f"Keras and PyTorch both reach {ka.mean() * 100:.2f}% over 3 seeds" in text
    assert f"{ta.mean() * 100:.2f}" == f"{ka.mean() * 100:.2f}"
    ci = sps.ttest_ind(ta, ka, equal_var=False).confidence_interval(0.95)
    assert f"(difference {(ta.mean() - ka.mean()) * 100:+.2f} points [{ci.low * 100:+.2f}, {ci.high * 100:+.2f}])" in text
    ps, agree = [], []
    for k, t in zip(keras_side, torch_side):
        labels = np.array(t["predictions"]["label"])
        kp, tp = np.array(k["predictions"]["prediction"]), np.array(t["predictions"]["prediction"])
        ps.append(stats.mcnemar_exact(tp == labels, kp == labels)[2])
        agree.append((kp == tp).mean() * 100)
    assert all(p > 0.05 for p in ps)
    assert "(p = " + ", ".join(f"{p:.2g}" for p in ps) + ")" in text
    assert f"agree on {min(agree):.1f}-{max(agree):.1f}% of the test images" in text


def test_pretrained_at_0_01_parity_numbers_recompute():
    r = parity.read_csv(os.path.join(RESULTS, "parity-unstable", "pretrained-lr0.01-seed0.csv"))
    assert len(r) == 30
    start, top = f"{r[0]['torch64']:.2f}", f"{max(x['torch64'] for x in r):.2f}"
    step3 = (f"{r[2]['probe_gap'] / r[2]['torch64'] * 100:.1f}%", f"{r[2]['bound'] / r[2]['torch64'] * 100:.0f}%")
    for name in (os.path.join(ROOT, "docs", "pytorch.md"), os.path.join(RESULTS, "parity-unstable", "README.md")):
        text = " ".join(open(name).read().split())
        assert f"from {start} to {top}" in text, name
    text = " ".join(open(os.path.join(RESULTS, "parity-unstable", "README.md")).read().split())
    assert f"differ by {step3[0]} of the loss (bound {step3[1]})" in text


def test_readme_states_what_the_digits_check_and_parity_show():
    import numpy as np
    from scipy import stats as sps

    from tlres.core import stats

    keras_side, torch_side = _sides(SECTIONS[0][2])
    ka = np.array([r["metrics"]["accuracy"] for r in keras_side]) * 100
    ta = np.array([r["metrics"]["accuracy"] for r in torch_side]) * 100
    with open(os.path.join(ROOT, "docs", "results.md")) as f:
        text = " ".join(f.read().split())
    ci = sps.ttest_ind(ta, ka, equal_var=False).confidence_interval(0.95)
    assert (f"they reach {ka.mean():.2f}% and {ta.mean():.2f}% ({ta.mean() - ka.mean():+.2f} points "
            f"[{ci.low:+.2f}, {ci.high:+.2f}]; McNemar p = ") in text
    ps = []
    for k, t in zip(keras_side, torch_side):
        labels = np.array(t["predictions"]["label"])
        ps.append(stats.mcnemar_exact(np.array(t["predictions"]["prediction"]) == labels,
                                      np.array(k["predictions"]["prediction"]) == labels)[2])
    assert all(p > 0.05 for p in ps) and ("McNemar p = " + ", ".join(f"{p:.2g}" for p in ps) + ")") in text
    out = os.path.join(RESULTS, "parity")
    rows = [parity.read_csv(os.path.join(out, f"seed{k}.csv")) for k in range(3)]
    early = parity.EARLY
    worst = {k: max(max(parity.relative(r, k)[:early]) for r in rows) for k in ("keras", "torch32")}
    assert worst["keras"] < worst["torch32"]  # "closer than PyTorch's own float32"
    assert (f"stay within {worst['keras']:.1e} of PyTorch's float64 losses for the first {early} steps, "
            f"closer than PyTorch's own float32 ({worst['torch32']:.1e})") in text
