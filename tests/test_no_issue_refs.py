"""No number of this project's issues in src/, tests/, configs/, docs/ or experiments/: a reader of the repository
cannot open the tracker, so a comment, message or page says what the reference stood for instead. An official
repository's issue named with its repository (``owner/name issue #N``, ``owner/name#N``) is a citation and stays, as do
CSS colours, markdown anchors and numbered comments (``# N``). The examples below are written with ``{n}`` for the
number and filled in by the tests, so that this file holds no reference itself and is scanned as every other."""

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

#: the word "issue" or "issues", then a number (with or without a hash).
ISSUE_WORD = re.compile(r"\bissues? #?\d+", re.I)
#: a hash and a number, not inside a word or a path (an official ``owner/name#N``), nor a CSS colour
#: (``color:#...``, ``edgecolor="#..."``), nor a hex colour with letters.
HASH_NUMBER = re.compile(r"(?<![\w/:=\"'&#-])#\d{1,4}(?![\w-])")
#: What an official repository's issue is cited with, just before "issue ...": ``owner/name``.
OFFICIAL_REPO = re.compile(r"[\w.-]+/[\w.-]+\s*$")
#: A list that goes on from an official repository's issue: ``owner/name#N and `` before the next ``#N``.
OFFICIAL_LIST = re.compile(r"[\w.-]+/[\w.-]+#\d+(?:(?:, | and | or )#\d+)*(?:, | and | or )$")


def issue_refs(text: str) -> list[str]:
    """The references to this project's issues in ``text``, as written."""
    found = []
    for m in ISSUE_WORD.finditer(text):
        if not OFFICIAL_REPO.search(text[max(0, m.start() - 80) : m.start()]):
            found.append(m.group())
    for m in HASH_NUMBER.finditer(text):
        before = text[max(0, m.start() - 80) : m.start()]
        if re.search(r"\bissues?\s*$", before, re.I):  # "issue #N" is the word form's, judged above
            continue
        if not OFFICIAL_LIST.search(before):  # the second of an official repository's list of issues
            found.append(m.group())
    return found


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        top = REPO / name
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                files.append(path)
    return files


@pytest.mark.parametrize(
    "text",
    ["see issue {n}", "(issue {n} trial)", "Issue #{n}: x", "fixed in #{n}.", "(#{n})", "issues {n}", "items of #{n}"],
)
@pytest.mark.parametrize("n", ["7", "42", "123"])
def test_project_issue_found(text: str, n: str) -> None:
    assert issue_refs(text.format(n=n))


@pytest.mark.parametrize(
    "text",
    [
        "maeve07/RCA issue #{n}",
        "issues zwyang6/SeCo#1 and #{n}",
        "rulixiang/ToCo#{n}",
        "color:#{n}; background:#f7f7f7",
        'edgecolor="#{n}"',
        "[route](own-photos.md#which-route)",
        "# {n} numbered comment",
        "## A heading",
        "a tissue {n} cm wide",
    ],
)
def test_legitimate_text_passes(text: str) -> None:
    assert issue_refs(text.format(n="12")) == []


def test_no_project_issue_numbers() -> None:
    bad = []
    for path in scanned_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for ref in issue_refs(line):
                bad.append(f"{path.relative_to(REPO)}:{number}: {ref!r}: {line.strip()[:100]}")
    assert not bad, "issue numbers of this project (say what the reference explained instead):\n" + "\n".join(bad)
