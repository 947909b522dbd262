"""`tlres compare` and `tlres results`: numbers checked against hand counts.

Every number here is float64 on both sides (ratios of counts, binomial sums, Welch's formula):
pytest.approx's default, 1e-6 relative, is ~1e9 ulps above their rounding and far below any slip
(b for c, n for n - 1, a wrong df) that moves them by >= 1e-3.
"""

import json
import math

import numpy as np
import pytest
from helpers import small_result

from tlres.analysis import compare, results
from tlres.core import stats
from tlres.commands import compare as compare_cmd, results as results_cmd


def _result(path, name, labels, preds, seed=0, framework="keras-jax", history=None):
    labels, preds = np.asarray(labels), np.asarray(preds)
    correct = int((labels == preds).sum())
    r = {"schema": results.SCHEMA, "name": name, "framework": {"name": framework, "versions": {}},
         "device": "test", "config": {"seed": seed}, "dataset": {"name": "t", "num_classes": 3},
         "history": history or [],
         "metrics": {"accuracy": correct / len(labels), "correct": correct, "num_test": len(labels),
                     "loss": 1.0 - correct / len(labels), "mean_class_accuracy": correct / len(labels)},
         "predictions": {"index": list(range(len(labels))), "label": labels.tolist(),
                         "prediction": preds.tolist()}}
    if path is not None:
        results.write(r, str(path))
    return r


def _mcnemar_fixture():
    """Labels and two prediction vectors with hand-known counts (3 classes, n = 21).

    9 both right (label 0); 7 only A right (label 1, B says 2); 2 only B right
    (label 2, A says 0); 2 both wrong alike (label 1, both say 0); 1 both wrong
    differently (label 2, A says 1, B says 0).
    """
    labels = [0] * 9 + [1] * 7 + [2] * 2 + [1] * 2 + [2]
    a = [0] * 9 + [1] * 7 + [0] * 2 + [0] * 2 + [1]
    b = [0] * 9 + [2] * 7 + [2] * 2 + [0] * 2 + [0]
    return labels, a, b


