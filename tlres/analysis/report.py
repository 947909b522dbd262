"""The paper's comparison, over run directories: `tlres report SOURCE...` (`tlres.commands.report`).

    tlres report runs/grid [--out DIR] [--readme README.md]

SOURCE: a run directory, a grid of them or a results file (`tlres.analysis.results`); runs
are grouped by cell. Writes summary.md, summary.csv (per group: statistics and the difference
from its reference group with a 95% interval, the paper's numbers beside) and Figs. 2-4 to
--out; `--readme FILE` puts the same section between `<!-- tlres.report:begin -->` and
`<!-- tlres.report:end -->`. Intervals come from `tlres.core.stats`, figures from
`tlres.core.plots`. What each column and figure holds: docs/results.md#reports-tlres-report.
"""

import csv
import io
import math
import os
import time

import numpy as np

from tlres.analysis import results
from tlres.core import plots, stats
from tlres.run import writes
from tlres.core.config import COMPUTES, differing
from tlres.core.errors import TlresError

BEGIN, END = "<!-- tlres.report:begin -->", "<!-- tlres.report:end -->"


def markers(kind, section=None):
    """The (begin, end) marker lines of a generated section: `kind` names the command,
    `section` one of several sections it writes (e.g. ``transfer``)."""
    name = f"tlres.{kind}" + (f":{section}" if section else "")
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


# ---------------------------------------------------------------- summary table

def reference_of(name, names):
    """The group a group is compared with: improved and baseline+X vs baseline, improved-X and
    improved+X (an option beyond the paper) vs improved."""
    if name.startswith(("improved-", "improved+")) and "improved" in names:
        return "improved"
    if name != "baseline" and "baseline" in names and (name == "improved" or name.startswith("baseline+")):
        return "baseline"
    return None


def _final(r, key):
    m = r["metrics"]
    if key == "val_loss":
        return m.get("loss")
    return m.get(key)


def _counts(r):
    """(correct, n) of a run's test accuracy."""
    m = r["metrics"]
    return m.get("correct", round(m["accuracy"] * m["num_test"])), m["num_test"]


def difference(runs, ref_runs, key="accuracy"):
    """(mean difference, (lo, hi), method) for `key` between two groups of runs (`stats.difference`)."""
    a = [_final(r, key) for r in runs]
    b = [_final(r, key) for r in ref_runs]
    counts = (_counts(runs[0]), _counts(ref_runs[0])) if key == "accuracy" else None
    d, ci, method, df = stats.difference(a, b, counts)
    if method == "welch":
        return d, ci, f"Welch t over seeds, df={df:.1f}"
    if method == "newcombe":
        return d, ci, "Newcombe score interval, one run each"
    return d, (float("nan"), float("nan")), "n/a"


def detectable(runs, ref_runs, key="accuracy"):
    """The smallest difference of `key` this design detects with 80% power at the 5% level:
    over seeds (Welch) when each side has two or more runs, else between two test-set
    accuracies (`tlres.core.stats.detectable_proportions`, at the pooled accuracy)."""
    a = [_final(r, key) for r in runs]
    b = [_final(r, key) for r in ref_runs]
    sizes = (runs[0]["metrics"]["num_test"], ref_runs[0]["metrics"]["num_test"]) if key == "accuracy" else None
    return stats.detectable(a, b, sizes)


DIFFERENT_DATA = "different data: no difference computed"


def _data_name(runs):
    """The dataset a group was evaluated on, e.g. 'digits' or 'CIFAR-10' ('?' if not recorded)."""
    names = []
    for r in runs:
        name = results.data_of(r)[0] or "?"
        if name not in names:
            names.append(name)
    return " / ".join(names)


def summarize(groups):
    """One row per group: counts, accuracy / mean per-class accuracy / loss statistics, difference."""
    rows = []
    names = list(groups)
    for name, runs in groups.items():
        row = {"group": name, "data": _data_name(runs), "runs": len(runs),
               "num_test": runs[0]["metrics"]["num_test"], "framework": runs[0]["framework"]["name"]}
        for key in ("accuracy", "mean_class_accuracy", "val_loss", "cross_entropy"):
            vals = [_final(r, key) for r in runs]
            if all(v is not None for v in vals):
                row.update({f"{key}_{k}": v for k, v in stats.summary(vals).items() if k != "n"})
        ref = reference_of(name, names)
        if name.startswith("paper improved") and name.replace("improved", "baseline") in groups:
            ref = name.replace("improved", "baseline")
        if ref and not results.same_data(runs, groups[ref]):
            row.update(reference=ref, accuracy_diff_method=DIFFERENT_DATA)
        elif ref:
            for key in ("accuracy", "mean_class_accuracy"):
                if f"{key}_mean" in row and all(_final(r, key) is not None for r in groups[ref]):
                    d, (lo, hi), how = difference(runs, groups[ref], key)
                    row.update({f"{key}_diff": d, f"{key}_diff_lo": lo, f"{key}_diff_hi": hi,
                                f"{key}_diff_method": how,
                                f"{key}_detectable": detectable(runs, groups[ref], key)})
            row["reference"] = ref
        rows.append(row)
    return rows


