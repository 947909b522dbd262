"""README.md stays a short user's guide, and the links in it and in docs/ lead somewhere.

* README.md is at most 300 lines;
* every relative link or image in README.md and docs/*.md names a file that exists, and a
  `file.md#anchor` (or `#anchor`) a heading of that file, by GitHub's slug rules;
* no machine path (/work/..., /tmp/...) and no issue number in user-facing text.
"""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def slug(heading):
    """GitHub's anchor for a heading: lowercase, markup and punctuation dropped except '-' and
    '_', each space a '-' (so 'Checkpoints and `--resume`' is 'checkpoints-and---resume')."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)  # \w keeps letters, digits, '_' (and non-ASCII letters)
    return s.replace(" ", "-")


def anchors(path):
    seen, out = {}, set()
    for line in FENCE.sub("", _text(path)).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")  # GitHub numbers repeated headings
    return out


def links(path):
    for target in LINK.findall(FENCE.sub("", _text(path))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        yield target


def test_slug_follows_github():
    assert slug("Checkpoints and `--resume`") == "checkpoints-and---resume"
    assert slug("Results files: schema `tlres.results/1`") == "results-files-schema-tlresresults1"
    assert slug("The paper's recipe: wall time") == "the-papers-recipe-wall-time"
    assert slug("What the paper did, and what tlres adds") == "what-the-paper-did-and-what-tlres-adds"


def test_readme_is_a_short_guide():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        n = sum(1 for _ in f)
    assert n <= 300, f"README.md has {n} lines; move details to docs/"


@pytest.mark.parametrize("page", PAGES, ids=[os.path.relpath(p, ROOT) for p in PAGES])
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        rel = os.path.relpath(dest, ROOT)
        if not os.path.exists(dest):
            broken.append(f"{target}: no such file {rel}")
            continue
        if anchor and dest.endswith(".md") and anchor not in anchors(dest):
            broken.append(f"{target}: no heading '#{anchor}' in {rel}")
    assert not broken, broken


@pytest.mark.parametrize("page", PAGES, ids=[os.path.relpath(p, ROOT) for p in PAGES])
def test_no_machine_paths_or_issue_numbers(page):
    text = _text(page)
    assert not re.findall(r"/work/|/tmp/", text), "machine path in " + page
    assert not re.findall(r"\bissues?\s*#?\d+", text, re.I), "issue number in " + page
