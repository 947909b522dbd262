"""The figures docs/*.md's prose states, each with the recorded file it comes from and how
(the same form as `ledger.LEDGER`, which holds README.md's). An entry whose compute returns a
list covers a table or a run of figures from one file, row by row, in the page's order."""
import csv
import os
import re

import ledger
from ledger import PAPER, ROOT, SUITE_TIME, _gpu_rate, _json, _suite_minutes, _test_split

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


GPU = "experiments/results/gpu"
BENCH = f"{GPU}/bench-batch{{64,256}}.json"
GPU_PAPER = f"{GPU}/runs/paper/{{history.csv,status.json,config.json}}"


def _gpu_paper(name):
    return _json(RESULTS, "gpu", "runs", "paper", name)


def _bench(batch):
    (r,) = _json(RESULTS, "gpu", f"bench-batch{batch}.json")["results"]
    return r


def _vs_eager(r, kind):
    return r[kind]["img_per_s"] / r["torch"]["eager"][f"{kind}_img_per_s"]


def _bench_ratios():
    """The two tables' ratios, row by row: train vs eager and vs torch.compile; inference, forward."""
    out = []
    for b in (64, 256):
        r = _bench(b)
        compiled = r["torch"]["compile"]["train_img_per_s"]
        out += [f"{_vs_eager(r, 'train'):.2f}x", f"{r['train']['img_per_s'] / compiled:.2f}x"]
    return out + [f"{_vs_eager(_bench(b), k):.2f}x" for b in (64, 256) for k in ("infer", "forward")]


def _one_rounded(values, fmt):
    """The values' common text under `fmt`, or all of them when they differ."""
    texts = {fmt.format(v) for v in values}
    return texts.pop() if len(texts) == 1 else f"differing {sorted(texts)}"


def _quick_gpu():
    """The six quick-preset GPU runs' accuracies (percent), in QUICK_GPU's order."""
    return [_metrics("gpu", "runs", r)["accuracy"] * 100 for r in QUICK_GPU]


def _cifar_minutes(rate):
    return f"{50 * 781 * 64 / rate / 60:.1f} minutes"  # CIFAR-10: 781 steps of 64 per epoch, 50 epochs


QUICK_CELL = "digits/runs/improved-augment"
KERNEL_RUNS = "experiments/results/conv-kernels/runs/{matmul,xla}/seed*/{metrics,status}.json, history.csv"


def _quick_bar(key):
    """tests/run/test_quick_run.py's bar from the recorded cell: mean - t(q, n-1) sd sqrt(1 + 1/n)."""
    import numpy as np
    from scipy import stats as sps

    q = float(re.search(r"def recorded_bar\(key, q=([\d.]+)\)",
                        open(os.path.join(ROOT, "tests", "run", "test_quick_run.py")).read()).group(1))
    path = os.path.join(ROOT, RESULTS, QUICK_CELL)
    v = np.array([_metrics(QUICK_CELL, d)[key] for d in sorted(os.listdir(path)) if d.startswith("seed")])
    bar = v.mean() - sps.t.ppf(q, len(v) - 1) * v.std(ddof=1) * np.sqrt(1 + 1 / len(v))
    return [f"{q * 100:.1f}%", f"{bar * 100:.1f}%"], len(v)


def _quick_bars():
    (q, acc), n = _quick_bar("accuracy")
    return [q, acc, _quick_bar("mean_class_accuracy")[0][1], f"1/{n}"]


def _kernel_seed0():
    m, x = _metrics("conv-kernels/runs/matmul/seed0"), _metrics("conv-kernels/runs/xla/seed0")
    status = _json(RESULTS, "conv-kernels", "runs", "matmul", "seed0", "status.json")
    with open(os.path.join(ROOT, RESULTS, "conv-kernels", "runs", "matmul", "seed0", "history.csv")) as f:
        first = float(next(csv.DictReader(f))["seconds"])
    lo, hi = m["accuracy_ci95"]
    return [f"{m['accuracy'] * 100:.2f}%", "95%", f"{lo * 100:.1f}-{hi * 100:.1f}%",
            f"{m['mean_class_accuracy'] * 100:.2f}%", f"{status['train_seconds']:.1f} s", f"{first:.1f} s",
            f"{status['total_seconds']:.1f} s", f"{x['accuracy'] * 100:.2f}%",
            _range([_json(RESULTS, "conv-kernels", "runs", k, s, "status.json")["train_seconds"]
                    for k in ("matmul", "xla") for s in ("seed0", "seed1", "seed2", "seed3", "seed4")], " s", 1)]