def _pct(v, signed=False):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v * 100:+.2f}" if signed else f"{v * 100:.2f}"


def _num(v):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def markdown_table(rows):
    head = ("| group | data | runs | test images | accuracy % (mean ± sd) | min / median / max | "
            "mean per-class acc. % (mean ± sd) | final val loss (own criterion) | plain CE | "
            "Δ accuracy vs reference, pts [95% CI] | detectable Δ, pts (80% power) |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        acc = f"{_pct(r.get('accuracy_mean'))} ± {_pct(r.get('accuracy_sd'))}"
        spread = (f"{_pct(r.get('accuracy_min'))} / {_pct(r.get('accuracy_median'))} / "
                  f"{_pct(r.get('accuracy_max'))}")
        mca = (f"{_pct(r.get('mean_class_accuracy_mean'))} ± {_pct(r.get('mean_class_accuracy_sd'))}"
               if "mean_class_accuracy_mean" in r else "–")
        diff = "–"
        if r.get("accuracy_diff_method") == DIFFERENT_DATA:
            diff = f"{DIFFERENT_DATA} (vs {r['reference']})"
        elif "accuracy_diff" in r:
            diff = (f"{_pct(r['accuracy_diff'], True)} [{_pct(r['accuracy_diff_lo'], True)}, "
                    f"{_pct(r['accuracy_diff_hi'], True)}] vs {r['reference']} "
                    f"({r['accuracy_diff_method']})")
        mdd = _pct(r.get("accuracy_detectable")) if "accuracy_detectable" in r else "–"
        lines.append(f"| {r['group']} | {r['data']} | {r['runs']} | {r['num_test']} | {acc} | {spread} | {mca} | "
                     f"{_num(r.get('val_loss_mean'))} | {_num(r.get('cross_entropy_mean'))} | {diff} | {mdd} |")
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["group", "data", "runs", "num_test", "framework", "reference"] + [
    f"{k}_{s}" for k in ("accuracy", "mean_class_accuracy", "val_loss", "cross_entropy")
    for s in ("mean", "sd", "min", "median", "max")] + [
    f"{k}_diff{s}" for k in ("accuracy", "mean_class_accuracy") for s in ("", "_lo", "_hi", "_method")] + [
    "accuracy_detectable", "mean_class_accuracy_detectable"]


def write_csv(path, rows):
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else
                        writes.csv_text(v) if isinstance(v, str) else v) for k, v in r.items()})
    writes.atomic_text(path, f.getvalue())


# ---------------------------------------------------------------- figures

def _plotted(groups):
    """Baseline and improved when both are there, else every group (at most 6)."""
    ours = {n: g for n, g in groups.items() if not n.startswith("paper")}
    if "baseline" in ours and "improved" in ours:
        return {"baseline": ours["baseline"], "improved": ours["improved"]}
    return dict(list(ours.items())[:6])


def final_points(groups):
    """Fig. 2's right panel: per group its final accuracy (mean over runs), its own 95% interval
    and a tick label naming the group, its data and test-set size, runs and interval."""
    points = []
    for name, runs in groups.items():
        m = runs[0]["metrics"]
        acc = [r["metrics"]["accuracy"] for r in runs]
        mean = float(np.mean(acc))
        if len(runs) == 1:
            lo, hi = stats.wilson_interval(*_counts(runs[0]))
            how = "Wilson"
        else:
            _, (lo, hi) = stats.t_interval(acc)
            how = "t over seeds"
        label = (f"{name}\n{_data_name(runs)}, {m['num_test']} images"
                 + (f"\nx {len(runs)} seeds" if len(runs) > 1 else "") + f"\n({how})")
        points.append({"group": name, "label": label, "accuracy": mean, "ci95": (lo, hi),
                       "paper": name.startswith("paper")})
    return points


