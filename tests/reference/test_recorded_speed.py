"""docs/speed.md's before/after tables (the timed convolution plan; the allocator and max pooling; the
weight gradients written out) quote the recorded bench files."""
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEED = os.path.join(ROOT, "experiments", "results", "speed")


def _cell(d, key):
    return f"{d[key]:.1f} ({d[key + '_min']:.1f}-{d[key + '_max']:.1f})"


def _batch_row(label, r):
    """A row of the tables with a batch column: tlres and PyTorch (eager, torch.compile if timed) train
    and inference rates of one bench result, and their ratios."""
    t, c = r["torch"]["eager"], r["torch"]["compile"]
    compiled = ("train_img_per_s" in c and
                f"{_cell(c, 'train_img_per_s')} | {r['train']['img_per_s'] / c['train_img_per_s']:.2f}x")
    return (f"| {label} | {r['batch_size']} | {_cell(r['train'], 'img_per_s')} | "
            f"{_cell(t, 'train_img_per_s')} | {r['train']['img_per_s'] / t['train_img_per_s']:.2f}x | "
            f"{compiled or '- | -'} | {_cell(r['infer'], 'img_per_s')} | {_cell(t, 'infer_img_per_s')} | "
            f"{r['infer']['img_per_s'] / t['infer_img_per_s']:.2f}x |")


@pytest.mark.parametrize("name,label", [("matmul", "all matmul (former rule)"), ("plan", "timed plan")])
def test_before_after_rows_are_the_recorded_figures(name, label):
    with open(os.path.join(SPEED, f"bench-cpu-avx512-conv-{name}.json")) as f:
        rep = json.load(f)
    assert "avx512f" in rep["device"]["host"] and rep["date"] == "2026-11-26" and rep["repeats"] >= 3
    (r,) = rep["results"]
    kernels = r["conv_kernels"]
    assert kernels["source"] == ("TLRES_CONV_AUTO=matmul" if name == "matmul" else "cache")
    t = r["torch"]["eager"]
    row = (f"| {label} | {_cell(r['train'], 'img_per_s')} | {_cell(t, 'train_img_per_s')} | "
           f"{r['train']['img_per_s'] / t['train_img_per_s']:.2f}x | {_cell(r['infer'], 'img_per_s')} | "
           f"{_cell(t, 'infer_img_per_s')} | {r['infer']['img_per_s'] / t['infer_img_per_s']:.2f}x |")
    with open(os.path.join(ROOT, "docs", "speed.md")) as f:
        assert row in f.read()
    if name == "plan":
        assert kernels["summary"].startswith("matmul 41/53")


@pytest.mark.parametrize("name,label,allocator", [
    ("before", "before: glibc malloc, XLA's max-pool gradient", None),
    ("after-hugepages", "after, glibc with huge pages (no tcmalloc installed)", "glibc, huge pages"),
    ("after-tcmalloc", "after, tcmalloc", "tcmalloc")])
def test_the_allocator_and_pool_rows_are_the_recorded_figures(name, label, allocator):
    with open(os.path.join(SPEED, f"bench-cpu-avx512-{name}.json")) as f:
        rep = json.load(f)
    assert "avx512f" in rep["device"]["host"] and rep["date"] == "2026-11-26" and rep["repeats"] >= 3
    assert rep["device"].get("allocator") == allocator
    with open(os.path.join(ROOT, "docs", "speed.md")) as f:
        doc = f.read()
    assert [r["batch_size"] for r in rep["results"]] == [64, 256]
    for r in rep["results"]:
        plan = {64: "matmul 41/53", 256: "matmul 35/53"}[r["batch_size"]]  # the same in each file
        assert r["conv_kernels"]["source"] == "cache" and r["conv_plan"].startswith(plan)
        assert f"{plan.split()[1].split('/')[0]} at batch {r['batch_size']}" in " ".join(doc.split())
        assert r["conv_kernels"].get("slice_max_pools", 0) == (0 if name == "before" else 1)
        row = _batch_row(label, r)
        assert row in doc, row


GRADIENT_ROWS = [
    ("before", "before: JAX's gradient of the matmul, tcmalloc", "tcmalloc", {64: "matmul 41/53", 256: "matmul 35/53"}),
    ("after-tcmalloc", "after, tcmalloc", "tcmalloc", {64: "matmul 53/53", 256: "matmul 53/53"}),
    ("after-glibc-keep", "after, glibc keeping what it frees (no tcmalloc installed)", "glibc, keeps what it frees",
     {64: "matmul 53/53", 256: "matmul 53/53"}),
    ("after-hugepages", "after, glibc's 2 MiB pages (the former fallback)", "glibc, huge pages",
     {64: "matmul 53/53", 256: "matmul 53/53"}),
]


@pytest.mark.parametrize("name,label,allocator,plans", GRADIENT_ROWS)
def test_the_gradient_rows_are_the_recorded_figures(name, label, allocator, plans):
    with open(os.path.join(SPEED, f"bench-cpu-avx512-gradient-{name}.json")) as f:
        rep = json.load(f)
    assert "avx512f" in rep["device"]["host"] and rep["date"] == "2026-11-26" and rep["repeats"] >= 3
    assert rep["device"].get("allocator") == allocator and rep["steps"] == 20
    with open(os.path.join(ROOT, "docs", "speed.md")) as f:
        doc = f.read()
    assert [r["batch_size"] for r in rep["results"]] == [64, 256]
    for r in rep["results"]:
        assert r["conv_plan"].startswith(plans[r["batch_size"]])
        row = _batch_row(label, r)
        assert row in doc, row


def test_the_gradient_summary_quotes_the_rows():
    """The sentence under the table: tlres/eager and tlres/compile for tcmalloc and glibc, inference's range."""
    def ratios(name):
        with open(os.path.join(SPEED, f"bench-cpu-avx512-gradient-{name}.json")) as f:
            rep = json.load(f)
        return {r["batch_size"]: r for r in rep["results"]}

    tc, gl = ratios("after-tcmalloc"), ratios("after-glibc-keep")
    eager = {b: tc[b]["train"]["img_per_s"] / tc[b]["torch"]["eager"]["train_img_per_s"] for b in (64, 256)}
    comp = {b: tc[b]["train"]["img_per_s"] / tc[b]["torch"]["compile"]["train_img_per_s"] for b in (64, 256)}
    glibc = {b: gl[b]["train"]["img_per_s"] / gl[b]["torch"]["eager"]["train_img_per_s"] for b in (64, 256)}
    infer = [r["infer"]["img_per_s"] / r["torch"]["eager"]["infer_img_per_s"] for d in (tc, gl) for r in d.values()]
    with open(os.path.join(ROOT, "docs", "speed.md")) as f:
        doc = " ".join(f.read().split())
    assert (f"With tcmalloc tlres trains at {eager[64]:.2f}x PyTorch eager at batch 64 and {eager[256]:.2f}x at "
            f"batch 256 on this host, {comp[64]:.2f}x and {comp[256]:.2f}x torch.compile; without tcmalloc (what a "
            f"fresh machine gets from the README's install) at {glibc[64]:.2f}x and {glibc[256]:.2f}x eager. "
            f"Inference: {min(infer):.2f}-{max(infer):.2f}x PyTorch's.") in doc
    assert all(v >= 1.0 for v in (*eager.values(), *comp.values(), *glibc.values(), *infer))
