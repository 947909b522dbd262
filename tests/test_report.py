"""The comparison report against numbers computed by hand from run dirs the test writes.

All numbers here are float64 on both sides (means, sds and intervals of a few values, written to
CSV with repr's round-trip digits): abs=1e-12 is a few thousand ulps of values <= 1, and
pytest.approx's default (1e-6 relative) is far below any formula slip (ddof, a quantile), >= 1e-3.
"""

import csv
import json
import os

import numpy as np
import pytest

from tlres import report

PNG = b"\x89PNG\r\n\x1a\n"


def write_run(path, acc, mca, loss, n=200, preset="improved", epochs=3, seed=0, ce=None):
    """A finished run dir with known final metrics and a 3-epoch history ending at them."""
    os.makedirs(path)
    correct = round(acc * n)
    cm = np.zeros((2, 2), int)
    cm[0, 0], cm[1, 1] = correct // 2, correct - correct // 2
    cm[0, 1], cm[1, 0] = (n - correct) // 2, n - correct - (n - correct) // 2
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"config": {"preset": preset, "seed": seed, "epochs": epochs, "data": "digits",
                              "arch": "tiny", "augment": preset == "improved"},
                   "dataset": {"name": "digits", "num_train": 800, "num_test": n, "num_classes": 2,
                               "class_names": ["a", "b"]},
                   "versions": {"keras": "3", "jax": "0"}, "device": {"kind": "cpu"}}, f)
    with open(os.path.join(path, "metrics.json"), "w") as f:
        json.dump({"accuracy": acc, "correct": correct, "num_test": n, "mean_class_accuracy": mca,
                   "loss": loss, "cross_entropy": loss if ce is None else ce,
                   "confusion_matrix": cm.tolist(), "class_names": ["a", "b"]}, f)
    with open(os.path.join(path, "history.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_mean_class_accuracy",
                    "lr", "seconds"])
        for e in range(1, epochs + 1):
            w.writerow([e, 1.0 / e, acc * e / epochs, loss * (epochs + 1 - e), acc * e / epochs,
                        mca * e / epochs, 0.01, 1.0])


IMPROVED = [(0.90, 0.89, 0.40), (0.92, 0.915, 0.38), (0.97, 0.96, 0.30)]
BASELINE = [(0.85, 0.84, 0.50), (0.86, 0.86, 0.52), (0.84, 0.83, 0.55)]


@pytest.fixture
def grid(tmp_path):
    for cell, vals in (("baseline", BASELINE), ("improved", IMPROVED)):
        for k, (a, m, l) in enumerate(vals):
            write_run(tmp_path / "grid" / cell / f"seed{k}", a, m, l, preset=cell, seed=k)
    return tmp_path / "grid"


