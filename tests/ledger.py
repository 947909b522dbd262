"""The figures README.md's prose states, each with the recorded file it comes from and how.

`FIGURE` finds what counts as a figure in prose (outside code, code spans and generated
sections): a percentage or a range of them (93.26-94.21%), an interval [a, b], a ratio (1.21x),
a difference in points, a fraction (60/64), a count of images, runs, seeds or tests, a time
(36 s, 8.3 minutes, 2.7 hours), a rate (257 img/s). Version numbers, flags and dates are not.
`LEDGER` maps each page to {figure: (source, compute)}: `compute()` recomputes the figure's
text from `source`; an estimate's source names its host and date and the prose says so.
"""
import csv
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM = r"(?<![\w.\-])[+\-−]?\d+(?:,\d{3})*(?:\.\d+)?"
SPAN = rf"{NUM}(?:-\d+(?:,\d{{3}})*(?:\.\d+)?)?"         # a value, or a range of two
FIGURE = re.compile(
    rf"\[{NUM}, {NUM}\]"                                   # an interval
    rf"|{SPAN}%"                                           # a percentage, or a range of them
    rf"|{SPAN}x\b"                                         # a ratio, or a range of them
    rf"|{SPAN} points\b"                                   # a difference
    rf"|\b\d+/\d+\b(?!-)"                                  # a fraction
    rf"|{NUM} (?:test )?(?:images|runs|seeds|tests)\b"     # a count
    rf"|{SPAN} (?:s|ms|seconds|minutes|min|hours|h)\b"     # a time
    rf"|{SPAN} img/s")                                     # a rate
GENERATED = re.compile(r"<!-- (tlres\.[\w:]+):begin -->.*?<!-- \1:end -->", re.S)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def prose(text):
    """`text` without fenced code, generated sections and code spans."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", GENERATED.sub("", text)))


def figures(text):
    """Every figure in `text`'s prose, in order, whitespace collapsed."""
    return [" ".join(m.group(0).split()) for m in FIGURE.finditer(" ".join(prose(text).split()))]


def _json(*path):
    with open(os.path.join(ROOT, *path)) as f:
        return json.load(f)


def _wilson(reading, key):
    from tlres.core import stats

    p, r = _json("experiments", "paper.json"), _json("experiments", "paper.json")["readings"]
    n = next(x["n_test"] for x in r if x["key"] == reading)
    lo, hi = stats.wilson_interval(round(p[key]["accuracy"] * n / 100), n)
    return f"{lo * 100:.2f}-{hi * 100:.2f}%"


def _newcombe(n):
    from tlres.core import stats

    p = _json("experiments", "paper.json")
    d, (lo, hi) = stats.newcombe_interval(round(p["improved"]["accuracy"] * n / 100), n,
                                          round(p["baseline"]["accuracy"] * n / 100), n)
    return f"[{lo * 100:+.2f}, {hi * 100:+.2f}]".replace("-", "−")


def _detectable(n):
    from tlres.core import stats

    p = _json("experiments", "paper.json")
    pooled = (p["improved"]["accuracy"] + p["baseline"]["accuracy"]) / 200
    return f"{stats.detectable_proportions(pooled, n, n) * 100:.2f} points"


def _cpu_rate():
    b = _json("experiments", "results", "speed", "bench-cpu-avx512-gradient-after-tcmalloc.json")
    return next(r["train"]["img_per_s"] for r in b["results"] if r["batch_size"] == 64)


def _gpu_rate():
    with open(os.path.join(ROOT, "experiments", "results", "gpu", "runs", "paper", "history.csv")) as f:
        last = list(csv.DictReader(f))[-1]
    steps = 60000 // 64  # Fashion-MNIST's 60,000 training images, batch 64, 937 full steps
    return steps * 64 / float(last["seconds"])


def _suite_minutes():
    """The recorded suite run's minutes, rounded."""
    return f"{round(_json(SUITE_FILE)['seconds'] / 60)} minutes"


PAPER = "experiments/paper.json"
PAPER_TEXT = "the paper (experiments/paper.json)"
SUITE_FILE = "experiments/results/suite/pytest-2026-12-07.json"
SUITE_TIME = SUITE_FILE + ": one timed run of the whole suite (estimate)"
FULL_RUN = 50 * 50000  # the paper's 50 epochs of CIFAR-10's 50,000 training images