def figures(out, groups, paper_groups, data_label=None):
    """fig2/3/4 PNGs in `out` (`tlres.core.plots.report_figures`); returns {file: [panel titles]}.

    Every curve and point names its data: in the titles when all plotted groups share one
    dataset (or `data_label` says it), else in each legend entry and tick label."""
    plotted = _plotted(groups)
    data_names = {_data_name(runs) for runs in plotted.values()}
    if data_label is None:
        data_label = f" ({next(iter(data_names))})" if len(data_names) == 1 else ""
    labels = {name: name if len(data_names) == 1 else f"{name} ({_data_name(runs)})"
              for name, runs in plotted.items()}
    both = {**paper_groups, **plotted}
    groups_shown = list(both.values())
    mixed = any(not results.same_data(groups_shown[0], g) for g in groups_shown[1:])
    return plots.report_figures(out, plotted, final_points(both), labels, data_label, mixed)


# ---------------------------------------------------------------- the command

def describe(groups):
    """One line: data, network and shared settings; the settings that differ between groups."""
    runs = [r for g in groups.values() for r in g]
    cfgs = [r.get("config") or {} for r in runs]
    differ = differing(cfgs)[COMPUTES]  # of what the runs compute
    shared = {k: cfgs[0].get(k) for k in ("arch", "epochs", "batch_size", "optimizer", "lr",
                                          "weight_decay", "flip", "crop_padding", "precision") if k in cfgs[0]}
    ds = runs[0].get("dataset") or {}
    data = ds.get("name", "?")
    if ds.get("num_train"):
        data += f" ({ds['num_train']} train / {ds['num_test']} test images)"
    fw = runs[0]["framework"]
    vers = ", ".join(f"{k} {v}" for k, v in (fw.get("versions") or {}).items() if k in ("keras", "jax", "torch"))
    dev = runs[0].get("device")
    dev = dev.get("kind") if isinstance(dev, dict) else dev
    return (f"Data: **{data}**. Shared settings: "
            + ", ".join(f"{k}={v}" for k, v in shared.items())
            + f". Settings that differ between groups: {', '.join(differ) or 'none'}. "
            f"Framework: {fw['name']}" + (f" ({vers})" if vers else "") + f", device: {dev}.")


QUESTIONS = (
    ("Transfer, added to the baseline", "baseline+transfer", "baseline"),
    ("Transfer, within the improved recipe", "improved", "improved-transfer"),
    ("Augmentation, on top of the rest of the improved recipe", "improved", "improved-augment"),
    ("Label smoothing, on top of the rest of the improved recipe", "improved", "improved-smoothing"),
    ("Cosine annealing, on top of the rest of the improved recipe", "improved", "improved-cosine"),
    ("The improved recipe against the baseline", "improved", "baseline"),
)
"""The paper's claims as grid comparisons: (question, group with the change, group without)."""

CHANGES = (("transfer", "Transfer"), ("augment", "Augmentation"), ("smoothing", "Label smoothing"),
           ("cosine", "Cosine annealing"))
"""The grid's changes (`tlres.analysis.ablation`'s cell suffixes) and their names in the findings."""


OPTIONS = {"warmup": "Learning-rate warmup", "ema": "Weight EMA", "randaugment": "RandAugment",
           "mixup": "MixUp", "cutmix": "CutMix", "freeze": "The head first, then the whole network"}
"""Names in the findings of the options beyond the paper (`tlres.analysis.ablation.OPTIONS`)."""


def comparisons(groups):
    """The grid's family of comparisons: [(question, what, cells, weights)], each a contrast of
    cell means over seeds. First `QUESTIONS` (with - without); then each option beyond the paper
    added to the improved recipe (improved+X - improved); then per change X its interaction
    with the rest of the recipe, (improved - improved-X) - (baseline+X - baseline): X's effect
    removed from the improved recipe minus its effect added to the baseline (0 if additive).
    Only what the grid has, with two or more seeds a cell."""
    have = lambda *cells: all(len(groups.get(c, ())) >= 2 for c in cells)  # noqa: E731
    out = [(q, f"{a} vs {b}", (a, b), (1, -1)) for q, a, b in QUESTIONS if have(a, b)]
    for name in groups:
        option = name[len("improved+"):] if name.startswith("improved+") else None
        if option and have(name, "improved"):
            out.append((f"{OPTIONS.get(option, option)}, added to the improved recipe",
                        f"{name} vs improved", (name, "improved"), (1, -1)))
    for key, label in CHANGES:
        cells = ("improved", f"improved-{key}", f"baseline+{key}", "baseline")
        if have(*cells):
            out.append((f"{label}, interaction with the rest of the recipe",
                        f"(improved − improved-{key}) − (baseline+{key} − baseline)", cells, (1, -1, -1, 1)))
    return out