def test_table_reproduces_known_means_sds_and_welch_difference(grid, tmp_path, capsys):
    from scipy import stats

    out = tmp_path / "rep"
    assert report.main([str(grid), "--out", str(out)]) == 0
    rows = {r["group"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    imp, base = rows["improved"], rows["baseline"]
    # by hand: mean(0.90, 0.92, 0.97) = 0.93; deviations -0.03, -0.01, 0.04 -> var 0.0026/2
    assert float(imp["accuracy_mean"]) == pytest.approx(0.93, abs=1e-12)
    assert float(imp["accuracy_sd"]) == pytest.approx(np.sqrt(0.0013), abs=1e-12)
    assert float(imp["accuracy_median"]) == pytest.approx(0.92)
    assert (float(imp["accuracy_min"]), float(imp["accuracy_max"])) == pytest.approx((0.90, 0.97))
    assert float(base["accuracy_mean"]) == pytest.approx(0.85, abs=1e-12)
    assert float(base["accuracy_sd"]) == pytest.approx(0.01, abs=1e-12)
    assert float(imp["mean_class_accuracy_mean"]) == pytest.approx((0.89 + 0.915 + 0.96) / 3)
    assert float(base["val_loss_mean"]) == pytest.approx((0.50 + 0.52 + 0.55) / 3)
    assert int(imp["runs"]) == 3 and imp["reference"] == "baseline" and base["reference"] == ""
    # the difference and its Welch interval, against scipy's own Welch test
    assert float(imp["accuracy_diff"]) == pytest.approx(0.08, abs=1e-12)
    ci = stats.ttest_ind([0.90, 0.92, 0.97], [0.85, 0.86, 0.84], equal_var=False).confidence_interval()
    assert float(imp["accuracy_diff_lo"]) == pytest.approx(ci.low, abs=1e-12)
    assert float(imp["accuracy_diff_hi"]) == pytest.approx(ci.high, abs=1e-12)
    assert imp["accuracy_diff_method"].startswith("Welch t")
    # the paper's rows: 60/64 and 56/64, +6.25 points
    assert float(rows["paper improved"]["accuracy_mean"]) == pytest.approx(0.9375)
    assert float(rows["paper improved"]["accuracy_diff"]) == pytest.approx(0.0625)
    assert int(rows["paper improved"]["num_test"]) == 64
    md = (out / "summary.md").read_text()
    assert "| improved | 3 | 200 | 93.00 ± 3.61 | 90.00 / 92.00 / 97.00 |" in md
    assert "| baseline | 3 | 200 | 85.00 ± 1.00 |" in md
    assert "Data: **digits (800 train / 200 test images)**" in md
    assert "differ between groups: augment" in md
    assert "93.00 ± 3.61" in capsys.readouterr().out


def test_single_runs_get_newcombe_interval(tmp_path):
    from tlres.evaluate import newcombe_interval

    write_run(tmp_path / "improved", 0.9, 0.9, 0.3, preset="improved")
    write_run(tmp_path / "baseline", 0.8, 0.8, 0.4, preset="baseline")
    out = tmp_path / "rep"
    assert report.main([str(tmp_path / "improved"), str(tmp_path / "baseline"), "--out", str(out)]) == 0
    row = next(r for r in csv.DictReader(open(out / "summary.csv")) if r["group"] == "improved")
    d, (lo, hi) = newcombe_interval(180, 200, 160, 200)
    assert float(row["accuracy_diff"]) == pytest.approx(0.1)
    assert (float(row["accuracy_diff_lo"]), float(row["accuracy_diff_hi"])) == pytest.approx((lo, hi))
    assert row["accuracy_diff_method"].startswith("Newcombe")
    assert row["accuracy_sd"] == ""  # one run: no standard deviation


def test_figures_are_pngs_with_the_papers_panels(grid, tmp_path):
    import matplotlib.image as mpimg

    from tlres import results

    out = tmp_path / "figs"
    out.mkdir()
    groups = results.group(results.load(str(grid)))
    panels = report.figures(str(out), groups, results.group(results.paper()))
    assert set(panels) == {"fig2_accuracy.png", "fig3_loss.png", "fig4_confusion.png"}
    assert panels["fig2_accuracy.png"][0].startswith("Fig. 2: validation accuracy per epoch")
    assert "paper" in panels["fig2_accuracy.png"][1]
    assert [t.split("\n")[0] for t in panels["fig4_confusion.png"]] == [
        "Fig. 4: baseline, summed over 3 seeds", "Fig. 4: improved, summed over 3 seeds"]
    # summed confusion: 3 runs x 200 images; improved has 0.90+0.92+0.97 -> 558 correct of 600
    assert "accuracy 93.00% of 600" in panels["fig4_confusion.png"][1]
    for name in panels:
        data = (out / name).read_bytes()
        assert data[:8] == PNG
        h, w = mpimg.imread(out / name).shape[:2]
        assert w > h > 200  # side-by-side panels are wider than tall


def test_readme_section_replaced_between_markers_only(grid, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\nbefore\n{report.BEGIN}\nold typed numbers\n{report.END}\nafter\n")
    assert report.main([str(grid), "--out", str(tmp_path / "r"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# title\nbefore\n") and text.endswith(f"{report.END}\nafter\n")
    assert "old typed numbers" not in text and "_Generated by `python -m tlres.report" in text
    assert "![Fig. 2: validation accuracy](r/fig2_accuracy.png)" in text
    # no markers: one line, exit 2, file untouched
    bare = tmp_path / "BARE.md"
    bare.write_text("nothing here\n")
    assert report.main([str(grid), "--out", str(tmp_path / "r2"), "--readme", str(bare)]) == 2
    assert bare.read_text() == "nothing here\n"


def test_bad_source_is_one_line(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such run directory" in err[0]
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2
    assert "holds no finished run" in capsys.readouterr().err
