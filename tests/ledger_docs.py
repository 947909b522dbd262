"""The figures docs/*.md's prose states, each with the recorded file it comes from and how
(the same form as `ledger.LEDGER`, which holds README.md's). An entry whose compute returns a
list covers a table or a run of figures from one file, row by row, in the page's order."""
import csv
import os
import re

from ledger import ROOT, SUITE_SECONDS, SUITE_TIME, _json, _test_split

RESULTS = os.path.join("experiments", "results")


def _metrics(*run):
    return _json(RESULTS, *run, "metrics.json")


def _accuracies(folder):
    """Test accuracies (percent) of the runs `seed*` under experiments/results/`folder`, by seed."""
    path = os.path.join(ROOT, RESULTS, folder)
    seeds = sorted(d for d in os.listdir(path) if d.startswith("seed"))
    return [_metrics(folder, d)["accuracy"] * 100 for d in seeds]


def _n_test(folder):
    """The test-set size every run `seed*` under experiments/results/`folder` shares."""
    path = os.path.join(ROOT, RESULTS, folder)
    sizes = {_metrics(folder, d)["num_test"] for d in os.listdir(path) if d.startswith("seed")}
    return f"{sizes.pop():,}" if len(sizes) == 1 else f"differing sizes {sorted(sizes)}"


def _mean_sd(values):
    from tlres.core import stats

    s = stats.summary(values)
    return [f"{s['mean']:.2f}%", f"{s['sd']:.2f}%"]


def _welch(a, b):
    """'+d points' and '[lo, hi]' of mean(a) - mean(b), Welch's t over seeds."""
    from tlres.core import stats

    d, (lo, hi), _ = stats.welch_interval(a, b)
    return [f"{d:+.2f} points", f"[{lo:+.2f}, {hi:+.2f}]"]


def _constant(path, name):
    """The value a test file gives `name` (NAME = value at the start of a line)."""
    with open(os.path.join(ROOT, path)) as f:
        return re.search(rf"^{name} = ([\d.e+-]+)", f.read(), re.M).group(1)


def _predictions(folder):
    """Each seed's predicted labels under experiments/results/`folder`, by seed."""
    path = os.path.join(ROOT, RESULTS, folder)
    out = []
    for d in sorted(x for x in os.listdir(path) if x.startswith("seed")):
        with open(os.path.join(path, d, "predictions.csv")) as f:
            out.append([r["prediction"] for r in csv.DictReader(f)])
    return out


def _agreement(pairs):
    """Mean share of test images two runs predict alike over `pairs`, in percent."""
    rates = [sum(x == y for x, y in zip(a, b)) / len(a) * 100 for a, b in pairs]
    return f"{sum(rates) / len(rates):.2f}%"


def _two_seeds(runs):
    return [(runs[i], runs[j]) for i in range(len(runs)) for j in range(i + 1, len(runs))]


def _table(a, b):
    """Two folders' mean ± sd accuracy table, b - a's Welch interval and the agreements:
    one seed in both, and two seeds within b (and within a too, for the kernels' table)."""
    pa, pb = _predictions(a), _predictions(b)
    return [*_mean_sd(_accuracies(a)), *_mean_sd(_accuracies(b)), "95%",
            *_welch(_accuracies(b), _accuracies(a)), _agreement(list(zip(pa, pb)))]


KERNELS = "experiments/results/conv-kernels/runs/{matmul,xla}/seed*/{metrics.json,predictions.csv}"
GPU_RUNS = "experiments/results/gpu/runs/{q1,q2,d1,d2,c1,c2}/metrics.json"
QUICK_GPU = ("q1", "q2", "d1", "d2", "c1", "c2")


def _reproducibility():
    m, x = "conv-kernels/runs/matmul", "conv-kernels/runs/xla"
    f, b = "precision/runs/float32", "precision/runs/mixed_bfloat16"
    gpu = [_metrics("gpu", "runs", r)["accuracy"] * 100 for r in QUICK_GPU]
    s0 = [f"{_accuracies(m)[0]:.2f}%", f"{_accuracies(x)[0]:.2f}%"]
    return [*s0, f"{_mean_sd(_accuracies(m))[1][:-1]} points", f"{min(gpu):.2f}%", f"{max(gpu):.2f}%",
            *s0, f"{_n_test(m)} images", *_table(m, x),
            _agreement(_two_seeds(_predictions(m)) + _two_seeds(_predictions(x))),
            *_table(f, b), _agreement(_two_seeds(_predictions(b))), f"{_n_test(f)} test images",
            f"{_detectable(_accuracies(f), _accuracies(b)):.1f} points"]


