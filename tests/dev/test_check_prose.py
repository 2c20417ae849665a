"""dev/check_prose.py: the damage a review found in the manual (sentences cut short, stray table rows) is caught,
and well-formed Markdown passes."""

from __future__ import annotations

import importlib.util

from conftest import REPO

spec = importlib.util.spec_from_file_location("check_prose", REPO / "dev" / "check_prose.py")
check_prose = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_prose)


def kinds(text: str) -> list[str]:
    return [problem.split(":")[0] for _, problem in check_prose.problems(text)]


def test_a_sentence_cut_before_a_heading_or_a_paragraph_is_caught():
    assert kinds("Tests use it. The design table is in\n\n## PASCAL VOC\n") == ["a paragraph ends without punctuation"]
    assert kinds("and scene words\n\nWithout a labels file at all, it works.\n") == [
        "a paragraph ends without punctuation"
    ]
    assert kinds("Without any masks, skip them: `prepare") == ["a paragraph ends without punctuation"]


def test_the_tail_of_a_moved_sentence_after_a_code_block_is_caught():
    text = "Run:\n\n```bash\nwsss cam RUN\n```\n<!-- end -->\n\nthat are not your classes in `options.background`.\n"
    assert kinds(text) == ["a paragraph starts in lower case after a code"]


def test_table_rows_outside_a_table_are_caught():
    stray = "Some text.\n\n| `wsss import seco` | an official checkpoint |\n| `wsss export` | a zip |\n"
    assert kinds(stray) == ["a table row outside a table (no header and |---| row above it)"] * 2
    no_separator = "| method | mIoU |\n| CAM | 62.3 |\n"
    assert len(kinds(no_separator)) == 2


def test_well_formed_markdown_passes():
    text = (
        "# Title\n\nA sentence that ends.\n\nA list follows:\n\n- item one\n- item two\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n```bash\nwsss train x\n```\n\n"
        "A paragraph (with a bracket.)\n\n## Next\n\nEnds with code `x`.\n"
    )
    assert check_prose.problems(text) == []


def test_the_cli_exits_1_naming_the_file(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text("The design table is in\n\n## Next\n\nFine.\n")
    assert check_prose.main([str(page)]) == 1
    assert f"{page}:1: a paragraph ends without punctuation" in capsys.readouterr().out
    page.write_text("Fine.\n")
    assert check_prose.main([str(page)]) == 0
