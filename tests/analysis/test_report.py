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

from tlres.analysis import report, results
from tlres.core import plots
from tlres.commands import report as report_cmd

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
    assert report_cmd.main([str(grid), "--out", str(out)]) == 0
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
    # detectable with 80% power: (t_.975,df + t_.80,df) * se, se and df by hand from the sds
    va, vb = 0.0013 / 3, 0.0001 / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    mdd = (stats.t.ppf(0.975, df) + stats.t.ppf(0.8, df)) * np.sqrt(va + vb)
    assert float(imp["accuracy_detectable"]) == pytest.approx(mdd, abs=1e-9)
    # the paper's single batches: (z_.975 + z_.8) sqrt(p(1-p) 2/64) at the pooled p = 0.90625
    # and under the stated reading, 10,000 images a side
    p = (0.9375 + 0.875) / 2
    for n in (64, 10000):
        row = rows[f"paper improved ({n:,}, {'inferred' if n == 64 else 'stated'})"]
        assert float(row["accuracy_detectable"]) == pytest.approx(2.801585 * np.sqrt(p * (1 - p) * 2 / n), abs=1e-6)
        assert float(row["accuracy_mean"]) == pytest.approx(0.9375)  # 60/64 or 9375/10000
        assert float(row["accuracy_diff"]) == pytest.approx(0.0625) and int(row["num_test"]) == n
    # Newcombe's method 10 by hand: Wilson limits of 60/64 (0.8499, 0.9752) and 56/64 (0.7721,
    # 0.9353); lo = 0.0625 - sqrt((0.9375-0.8499)^2 + (0.9353-0.875)^2), hi likewise
    for n, lo, hi in ((64, -0.043732, 0.172023), (10000, 0.054480, 0.070554)):
        row = rows[f"paper improved ({n:,}, {'inferred' if n == 64 else 'stated'})"]
        assert (float(row["accuracy_diff_lo"]), float(row["accuracy_diff_hi"])) == pytest.approx((lo, hi), abs=2e-6)
    md = (out / "summary.md").read_text()
    assert "| improved | digits | 3 | 200 | 93.00 ± 3.61 | 90.00 / 92.00 / 97.00 |" in md
    assert "| baseline | digits | 3 | 200 | 85.00 ± 1.00 |" in md
    assert "Data: **digits (800 train / 200 test images)**" in md
    assert "differ between groups: augment" in md
    assert "93.00 ± 3.61" in capsys.readouterr().out


def test_single_runs_get_newcombe_interval(tmp_path):
    from tlres.core.stats import newcombe_interval

    write_run(tmp_path / "improved", 0.9, 0.9, 0.3, preset="improved")
    write_run(tmp_path / "baseline", 0.8, 0.8, 0.4, preset="baseline")
    out = tmp_path / "rep"
    assert report_cmd.main([str(tmp_path / "improved"), str(tmp_path / "baseline"), "--out", str(out)]) == 0
    row = next(r for r in csv.DictReader(open(out / "summary.csv")) if r["group"] == "improved")
    d, (lo, hi) = newcombe_interval(180, 200, 160, 200)
    assert float(row["accuracy_diff"]) == pytest.approx(0.1)
    assert (float(row["accuracy_diff_lo"]), float(row["accuracy_diff_hi"])) == pytest.approx((lo, hi))
    assert row["accuracy_diff_method"].startswith("Newcombe")
    assert row["accuracy_sd"] == ""  # one run: no standard deviation


