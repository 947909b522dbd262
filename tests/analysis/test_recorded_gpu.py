"""docs/gpu.md quotes the recorded H200 files (experiments/results/gpu), recomputed here.

Ratios, rates and counts are computed from the raw files (img/s, seconds, predictions.csv),
not copied from the ratios the bench wrote; a figure edited by hand, or a rerun recorded
without updating the page, fails here.
"""
import csv
import json
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir)
GPU = os.path.join(ROOT, "experiments", "results", "gpu")


@pytest.fixture(scope="module")
def doc():
    with open(os.path.join(ROOT, "docs", "gpu.md")) as f:
        return f.read()


def _json(*parts):
    with open(os.path.join(GPU, *parts)) as f:
        return json.load(f)


def _csv(*parts):
    with open(os.path.join(GPU, *parts), newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("batch", [64, 256])
def test_bench_rows_are_the_recorded_figures(doc, batch):
    rep = _json(f"bench-batch{batch}.json")
    assert rep["device"]["kind"] == "NVIDIA H200" and rep["date"] == "2026-11-26"
    assert "H200" in doc and "2026-11-26" in doc
    (r,) = rep["results"]
    t = r["torch"]
    train, eager, comp = r["train"]["img_per_s"], t["eager"]["train_img_per_s"], t["compile"]["train_img_per_s"]
    row = (f"| {batch} | {train:,.0f} | {r['jit_step']['img_per_s']:,.0f} | {r['train']['compile_s']:.1f} "
           f"| {eager:,.0f} | {comp:,.0f} ({t['compile']['compile_s']:.1f}) "
           f"| **{train / eager:.2f}x** | **{train / comp:.2f}x** |")
    assert row in doc
    infer, fwd = r["infer"]["img_per_s"], r["forward"]["img_per_s"]
    row = (f"| {batch} | {infer:,.0f} | {fwd:,.0f} | {t['eager']['infer_img_per_s']:,.0f} "
           f"| {t['eager']['forward_img_per_s']:,.0f} | **{infer / t['eager']['infer_img_per_s']:.2f}x** "
           f"| {fwd / t['eager']['forward_img_per_s']:.2f}x |")
    assert row in doc
    assert f"{r['peak_memory_bytes'] / 2**30:.1f} GiB at batch {batch}" in doc or \
        f"{r['peak_memory_bytes'] / 2**30:.1f} GiB at\n{batch}" in doc or \
        f"{r['peak_memory_bytes'] / 2**30:.1f} GiB at {batch}" in doc


def test_paper_recipe_timing_is_the_recorded_run(doc):
    cfg = _json("runs", "paper", "config.json")
    assert cfg["config"]["preset"] == "improved" and cfg["config"]["batch_size"] == 64
    assert cfg["dataset"]["num_train"] == 60000 and cfg["config"]["epochs"] == 2
    hist = _csv("runs", "paper", "history.csv")
    steps = 60000 // 64
    assert f"{steps} steps per epoch" in doc
    for row in hist:
        sec = float(row["seconds"])
        assert f"| {sec:.1f} | {steps * 64 / sec:,.0f} |" in doc
    rate = steps * 64 / float(hist[-1]["seconds"])
    minutes = 50 * 781 * 64 / rate / 60  # CIFAR-10: 781 steps of 64 per epoch, 50 epochs
    assert f"about {minutes:.1f} minutes of training" in doc
    assert f"took {_json('runs', 'paper', 'status.json')['total_seconds']:.0f} s" in doc


def _predictions(run):
    return [r["prediction"] for r in _csv("runs", run, "predictions.csv")]


def _accuracy(run):
    return f"{100 * _json('runs', run, 'metrics.json')['accuracy']:.2f}%"


def test_determinism_table_is_what_the_runs_wrote(doc):
    for a, b in (("q1", "q2"), ("d1", "d2")):
        n = sum(x != y for x, y in zip(_predictions(a), _predictions(b)))
        assert f"{n} of 360" in doc and f"{_accuracy(a)} vs {_accuracy(b)}" in doc
        assert n > 0
    assert _csv("runs", "c1", "history.csv") == [
        {**r, "seconds": c["seconds"]} for r, c in zip(_csv("runs", "c2", "history.csv"),
                                                       _csv("runs", "c1", "history.csv"))]
    assert _predictions("c1") == _predictions("c2")
    assert f"identical in every history value and prediction ({_accuracy('c1')})" in doc
    accs = [100 * _json("runs", r, "metrics.json")["accuracy"] for r in ("q1", "q2", "d1", "d2", "c1")]
    assert f"{min(accs):.2f}-{max(accs):.2f}% test accuracy" in doc
    assert all(_json("runs", r, "config.json")["config"]["seed"] == 0 for r in ("q1", "q2", "d1", "d2", "c1"))


def test_five_step_rows_are_what_the_log_says(doc):
    by_flags = {}
    with open(os.path.join(GPU, "determinism-5-steps.log")) as f:
        for line in f:
            rec = json.loads(line.split(" ", 1)[1])
            by_flags.setdefault(rec["flags"], []).append(rec)
    labels = {"": "none", "--xla_gpu_autotune_level=0": "`--xla_gpu_autotune_level=0`",
              "--xla_gpu_deterministic_ops=true": "`--xla_gpu_deterministic_ops=true`",
              "--xla_gpu_deterministic_ops=true --xla_gpu_autotune_level=0":
                  "`--xla_gpu_deterministic_ops=true --xla_gpu_autotune_level=0`"}
    assert set(by_flags) == set(labels)
    for flags, recs in by_flags.items():
        assert len(recs) == 2 and len({r["pipeline"] for r in recs}) == 1
        assert len({r[k] for r in recs for k in ("a_init", "b_init")}) == 1  # same start everywhere
        same = all(r["a_train"] == r["b_train"] for r in recs)
        across = len({r["a_train"] for r in recs}) == 1 and same
        row = f"| {labels[flags]} | {'identical' if same else 'weights differ'} | {'identical' if across else 'differ'}"
        assert row in doc
