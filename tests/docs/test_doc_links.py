"""Links between the project's markdown files: every relative link names a file that exists, and every
``file.md#anchor`` a heading of that file (as GitHub makes anchors). The docs quote measured figures by
linking to docs/benchmarks.md's sections, so a section the bench no longer writes breaks this test, not a reader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(p for p in ROOT.rglob("*.md") if not any(part.startswith(".") for part in p.relative_to(ROOT).parts))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces to '-', repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    body = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)  # a '#' in a code block is no heading
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", body, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_github_anchors():
    assert anchors("## Front end\n### throughput with 2 workers against 1\n## Front end\n") == {
        "front-end", "throughput-with-2-workers-against-1", "front-end-1"}
    assert anchors("### demo repair in bf16 (autocast) vs fp32, wall time") == {"demo-repair-in-bf16-autocast-vs-fp32-wall-time"}


def test_the_docs_link_to_benchmark_sections():
    assert DOCS and any("benchmarks.md#" in p.read_text() for p in DOCS)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target}: no {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, broken
