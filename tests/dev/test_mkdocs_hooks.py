"""The generated pages of the documentation site (dev/mkdocs_hooks.py): they cannot drift from their sources
because they are made from them; these tests check that nothing of the sources is left out."""

from __future__ import annotations

import re

from conftest import REPO
from dev.mkdocs_hooks import benchmark_pages, benchmark_sections, cli_reference, preset_table


def test_every_benchmarks_section_lands_on_exactly_one_topic_page():
    text = (REPO / "BENCHMARKS.md").read_text()
    _, sections = benchmark_sections(text)
    pages = benchmark_pages(text)
    assert sections and "index.md" in pages
    for heading, _ in sections:
        holders = [name for name, page in pages.items() if f"\n## {heading}\n" in f"\n{page}"]
        assert len(holders) == 1, (heading, holders)
    unknown = benchmark_pages("# Benchmarks\n\n## A section no topic names\nfigures\n")
    assert "other.md" in unknown and "A section no topic names" in unknown["other.md"]  # never dropped


def test_the_cli_reference_holds_every_command_of_the_parser():
    from wsss.cli import build_parser

    page = cli_reference()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        assert f"`wsss {name}`" in page, name
        assert parser.format_usage().split()[2] in page  # its usage line, as --help prints it


def test_the_preset_table_lists_every_preset_of_the_folder():
    for folder in ("seco", "clip_es", "deeplab"):
        table = preset_table(folder, training_free=folder == "clip_es")
        files = sorted(p.name for p in (REPO / "configs" / folder).glob("*.yaml"))
        assert re.findall(r"^\| `([\w.]+\.yaml)`", table, re.M) == files
