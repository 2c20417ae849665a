"""dev/fmt_skips.py: a table keeps its ``# fmt: skip`` (with its reason), every other marker goes and ruff formats
the statement; other pragmas of the comment stay."""

from __future__ import annotations

import ast

from dev.fmt_skips import main

SOURCE = """\
ROWS = [("a", 1,   2), ("b", 10, 20),
        ("c", 3,   4), ("d", 30, 40)]  # fmt: skip
WRAPPED = {"k": 1,
           "j": 2}  # fmt: skip
def f(a,
      b) -> int:  # fmt: skip
    return max(a,
               b)  # noqa: E501  # fmt: skip
"""


def test_a_table_keeps_its_marker_and_the_rest_are_formatted(tmp_path, capsys):
    path = tmp_path / "m.py"
    path.write_text(SOURCE)
    assert main([str(tmp_path)]) == 0
    assert "markers: 4, kept (tables) 1, removed 3; 1 files changed" in capsys.readouterr().out
    text = path.read_text()
    assert text.splitlines()[:2] == [
        'ROWS = [("a", 1,   2), ("b", 10, 20),',
        '        ("c", 3,   4), ("d", 30, 40)]  # fmt: skip  # a table',
    ]
    assert 'WRAPPED = {"k": 1, "j": 2}\n' in text
    assert "def f(a, b) -> int:\n    return max(a, b)  # noqa: E501\n" in text
    assert ast.dump(ast.parse(text)) == ast.dump(ast.parse(SOURCE))  # formatting only


def test_a_dry_run_counts_and_changes_nothing(tmp_path, capsys):
    path = tmp_path / "m.py"
    path.write_text(SOURCE)
    assert main(["--dry-run", str(path)]) == 0
    assert "markers: 4, kept (tables) 1, removed 3; 0 files changed" in capsys.readouterr().out
    assert path.read_text() == SOURCE