def test_figures_are_pngs_with_the_papers_panels(grid, tmp_path):
    import matplotlib.image as mpimg

    from tlres.analysis import results

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
    assert report_cmd.main([str(grid), "--out", str(tmp_path / "r"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# title\nbefore\n") and text.endswith(f"{report.END}\nafter\n")
    assert "old typed numbers" not in text and "_Generated by `tlres report" in text
    assert "![Fig. 2: validation accuracy](r/fig2_accuracy.png)" in text
    # summary.md sits beside its figures: its links are relative to itself, not to the README
    assert "![Fig. 2: validation accuracy](./fig2_accuracy.png)" in (tmp_path / "r" / "summary.md").read_text()
    # no markers: one line, exit 2, file untouched
    bare = tmp_path / "BARE.md"
    bare.write_text("nothing here\n")
    assert report_cmd.main([str(grid), "--out", str(tmp_path / "r2"), "--readme", str(bare)]) == 2
    assert bare.read_text() == "nothing here\n"


def test_bad_source_is_one_line(tmp_path, capsys):
    assert report_cmd.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such run directory" in err[0]
    (tmp_path / "empty").mkdir()
    assert report_cmd.main([str(tmp_path / "empty")]) == 2
    assert "holds no finished run" in capsys.readouterr().err


def test_named_sections_leave_the_other_sections_alone(grid, tmp_path):
    readme = tmp_path / "README.md"
    begin, end = "<!-- tlres.report:transfer:begin -->", "<!-- tlres.report:transfer:end -->"
    readme.write_text(f"{report.BEGIN}\nfirst\n{report.END}\nmid\n{begin}\nold\n{end}\n")
    assert report_cmd.main([str(grid), "--out", str(tmp_path / "r"), "--readme", str(readme),
                            "--section", "transfer"]) == 0
    text = readme.read_text()
    assert text.startswith(f"{report.BEGIN}\nfirst\n{report.END}\nmid\n{begin}\n_Generated by")
    assert "old" not in text and text.endswith(f"{end}\n")


def test_one_epoch_run_figures_show_their_points(tmp_path):
    """A one-epoch run's accuracy.png and loss.png: each series' single point is visible in the
    PNG (its colour at the pixel where it was drawn, away from the axes' edges), on an integer
    epoch axis. Without markers a one-point line draws nothing there."""
    import matplotlib.image as mpimg

    history = [{"epoch": 1, "loss": 2.0, "accuracy": 0.3, "val_loss": 1.0, "val_accuracy": 0.6,
                "val_mean_class_accuracy": 0.9, "lr": 0.001, "seconds": 1.0}]
    metrics = {"confusion_matrix": [[3, 1], [0, 4]], "accuracy": 0.875, "num_test": 8}
    drawn = plots.run_figures(str(tmp_path), history, metrics, ["a", "b"], title="t")
    for name, expect in (("accuracy.png", 3), ("loss.png", 2)):
        img = mpimg.imread(tmp_path / name)[..., :3]
        h, w = img.shape[:2]
        assert drawn[name]["xticks"] == [1.0], drawn[name]["xticks"]  # integers only: epoch 1
        assert len(drawn[name]["series"]) == expect
        for label, s in drawn[name]["series"].items():
            ((col, row),) = s["pixels"]
            assert 0.2 * w < col < 0.8 * w and 0.05 * h < row < 0.95 * h, (name, label, col, row)
            r, c = int(round(row)), int(round(col))
            patch = img[r - 1:r + 2, c - 1:c + 2]
            assert np.abs(patch - np.asarray(s["color"])).max(axis=-1).min() < 0.05, (name, label)


def test_groups_on_different_data_get_no_difference_and_name_their_data(tmp_path):
    """A baseline on digits (200 test images) and an improved run on CIFAR-10 (300): the report
    computes no difference between them, and every row, point and curve says its data."""
    write_run(tmp_path / "g" / "baseline", 0.8, 0.8, 0.4, preset="baseline")
    write_run(tmp_path / "g" / "improved", 0.9, 0.9, 0.3, preset="improved", n=300)
    cfg_path = tmp_path / "g" / "improved" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dataset"]["name"] = "cifar10"
    cfg_path.write_text(json.dumps(cfg))
    out = tmp_path / "rep"
    assert report_cmd.main([str(tmp_path / "g" / "baseline"), str(tmp_path / "g" / "improved"),
                            "--out", str(out)]) == 0
    rows = {r["group"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    imp = rows["improved"]
    assert imp["data"] == "cifar10" and rows["baseline"]["data"] == "digits"
    assert imp["accuracy_diff"] == imp["accuracy_diff_lo"] == imp["mean_class_accuracy_diff"] == ""
    assert imp["accuracy_diff_method"] == "different data: no difference computed"
    paper_64 = rows["paper improved (64, inferred)"]
    assert paper_64["data"] == "CIFAR-10" and paper_64["accuracy_diff"] != ""
    md = (out / "summary.md").read_text()
    assert "| improved | cifar10 | 1 | 300 |" in md and "| paper baseline (64, inferred) | CIFAR-10 | 1 | 64 |" in md
    assert "different data: no difference computed (vs baseline)" in md

    from tlres.analysis import results

    groups = results.group(results.load(str(tmp_path / "g")))
    labels = [p["label"].split("\n")[1] for p in report.final_points({**results.group(results.paper()), **groups})]
    assert labels == ["CIFAR-10, 10000 images"] * 2 + ["CIFAR-10, 64 images"] * 2 + [
        "digits, 200 images", "cifar10, 300 images"]
    panels = report.figures(str(out), groups, results.group(results.paper()))
    assert "not comparable across data" in panels["fig2_accuracy.png"][1]
    assert panels["fig4_confusion.png"][0].startswith("Fig. 4: baseline (digits)")


def test_findings_follow_the_interval_and_state_the_detectable_difference(grid, tmp_path):
    from scipy import stats

    from tlres.core.stats import detectable_welch

    groups = results.group(results.load(str(grid)))
    (line,) = report.findings(groups)  # only improved vs baseline can be answered here
    imp, base = [0.90, 0.92, 0.97], [0.85, 0.86, 0.84]
    t = stats.ttest_ind(imp, base, equal_var=False)
    ci = t.confidence_interval()
    assert ci.low < 0 < ci.high  # [-0.21, +16.21] points: no difference found, with the MDD
    assert line == (f"* The improved recipe against the baseline (improved vs baseline): +8.00 points, "
                    f"95% [{ci.low * 100:+.2f}, {ci.high * 100:+.2f}], p = {t.pvalue:.3g}, df = 2.3; "
                    f"family-wise: Holm p = {t.pvalue:.3g}, Bonferroni [{ci.low * 100:+.2f}, "
                    f"{ci.high * 100:+.2f}]: **no difference found**: this design's sensitivity, given the "
                    f"observed spread, is {detectable_welch(imp, base) * 100:.2f} points (80% power, 5% level).")
    for k, a in enumerate((0.95, 0.96, 0.97)):  # clearly above the baseline: "helps"
        write_run(tmp_path / "g2" / "improved-cosine" / f"seed{k}", a, a, 0.5, preset="improved", seed=k)
    better = results.load(str(tmp_path / "g2"))
    (said,) = report.findings({"improved": better, "improved-cosine": groups["baseline"]})
    assert said.startswith("* Cosine annealing, on top of the rest of the improved recipe (improved vs "
                           "improved-cosine): +11.00 points") and said.endswith(": **helps**.")
    (said,) = report.findings({"improved": groups["baseline"], "improved-cosine": better})
    assert said.endswith(": **hurts**.") and ": -11.00 points" in said


def test_holm_matches_a_hand_computed_example():
    from tlres.core.stats import holm

    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4 x 0.005 = 0.02, 3 x 0.01 = 0.03, 2 x 0.03 = 0.06,
    # 1 x 0.04 = 0.04 -> 0.06 (never below an earlier step); back in the order given
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # 2 x 0.5 capped at 1; then 1 x 0.9 raised to that 1
    assert holm([]) == []


def _interaction_grid(tmp_path):
    cells = {"baseline": (0.80, 0.82, 0.84), "baseline+smoothing": (0.85, 0.86, 0.90),
             "improved": (0.90, 0.91, 0.95), "improved-smoothing": (0.93, 0.94, 0.94)}
    for cell, accs in cells.items():
        for k, a in enumerate(accs):
            write_run(tmp_path / "ig" / cell / f"seed{k}", a, a, 0.5, preset="improved", seed=k)
    return results.group(results.load(str(tmp_path / "ig"))), cells


def test_interaction_contrast_and_family_wise_adjustment_by_hand(tmp_path):
    from scipy import stats

    groups, c = _interaction_grid(tmp_path)
    lines = report.findings(groups)
    assert len(lines) == 3  # smoothing within improved, improved vs baseline, the interaction
    inter = next(x for x in lines if x.startswith("* Label smoothing, interaction"))
    # by hand: (0.92 - 0.9367) - (0.87 - 0.82) = -0.0667; var = sum s_i^2 / 3
    means = {k: np.mean(v) for k, v in c.items()}
    est = (means["improved"] - means["improved-smoothing"]) - (means["baseline+smoothing"] - means["baseline"])
    v = [np.var(c[k], ddof=1) / 3 for k in c]
    df = sum(v) ** 2 / sum(x ** 2 / 2 for x in v)
    half = stats.t.ppf(0.975, df) * np.sqrt(sum(v))
    assert f"{est * 100:+.2f} points, 95% [{(est - half) * 100:+.2f}, {(est + half) * 100:+.2f}]" in inter
    assert f"df = {df:.1f}" in inter
    m = len(lines)  # Bonferroni's interval at level 1 - 0.05/m, the same t with its own quantile
    bhalf = stats.t.ppf(1 - 0.025 / m, df) * np.sqrt(sum(v))
    assert f"Bonferroni [{(est - bhalf) * 100:+.2f}, {(est + bhalf) * 100:+.2f}]" in inter
    p = 2 * stats.t.sf(abs(est) / np.sqrt(sum(v)), df)
    assert f"p = {p:.3g}," in inter


def test_no_verdict_where_the_adjusted_interval_includes_0(tmp_path):
    groups, _ = _interaction_grid(tmp_path)
    for line in report.findings(groups):
        lo, hi = (float(x) for x in line.split("Bonferroni [")[1].split("]")[0].split(", "))
        verdict = any(w in line for w in ("**helps**", "**hurts**", "within the improved recipe**"))
        assert verdict == (lo > 0 or hi < 0), line


def test_an_option_added_to_the_improved_recipe_is_compared_with_it_by_hand(tmp_path):
    """improved+X (an option beyond the paper) against improved: Welch's interval from scipy,
    its row's reference, and findings that speak of the options, not the paper's claims."""
    from scipy import stats

    cells = {"improved": (0.90, 0.91, 0.95), "improved+ema": (0.95, 0.96, 0.97)}
    for cell, accs in cells.items():
        for k, a in enumerate(accs):
            write_run(tmp_path / "og" / cell / f"seed{k}", a, a, 0.5, preset="improved", seed=k)
    groups = results.group(results.load(str(tmp_path / "og")))
    (line,) = report.findings(groups)
    ci = stats.ttest_ind(cells["improved+ema"], cells["improved"], equal_var=False).confidence_interval()
    assert line.startswith("* Weight EMA, added to the improved recipe (improved+ema vs improved): "
                           f"+4.00 points, 95% [{ci.low * 100:+.2f}, {ci.high * 100:+.2f}]")
    row = next(r for r in report.summarize(groups) if r["group"] == "improved+ema")
    assert row["reference"] == "improved" and row["accuracy_diff"] == pytest.approx(0.04, abs=1e-12)
    text = report.build_markdown(groups, None, report.summarize(groups), None, "tlres report og")
    assert "What these runs say about the options beyond the paper, on this data" in text
