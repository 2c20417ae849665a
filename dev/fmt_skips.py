"""Remove the ``# fmt: skip`` markers that keep a hand-wrapped statement from ``ruff format``, and keep the tables.

    .venv/bin/python dev/fmt_skips.py FILES...          # edit the files, then ruff format them
    .venv/bin/python dev/fmt_skips.py --dry-run FILES   # only count: markers, kept, removed

A marker stays where it keeps a table: a literal (list, tuple, set, dict) of three or more items laid out as
rows, several items to a line, with runs of spaces that align them. Such a marker gets its reason,
``# fmt: skip  # a table`` (ruff reads ``# fmt: skip`` only as a comment of its own, so the reason follows it).
Every other marker is removed, and ``ruff format`` then formats its statement. Folders are searched for ``*.py``.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from wsss.cli_common import script_parser

MARKER = re.compile(r"#\s*fmt:\s*skip\b")
TABLE_REASON = "# a table"
LITERALS = (ast.List, ast.Tuple, ast.Set, ast.Dict)


@dataclass
class Counts:
    markers: int = 0
    kept: int = 0

    @property
    def removed(self) -> int:
        return self.markers - self.kept


def python_files(paths: Iterable[str | Path]) -> list[Path]:
    """The ``.py`` files of ``paths``: each a file, or a folder searched recursively."""
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return out


def statement_lines(tree: ast.AST) -> dict[int, ast.stmt | ast.expr]:
    """Last line -> the simple statement or decorator that ends there (a marker applies to it); compound
    statements' headers are left out: they are never tables."""
    ends: dict[int, ast.stmt | ast.expr] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and not hasattr(node, "body"):
            ends.setdefault(node.end_lineno or node.lineno, node)
        for deco in getattr(node, "decorator_list", []):
            ends[deco.end_lineno or deco.lineno] = deco
    return ends


def is_row_literal(node: ast.AST) -> bool:
    """A literal of three or more items on two or more lines, one of which holds two or more items."""
    if not isinstance(node, LITERALS):
        return False
    items = [k for k in node.keys if k is not None] if isinstance(node, ast.Dict) else list(node.elts)
    rows: dict[int, int] = {}
    for item in items:
        rows[item.lineno] = rows.get(item.lineno, 0) + 1
    return len(items) >= 3 and len(rows) >= 2 and max(rows.values()) >= 2


def has_aligning_spaces(tokens: Sequence[tokenize.TokenInfo], first: int, last: int) -> bool:
    """Whether two tokens on one line of ``first..last`` stand two or more spaces apart (a comment aside)."""
    on_lines = [t for t in tokens if first <= t.start[0] <= last and t.type not in (tokenize.NL, tokenize.NEWLINE)]
    for prev, nxt in zip(on_lines, on_lines[1:]):
        same_line = prev.end[0] == nxt.start[0]
        if same_line and nxt.type != tokenize.COMMENT and nxt.start[1] - prev.end[1] >= 2:
            return True
    return False


def is_table(node: ast.stmt | ast.expr, tokens: Sequence[tokenize.TokenInfo]) -> bool:
    first, last = node.lineno, node.end_lineno or node.lineno
    return any(is_row_literal(n) for n in ast.walk(node)) and has_aligning_spaces(tokens, first, last)


def without_marker(comment: str) -> str:
    """The comment with its ``# fmt: skip`` pragma gone, the others kept ("" when nothing is left)."""
    parts = [p.strip() for p in comment.lstrip("#").split("  #")]
    return "  ".join(f"# {p.lstrip('#').strip()}" for p in parts if not MARKER.match("#" + p.lstrip("#").strip()))


def with_reason(comment: str) -> str:
    """A kept marker's comment, with the reason after it unless one follows it already."""
    return comment if re.search(MARKER.pattern + r"\s+#", comment) else f"{comment}  {TABLE_REASON}"


def pass_over(text: str, counts: Counts) -> str:
    """``text`` with each marker kept (with its reason) or removed."""
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    ends = statement_lines(ast.parse(text))
    lines = text.splitlines(keepends=True)
    for tok in reversed([t for t in tokens if t.type == tokenize.COMMENT and MARKER.search(t.string)]):
        counts.markers += 1
        row, col = tok.start
        line = lines[row - 1]
        node = ends.get(row)
        if node is not None and is_table(node, tokens):
            counts.kept += 1
            lines[row - 1] = line[:col] + with_reason(tok.string) + line[tok.end[1] :]
        else:
            comment = without_marker(tok.string)
            head = line[:col] if comment else line[:col].rstrip()
            lines[row - 1] = head + comment + line[tok.end[1] :]
    return "".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("paths", nargs="+", help="Python files or folders")
    parser.add_argument("--dry-run", action="store_true", help="count only; change nothing")
    args = parser.parse_args(argv)
    total = Counts()
    changed: list[Path] = []
    for path in python_files(args.paths):
        counts = Counts()
        text = path.read_text(encoding="utf-8")
        new = pass_over(text, counts)
        total.markers, total.kept = total.markers + counts.markers, total.kept + counts.kept
        if new != text and not args.dry_run:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    if changed:
        subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", *map(str, changed)], check=True)
    print(
        f"# fmt: skip markers: {total.markers}, kept (tables) {total.kept}, removed {total.removed}; "
        f"{len(changed)} files changed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