def _verdict(est, lo, hi, blo, bhi, mdd, interaction):
    """The words for one comparison: a verdict only where Bonferroni's interval excludes 0."""
    if blo > 0 or bhi < 0:
        if interaction:
            return "**larger within the improved recipe**" if blo > 0 else "**smaller within the improved recipe**"
        return "**helps**" if blo > 0 else "**hurts**"
    if lo > 0 or hi < 0:
        return "**not established**: the unadjusted interval excludes 0, the family-wise one does not"
    return (f"**no difference found**: this design's sensitivity, given the observed spread, is "
            f"{_pct(mdd)} points (80% power, 5% level)")


def findings(groups):
    """One bullet per comparison of `comparisons(groups)`, as one family.

    Each: the mean difference with its unadjusted 95% Welch interval and p; Holm's adjusted p
    and Bonferroni's simultaneous 95% interval (each at level 1 - 0.05/m) over the m
    comparisons. A verdict only where Bonferroni's interval excludes 0 (Holm then rejects too).
    """
    comps = comparisons(groups)
    m = len(comps)
    samples = [[[_final(r, "accuracy") for r in groups[c]] for c in cells] for _, _, cells, _ in comps]
    tests = [stats.contrast(x, w) for x, (*_, w) in zip(samples, comps)]
    adjusted = stats.holm([t[3] for t in tests])
    out = []
    for (question, what, _, w), x, (d, (lo, hi), df, p), padj in zip(comps, samples, tests, adjusted):
        _, (blo, bhi), _, _ = stats.contrast(x, w, level=1 - 0.05 / m)
        words = _verdict(d, lo, hi, blo, bhi, stats.detectable_contrast(x, w), len(w) == 4)
        out.append(f"* {question} ({what}): {_pct(d, True)} points, 95% [{_pct(lo, True)}, "
                   f"{_pct(hi, True)}], p = {p:.3g}, df = {df:.1f}; family-wise: Holm p = {padj:.3g}, "
                   f"Bonferroni [{_pct(blo, True)}, {_pct(bhi, True)}]: {words}.")
    return out


def paper_findings(paper_rows):
    """The paper's own difference under each reading of its test set: one bullet."""
    parts = [f"under \"{r['group'].split('(')[1].rstrip(')')}\" {_pct(r['accuracy_diff'], True)} "
             f"[{_pct(r['accuracy_diff_lo'], True)}, {_pct(r['accuracy_diff_hi'], True)}], "
             + ("excluding 0" if r["accuracy_diff_lo"] > 0 or r["accuracy_diff_hi"] < 0 else "including 0")
             for r in paper_rows if "accuracy_diff" in r]
    if not parts:
        return []
    return ["* The paper's own difference, improved against baseline (Newcombe's 95% interval, one "
            "run each): " + "; ".join(parts) + ". It is established only under a reading whose "
            "interval excludes 0."]


PAPER_READINGS = (
    "The paper's rows give its two figures (93.75% and 87.50%) under two readings of its test set, "
    "shown for scale, not as a like-for-like comparison (other data, other length): "
    "\"10,000, stated\" is what the paper says (a test set of 10,000 images, the metric the mean of "
    "the per-class accuracies; with CIFAR-10's 1,000 test images per class that mean is the "
    "accuracy over all 10,000, and its interval treats them as independent trials, an "
    "approximation); \"64, inferred\" is our inference, not the paper's statement: 93.75 = 60/64 "
    "and 87.50 = 56/64 are exact multiples of 1/16, as accuracies over one batch of 64 images "
    "would be (strong evidence, not proof). ")

DETECTABLE = (
    "\"Detectable Δ\" is this design's sensitivity: the true difference a two-sided test at the 5% "
    "level would detect with 80% power, given its seeds, test size and the observed spread (itself "
    "an estimate from few seeds); an interval that includes 0 says only that the difference lies "
    "within it.")


