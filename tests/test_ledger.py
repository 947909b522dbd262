"""Every figure in the docs' prose is in the ledger (tests/ledger.py) and recomputes from its
recorded source; changing one digit of one is caught.

Pages the ledger does not cover yet are listed in UNCOVERED and expected to fail (strict): when
one is covered, its entry must come out of that list.
"""
import glob
import os
import re

import pytest

import ledger
import ledger_docs

ROOT = ledger.ROOT
LEDGER = {**ledger.LEDGER, **ledger_docs.LEDGER}
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
NO_FIGURES = {"docs/design.md", "docs/export.md"}
UNCOVERED = set(PAGES) - set(LEDGER) - NO_FIGURES


def _text(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.xfail(
    p in UNCOVERED, reason="the ledger does not cover this page yet", strict=True)) for p in PAGES])
def test_every_figure_is_in_the_ledger_and_recomputes(page):
    problems = ledger.check(_text(page), LEDGER.get(page, {}))
    assert not problems, problems


def test_the_finder_finds_each_kind_and_skips_code_and_generated_sections():
    text = ("It took 36 s, 6 hours and 8.3 minutes at 257 img/s: 94.2% (93.26-94.21%), 1.21x, "
            "+6.25 points [−4.37, +17.20], 60/64, 360 images over 3 seeds and 24 runs.\n"
            "```bash\ntlres train --epochs 50 --lr 0.01   # 99%\n```\n"
            "Run `--seeds 3` (`50%`).\n<!-- tlres.report:begin -->\n77.7%\n<!-- tlres.report:end -->\n")
    assert ledger.figures(text) == ["36 s", "6 hours", "8.3 minutes", "257 img/s", "94.2%", "93.26-94.21%",
                                    "1.21x", "+6.25 points", "[−4.37, +17.20]", "60/64", "360 images",
                                    "3 seeds", "24 runs"]


def _covered_figures():
    """(page, figure) for every figure the ledger covers, a table's figures one by one."""
    for page, entries in sorted(LEDGER.items()):
        for key, (_, compute) in entries.items():
            got = compute()
            for fig in dict.fromkeys(got if isinstance(got, list) else [key]):
                yield page, fig


@pytest.mark.parametrize("page,figure", list(_covered_figures()))
def test_a_one_digit_change_is_caught(page, figure):
    """Every covered figure, one digit changed in a copy of its page: the check reports it."""
    text = _text(page)
    assert figure in " ".join(ledger.prose(text).split()), figure
    i = next(k for k, c in enumerate(figure) if c.isdigit())
    changed = figure[:i] + str((int(figure[i]) + 1) % 10) + figure[i + 1:]
    spaced = r"\s+".join(map(re.escape, figure.split()))  # a figure may wrap across lines
    problems = ledger.check(re.sub(spaced, lambda _: changed, text), LEDGER[page])
    assert any(changed in p or figure in p for p in problems), problems
    assert ledger.check(text, LEDGER[page]) == []


def test_design_states_no_figure():
    for page in NO_FIGURES:
        assert ledger.figures(_text(page)) == [], page


def test_an_unlisted_figure_is_caught():
    text = _text("README.md") + "\nThe run took 42 s.\n"
    assert "not in the ledger: 42 s" in ledger.check(text, ledger.LEDGER["README.md"])


ESTIMATES = {"README.md": ledger.ESTIMATES, **ledger_docs.ESTIMATES}


@pytest.mark.parametrize("page", sorted(LEDGER))
def test_each_estimate_says_so_with_host_and_date(page):
    """An entry whose source says estimate is listed as one, and its prose says so near it,
    with the host (an AMD EPYC or the NVIDIA H200) and the date."""
    labelled = {fig for fig, (source, _) in LEDGER[page].items() if "estimate" in source}
    assert labelled == ESTIMATES.get(page, set()), page
    flat = " ".join(ledger.prose(_text(page)).split())
    for fig in labelled:
        at = flat.index(fig)
        window = flat[max(0, at - 400): at + 200]  # the sentence it stands in, and the one before
        assert re.search(r"\b(estimates?|extrapolated)\b", window, re.I), (page, fig)
        assert re.search(r"\d{4}-\d{2}-\d{2}", window) and ("EPYC" in window or "H200" in window), (page, fig)


def test_one_full_cpu_run_estimate_everywhere():
    """README.md and docs/speed.md give the same labelled estimate of a full CPU run: the rate of
    one bench file and the time it implies, and no other time in hours."""
    readme = ledger.LEDGER["README.md"]
    rate, hours = readme["257 img/s"][1](), readme["2.7 hours"][1]()
    for page in ("README.md", "docs/speed.md"):
        found = ledger.figures(_text(page))
        assert rate in found and hours in found, page
        assert [f for f in found if f.endswith("hours")] == [hours], page
    assert "bench-cpu-avx512-gradient-after-tcmalloc.json" in _text("docs/speed.md")
