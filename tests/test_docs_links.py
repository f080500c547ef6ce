"""Every relative link in README.md and docs/ resolves: to a file that exists, and for a
'#anchor' to a heading of that file."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.*)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert links(page) or page.name != "README.md"  # the README links into docs/
    for link in links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link} -> {target} does not exist"
        if anchor:
            assert anchor in anchors(target), f"{page.name}: {link}: no heading #{anchor} in {target.name}"


def test_readme_is_read_in_five_minutes():
    assert len((ROOT / "README.md").read_bytes()) <= 12 * 1024


SPAN = re.compile(r"`([^`\s]+)`")
# Folders of the repository itself (results/ is what runs write, save results/paper/).
REPO_DIRS = ("reproduce/", "weights_convert/", "tests/", "bench/", "docs/", "prototxt/", "results/paper/")


def repository_paths(page: Path) -> list[tuple[str, bool]]:
    """Code spans that name a path of this repository: (the path, or the part before a pattern
    such as `{1,5}` or `<n>`; whether it was cut there)."""
    found = []
    for span in SPAN.findall(page.read_text()):
        if span.startswith(REPO_DIRS):
            head = re.split(r"[*{<\[:(]", span, maxsplit=1)[0]
            found.append((head.rstrip(".") if head == span else head, head != span))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_paths_named_in_code_spans_exist(page):
    """Docs name files and folders in `code`; a module that moved must take its mentions along."""
    missing = [path for path, cut in repository_paths(page)
               if not ((ROOT / path).exists() or (cut and any(ROOT.glob(path.rstrip("/") + "*"))))]
    assert missing == [], f"{page.name}: {missing}"
