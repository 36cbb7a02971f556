"""The documentation holds together: the README stays a five-minute read, and no link points nowhere."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def _links(page):
    """Relative links of a page, outside code blocks (a `[x](y)` in an example is not a link)."""
    text = FENCE.sub("", page.read_text())
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def _anchors(page):
    """The anchors a page's headings get, as GitHub forms them: lower case, punctuation dropped, spaces to
    hyphens (repeated headings, which would get -1 suffixes, do not occur here)."""
    text = FENCE.sub("", page.read_text())
    return {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_points_at_a_file_and_heading_that_exist(page):
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in _anchors(file)):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)}: broken links {broken}"


def test_the_readme_stays_short_and_keeps_the_test_command():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150, "the README is the five-minute read; move reference to docs/"
    assert "make test" in readme  # .ci/run runs the README's test command


def test_the_readme_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    unlinked = [p.name for p in PAGES[1:] if f"](docs/{p.name})" not in readme]
    assert not unlinked, f"README's Documentation list lacks: {unlinked}"


def test_every_promise_of_the_reliability_page_names_a_test_that_exists():
    """docs/reliability.md pairs each promise with a test: each named test must exist, so none is cited
    after it was renamed or removed."""
    page = (REPO / "docs" / "reliability.md").read_text()
    cited = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", page)
    assert len(cited) >= 20
    missing = [
        f"{path}::{name}" for path, name in cited if not re.search(rf"^def {name}\(", (REPO / path).read_text(), re.M)
    ]
    assert not missing, f"docs/reliability.md cites tests that do not exist: {missing}"
