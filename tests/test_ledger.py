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

ROOT = ledger.ROOT
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
UNCOVERED = {p for p in PAGES if p != "README.md"} - {"docs/design.md"}  # design.md states no figure


def _text(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.xfail(
    p in UNCOVERED, reason="the ledger does not cover this page yet", strict=True)) for p in PAGES])
def test_every_figure_is_in_the_ledger_and_recomputes(page):
    problems = ledger.check(_text(page), ledger.LEDGER.get(page, {}))
    assert not problems, problems


def test_the_finder_finds_each_kind_and_skips_code_and_generated_sections():
    text = ("It took 36 s, 6 hours and 8.3 minutes at 257 img/s: 94.2% (93.26-94.21%), 1.21x, "
            "+6.25 points [−4.37, +17.20], 60/64, 360 images over 3 seeds and 24 runs.\n"
            "```bash\ntlres train --epochs 50 --lr 0.01   # 99%\n```\n"
            "Run `--seeds 3` (`50%`).\n<!-- tlres.report:begin -->\n77.7%\n<!-- tlres.report:end -->\n")
    assert ledger.figures(text) == ["36 s", "6 hours", "8.3 minutes", "257 img/s", "94.2%", "93.26-94.21%",
                                    "1.21x", "+6.25 points", "[−4.37, +17.20]", "60/64", "360 images",
                                    "3 seeds", "24 runs"]


@pytest.mark.parametrize("figure", sorted(ledger.LEDGER["README.md"]))
def test_a_one_digit_change_is_caught(figure):
    """Every README figure, one digit changed in a copy of the text: the check reports it."""
    text = _text("README.md")
    at = ledger.prose(text).index(figure) if figure in ledger.prose(text) else None
    assert at is not None, figure
    i = next(k for k, c in enumerate(figure) if c.isdigit())
    changed = figure[:i] + str((int(figure[i]) + 1) % 10) + figure[i + 1:]
    mutated = text.replace(figure, changed)
    problems = ledger.check(mutated, ledger.LEDGER["README.md"])
    assert any(changed in p for p in problems) or any(figure in p for p in problems), problems
    assert ledger.check(text, ledger.LEDGER["README.md"]) == []


def test_an_unlisted_figure_is_caught():
    text = _text("README.md") + "\nThe run took 42 s.\n"
    assert "not in the ledger: 42 s" in ledger.check(text, ledger.LEDGER["README.md"])


def test_each_estimate_says_so_with_host_and_date():
    flat = " ".join(ledger.prose(_text("README.md")).split())
    for fig in ledger.ESTIMATES:
        source = ledger.LEDGER["README.md"][fig][0]
        assert "estimate" in source, fig
        at = flat.index(fig)
        window = flat[max(0, at - 400): at + 200]  # the sentence it stands in, and the one before
        assert re.search(r"\b(estimates?|extrapolated)\b", window, re.I), fig
        assert re.search(r"\d{4}-\d{2}-\d{2}", window) and ("EPYC" in window or "H200" in window), fig