def _subject(said):
    """What the findings `said` are about: the paper's claims, the options beyond it, or both."""
    options = sum(", added to the improved recipe (" in line for line in said)
    return ("the paper's claims" if not options else "the options beyond the paper" if options == len(said)
            else "the paper's claims and the options beyond it")


def build_markdown(groups, paper_groups, rows, fig_dir, command):
    """The generated section: its command line, the data, the table, the findings, the figures
    (linked under `fig_dir`, relative to the file the section goes in)."""
    paper_rows = summarize(paper_groups) if paper_groups else []
    seeds = sorted({len(g) for g in groups.values()})
    text = [f"_Generated by `{command}` on {time.strftime('%Y-%m-%d')}; do not edit by hand._", "",
            describe(groups), "",
            f"Each tlres number is over the whole test split, {'/'.join(map(str, seeds))} seed(s) "
            "per group; sd is the sample standard deviation over seeds. "
            + (PAPER_READINGS if paper_rows else "") + DETECTABLE, "",
            markdown_table(rows + paper_rows)]
    said = findings(groups)
    if said:
        text += [f"What these runs say about {_subject(said)}, on this data and training length "
                 f"(test accuracy; the {len(said)} comparisons below are one family: each gives its "
                 "mean difference in points with its unadjusted 95% Welch interval over seeds, p and "
                 "df, then Holm's family-wise adjusted p and Bonferroni's simultaneous 95% interval, "
                 f"each at level 1 − 0.05/{len(said)}; a verdict only where that interval excludes 0; "
                 "generated from the runs, not written by hand):", ""] + said
    said = paper_findings(paper_rows)
    if said:
        text += [""] + said
    if fig_dir is not None:
        text += ["", f"![Fig. 2: validation accuracy]({fig_dir}/fig2_accuracy.png)",
                 f"![Fig. 3: loss]({fig_dir}/fig3_loss.png)",
                 f"![Fig. 4: confusion matrices]({fig_dir}/fig4_confusion.png)"]
    return "\n".join(text) + "\n"


def update_readme(path, section, begin=BEGIN, end=END):
    """Replace what stands between the `begin` and `end` marker lines of `path` with `section`."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise TlresError(f"--readme {path}: cannot read it ({e.strerror})") from None
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise TlresError(f"--readme {path}: needs one {begin} line and one {end} line after it, "
                         "where the generated section goes")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    with open(path, "w") as f:
        f.write(f"{head}{begin}\n{section}{end}{tail}")


PROG = "tlres report"
FILES = ("summary.md", "summary.csv") + plots.REPORT_FIGURES
"""What `write` writes into its folder."""


def default_out(sources):
    return os.path.join(sources[0] if os.path.isdir(sources[0]) else ".", "report")


def check_out(out, overwrite):
    """Refuse, before anything is read, a report folder whose files exist (without `overwrite`)
    or are links (`tlres.run.writes.output`)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise TlresError(f"--out {out}: exists and is not a directory; choose another path")
    for name in FILES:
        writes.output(os.path.join(out, name), overwrite)


def write(sources, out=None, readme=None, section=None, paper=True, command=PROG, overwrite=False):
    """Load `sources`, write `FILES` into `out` (default: the first source's report/ folder),
    replacing any there only with `overwrite`, and the generated section into `readme` (between
    the report markers, or `section`'s); `command` is what the section says generated it.
    Returns (runs, groups, out, the summary table as Markdown)."""
    out = out or default_out(sources)
    check_out(out, overwrite)
    runs = [r for s in sources for r in results.load(s)]
    groups = results.group(runs)
    paper_groups = results.group(results.paper()) if paper else {}
    if not os.path.exists(out):  # a folder it creates is tlres': its marker names FILES
        os.makedirs(out)
        writes.mark(out, FILES)
    rows = summarize(groups)
    write_csv(os.path.join(out, "summary.csv"), rows + summarize(paper_groups))
    writes.staged_files(out, plots.REPORT_FIGURES, lambda folder: figures(folder, groups, paper_groups))
    writes.atomic_text(os.path.join(out, "summary.md"),  # its figures sit beside it
                       build_markdown(groups, paper_groups, rows, ".", command))
    if readme:
        fig_rel = os.path.relpath(out, os.path.dirname(os.path.abspath(readme)))
        update_readme(readme, build_markdown(groups, paper_groups, rows, fig_rel, command),
                      *markers("report", section))
    return runs, groups, out, markdown_table(rows + summarize(paper_groups))

