"""docs/speed.md's before/after table for the timed convolution plan quotes the recorded bench files."""
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
