"""Compare results across runs and frameworks (the command: `tlres.commands.compare`).

    tlres compare SOURCE... [--markdown PATH] [--plot PATH]

Each SOURCE is one side (`tlres.analysis.results.load`; `paper` is two). Per metric: each
side's data and value, and its difference from the first side with a named 95% interval
(Welch, Newcombe, or none across different data); McNemar, agreement and the confusion
difference where two sides hold predictions on the same test set. The rules in full:
docs/results.md#side-by-side-tlres-compare.
"""


import numpy as np

from tlres.analysis import results as results_lib
from tlres.core import plots, stats
from tlres.run import writes
from tlres.core.config import COMPUTES, EXECUTION, differing
from tlres.core.errors import TlresError
from tlres.run.evaluate import confusion_matrix


def paired(labels, pred_a, pred_b, num_classes):
    """McNemar, agreement rate and confusion-matrix difference (A - B) for one test set."""
    labels, pred_a, pred_b = (np.asarray(v) for v in (labels, pred_a, pred_b))
    b, c, p = stats.mcnemar_exact(pred_a == labels, pred_b == labels)
    return {
        "n": int(labels.size),
        "only_a_correct": b,
        "only_b_correct": c,
        "mcnemar_p": p,
        "agreement": float(np.mean(pred_a == pred_b)),
        "accuracy_difference": float(np.mean(pred_a == labels) - np.mean(pred_b == labels)),
        "confusion_difference": (confusion_matrix(labels, pred_a, num_classes)
                                 - confusion_matrix(labels, pred_b, num_classes)).tolist(),
    }


# -- sides and the table --------------------------------------------------------------------------

PROG = "tlres compare"
METRICS = (("accuracy", "accuracy"), ("mean_class_accuracy", "mean per-class accuracy"),
           ("loss", "final val loss"))


def sides_of(source):
    """[(label, [results])] for one SOURCE: one side, or one per name it holds (`paper`: two)."""
    groups = results_lib.group(results_lib.load(source))
    out = []
    for name, runs in groups.items():
        fw = (runs[0].get("framework") or {}).get("name") or "?"
        out.append((name if name.startswith("paper") else f"{name} [{fw}]", runs))
    return out


def _values(runs, key):
    vals = [(r.get("metrics") or {}).get(key) for r in runs]
    return None if any(v is None for v in vals) else [float(v) for v in vals]


def _summary(vals):
    if vals is None:
        return None
    return {k: v for k, v in stats.summary(vals).items() if k in ("mean", "sd", "n")}


DIFFERENT_DATA = "different data: no difference computed"


def _counts(r):
    """(correct, n) of a run's test accuracy."""
    m = r["metrics"]
    return m.get("correct", round(m["accuracy"] * m["num_test"])), m["num_test"]


def own_interval(runs, key):
    """A side's own 95% interval for `key`: t over runs (two or more), Wilson for one run's
    accuracy, the run's own normal interval for its mean per-class accuracy; else None."""
    vals = _values(runs, key)
    if vals is None:
        return None
    if len(vals) >= 2:
        return {"ci95": list(stats.t_interval(vals)[1]), "interval": "t over runs"}
    m = runs[0]["metrics"]
    if key == "accuracy":
        return {"ci95": list(stats.wilson_interval(*_counts(runs[0]))), "interval": "Wilson"}
    if key == "mean_class_accuracy" and m.get("mean_class_accuracy_ci95"):
        return {"ci95": list(m["mean_class_accuracy_ci95"]), "interval": "normal approximation"}
    return None


def _difference(key, side, first):
    """side - first for one metric, with its 95% interval and the interval's name (`stats.difference`)."""
    a, b = _values(side, key), _values(first, key)
    if a is None or b is None:
        return None
    counts = (_counts(side[0]), _counts(first[0])) if key == "accuracy" else None
    d, ci, method, df = stats.difference(a, b, counts)
    if method == "welch":
        return {"difference": d, "ci95": list(ci), "interval": f"Welch t over runs (df {df:.1f})"}
    if method == "newcombe":
        return {"difference": d, "ci95": list(ci), "interval": "Newcombe score (independent samples)"}
    return {"difference": d, "ci95": None, "interval": "n/a"}


def _test_set(r):
    p = r.get("predictions")
    if not p:
        return None
    return (tuple(p["index"]), tuple(p["label"]))


def _seed(r):
    return (r.get("config") or {}).get("seed")


def _num_classes(*runs):
    """Enough classes for every run: what they declare, and every label and prediction they hold."""
    n = 0
    for r in runs:
        declared = (r.get("dataset") or {}).get("num_classes") or 0
        p = r["predictions"]
        n = max(n, int(declared), len((r.get("metrics") or {}).get("confusion_matrix") or []),
                max(p["label"]) + 1, max(p["prediction"]) + 1)
    return n


