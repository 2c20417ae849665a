"""Prose damage in the manual's Markdown that a strict site build lets through (``make docs`` runs this first).

The strict build catches a broken link, a missing page or anchor; it does not read sentences. This check
catches the damage an edit that cut or moved text leaves behind:

- a paragraph that ends without closing punctuation right before a heading, a code block or the end of the
  page (a sentence cut short: "The design table is in");
- a table row (a line that starts and ends with ``|``) that is not part of a table: no header row with a
  ``|---|`` separator above it in the same block (stray rows show as raw pipe text on the site);
- a paragraph that starts in lower case right after a code block or a heading (the tail of a sentence whose
  start was moved away: "that are not your classes in ...").

Usage: ``python dev/check_prose.py [FILES or folders ...]`` (default: ``docs/``, ``README.md``); prints
``file:line: problem`` for each and exits 1 if any.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: What may close a paragraph: sentence punctuation, optionally followed by closing quotes, brackets or markup.
CLOSED = re.compile(r"""[.!?:;]["')\]*_`]*$|[.!?]\s*\)$""")
TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
#: Lines that are not prose: list items, block quotes, HTML, admonitions, images, definitions, link references,
#: the generated-content markers of dev/mkdocs_hooks.py.
NOT_PROSE = re.compile(r"^\s*([-*+]\s|\d+\.\s|>|<|!!!|\?\?\?|!\[|\[[^\]]+\]:|:::|\{|---\s*$)")


def blocks(lines: list[str]) -> Iterator[tuple[str, int, list[str]]]:
    """(kind, first line number, lines) for each block: ``code``, ``heading``, ``table``, ``list`` or ``para``."""
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        fence = re.match(r"^\s*(```|~~~)", line)
        if fence:
            start, i = i, i + 1
            while i < len(lines) and not lines[i].lstrip().startswith(fence.group(1)):
                i += 1
            yield "code", start + 1, lines[start : i + 1]
            i += 1
            continue
        if line.startswith("#"):
            yield "heading", i + 1, [line]
            i += 1
            continue
        start = i
        while (
            i < len(lines)
            and lines[i].strip()
            and not lines[i].startswith("#")
            and not re.match(r"^\s*(```|~~~)", lines[i])
        ):
            i += 1
        chunk = lines[start:i]
        if TABLE_ROW.match(chunk[0]) or any(TABLE_ROW.match(c) for c in chunk):
            yield "table", start + 1, chunk
        elif NOT_PROSE.match(chunk[0]) or line.startswith("    "):
            yield "list", start + 1, chunk
        else:
            yield "para", start + 1, chunk


def problems(text: str) -> list[tuple[int, str]]:
    """(line, problem) for each piece of damage in a page's Markdown."""
    lines = text.splitlines()
    found: list[tuple[int, str]] = []
    items = [b for b in blocks(lines) if not (b[0] == "list" and b[2][0].lstrip().startswith("<!--"))]
    for n, (kind, first, chunk) in enumerate(items):
        following = items[n + 1][0] if n + 1 < len(items) else "end"
        previous = items[n - 1][0] if n else "start"
        if kind == "table":
            found += table_problems(first, chunk)
        if kind != "para":
            continue
        last = chunk[-1].rstrip()
        if following in ("heading", "end", "para", "code") and not CLOSED.search(last) and not last.endswith("|"):
            found.append((first + len(chunk) - 1, f"a paragraph ends without punctuation: ...{last[-50:]!r}"))
        head = chunk[0].lstrip()
        if previous in ("code", "heading") and head[:1].islower() and not head.startswith(("wsss ", "e.g.", "i.e.")):
            found.append((first, f"a paragraph starts in lower case after a {previous}: {head[:50]!r}"))
    return found


def table_problems(first: int, chunk: list[str]) -> list[tuple[int, str]]:
    """Rows of a block that are not in a table: a table is a header row, then a separator row, then rows."""
    out = []
    in_table = False
    for k, line in enumerate(chunk):
        if not TABLE_ROW.match(line) and not SEPARATOR.match(line):
            in_table = False
            continue
        if SEPARATOR.match(line):
            in_table = k > 0 and bool(TABLE_ROW.match(chunk[k - 1]))
            continue
        next_is_separator = k + 1 < len(chunk) and SEPARATOR.match(chunk[k + 1])
        if not in_table and not next_is_separator:
            out.append((first + k, f"a table row outside a table (no header and |---| row above it): {line[:60]!r}"))
    return out


def markdown_files(args: list[str]) -> list[Path]:
    targets = [Path(a) for a in args] or [REPO / "docs", REPO / "README.md"]
    files: list[Path] = []
    for target in targets:
        files += sorted(target.rglob("*.md")) if target.is_dir() else [target]
    return files


def main(argv: list[str] | None = None) -> int:
    bad = 0
    for path in markdown_files(list(sys.argv[1:] if argv is None else argv)):
        for line, problem in problems(path.read_text()):
            print(f"{path}:{line}: {problem}")
            bad += 1
    if bad:
        print(f"{bad} prose problem(s): mend the sentence or the table (dev/check_prose.py says what it checks)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
