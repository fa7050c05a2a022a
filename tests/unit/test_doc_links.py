"""The documents' links between themselves resolve: every relative link names a file that exists, and every
`#anchor` (in the same document or in `OTHER.md#anchor`) names a heading that document has, by GitHub's
anchor rules (lowercase; punctuation other than '-' and '_' dropped; each space a '-'; a repeated heading
gets -1, -2...)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md")])

_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and [text](target "title"); images too. Not inside inline code.
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"`[^`]*`")


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters, digits and '_' (Unicode letters too, as GitHub)
    return text.replace(" ", "-")


def _lines(path: Path) -> list[str]:
    """The document's lines outside fenced code blocks."""
    kept, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(line)
    return kept


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in _lines(path):
        match = _HEADING.match(line)
        if not match:
            continue
        base = anchor(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    return [target for line in _lines(path) for target in _LINK.findall(_INLINE_CODE.sub("", line))]


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # https:, mailto:...: not ours to check
            continue
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no file {file_part}")
        elif fragment and linked.suffix == ".md" and fragment.lower() not in anchors(linked):
            broken.append(f"{target}: {linked.name} has no heading with the anchor #{fragment}")
    return broken


def test_the_anchor_rules() -> None:
    assert anchor("Operating requests") == "operating-requests"
    assert anchor("5. Let the CRM in") == "5-let-the-crm-in"
    assert anchor("List: `GET /requests`") == "list-get-requests"
    assert anchor("Show: `GET /requests/{id}`") == "show-get-requestsid"
    assert anchor("Dead letters (the intake_queue)") == "dead-letters-the-intake_queue"


def test_a_link_to_a_missing_heading_is_found(tmp_path: Path) -> None:
    (tmp_path / "A.md").write_text("# A\n## Real one\nsee [x](#real-one), [y](B.md#gone), [z](#missing)\n")
    (tmp_path / "B.md").write_text("# B\n## Here\n```\n## gone\n```\n")
    assert broken_links(tmp_path / "A.md") == [
        "B.md#gone: B.md has no heading with the anchor #gone",
        "#missing: A.md has no heading with the anchor #missing",
    ]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_between_the_documents_resolves(document: Path) -> None:
    assert broken_links(document) == []