def _split():
    from tlres.core.config import Config

    test = round(Config().test_split * 100)
    return f"{100 - test}/{test}"


MEMORY_TEST = "tests/data/test_memory.py"


def _in_file(path, pattern, fmt):
    """`fmt` of the one value `pattern` captures everywhere in `path` (every occurrence agreeing)."""
    with open(os.path.join(ROOT, path)) as f:
        values = {float(v) for v in re.findall(pattern, f.read())}
    return fmt.format(values.pop()) if len(values) == 1 else f"{len(values)} values in {path}"


def _tlres_constant(module, name):
    import importlib

    return getattr(importlib.import_module(module), name)


PARITY = "experiments/results/parity/seed*.csv"
CROSSCHECKS = "experiments/results/digits/{crosscheck,crosscheck-v1_5}/*/improved/seed*"


def _pytorch_seeds():
    """'N seeds' when the parity record and both digits cross-checks' every side hold N seeds."""
    import glob

    base = os.path.join(ROOT, RESULTS, "digits")
    sides = glob.glob(os.path.join(base, "crosscheck*", "*", "improved"))
    counts = {len(glob.glob(os.path.join(ROOT, RESULTS, "parity", "seed*.csv")))}
    counts |= {len(glob.glob(os.path.join(s, "seed*"))) for s in sides}
    return f"{counts.pop()} seeds" if len(counts) == 1 and len(sides) == 3 else f"differing seeds {counts}"


def _variance_share(h_w, places):
    """PyTorch's unbiased running variance over the biased one, m/(m-1) - 1 = 1/(m-1), in percent:
    m = batch 64 x the layer's height x width."""
    return f"{100 / (64 * h_w * h_w - 1):.{places}f}%"


DIGITS_V1 = ("digits/runs/improved", "digits/crosscheck/pytorch/improved")
SAME_START = {"transfer": ("transfer/crosscheck/keras-jax/improved", "transfer/crosscheck/pytorch/improved"),
              "v1_5": ("digits/crosscheck-v1_5/keras-jax/improved", "digits/crosscheck-v1_5/pytorch/improved")}


def _bn_weights():
    """The share BatchNorm's initial statistics keep after 3 and 20 steps at the default momentum,
    and the note's threshold."""
    from tlres.core.config import Config

    m = Config().bn_momentum
    return [f"{m ** 3 * 100:.0f}%", f"{m ** 20 * 100:.0f}%",
            _in_file("tlres/run/train.py", r"def bn_note\(momentum, updates, threshold=([\d.]+)\)", "{:.0%}")]


def _welch_needs():
    """The fewest runs a side needs for Welch's interval to exist."""
    import math

    from tlres.core import stats

    a, b = [0.9, 0.8, 0.7], [0.6, 0.5, 0.4]
    n = next(k for k in range(1, 4) if not math.isnan(stats.welch_interval(a[:k], b[:k])[1][0]))
    return f"{n} runs"


def _same_start(key, with_agreement):
    keras, torch = SAME_START[key]
    k, p = _accuracies(keras), _accuracies(torch)
    means = [f"{a:.2f}%" for a in (sum(k) / len(k), sum(p) / len(p))]
    head = [means[0], f"{len(k)} seeds"] if with_agreement and means[0] == means[1] else means
    rates = [sum(x == y for x, y in zip(a, b)) / len(a) * 100 for a, b in zip(_predictions(keras), _predictions(torch))]
    return head + _welch(p, k) + ([_range(rates, "%", 1)] if with_agreement else [])


SPEED = "experiments/results/speed/bench-cpu-avx512-{}.json"
GRADIENT_FILES = ("gradient-before", "gradient-after-tcmalloc", "gradient-after-glibc-keep", "gradient-after-hugepages")
ALLOCATOR_FILES = ("before", "after-hugepages", "after-tcmalloc")
SPEED_HOST = ("avx512f", "2026-11-26")  # the vector extension and the date docs/speed.md names for every file