LEDGER = {"README.md": {
    "93.75%": (PAPER, lambda: f"{_json(PAPER)['improved']['accuracy']:.2f}%"),
    "87.50%": (PAPER, lambda: f"{_json(PAPER)['baseline']['accuracy']:.2f}%"),
    "10,000 images": (PAPER, lambda: f"{_json(PAPER)['readings'][0]['n_test']:,} images"),
    "93.26-94.21%": (PAPER, lambda: _wilson("10,000, stated", "improved")),
    "86.84-88.13%": (PAPER, lambda: _wilson("10,000, stated", "baseline")),
    "85.00-97.54%": (PAPER, lambda: _wilson("64, inferred", "improved")),
    "77.23-93.53%": (PAPER, lambda: _wilson("64, inferred", "baseline")),
    "+6.25 points": (PAPER, lambda: f"{_json(PAPER)['difference']:+.2f} points"),
    "[+5.45, +7.06]": (PAPER, lambda: _newcombe(10000)),
    "[−4.37, +17.20]": (PAPER, lambda: _newcombe(64)),
    "1.15 points": (PAPER, lambda: _detectable(10000)),
    "14.44 points": (PAPER, lambda: _detectable(64)),
    "60/64": (PAPER, lambda: f"{round(_json(PAPER)['improved']['accuracy'] * 64 / 100)}/64"),
    "56/64": (PAPER, lambda: f"{round(_json(PAPER)['baseline']['accuracy'] * 64 / 100)}/64"),
    "1/16": (PAPER, lambda: "1/16" if all(_json(PAPER)[k]["accuracy"] * 16 % 100 == 0
                                         for k in ("improved", "baseline")) else "not 1/16"),
    "257 img/s": ("experiments/results/speed/bench-cpu-avx512-gradient-after-tcmalloc.json "
                  "(estimate: AMD EPYC, 2 cores, AVX-512, 2026-11-26)", lambda: f"{_cpu_rate():.0f} img/s"),
    "2.7 hours": ("the same bench file: 50 x 50,000 images at its batch-64 training rate (estimate)",
                  lambda: f"{FULL_RUN / _cpu_rate() / 3600:.1f} hours"),
    "5,019 img/s": ("experiments/results/gpu/runs/paper/history.csv, epoch 2 "
                    "(estimate: one NVIDIA H200, 2026-11-26)", lambda: f"{_gpu_rate():,.0f} img/s"),
    "8.3 minutes": ("the same history: 50 x 50,000 images at that rate (estimate)",
                    lambda: f"{FULL_RUN / _gpu_rate() / 60:.1f} minutes"),
    "20 minutes": (SUITE_TIME, lambda: _suite_minutes()),
    "1,000 test images": (PAPER, lambda: f"{_json(PAPER)['readings'][0]['n_test'] // 10:,} test images"),
    "64 images": (PAPER, lambda: f"{_json(PAPER)['batch_size']} images"),
    "95%": ("tlres/core/stats.py: Z95, the level of every interval", lambda: _level()),
    "80%": ("tlres/core/stats.py: detectable_welch's default power", lambda: _default("detectable_welch", "power")),
    "5%": ("tlres/core/stats.py: 1 - detectable_welch's default level",
           lambda: f"{(1 - _default('detectable_welch', 'level', raw=True)) * 100:.0f}%"),
    "20%": ("tlres/core/config.py: the default --test-split", lambda: _test_split()),
}}
ESTIMATES = {"257 img/s", "2.7 hours", "5,019 img/s", "8.3 minutes", "20 minutes"}


def _level():
    from scipy import stats as sps

    from tlres.core import stats

    return f"{(2 * sps.norm.cdf(stats.Z95) - 1) * 100:.0f}%"


def _default(function, name, raw=False):
    import inspect

    from tlres.core import stats

    v = inspect.signature(getattr(stats, function)).parameters[name].default
    return v if raw else f"{v * 100:.0f}%"


def _test_split():
    from tlres.core.config import Config

    return f"{Config().test_split * 100:.0f}%"


def _within(run, found):
    """Whether `run` occurs in `found` as consecutive items."""
    return any(found[i:i + len(run)] == run for i in range(len(found) - len(run) + 1))


def check(text, ledger):
    """The problems with `text` against `ledger`: a figure in its prose the ledger lacks, a ledger
    figure its prose lacks, one whose recomputation differs. An entry whose compute returns a list
    (a table's figures, row by row) must find that list, in order, consecutive, in the prose."""
    found, problems, covered = figures(text), [], set()
    for key, (source, compute) in ledger.items():
        got = compute()
        if isinstance(got, list):
            covered.update(got)
            if not _within(got, found):
                problems.append(f"{key}: recomputes to {got} from {source}, not so in the prose")
        elif got != key:
            problems.append(f"{key}: recomputes to {got} from {source}")
        elif key not in found:
            problems.append(f"{key}: in the ledger, not in the prose")
        covered.add(key)
    problems += [f"not in the ledger: {f}" for f in dict.fromkeys(found) if f not in covered]
    return problems