def test_mcnemar_agreement_and_confusion_difference_from_files(tmp_path, capsys):
    labels, a, b = _mcnemar_fixture()
    _result(tmp_path / "a.json", "A", labels, a)
    _result(tmp_path / "b.json", "B", labels, b)
    # first source B, second A: differences are A - B; b = only A right, c = only B right
    sides = compare.sides_of(str(tmp_path / "b.json")) + compare.sides_of(str(tmp_path / "a.json"))
    rep = compare.compare(sides)
    (pair,) = rep["sides"][1]["paired"]["pairs"]
    assert (pair["only_a_correct"], pair["only_b_correct"]) == (7, 2)
    assert pair["mcnemar_p"] == pytest.approx(2 * (1 + 9 + 36) / 512)  # 2 * P(X <= 2), X ~ Bin(9, 1/2)
    assert pair["agreement"] == pytest.approx(11 / 21)  # 9 both right + 2 both wrong alike
    assert pair["confusion_difference"] == [[0, 0, 0], [0, 7, -7], [1, 1, -2]]
    acc = rep["sides"][1]["difference"]["accuracy"]
    assert acc["difference"] == pytest.approx((16 - 11) / 21)
    assert acc["interval"].startswith("Newcombe")
    # the command line prints the same numbers
    md = tmp_path / "c.md"
    assert compare_cmd.main([str(tmp_path / "b.json"), str(tmp_path / "a.json"), "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    assert "b = 7" in out and "c = 2" in out and "p = 0.1797" in out and "agreement 52.38%" in out
    assert "| 1 | 0 | +7 | -7 |" in md.read_text()


def test_mcnemar_hand_computed_and_scipy():
    # A right / B wrong on 7, A wrong / B right on 2, both right on 11.
    a = np.array([1] * 7 + [0] * 2 + [1] * 11, bool)
    b = np.array([0] * 7 + [1] * 2 + [1] * 11, bool)
    bb, cc, p = stats.mcnemar_exact(a, b)
    assert (bb, cc) == (7, 2)
    # 2 * (C(9,0) + C(9,1) + C(9,2)) / 2^9 = 2 * 46 / 512; both sides are sums of a few exact
    # binomial terms in float64: a few ulps apart at most
    assert p == pytest.approx(92 / 512, rel=1e-12)
    scipy_stats = pytest.importorskip("scipy.stats")
    assert p == pytest.approx(scipy_stats.binomtest(2, 9, 0.5).pvalue, rel=1e-12)


def test_paired_on_identical_predictions_is_p_one_and_zero_difference():
    labels = np.array([0, 1, 2, 2, 1, 0])
    pred = np.array([0, 1, 1, 2, 0, 0])
    out = compare.paired(labels, pred, pred, 3)
    assert out["mcnemar_p"] == 1.0 and out["accuracy_difference"] == 0.0 and out["agreement"] == 1.0
    assert not np.any(out["confusion_difference"])


def test_identical_sources_give_p_one_and_zero_differences(tmp_path):
    labels, a, _ = _mcnemar_fixture()
    _result(tmp_path / "a.json", "A", labels, a)
    rep = compare.compare(compare.sides_of(str(tmp_path / "a.json")) * 2)
    side = rep["sides"][1]
    (pair,) = side["paired"]["pairs"]
    assert (pair["only_a_correct"], pair["only_b_correct"], pair["mcnemar_p"]) == (0, 0, 1.0)
    assert pair["agreement"] == 1.0 and pair["accuracy_difference"] == 0.0
    assert not np.any(pair["confusion_difference"])
    assert side["difference"]["accuracy"]["difference"] == 0.0


def test_multi_run_mean_sd_welch_and_seed_matched_pairs(tmp_path, capsys):
    from scipy import stats

    n = 100
    labels = [0] * n
    first = [[0] * k + [1] * (n - k) for k in (80, 85, 90)]  # accuracies .80 .85 .90
    second = [[0] * k + [1] * (n - k) for k in (70, 72, 77)]
    for name, runs in (("one", first), ("two", second)):
        objs = [results.check(_result(None, name, labels, p, seed=s), "x") for s, p in enumerate(runs)]
        (tmp_path / f"{name}.json").write_text(json.dumps(objs))
    rep = compare.compare(compare.sides_of(str(tmp_path / "one.json"))
                          + compare.sides_of(str(tmp_path / "two.json")))
    s1, s2 = rep["sides"]
    assert s1["metrics"]["accuracy"]["mean"] == pytest.approx(0.85)
    assert s1["metrics"]["accuracy"]["sd"] == pytest.approx(0.05)  # sqrt((.05^2+0+.05^2)/2)
    assert s2["metrics"]["accuracy"]["sd"] == pytest.approx(math.sqrt((.03**2 + .01**2 + .04**2) / 2))
    # Welch by hand: se^2 = .0025/3 + .0013/3, Welch-Satterthwaite df, t quantile
    va, vb = 0.0013 / 3, 0.0025 / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    d = s2["difference"]["accuracy"]
    assert d["difference"] == pytest.approx(-0.12)
    assert d["ci95"] == pytest.approx([-0.12 - half, -0.12 + half])
    assert d["interval"].startswith("Welch") and f"df {df:.1f}" in d["interval"]
    pairs = s2["paired"]["pairs"]  # one per seed, matched by seed: c = k1 - k2 examples
    assert [(p["seed_a"], p["only_a_correct"], p["only_b_correct"]) for p in pairs] == \
        [(0, 0, 10), (1, 0, 13), (2, 0, 13)]
    assert pairs[0]["mcnemar_p"] == pytest.approx(2 / 2 ** 10)
    assert compare_cmd.main([str(tmp_path / "one.json"), str(tmp_path / "two.json")]) == 0
    assert "85.00% ± 5.00%" in capsys.readouterr().out


def test_different_test_sets_skip_paired_statistics(tmp_path):
    labels, a, b = _mcnemar_fixture()
    _result(tmp_path / "a.json", "A", labels, a)
    _result(tmp_path / "b.json", "B", labels[::-1], b)
    rep = compare.compare(compare.sides_of(str(tmp_path / "a.json")) + compare.sides_of(str(tmp_path / "b.json")))
    assert "test sets differ" in rep["sides"][1]["paired"]["skipped"]
    # the paper has no predictions: no paired statistics; two single runs: Newcombe on accuracy
    rep = compare.compare(compare.sides_of("paper"))
    d = rep["sides"][1]["difference"]["accuracy"]
    assert d["difference"] == pytest.approx(0.0625) and d["interval"].startswith("Newcombe")
    assert "skipped" in rep["sides"][1]["paired"]


def test_converter_round_trip_matches_hand_counts(tmp_path, capsys):
    (tmp_path / "h.csv").write_text("epoch,val_loss,val_accuracy\n1,0.9,0.5\n2,0.7,0.6\n")
    # labels 0,0,0,1,1,2 ; predictions 0,0,1,1,2,2 -> 4/6 right
    rows = [(0, 0, 0), (1, 0, 0), (2, 0, 1), (3, 1, 1), (4, 1, 2), (5, 2, 2)]
    (tmp_path / "p.csv").write_text("index,label,prediction\n" + "".join(f"{i},{l},{p}\n" for i, l, p in rows))
    out = tmp_path / "r.json"
    assert results_cmd.main(["convert", "--history", str(tmp_path / "h.csv"), "--predictions",
                             str(tmp_path / "p.csv"), "--framework", "flax", "--class-names", "a,b,c",
                             "--dataset", "toy", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    m = r["metrics"]
    assert r["schema"] == "tlres.results/1" and r["framework"]["name"] == "flax"
    assert (m["correct"], m["num_test"], m["accuracy"]) == (4, 6, pytest.approx(4 / 6))
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    z, p = 1.959963984540054, 4 / 6  # Wilson by hand
    c, h = (p + z * z / 12) / (1 + z * z / 6), z * math.sqrt(p * (1 - p) / 6 + z * z / 144) / (1 + z * z / 6)
    assert m["accuracy_ci95"] == pytest.approx([c - h, c + h])
    assert m["loss"] == 0.7 and m["epochs"] == 2 and m["class_names"] == ["a", "b", "c"]
    assert [row["epoch"] for row in r["history"]] == [1, 2]
    (back,) = results.load(str(out))
    assert back["predictions"]["prediction"] == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("argv", [["/no/such/run"], ["{bad}"]])
def test_bad_source_is_one_line_exit_2(tmp_path, capsys, argv):
    if argv == ["{bad}"]:
        (tmp_path / "x.json").write_text('{"accuracy": 1}')
        argv = [str(tmp_path / "x.json")]
    assert compare_cmd.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tlres compare: error:") and err.count("\n") == 1


def test_converter_without_epoch_column_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "h.csv").write_text("step,loss\n1,0.5\n")
    (tmp_path / "p.csv").write_text("index,label,prediction\n0,1,1\n")
    assert results_cmd.main(["convert", "--history", str(tmp_path / "h.csv"), "--predictions",
                             str(tmp_path / "p.csv"), "--framework", "x", "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "epoch column" in err and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_tiny_torch_reference_then_compare_with_plot(tmp_path, capsys):
    pytest.importorskip("torch")
    from tlres.commands import torch as torch_cmd

    run = tmp_path / "run"
    assert torch_cmd.main(["--arch", "tiny", "--data", "digits", "--weights", "none", "--epochs", "1",
                           "--limit-train", "128", "--limit-test", "64", "--device", "cpu",
                           "--out", str(run)]) == 0
    png, md = tmp_path / "c.png", tmp_path / "c.md"
    assert results_cmd.main(["export", str(run), "--out", str(tmp_path / "r.json")]) == 0
    assert compare_cmd.main([str(run), str(tmp_path / "r.json"), "--plot", str(png), "--markdown", str(md)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    text = md.read_text()
    assert "McNemar exact p = 1," in text and "agreement 100.00%" in text and "| n test | 64 | 64 |" in text


def _wilson(k, n, z=1.959963984540054):
    """Wilson (1927) by hand, independent of tlres.run.evaluate."""
    p = k / n
    c, h = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * (c - h), 100 * (c + h)


def test_sides_on_different_data_get_their_own_intervals_and_no_difference(tmp_path, capsys):
    """A digits run against the paper's CIFAR-10 batch of 64: no difference, no Newcombe interval;
    each side's value with its own Wilson interval, and each labelled with its data."""
    labels = [0] * 30 + [1] * 30  # 60 digits test images, 55 right
    r = _result(None, "quick", labels, labels[:55] + [2] * 5)
    r["dataset"] = {"name": "digits", "num_classes": 3}
    results.write(r, str(tmp_path / "run.json"))
    assert compare_cmd.main([str(tmp_path / "run.json"), "paper", "--markdown", str(tmp_path / "c.md")]) == 0
    out = capsys.readouterr().out
    assert out.count("different data: no difference computed") == 12  # 3 metrics x 4 paper sides (2 readings)
    assert "Newcombe" not in out and " pp " not in out
    data_row = next(line for line in out.splitlines() if line.startswith("data "))
    assert data_row.split() == ["data", "digits,", "n=60"] + ["CIFAR-10,", "n=10000"] * 2 + ["CIFAR-10,", "n=64"] * 2
    for k, n in ((55, 60), (56, 64), (60, 64)):  # each side's own 95% interval
        lo, hi = _wilson(k, n)
        assert f"{100 * k / n:.2f}% [{lo:.2f}, {hi:.2f}] Wilson" in out, (k, n)
    assert "paired statistics skipped: different data (CIFAR-10, n=64 vs digits, n=60)" in out
    md = (tmp_path / "c.md").read_text()
    assert "| data | digits, n=60 | CIFAR-10, n=10000 | CIFAR-10, n=10000 | CIFAR-10, n=64 | CIFAR-10, n=64 |" in md


def test_same_dataset_name_but_another_test_size_is_different_data():
    labels, a, b = _mcnemar_fixture()
    one, two = _result(None, "A", labels, a), _result(None, "B", labels[:-1], b[:-1])
    rep = compare.compare([("A", [one]), ("B", [two])])
    assert rep["sides"][1]["difference"]["accuracy"] == compare.DIFFERENT_DATA
    # the same data spelt two ways is one dataset: the difference is computed
    one["dataset"]["name"], two = "CIFAR-10", _result(None, "B", labels, b)
    two["dataset"]["name"] = "cifar10"
    rep = compare.compare([("A", [one]), ("B", [two])])
    assert rep["sides"][1]["difference"]["accuracy"]["interval"].startswith("Newcombe")


def test_predictions_of_more_classes_than_the_first_side_declares(tmp_path, capsys):
    """Two valid sides on the same test set, one declaring 3 classes, the other predicting
    class 4 of 5: the confusion matrices need 5 classes (this crashed in reshape)."""
    a, b = small_result(), small_result()
    b["dataset"]["num_classes"] = 5
    b["predictions"]["prediction"] = [0, 1, 4, 0, 1, 2]
    b["metrics"].update(accuracy=4 / 6, correct=4)
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    assert compare_cmd.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert "McNemar exact p" in capsys.readouterr().out