def _detectable(a, b):
    from tlres.core import stats

    return stats.detectable_welch(a, b)


PRECISION = "experiments/results/precision/runs/{float32,mixed_bfloat16}/seed*/metrics.json"


def _precision():
    f32, bf16 = _accuracies("precision/runs/float32"), _accuracies("precision/runs/mixed_bfloat16")
    n = _n_test("precision/runs/float32")
    return [f"{n} images", *_mean_sd(f32), *_mean_sd(bf16), "95%", *_welch(bf16, f32), f"{n} test images"]


TRANSFER = "experiments/results/transfer"
PRETRAIN_HISTORY = f"{TRANSFER}/pretrain/keras/history.csv"


def _range(values, unit="%", places=2):
    return f"{min(values):.{places}f}-{max(values):.{places}f}{unit}"


def _seed_dirs(folder):
    """The run folders `*/seed*` under experiments/results/`folder`."""
    path = os.path.join(ROOT, RESULTS, folder)
    return [os.path.join(g, s) for g in sorted(os.listdir(path)) if os.path.isdir(os.path.join(path, g))
            for s in sorted(os.listdir(os.path.join(path, g))) if s.startswith("seed")]


def _seeds_per_group(folder):
    """'N seeds' when every group under `folder` has N runs."""
    counts = {sum(1 for s in _seed_dirs(folder) if s.startswith(g + os.sep))
              for g in os.listdir(os.path.join(ROOT, RESULTS, folder))}
    return f"{counts.pop()} seeds" if len(counts) == 1 else f"differing seeds {sorted(counts)}"


def _epoch_minutes():
    with open(os.path.join(ROOT, PRETRAIN_HISTORY)) as f:
        return _range([float(r["seconds"]) / 60 for r in csv.DictReader(f)], " minutes", 1)


def _in_pytorch():
    """'87.51%' and '10,000 test images' when PyTorch's accuracy is Keras' and every prediction agrees."""
    t = _json(TRANSFER, "pretrain", "keras-v1_5", "in_pytorch.json")
    k = _json(TRANSFER, "pretrain", "keras-v1_5", "metrics.json")
    same = t["accuracy"] == k["accuracy"] and t["same_prediction_as_keras"] == t["num_test"]
    return [f"{t['accuracy'] * 100:.2f}%", f"{t['num_test']:,} test images"] if same else ["differs"]


def _mean(folder):
    return _mean_sd(_accuracies(folder))[0]


LEDGER = {
    "docs/transfer.md": {
        "3 seeds": (f"{TRANSFER}/runs/*/seed*: the seeds of each group", lambda: _seeds_per_group("transfer/runs")),
        "8.0-24.2 minutes": (f"{PRETRAIN_HISTORY}: the seconds column, fastest to slowest epoch", _epoch_minutes),
        "the source model in PyTorch": (f"{TRANSFER}/pretrain/keras-v1_5/{{in_pytorch,metrics}}.json", _in_pytorch),
        "30 runs": (f"{TRANSFER}/runs/*/seed*", lambda: f"{len(_seed_dirs('transfer/runs'))} runs"),
        "76.67-92.50%": (f"{TRANSFER}/runs/baseline+augment/seed*/metrics.json: min-max",
                         lambda: _range(_accuracies("transfer/runs/baseline+augment"))),
        "95.00-96.11%": (f"{TRANSFER}/runs/baseline/seed*/metrics.json: min-max",
                         lambda: _range(_accuracies("transfer/runs/baseline"))),
        "93.15%": ("experiments/results/digits/runs/baseline/seed*/metrics.json: mean",
                   lambda: _mean("digits/runs/baseline")),
        "95.74%": (f"{TRANSFER}/runs/baseline/seed*/metrics.json: mean", lambda: _mean("transfer/runs/baseline")),
    },
    "docs/own-data.md": {"20%": ("tlres/core/config.py: the default --test-split", _test_split)},
    "docs/tests.md": {"9 minutes": (SUITE_TIME, lambda: f"{round(SUITE_SECONDS / 60)} minutes")},
    "docs/reproducibility.md": {
        "the page's figures, in order": (f"{KERNELS}; {GPU_RUNS}; {PRECISION}", _reproducibility),
    },
    "docs/precision.md": {
        "the five-seed table": (PRECISION, _precision),
        "4x": ("tests/test_data_parallel.py: STEP32_FACTOR",
               lambda: f"{_constant('tests/test_data_parallel.py', 'STEP32_FACTOR')}x"),
    },
}
