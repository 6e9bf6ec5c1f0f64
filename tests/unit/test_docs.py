"""The documentation holds together: every relative link of README.md and docs/*.md reaches a file
that exists and, with a `#anchor`, a heading of that file (GitHub's heading ids); the README stays
a front page of at most 250 lines and lists every page of docs/."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250

FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the target ends at whitespace (an optional "title" follows).
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^\s()<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)  # http:, https:, mailto:, ...


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (``` or ~~~), as Markdown reads them."""
    lines, fence = [], ""
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = ""
            continue
        if match:
            fence = match.group(1)
            continue
        lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's id for a heading: its text without Markdown (inline code keeps its content, a
    link its text), lowercased, every character but letters, digits, `_`, `-` and spaces
    dropped, and each space turned into a hyphen."""
    text = INLINE_CODE.sub(lambda m: m.group(2).strip(), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading id of a file; a repeated id gets -1, -2, ... as GitHub numbers it."""
    seen: dict[str, int] = {}
    ids = set()
    for line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.add(base if count == 0 else f"{base}-{count}")
    return ids


def links(path: Path) -> list[str]:
    """The relative link targets of a file, outside code blocks and inline code."""
    targets = []
    for line in prose_lines(path.read_text()):
        for match in LINK.finditer(INLINE_CODE.sub("", line)):
            target = match.group(1)
            if not EXTERNAL.match(target):
                targets.append(target)
    return targets


def broken(path: Path) -> list[str]:
    """Each link of `path` whose file or anchor does not exist, with the reason."""
    problems = []
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        shown = os.path.relpath(dest, ROOT)
        if not dest.exists():
            problems.append(f"{target}: no such file {shown}")
        elif anchor and dest.suffix != ".md":
            problems.append(f"{target}: an anchor into {shown}, which is not Markdown")
        elif anchor and anchor not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {shown}")
    return problems


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Reliability & security", "reliability--security"),
        ("Configuration: `serve/serve_config.yaml`", "configuration-serveserve_configyaml"),
        (
            "The last run (run 3), whose JSON is beside this file",
            "the-last-run-run-3-whose-json-is-beside-this-file",
        ),
        ("Layout: services, request flow and files", "layout-services-request-flow-and-files"),
        ("Kubernetes with [KubeRay](https://ray.io)", "kubernetes-with-kuberay"),
        ("What's **not** covered?", "whats-not-covered"),
    ],
)
def test_slug_follows_github(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_repeated_headings_are_numbered(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Notes\n\n```bash\n# Notes\n```\n\n## Notes\n\n### Notes\n")
    assert anchors(page) == {"title", "notes", "notes-1", "notes-2"}


def test_links_are_found_outside_code_only(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        'See [a](a.md#x), ![img](b.png "t"), [web](https://example.com), [m](mailto:x@y.z),\n'
        "`[code](c.md)` and [same](#here).\n\n```md\n[fenced](d.md)\n```\n"
    )
    assert links(page) == ["a.md#x", "b.png", "#here"]


def test_broken_links_are_reported(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# B\n\n## Part `one`\n")
    (tmp_path / "a.md").write_text(
        "# A\n[ok](b.md#part-one) [self](#a) [file](b.md)\n"
        "[x](b.md#nope) [y](#b) [z](missing.md) [w](missing.md#a)\n"
    )
    assert [problem.split(":")[0] for problem in broken(tmp_path / "a.md")] == [
        "b.md#nope",
        "#b",
        "missing.md",
        "missing.md#a",
    ]


def test_there_are_pages_to_check() -> None:
    assert len(markdown_files()) > 10
    assert links(README), "the README links nowhere"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path: Path) -> None:
    assert broken(path) == []


def test_readme_is_a_front_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_readme_lists_every_docs_page() -> None:
    listed = {target.partition("#")[0] for target in links(README)}
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if f"docs/{p.name}" not in listed]
    assert not missing, f"docs pages the README does not link to: {missing}"
