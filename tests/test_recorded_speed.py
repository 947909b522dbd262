"""docs/speed.md's before/after tables (the timed convolution plan; the allocator and max pooling) quote the recorded bench files."""
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEED = os.path.join(ROOT, "experiments", "results", "speed")


def _cell(d, key):
    return f"{d[key]:.1f} ({d[key + '_min']:.1f}-{d[key + '_max']:.1f})"


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
        t, c = r["torch"]["eager"], r["torch"]["compile"]
        compiled = ("train_img_per_s" in c and
                    f"{_cell(c, 'train_img_per_s')} | {r['train']['img_per_s'] / c['train_img_per_s']:.2f}x")
        row = (f"| {label} | {r['batch_size']} | {_cell(r['train'], 'img_per_s')} | "
               f"{_cell(t, 'train_img_per_s')} | {r['train']['img_per_s'] / t['train_img_per_s']:.2f}x | "
               f"{compiled or '- | -'} | {_cell(r['infer'], 'img_per_s')} | {_cell(t, 'infer_img_per_s')} | "
               f"{r['infer']['img_per_s'] / t['infer_img_per_s']:.2f}x |")
        assert row in doc, row