def _speed(name):
    """bench-cpu-avx512-`name`.json's results, by batch size; none when its host or date is not the page's."""
    rep = _json(SPEED.format(name))
    ok = SPEED_HOST[0] in rep["device"]["vector_extensions"] and rep["date"] == SPEED_HOST[1]
    return {r["batch_size"]: r for r in rep["results"]} if ok else {}


def _ratio(r, kind):
    return r["ratios"][f"{kind}_vs_torch_eager" if kind != "compile" else "train_vs_torch_compile"]


def _rows(names):
    """A bench table's ratio columns, row by row (file, then batch): train vs eager, vs torch.compile
    where it was timed, inference vs eager."""
    out = []
    for r in (r for n in names for r in _speed(n).values()):
        out += [f"{_ratio(r, 'train'):.2f}x"] + ([f"{_ratio(r, 'compile'):.2f}x"] if _ratio(r, "compile") else [])
        out += [f"{_ratio(r, 'infer'):.2f}x"]
    return out


def _speed_opening():
    """The opening: earlier versions' training ratios, and the two kept allocators' range."""
    old = [_ratio(r, "train") for n in ("before", "conv-matmul", "conv-plan") for r in _speed(n).values()]
    now = [_ratio(r, "train") for n in GRADIENT_FILES[1:3] for r in _speed(n).values()]
    return [_range(old, "x"), *[f"{v:.2f}x" for v in old], _range(now, "x")]


def _gradient_table():
    """The first table's ratios, then the sentences under it: tcmalloc's and glibc's, inference's range,
    and how far PyTorch eager's own training rate moved across the four files at one batch size."""
    tc, gl = _speed("gradient-after-tcmalloc"), _speed("gradient-after-glibc-keep")
    summary = [f"{_ratio(tc[b], k):.2f}x" for k in ("train", "compile") for b in (64, 256)]
    summary += [f"{_ratio(gl[b], 'train'):.2f}x" for b in (64, 256)]
    summary += [_range([_ratio(r, "infer") for d in (tc, gl) for r in d.values()], "x")]
    moved = max(max(v) / min(v) - 1 for v in (
        [_speed(n)[b]["torch"]["eager"]["train_img_per_s"] for n in GRADIENT_FILES] for b in (64, 256)))
    return _rows(GRADIENT_FILES) + summary + [f"{moved * 100:.0f}%"]


def _allocator_table():
    """The second table's ratios, then tlres' training ratio over the two "after" files at each batch."""
    after = [_speed(n) for n in ALLOCATOR_FILES[1:]]
    return _rows(ALLOCATOR_FILES) + [_range([_ratio(d[b], "train") for d in after], "x") for b in (64, 256)]


def _eager_with_tcmalloc():
    """PyTorch eager's training rate with tcmalloc over glibc's, batch 64 (the same within 1% at 256),
    then the 2 MiB pages' training ratio at batch 256."""
    before, after = _speed("before"), _speed("after-tcmalloc")
    gain = {b: after[b]["torch"]["eager"]["train_img_per_s"] / before[b]["torch"]["eager"]["train_img_per_s"] - 1
            for b in (64, 256)}
    same = abs(gain[256]) < 0.01
    return [f"{gain[64] * 100:.0f}%" if same else "differs at 256",
            f"{_ratio(_speed('gradient-after-hugepages')[256], 'train'):.2f}x"]


def _conv_plan():
    """The timed plan's per-shape medians (forward plus gradients, ms a call): the two slowest shapes with
    each kernel, their layers' share of XLA's total over all 53, and the plan's total."""
    (r,) = _speed("conv-plan").values()
    shapes = r["conv_kernels"]["shapes"].values()
    slow = sorted(shapes, key=lambda s: -s["xla_ms"])[:2]
    cost = {k: sum(s[f"{k}_ms"] * len(s["layers"]) for s in shapes) for k in ("xla", "matmul")}
    chosen = sum(s[f"{s['kernel']}_ms"] * len(s["layers"]) for s in shapes)
    return [f"{v:.1f} ms" for s in slow for v in (s["xla_ms"], s["matmul_ms"])] + [
        f"{sum(s['xla_ms'] * len(s['layers']) for s in slow):.1f} ms", f"{cost['xla']:.1f} ms", f"{chosen:.1f} ms"]