def _pairs(side, first):
    """Seed-matched (side run, first run) pairs; two single runs pair whatever their seeds."""
    if len(side) == 1 and len(first) == 1:
        return [(side[0], first[0])]
    by_seed = {_seed(r): r for r in first}
    return [(r, by_seed[_seed(r)]) for r in side if _seed(r) in by_seed]


def paired_section(side, first):
    """McNemar, agreement and confusion difference per pair, or why they are skipped."""
    runs = side + first
    if any(r.get("predictions") is None for r in runs):
        return {"skipped": "no per-example predictions on both sides"}
    sets = {_test_set(r) for r in runs}
    if len(sets) != 1:
        return {"skipped": "the sides' test sets differ (indices or labels); paired statistics skipped"}
    pairs = _pairs(side, first)
    if not pairs:
        return {"skipped": "no seed-matched pairs of runs"}
    C = _num_classes(*runs)
    out = []
    for a, b in pairs:
        p = paired(a["predictions"]["label"], a["predictions"]["prediction"],
                   b["predictions"]["prediction"], C)
        p.update(seed_a=_seed(a), seed_b=_seed(b))
        out.append(p)
    return {"pairs": out}


def compare(sides):
    """The comparison of [(label, [results])]: per-side summaries, differences from the first
    side, and paired statistics where both hold predictions on the same test set."""
    if not sides:
        raise TlresError("nothing to compare")
    first = sides[0][1]
    report = {"sides": [], "first": sides[0][0], "different_data": False}
    for i, (label, runs) in enumerate(sides):
        s = {"label": label, "runs": len(runs), "data": results_lib.data_label(runs),
             "num_test": sorted({int(r["metrics"]["num_test"]) for r in runs}),
             "framework": (runs[0].get("framework") or {}).get("name"),
             "metrics": {k: _summary(_values(runs, k)) for k, _ in METRICS},
             "interval": {k: own_interval(runs, k) for k, _ in METRICS}}
        if i:
            s["same_data"] = results_lib.same_data(runs, first)
            if s["same_data"]:
                s["difference"] = {k: _difference(k, runs, first) for k, _ in METRICS}
                s["paired"] = paired_section(runs, first)
            else:
                report["different_data"] = True
                s["difference"] = {k: DIFFERENT_DATA for k, _ in METRICS}
                s["paired"] = {"skipped": f"different data ({s['data']} vs {report['sides'][0]['data']})"}
        report["sides"].append(s)
    report["settings_differ"] = differing([r.get("config") for _, runs in sides for r in runs])
    return report


def settings_line(report):
    d = report.get("settings_differ") or {}
    return (f"Settings that differ: of what the runs compute, {', '.join(d.get(COMPUTES) or []) or 'none'}; "
            f"of how they ran, {', '.join(d.get(EXECUTION) or []) or 'none'}.")


def _fmt(summary, pct, interval=None):
    if summary is None:
        return "n/a"
    f = (lambda v: f"{100 * v:.2f}%") if pct else (lambda v: f"{v:.4f}")
    g = (lambda v: f"{100 * v:.2f}") if pct else (lambda v: f"{v:.4f}")
    text = f(summary["mean"]) + (f" ± {f(summary['sd'])}" if summary["sd"] is not None else "")
    if interval:
        text += f" [{g(interval['ci95'][0])}, {g(interval['ci95'][1])}] {interval['interval']}"
    return text


def _fmt_diff(d, pct):
    if d is None:
        return "n/a"
    if isinstance(d, str):
        return d
    f = (lambda v: f"{100 * v:+.2f} pp") if pct else (lambda v: f"{v:+.4f}")
    g = (lambda v: f"{100 * v:+.2f}") if pct else (lambda v: f"{v:+.4f}")
    if d["ci95"] is None:
        return f"{f(d['difference'])} (95% CI n/a)"
    return f"{f(d['difference'])} [{g(d['ci95'][0])}, {g(d['ci95'][1])}] {d['interval']}"


def rows(report):
    """The table as rows of strings: header, then one row per metric."""
    sides = report["sides"]
    head = ["metric"] + [s["label"] for s in sides] + [f"{s['label']} - {report['first']} (95% CI)"
                                                       for s in sides[1:]]
    out = [head, ["data"] + [s["data"] for s in sides] + [""] * (len(sides) - 1)]
    own = report.get("different_data")  # then each side's own interval, as no difference is given
    for key, title in METRICS:
        pct = key != "loss"
        out.append([title] + [_fmt(s["metrics"][key], pct, own and s["interval"][key]) for s in sides]
                   + [_fmt_diff(s["difference"][key], pct) for s in sides[1:]])
    out.append(["n test"] + [", ".join(map(str, s["num_test"])) for s in sides] + [""] * (len(sides) - 1))
    out.append(["n runs"] + [str(s["runs"]) for s in sides] + [""] * (len(sides) - 1))
    return out


