"""The README's, the docs' and the reports' links: every link into the repository names a file that is there,
and every #anchor a heading of its page (as GitHub makes a heading's anchor), so the README's contents line,
the docs' contents and the Results' report links lead somewhere."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation but '-' and '_' dropped, spaces as '-',
    a repeated one suffixed -1, -2, ...; lines inside code fences are not headings."""
    out, fenced = set(), False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"#{1,6} (.+)", line)
        if fenced or not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        unique, n = slug, 0
        while unique in out:
            n += 1
            unique = f"{slug}-{n}"
        out.add(unique)
    return out


def local_links(markdown: str) -> list[str]:
    return [t for t in LINK.findall(markdown) if not re.match(r"[a-z]+:", t)]


def test_anchors_follow_githubs_rule():
    page = "# scaleout\n## Sources (`scaleout prepare`)\n```bash\n# a comment\n```\n## Results\n## Results\n"
    assert anchors(page) == {"scaleout", "sources-scaleout-prepare", "results", "results-1"}
    assert anchors("### Embedding and indexing (`scaleout index`, `jobs/embed_index.py`)") == {
        "embedding-and-indexing-scaleout-index-jobsembed_indexpy"}


PAGES = ["README.md", *sorted(str(p.relative_to(REPO)) for folder in ("benchmarks", "docs")
                              for p in (REPO / folder).rglob("*.md"))]


def test_the_readme_has_its_contents_line():
    assert sum(t.startswith("#") for t in local_links((REPO / "README.md").read_text())) >= 10


@pytest.mark.parametrize("page", PAGES)
def test_every_local_link_and_anchor_resolves(page):
    text = (REPO / page).read_text()
    links = local_links(text)
    broken = []
    for target in links:
        path, _, anchor = target.partition("#")
        file = (REPO / page).parent / path if path else REPO / page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(REPO)}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(f"{target}: no heading with that anchor in {file.relative_to(REPO)}")
    assert not broken, "\n".join(broken)
