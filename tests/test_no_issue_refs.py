"""No number of this project's issues in src/, tests/, configs/, docs/ or experiments/: a reader of the repository
cannot open the tracker, so a comment, message or page says what the reference stood for instead. An official
repository's issue named with its repository (``maeve07/RCA issue #11``, ``rulixiang/ToCo#12``) is a citation and
stays, as do CSS colours (``#888``), anchors (``(#which-route)``) and numbered comments (``# 12``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = (
    "src",
    "tests",
    "configs",
    "docs",
    "experiments",
    "BENCHMARKS.md",
    "README.md",
)  # the last two: pages of the site
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".txt", ".toml", ".sh", ".css", ".html", ".cfg"}
#: This file shows the forms it looks for in its own examples.
SELF = Path(__file__).resolve()

#: "issue 42", "Issue #77", "issues 58": a word and a number.
ISSUE_WORD = re.compile(r"\bissues? #?\d+", re.I)
#: "#77", "(#81)": a hash and a number, not inside a word or a path (``ToCo#12``), nor a CSS colour
#: (``color:#222``, ``edgecolor="#888"``), nor a hex colour with letters (``#f7f7f7``).
HASH_NUMBER = re.compile(r"(?<![\w/:=\"'&#-])#\d{1,4}(?![\w-])")
#: What an official repository's issue is cited with, just before "issue ...": ``owner/name``.
OFFICIAL_REPO = re.compile(r"[\w.-]+/[\w.-]+\s*$")
#: A list that goes on from an official repository's issue: ``zwyang6/SeCo#1 and `` before ``#5``.
OFFICIAL_LIST = re.compile(r"[\w.-]+/[\w.-]+#\d+(?:(?:, | and | or )#\d+)*(?:, | and | or )$")


def issue_refs(text: str) -> list[str]:
    """The references to this project's issues in ``text``, as written."""
    found = []
    for m in ISSUE_WORD.finditer(text):
        if not OFFICIAL_REPO.search(text[max(0, m.start() - 80) : m.start()]):
            found.append(m.group())
    for m in HASH_NUMBER.finditer(text):
        before = text[max(0, m.start() - 80) : m.start()]
        if re.search(r"\bissues?\s*$", before, re.I):  # "issue #11" is the word form's, judged above
            continue
        if not OFFICIAL_LIST.search(before):  # "zwyang6/SeCo#1 and #5": the second of an official repo's issues
            found.append(m.group())
    return found


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        top = REPO / name
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            if (path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts
                    and path.resolve() != SELF):  # fmt: skip
                files.append(path)
    return files


@pytest.mark.parametrize(
    "text",
    ["see issue 42", "(issue 58 trial)", "Issue #77: x", "fixed in #81.", "(#81)", "issues 3", "items of #7"],
)
def test_project_issue_found(text: str) -> None:
    assert issue_refs(text)


@pytest.mark.parametrize(
    "text",
    [
        "maeve07/RCA issue #11",
        "issues zwyang6/SeCo#1 and #5",
        "rulixiang/ToCo#12",
        "color:#222; background:#f7f7f7",
        'edgecolor="#888"',
        "[route](own-photos.md#which-route)",
        "# 12 numbered comment",
        "## A heading",
        "a tissue 4 cm wide",
    ],
)
def test_legitimate_text_passes(text: str) -> None:
    assert issue_refs(text) == []


def test_no_project_issue_numbers() -> None:
    bad = []
    for path in scanned_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for ref in issue_refs(line):
                bad.append(f"{path.relative_to(REPO)}:{number}: {ref!r}: {line.strip()[:100]}")
    assert not bad, "issue numbers of this project (say what the reference explained instead):\n" + "\n".join(bad)