def _conv_table():
    """The former rule against the timed plan: the table's ratios, the training gain, inference's ratios."""
    (m,), (p,) = _speed("conv-matmul").values(), _speed("conv-plan").values()
    gain = p["train"]["img_per_s"] / m["train"]["img_per_s"] - 1
    return _rows(("conv-matmul", "conv-plan")) + [f"{gain * 100:.0f}%"] + [
        f"{_ratio(r, 'infer'):.2f}x" for r in (m, p)]


def _all_speed_results():
    import glob

    files = sorted(glob.glob(os.path.join(ROOT, SPEED.format("*"))))
    names = [os.path.basename(f)[len("bench-cpu-avx512-"):-len(".json")] for f in files]
    return [r for n in names for r in _speed(n).values()]


def _pipeline():
    rs = _all_speed_results()
    rates = [r["pipeline"]["img_per_s"] for r in rs]
    return [f"{min(rates):,.0f}-{max(rates):,.0f} img/s", _range([r["pipeline_over_train"] for r in rs], "x", 0)]


def _fit_over_jit():
    return _range([r["train"]["img_per_s"] / r["jit_step"]["img_per_s"] * 100 for r in _all_speed_results()], "%", 0)


SWEEP = "experiments/results/speed/sweep-cpu-avx512-2026-12-07.json"
GPU_BENCH = "experiments/results/gpu/bench-batch64.json"


SWEEP_0812 = "experiments/results/speed/sweep-cpu-avx512-2026-12-08-{}.json"


def _per_part_plan():
    """docs/speed.md's before and after, in the prose's order: training and inference ratios vs
    PyTorch eager at 128 and 224 px (before, the rerun at 128, after), PyTorch's own training
    rates, 32 px after, and the peak RSS ratios (before's range, 128/224 after, 32 px after)."""
    files = {n: {(r["image_size"], r["batch_size"]): r for r in _json(SWEEP_0812.format(n))["results"]}
             for n in ("1-before", "2-before-rerun-128", "3-per-part-plan")}
    before, rerun, after = files.values()
    big = ((128, 32), (224, 16))

    def x(r, key):
        return f"{r['ratios'][key]:.2f}x"

    def rows(key):
        return [x(before[big[0]], key), x(rerun[big[0]], key), x(after[big[0]], key),
                x(before[big[1]], key), x(after[big[1]], key)]

    torch = [f"{f[p]['torch']['eager']['train_img_per_s']:.1f} img/s" for p, fs in
             ((big[0], (before, rerun, after)), (big[1], (before, after))) for f in fs]
    rss = [r["ratios"]["peak_rss_vs_torch_eager"] for f in (before, rerun) for r in f.values()]
    big_after = {x(after[p], "peak_rss_vs_torch_eager") for p in big}
    assert len(big_after) == 1, big_after  # the prose gives one figure for both sizes
    small = [after[(32, b)]["ratios"]["peak_rss_vs_torch_eager"] for b in (64, 256)]
    return (rows("train_vs_torch_eager") + torch + rows("infer_vs_torch_eager")
            + [x(after[(32, b)], "train_vs_torch_eager") for b in (64, 256)]
            + [x(after[(32, b)], "infer_vs_torch_eager") for b in (64, 256)]
            + [_range(rss, "x"), big_after.pop(), _range(small, "x")])


def _jax_pipeline_32():
    """The 32 px sweep on the jax pipeline: peak RSS, training and inference ratios vs PyTorch
    eager, each at batch 64 then 256 (the file's processes must have loaded no TensorFlow)."""
    rs = _json(SWEEP_0812.format("4-jax-pipeline-32"))["results"]
    assert all("tensorflow" not in r["frameworks_loaded"]["tlres"] for r in rs)
    return [f"{r['ratios'][k]:.2f}x" for k in ("peak_rss_vs_torch_eager", "train_vs_torch_eager",
                                                "infer_vs_torch_eager") for r in rs]


def _sweep_224():
    """The recorded CPU sweep's 224 px entry."""
    return next(r for r in _json(SWEEP)["results"] if r["image_size"] == 224)