def _paired_lines(report, md, confusion=True):
    lines = []
    for s in report["sides"][1:]:
        title = f"{s['label']} vs {report['first']}"
        lines.append(f"{'### ' if md else ''}Paired: {title}")
        if md:
            lines.append("")
        p = s["paired"]
        if "skipped" in p:
            lines.append(f"paired statistics skipped: {p['skipped']}")
            lines.append("")
            continue
        for q in p["pairs"]:
            seeds = f"seed {q['seed_a']}" if q["seed_a"] == q["seed_b"] else f"seeds {q['seed_a']}/{q['seed_b']}"
            cd = np.asarray(q["confusion_difference"])
            lines.append(
                f"{'* ' if md else '  '}{seeds}: n {q['n']}, only {s['label']} right b = {q['only_a_correct']}, "
                f"only {report['first']} right c = {q['only_b_correct']}, McNemar exact p = {q['mcnemar_p']:.4g}, "
                f"agreement {100 * q['agreement']:.2f}%, accuracy difference {100 * q['accuracy_difference']:+.2f} pp, "
                f"confusion difference: sum |diff| {int(np.abs(cd).sum())}, largest cell {int(np.abs(cd).max())}")
        for q in p["pairs"] if confusion else []:
            cd = q["confusion_difference"]
            lines.append("")
            if not np.any(cd):
                lines.append(f"Confusion difference, seed {q['seed_a']}: every cell 0")
                continue
            lines.append(f"Confusion difference ({s['label']} - {report['first']}, rows true, columns predicted), "
                         f"seed {q['seed_a']}:")
            lines.append("")
            if md:
                lines.append("| true \\ pred | " + " | ".join(str(j) for j in range(len(cd))) + " |")
                lines.append("|---" * (len(cd) + 1) + "|")
                lines += [f"| {i} | " + " | ".join(f"{v:+d}" if v else "0" for v in row) + " |"
                          for i, row in enumerate(cd)]
            else:
                lines += ["    " + " ".join(f"{v:+4d}" if v else "   0" for v in row) for row in cd]
        lines.append("")
    return lines


def text(report):
    table = rows(report)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + ["", settings_line(report), ""] + _paired_lines(report, md=False)).rstrip() + "\n"


def markdown(report, confusion=True):
    """The comparison as Markdown; confusion=False leaves out the per-pair confusion differences."""
    table = rows(report)
    esc = lambda c: c.replace("|", "\\|")
    lines = ["| " + " | ".join(map(esc, table[0])) + " |", "|---" * len(table[0]) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in table[1:]]
    lines.append("")
    lines.append("Values are mean ± sd over runs when a side has more than one. Differences are "
                 f"each side minus {report['first']}"
                 + (", computed only between sides evaluated on the same data; each side's own 95% "
                    "interval is shown in brackets." if report.get("different_data") else ".")
                 + " " + settings_line(report))
    lines.append("")
    return "\n".join(lines + _paired_lines(report, md=True, confusion=confusion)).rstrip() + "\n"


def _mean_curve(runs, key):
    """{epoch: mean of key over the runs that have it}."""
    acc = {}
    for r in runs:
        for row in r.get("history") or []:
            if row.get("epoch") is not None and row.get(key) is not None:
                acc.setdefault(int(row["epoch"]), []).append(float(row[key]))
    return sorted((e, float(np.mean(v))) for e, v in acc.items())


def plot(sides, path):
    """One PNG: validation accuracy (left), train and validation loss (right), mean over runs
    (`tlres.core.plots.compare_curves`)."""
    curves = [(label, f" ({results_lib.data_label(runs)}" + (f", mean of {len(runs)})" if len(runs) > 1 else ")"),
               {key: _mean_curve(runs, key) for key in ("val_accuracy", "loss", "val_loss")})
              for label, runs in sides]
    writes.staged(path, lambda p: plots.compare_curves(curves, p))


def all_sides(sources):
    """The sides of every SOURCE in order (`sides_of`), labels made distinct."""
    return _unique([s for src in sources for s in sides_of(src)])


def write_markdown(report, path):
    """The comparison as Markdown in `path`; an unwritable path is one line."""
    try:
        writes.atomic_text(path, markdown(report))
    except OSError as e:
        raise TlresError(f"--markdown {path}: cannot write it ({e.strerror})") from None


def _unique(sides):
    """Distinct labels: a repeated label gets ' #2', ' #3'."""
    seen, out = {}, []
    for label, runs in sides:
        seen[label] = seen.get(label, 0) + 1
        out.append((label if seen[label] == 1 else f"{label} #{seen[label]}", runs))
    return out