def _photos_cpu():
    """The photos preset's CPU figures: the 224 px training rate, minutes per thousand images."""
    rate = _sweep_224()["train"]["img_per_s"]
    return [f"{rate:.1f} img/s", f"{1000 / rate / 60:.1f} minutes"]


def _photos_gpu():
    """The photos preset's GPU estimate: the H200's 32 px batch-64 rate over 49 (224² / 32²)."""
    rate = _json(GPU_BENCH)["results"][0]["train"]["img_per_s"] / (224 / 32) ** 2
    return [f"{rate:.0f} img/s", f"{1000 / rate:.0f} s"]


LEDGER = {
    "docs/results.md": {
        "BatchNorm's initial statistics": ("tlres/core/config.py: bn_momentum; tlres/run/train.py: bn_note's threshold",
                                           lambda: _bn_weights() + [_bn_weights()[2]]),
        "10,000 images": ledger.LEDGER["README.md"]["10,000 images"],
        "60/64": ledger.LEDGER["README.md"]["60/64"],
        "56/64": ledger.LEDGER["README.md"]["56/64"],
        "95%": ledger.LEDGER["README.md"]["95%"],
        "2 runs": ("tlres/core/stats.py: welch_interval needs two runs a side", _welch_needs),
        "the v1 cross-check": (f"experiments/results/{{{','.join(DIGITS_V1)}}}/seed*/metrics.json",
                               lambda: [f"{sum(a) / len(a):.1f}%" for a in map(_accuracies, DIGITS_V1[::-1])]
                               + [f"{_n_test(DIGITS_V1[1])} test images"]),
        "with transfer, same start": ("experiments/results/transfer/crosscheck/*/improved/seed*/"
                                      "{metrics.json,predictions.csv}",
                                      lambda: _same_start("transfer", True)),
        "from random weights, same start": ("experiments/results/digits/crosscheck-v1_5/*/improved/seed*/metrics.json",
                                            lambda: _same_start("v1_5", False)),
    },
    "docs/pytorch.md": {
        "100x": ("tests/net/test_convert.py: the bound over the float64 network's sensitivity",
                 lambda: _in_file("tests/net/test_convert.py", r"bound = (\d+) \* sensitivity", "{:.0f}x")),
        "1.6%": ("the formula on the page: 32 px, batch 64, ResNet50's last stage at 1x1",
                 lambda: _variance_share(32 // 32, 1)),
        "0.006%": ("the formula on the page: 32 px, batch 64, ResNet50's stem at 16x16",
                   lambda: _variance_share(32 // 2, 3)),
        "10x": ("tlres/reference/parity.py: BOUND_FACTOR",
                lambda: f"{_tlres_constant('tlres.reference.parity', 'BOUND_FACTOR')}x"),
        "3 seeds": (f"{PARITY}; {CROSSCHECKS}", _pytorch_seeds),
    },
    "docs/bad-input.md": {
        "4.6x": ("tlres/core/config.py: MAX_IMAGE_SIZE over ImageNet's 224 per side",
                 lambda: f"{_tlres_constant('tlres.core.config', 'MAX_IMAGE_SIZE') / 224:.1f}x"),
        "5,000 images": (f"{MEMORY_TEST}: the folder it loads",
                         lambda: _in_file(MEMORY_TEST, r'm\["n"\] == (\d+)', "{:,.0f} images")),
        "10,000 images": (f"{MEMORY_TEST}: the npz's test images",
                          lambda: _in_file(MEMORY_TEST, r"x_test=rng.integers\(0, 256, \((\d+),", "{:,.0f} images")),
        "1.5x": (f"{MEMORY_TEST}: each loader's own growth",
                 lambda: _in_file(MEMORY_TEST, r"growth < ([\d.]+)", "{:g}x")),
        "3x": (f"{MEMORY_TEST}: the whole process's peak", lambda: _in_file(
            MEMORY_TEST, r"(?:ratio|m\[\"peak\"\] / m\[\"arrays\"\]) < ([\d.]+)", "{:g}x")),
        "100x": ("tlres/net/modelfile.py: MAX_EXPANSION",
                 lambda: f"{_tlres_constant('tlres.net.modelfile', 'MAX_EXPANSION')}x"),
    },
    "docs/distributed.md": {
        "30 s": ("tlres/run/distributed.py: HEARTBEAT_S",
                 lambda: f"{_constant('tlres/run/distributed.py', 'HEARTBEAT_S')} s"),
        "60 s": ("tests/run/test_distributed.py: LOST_BOUND_S",
                 lambda: f"{_constant('tests/run/test_distributed.py', 'LOST_BOUND_S')} s"),
    },
    "docs/presets.md": {
        "the photos preset's CPU time": (f"{SWEEP}: results[224 px].train.img_per_s",
                                         _photos_cpu),
        "the photos preset's GPU estimate": (f"{GPU_BENCH}: results[0].train.img_per_s / 49", _photos_gpu),
        "93.75%": (PAPER, lambda: f"{_json(PAPER)['improved']['accuracy']:.2f}%"),
        "87.50%": (PAPER, lambda: f"{_json(PAPER)['baseline']['accuracy']:.2f}%"),
        "10,000 images": (PAPER, lambda: f"{_json(PAPER)['readings'][0]['n_test']:,} images"),
        "64 images": (PAPER, lambda: f"{_json(PAPER)['readings'][1]['n_test']} images"),
        "1/16": ledger.LEDGER["README.md"]["1/16"],
        "80/20": ("tlres/core/config.py: the default --test-split", _split),
        "augmentation removed, the digits grid": (
            "experiments/results/digits/runs/{improved-augment,improved}/seed*/metrics.json: Welch",
            lambda: [_welch(_accuracies(QUICK_CELL), _accuracies("digits/runs/improved"))[0], "95%",
                     _welch(_accuracies(QUICK_CELL), _accuracies("digits/runs/improved"))[1],
                     _seeds_per_group("digits/runs")]),
        "the quick cell's seeds": (f"experiments/results/{QUICK_CELL}/seed*/metrics.json",
                                   lambda: [f"{a:.2f}%" for a in _accuracies(QUICK_CELL)]),
        "the quick bar": (f"tests/run/test_quick_run.py's q; experiments/results/{QUICK_CELL}", _quick_bars),
        "seed 0 on each kernel": (KERNEL_RUNS, _kernel_seed0),
        "3.3 points": (GPU_RUNS, lambda: f"{max(_quick_gpu()) - min(_quick_gpu()):.1f} points"),
    },
    "docs/gpu.md": {
        "the bench tables' ratios": (BENCH, _bench_ratios),
        "2.2-2.3x": (f"{BENCH}: training against PyTorch eager, both batches",
                     lambda: _range([_vs_eager(_bench(b), "train") for b in (64, 256)], "x", 1)),
        "2.9x": (f"{BENCH}: the forward pass against PyTorch's, both batches",
                 lambda: _one_rounded([_vs_eager(_bench(b), "forward") for b in (64, 256)], "{:.1f}x")),
        "65,645 img/s": (f"{GPU}/bench-batch64.json: the pipeline alone",
                         lambda: f"{_bench(64)['pipeline']['img_per_s']:,.0f} img/s"),
        "8.1x": (f"{GPU}/bench-batch64.json: the pipeline over training",
                 lambda: f"{_bench(64)['pipeline']['img_per_s'] / _bench(64)['train']['img_per_s']:.1f}x"),
        "10,000 images": (GPU_PAPER, lambda: f"{_gpu_paper('config.json')['dataset']['num_test']:,} images"),
        "61 s": (GPU_PAPER, lambda: f"{_gpu_paper('status.json')['total_seconds']:.0f} s"),
        "the paper run against the bench": (f"{GPU_PAPER}; {GPU}/bench-batch64.json", lambda: [
            f"{_gpu_rate() / _bench(64)['train']['img_per_s'] * 100:.0f}%", f"{_gpu_rate():,.0f} img/s",
            f"{_bench(64)['train']['img_per_s']:,.0f} img/s"]),
        "5,019 img/s": (f"{GPU_PAPER}: epoch 2", lambda: f"{_gpu_rate():,.0f} img/s"),
        "8.3 minutes": (f"{GPU_PAPER}: 50 CIFAR-10 epochs at epoch 2's rate (estimate: one NVIDIA H200, 2026-11-26)",
                        lambda: _cifar_minutes(_gpu_rate())),
        "5.1 minutes": (f"{GPU}/bench-batch64.json: the same at fit's rate (estimate: one NVIDIA H200, 2026-11-26)",
                        lambda: _cifar_minutes(_bench(64)["train"]["img_per_s"])),
        "the determinism table": (GPU_RUNS, lambda: [f"{a:.2f}%" for a in _quick_gpu()[:4]] + (
            [f"{_quick_gpu()[4]:.2f}%"] if _quick_gpu()[4] == _quick_gpu()[5] else ["c1 and c2 differ"])),
        "93.06-96.39%": (GPU_RUNS, lambda: _range(_quick_gpu())),
        "360 images": (GPU_RUNS, lambda: _one_rounded([_metrics("gpu", "runs", r)["num_test"] for r in QUICK_GPU],
                                                      "{} images")),
        "3.3 points": (GPU_RUNS, lambda: f"{max(_quick_gpu()) - min(_quick_gpu()):.1f} points"),
    },
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
    "docs/tests.md": {"20 minutes": (SUITE_TIME, _suite_minutes)},
    "docs/options.md": {
        "3 seeds": ("experiments/results/options/runs/*/seed*: the seeds of each group",
                    lambda: _seeds_per_group("options/runs")),
    },
    "docs/reproducibility.md": {
        "the page's figures, in order": (f"{KERNELS}; {GPU_RUNS}; {PRECISION}", _reproducibility),
    },
    "docs/speed.md": {
        "the opening's bench files": (SPEED.format("{before,conv-matmul,conv-plan,gradient-after-*}"),
                                      _speed_opening),
        "the gradient table and its summary": (SPEED.format("gradient-*") + ": results[].ratios, torch eager",
                                               _gradient_table),
        "50,000 images": (f"{PAPER}: epochs, over tests/ledger.py FULL_RUN (CIFAR-10's training images)",
                          lambda: f"{ledger.FULL_RUN // _json(PAPER)['epochs']:,} images"),
        "257 img/s": ledger.LEDGER["README.md"]["257 img/s"],
        "2.7 hours": ledger.LEDGER["README.md"]["2.7 hours"],
        "8.3 minutes": ledger.LEDGER["README.md"]["8.3 minutes"],
        "the allocator table and its summary": (SPEED.format("{before,after-hugepages,after-tcmalloc}"),
                                                _allocator_table),
        "4%": (SPEED.format("{before,after-tcmalloc}") + ": PyTorch eager with tcmalloc over glibc's",
               lambda: _eager_with_tcmalloc()[0]),
        "0.89x": (SPEED.format("gradient-after-hugepages") + ": the 2 MiB pages' training ratio at 256",
                  lambda: _eager_with_tcmalloc()[1]),
        "the per-part plan, before and after": (SWEEP_0812.format("{1-before,2-before-rerun-128,3-per-part-plan}"),
                                                _per_part_plan),
        "the jax pipeline at 32 px": (SWEEP_0812.format("4-jax-pipeline-32") + ": ratios, batch 64 then 256",
                                      _jax_pipeline_32),
        "the timed plan's shapes": (SPEED.format("conv-plan") + ": results[].conv_kernels.shapes", _conv_plan),
        "the conv-plan table": (SPEED.format("{conv-matmul,conv-plan}"), _conv_table),
        "the input pipeline": (SPEED.format("*") + ": results[].pipeline, pipeline_over_train", _pipeline),
        "2 s": ("tlres/data/imagefolder.py: PROGRESS_AFTER_S",
                lambda: f"{float(_constant('tlres/data/imagefolder.py', 'PROGRESS_AFTER_S')):g} s"),
        "86-126%": (SPEED.format("*") + ": train over jit_step img/s", _fit_over_jit),
    },
    "docs/precision.md": {
        "the five-seed table": (PRECISION, _precision),
        "4x": ("tests/helpers.py: STEP32_FACTOR",
               lambda: f"{_constant('tests/helpers.py', 'STEP32_FACTOR')}x"),
    },
}

ESTIMATES = {"docs/tests.md": {"20 minutes"}, "docs/gpu.md": {"8.3 minutes", "5.1 minutes"},
             "docs/speed.md": {"257 img/s", "2.7 hours", "8.3 minutes"}}
